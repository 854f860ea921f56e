"""A worker's Prometheus metrics, and the endpoint that serves them (``[qdo-worker] metrics``, off by default).

Every worker has its own registry (tests run several in one process); labels
come from closed sets: job outcomes, session states, and the partitions this
worker holds (a partition's series go when it is handed over).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from twisted.internet import endpoints
from twisted.web import resource, server

from qdo.assign import Partition

OUTCOMES = ("ok", "failed")
SESSION_STATES = ["connected", "suspended", "lost"]


class WorkerMetrics:
    """What one worker counts and measures."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.messages = Counter("qdo_messages", "Messages whose job ran, by outcome (failed: the job raised)",
                                ["outcome"], registry=r)
        self._messages_by_outcome = {outcome: self.messages.labels(outcome) for outcome in OUTCOMES}
        self.handler_errors = Counter("qdo_failure_handler_errors", "job_failure calls that raised "
                                      "(the message is tried again)", registry=r)
        self.job_seconds = Histogram("qdo_job_duration_seconds", "How long jobs took (failed ones too)",
                                     registry=r, buckets=(.001, .005, .01, .05, .1, .5, 1, 5, 10, 60))
        self.lag_messages = Gauge("qdo_partition_lag_messages", "Messages fetched from a partition and not yet done",
                                  ["partition"], registry=r)
        self.lag_seconds = Gauge("qdo_partition_lag_seconds", "Age of the oldest message fetched and not yet done",
                                 ["partition"], registry=r)
        self.held = Gauge("qdo_partitions_held", "Partitions this worker works on now", registry=r)
        self.rebalances = Counter("qdo_rebalances", "Assignment generations this worker applied", registry=r)
        self.session = Enum("qdo_zookeeper_session", "The worker's ZooKeeper session", states=SESSION_STATES,
                            registry=r)
        self.commits = Histogram("qdo_offset_commit_seconds", "Offset commit latency (write to the store)",
                                 registry=r, buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 5))
        self._partitions: set[str] = set()

    def job_done(self, outcome: str, seconds: float) -> None:
        self._messages_by_outcome[outcome].inc()
        self.job_seconds.observe(seconds)

    def failure_handler_failed(self) -> None:
        self.handler_errors.inc()

    def committed(self, seconds: float) -> None:
        self.commits.observe(seconds)

    def session_state(self, state: str) -> None:
        self.session.state(state.lower())

    def lag(self, lags: dict[Partition, tuple[int, float]]) -> None:
        """The lag of the partitions held now; series of partitions no longer held are removed."""
        names = {p.name for p in lags}
        for gone in self._partitions - names:
            self.lag_messages.remove(gone)
            self.lag_seconds.remove(gone)
        self._partitions = names
        for partition, (messages, seconds) in lags.items():
            self.lag_messages.labels(partition.name).set(messages)
            self.lag_seconds.labels(partition.name).set(seconds)
        self.held.set(len(lags))

    def text(self) -> bytes:
        return generate_latest(self.registry)


class MetricsPage(resource.Resource):
    """``GET /metrics`` (any path, in fact) in Prometheus' text format."""

    isLeaf = True

    def __init__(self, metrics: WorkerMetrics, refresh: Any = None) -> None:
        super().__init__()
        self.metrics = metrics
        self.refresh = refresh

    def render_GET(self, request: Any) -> bytes:
        if self.refresh is not None:
            self.refresh()
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode())
        return self.metrics.text()


def listen(reactor: Any, endpoint: str, metrics: WorkerMetrics, refresh: Any = None) -> Any:
    """Serve the metrics on an endpoint string (e.g. ``tcp:9100:interface=127.0.0.1``); fires with the port."""
    site = server.Site(MetricsPage(metrics, refresh))
    site.noisy = False
    site.log = lambda request: None  # type: ignore[method-assign]
    return endpoints.serverFromString(reactor, endpoint).listen(site)
