"""The qdo worker as a Twisted service (used by the ``qdo`` console script and ``twistd qdo``)."""

from __future__ import annotations

from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger

from qdo.config import WorkerConfig, resolve
from qdo.coordinator import ManualCoordinator, ZooKeeperCoordinator
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
        if config.policy == "manual":
            self.coordinator: Any = ManualCoordinator(config, self.client, self.jobs, reactor)
        else:
            self.coordinator = ZooKeeperCoordinator(config, self.client, self.jobs, reactor, zk=zk)
        self.started: defer.Deferred[None] | None = None
        self.failed = False

    def startService(self) -> None:
        super().startService()
        for warning in self.config.warnings:
            log.warn("Configuration {source}: {warning}", source=self.config.source, warning=warning)
        self.jobs.start()
        self.started = defer.ensureDeferred(self.coordinator.start())

        def failed(failure: Any) -> None:
            self.failed = True
            log.failure("qdo worker could not start", failure)
            self.reactor.stop()
        self.started.addErrback(failed)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        super().stopService()
        try:
            yield defer.ensureDeferred(self.coordinator.stop())
        except Exception:
            log.failure("qdo worker did not stop cleanly")
        yield self.client.close()
        self.jobs.stop()
