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
        self.connections_open = Gauge("queuey_connections_open", "HTTP connections being served.",
                                      registry=self.registry)
        self.connections_refused = Counter("queuey_connections_refused",
                                           "Connections answered 503 at the connection cap.",
                                           registry=self.registry)
        self.body_bytes_held = Gauge("queuey_body_bytes_held", "Request body bytes held in memory.",
                                     registry=self.registry)
        self.streams_open = Gauge("queuey_streams_open", "Event streams (text/event-stream) open.",
                                  registry=self.registry)
        self.stream_events = Counter("queuey_stream_events", "Messages sent as events on streams.",
                                     registry=self.registry)
        self.streams_cut = Counter("queuey_streams_cut",
                                   "Streams closed because their client fell too far behind.",
                                   registry=self.registry)
        self.held_longpolls = Gauge("queuey_longpolls_held", "Range reads held open waiting for messages.",
                                    registry=self.registry)

    def watch_streams(self, count: Callable[[], int]) -> None:
        self.streams_open.set_function(count)

    def watch_held(self, count: Callable[[], int]) -> None:
        self.held_longpolls.set_function(count)

    def watch_connections(self, open_count: Callable[[], int], body_bytes: Callable[[], int]) -> None:
        self.connections_open.set_function(open_count)
        self.body_bytes_held.set_function(body_bytes)

    def render(self) -> bytes:
        return generate_latest(self.registry)
