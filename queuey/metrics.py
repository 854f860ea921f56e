"""Prometheus metrics of one Queuey service, in a registry of its own."""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class Metrics:
    """The counters and histograms Queuey keeps; ``render()`` gives the /metrics text."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("queuey_requests", "HTTP requests answered, by route, method and status.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("queuey_request_duration_seconds", "Time to answer a request, by route.",
                                 ["route"], registry=self.registry,
                                 buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60))
        self.messages_posted = Counter("queuey_messages_posted", "Messages stored by POST or PUT.",
                                       registry=self.registry)
        self.messages_read = Counter("queuey_messages_read", "Messages returned by GET.",
                                     registry=self.registry)
        self.storage_errors = Counter("queuey_storage_errors", "Requests that failed because storage did not answer.",
                                      registry=self.registry)
        self.held_longpolls = Gauge("queuey_longpolls_held", "Range reads held open waiting for messages.",
                                    registry=self.registry)

    def watch_held(self, count: Callable[[], int]) -> None:
        self.held_longpolls.set_function(count)

    def render(self) -> bytes:
        return generate_latest(self.registry)
