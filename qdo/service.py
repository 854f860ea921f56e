"""The qdo worker as a Twisted service (used by the ``qdo`` console script and ``twistd qdo``)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from qdo import metrics as worker_metrics
from qdo.config import ConfigError, WorkerConfig, resolve
from qdo.coordinator import ManualCoordinator, ZooKeeperCoordinator
from qdo.offsets import OffsetsDamaged
from qdo.worker import Jobs
from queuey.client import QueueyClient

log = Logger()


def make_jobs(config: WorkerConfig, client: Any, reactor: Any) -> Jobs:
    return Jobs(resolve(config.job), resolve(config.job_context, group=None),
                resolve(config.job_failure, group=None), client, reactor, config.job_threads)


class QdoService(service.Service):
    """Starts the worker once the reactor runs; at shutdown hands everything over and leaves.

    ``failed`` fires (with the failure) if the worker cannot start; the
    console script then exits non-zero.
    """

    def __init__(self, config: WorkerConfig, reactor: Any, client: Any = None, zk: Any = None) -> None:
        self.config = config
        self.reactor = reactor
        self.client = client or QueueyClient(list(config.queuey_connection), config.app_key, reactor=reactor,
                                             application=config.application, timeout=config.queuey_timeout)
        self.jobs = make_jobs(config, self.client, reactor)
        self.metrics = worker_metrics.WorkerMetrics()
        if config.policy == "manual":
            self.coordinator: Any = ManualCoordinator(config, self.client, self.jobs, reactor, metrics=self.metrics)
        else:
            self.coordinator = ZooKeeperCoordinator(config, self.client, self.jobs, reactor, zk=zk,
                                                    metrics=self.metrics)
        self.started: defer.Deferred[None] | None = None
        self.metrics_port: Any = None
        self.failed = False

    def startService(self) -> None:
        super().startService()
        for warning in self.config.warnings:
            log.warn("Configuration {source}: {warning}", source=self.config.source, warning=warning)
        self.jobs.start()
        self.started = defer.ensureDeferred(self._start())

        def failed(failure: Any) -> None:
            self.failed = True
            if failure.check(ConfigError, OffsetsDamaged):
                log.critical("qdo worker could not start: {error}", error=str(failure.value))
            else:
                log.failure("qdo worker could not start", failure)
            self.reactor.stop()
        self.started.addErrback(failed)

    async def _start(self) -> None:
        if self.config.metrics:
            try:
                self.metrics_port = await worker_metrics.listen(self.reactor, self.config.metrics, self.metrics,
                                                                self.coordinator.refresh_metrics)
            except Exception as e:
                raise ConfigError(f"[qdo-worker] metrics: cannot serve on {self.config.metrics!r}: {e}") from None
            log.info("Metrics on {endpoint}", endpoint=self.config.metrics)
        await self.coordinator.start()

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        if self.metrics_port is not None:
            yield self.metrics_port.stopListening()
        try:
            yield defer.ensureDeferred(self.coordinator.stop())
        except Exception:
            log.failure("qdo worker did not stop cleanly")
        yield self.client.close()
        self.jobs.stop()
