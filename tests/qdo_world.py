"""qdo workers in process on one ``task.Clock``: an in-memory ZooKeeper and the whole Queuey app in memory.

Each worker is a real :class:`qdo.coordinator.ZooKeeperCoordinator` with its own
:class:`qdo.testing.FakeZooKeeper` session; its job records every run (start
and end on the clock) so that tests can check the rules on what happened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from twisted.internet import defer, task

from qdo.config import WorkerConfig, parse_config
from qdo.coordinator import ZooKeeperCoordinator
from qdo.metrics import WorkerMetrics
from qdo.testing import FakeZooKeeper, FakeZooKeeperServer
from qdo.worker import Jobs, Message, dict_context, log_failure, reactor_job
from queuey.client import QueueyClient
from queuey.testing import MemoryQueuey

CONF = """
[qdo-worker]
job = qdo.worker:log_message
name = {name}
wait_interval = 0.2
max_wait_interval = 0.5
lag_interval = 0
{settings}
[partitions]
discover_interval = {discover_interval}
[queuey]
connection = http://queuey.test/v1/queuey
app_key = queuey-key
[zookeeper]
connection = fake:2181/qdo
group = g
party_wait = 0.5
max_party_wait = 2
session_timeout = {session_timeout}
"""


@dataclass
class Run:
    worker: str
    partition: str
    message_id: str
    start: float
    end: float | None = None


class CountedHTTP:
    """The in-memory Queuey's treq, counting the requests sent (method, URL) for tests to check."""

    def __init__(self, http: Any) -> None:
        self.http = http
        self.sent: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        self.sent.append((method, url))
        return self.http.request(method, url, **kwargs)


class World:
    """A clock, a ZooKeeper and a Queuey in memory, and the workers a test starts."""

    def __init__(self, job_seconds: float = 0.01) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_700_000_000)
        self.zookeeper = FakeZooKeeperServer(self.clock)
        self.memory = MemoryQueuey(clock=self.clock)
        self.http = CountedHTTP(self.memory.treq)
        self.client = QueueyClient(self.memory.url("/v1/queuey"), "queuey-key", reactor=self.clock,
                                   http=self.http)
        self.job_seconds = job_seconds
        self.runs: list[Run] = []
        self.workers: dict[str, ZooKeeperCoordinator] = {}

    def close(self) -> None:
        self.memory.close()

    # -- time ------------------------------------------------------------------------

    def settle(self) -> None:
        for _ in range(200):
            self.memory.treq.flush()
            self.zookeeper.settle()
            self.memory.treq.flush()
            if not any(c.getTime() <= self.clock.seconds() for c in self.clock.getDelayedCalls()):
                return

    def advance(self, seconds: float, step: float = 0.05) -> None:
        end = self.clock.seconds() + seconds
        self.settle()
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.settle()

    def wait(self, d: defer.Deferred[Any], limit: float = 60.0) -> Any:
        """Advance until ``d`` fires; its result (or its failure raised)."""
        results: list[Any] = []
        d.addBoth(results.append)
        waited = 0.0
        while not results and waited < limit:
            self.advance(0.05)
            waited += 0.05
        if not results:
            raise AssertionError(f"still waiting after {limit}s of clock time")
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def until(self, condition: Any, limit: float = 60.0, what: str = "the condition") -> None:
        waited = 0.0
        while not condition():
            if waited >= limit:
                raise AssertionError(f"{what}: not so after {limit}s of clock time")
            self.advance(0.05)
            waited += 0.05

    # -- Queuey ------------------------------------------------------------------------

    def queue(self, name: str, partitions: int) -> None:
        self.wait(self.client.create_queue(name, partitions=partitions))

    def post(self, queue: str, partitions: int, count: int) -> list[str]:
        messages = [{"body": f"m{i}", "partition": i % partitions + 1} for i in range(count)]
        ids: list[str] = []
        for start in range(0, count, 500):
            ids.extend(m["key"] for m in self.wait(self.client.post_messages(queue, messages[start:start + 500])))
        return ids

    # -- workers -----------------------------------------------------------------------

    def config(self, name: str, session_timeout: float = 10, discover_interval: float = 30,
               **settings: Any) -> WorkerConfig:
        """``settings``: more ``[qdo-worker]`` keys."""
        return parse_config(CONF.format(name=name, session_timeout=session_timeout,
                                        discover_interval=discover_interval,
                                        settings="\n".join(f"{k} = {v}" for k, v in settings.items())))

    def jobs(self, name: str) -> Jobs:
        @reactor_job
        def job(message: Message, context: Any) -> defer.Deferred[None]:
            run = Run(name, f"{message.queue}-{message.partition}", message.message_id, self.clock.seconds())
            self.runs.append(run)

            def ended(_: Any) -> None:
                run.end = self.clock.seconds()
            return task.deferLater(self.clock, self.job_seconds, ended, None)

        jobs = Jobs(job, dict_context, log_failure, self.client, self.clock, 1)
        jobs.start()
        return jobs

    def worker(self, name: str, session_timeout: float = 10, start: bool = True,
               **settings: Any) -> ZooKeeperCoordinator:
        zk = FakeZooKeeper(self.zookeeper, session_timeout)
        config = self.config(name, session_timeout, **settings)
        assert not config.warnings, config.warnings
        worker = ZooKeeperCoordinator(config, self.client, self.jobs(name), self.clock, zk=zk, metrics=WorkerMetrics())
        self.workers[name] = worker
        if start:
            defer.ensureDeferred(worker.start())
        return worker

    def stop(self, name: str) -> None:
        self.wait(defer.ensureDeferred(self.workers.pop(name).stop()))

    # -- what happened -------------------------------------------------------------------

    def done(self) -> set[str]:
        return {r.message_id for r in self.runs if r.end is not None}

    def owners(self) -> dict[str, str]:
        """partition name -> worker, from the owner nodes."""
        found = {}
        for path, node in self.zookeeper.nodes.items():
            if "/owners/" in path and node.owner:
                _, queue, number = path.split("/owners/")[1].split("/")
                found[f"{queue}-{number}"] = orjson.loads(node.data)["worker"]
        return found

    def overlaps(self) -> list[tuple[Run, Run]]:
        """Runs of one partition by two workers at the same time."""
        found = []
        by_partition: dict[str, list[Run]] = {}
        for run in self.runs:
            by_partition.setdefault(run.partition, []).append(run)
        for runs in by_partition.values():
            runs.sort(key=lambda r: r.start)
            for a, b in zip(runs, runs[1:]):
                if a.worker != b.worker and (a.end is None or b.start < a.end):
                    found.append((a, b))
        return found
