"""Who works on which partition: ZooKeeper coordination (``automatic``) or none (``manual``).

:class:`ZooKeeperCoordinator` composes the parts, each with one job (see docs/qdo.rst for the rules):

- :class:`qdo.session.Session`: the session's epochs, the lease, retries;
- :class:`qdo.membership.Membership`: rule 1, the worker's node in ``workers/``;
- :class:`qdo.leader.Leader`: rules 2 and 5, election, discovery, publishing;
- :class:`qdo.claims.Claims`: rule 3, claims and hand-overs of partitions;
- :class:`qdo.offsets.ZooKeeperOffsets`: rule 4, fenced offsets.

The ZooKeeper layout is in :mod:`qdo.layout`.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.logger import Logger

from qdo.assign import Partition
from qdo.claims import Claims
from qdo.config import ERROR_QUEUE, WorkerConfig
from qdo.layout import SECTIONS, GroupPaths
from qdo.leader import Leader, names
from qdo.membership import Membership
from qdo.metrics import WorkerMetrics
from qdo.offsets import FileOffsets, ZooKeeperOffsets
from qdo.runner import Commit, Gate, PartitionRunner
from qdo.session import EpochOver, Session
from qdo.worker import Jobs
from qdo.zk import CONNECTED, LOST, SUSPENDED, IZooKeeper, SessionLost, SessionState, ZooKeeper
from queuey.client import Forbidden, NotFound, Unauthorized

log = Logger()


async def discover(client: Any, config: WorkerConfig) -> set[Partition]:
    """The partitions to work on: the configured ``ids``; or every partition of the configured ``queues``;
    or every partition of every queue not excluded (the error queue always is: its messages are for
    ``qdo errors``, not for the job that failed on them)."""
    if config.ids:
        return set(config.ids)
    if config.queues:
        return await named_queues(client, config)
    queues = await client.all_queues(details=True)
    excluded = set(config.exclude) | {ERROR_QUEUE}
    return {Partition(config.application, q["queue_name"], n)
            for q in queues if q["queue_name"] not in excluded
            for n in range(1, int(q.get("partitions", 1)) + 1)}


async def named_queues(client: Any, config: WorkerConfig) -> set[Partition]:
    """Every partition of the configured queues, counted by the reader's info request: a principal's key
    may ask it of another application's queue that lists it, where listing needs the owner's key.  A
    queue this key may not read, or that does not exist (yet), has none; other failures fail the whole."""
    partitions = set()
    for name in config.queues:
        try:
            info = await client.queue_info(name)
        except (NotFound, Forbidden, Unauthorized) as e:
            log.warn("Queue {queue} is not worked on: {error}", queue=name, error=str(e))
            continue
        partitions.update(Partition(config.application, name, n) for n in range(1, int(info["partitions"]) + 1))
    return partitions


class Base:
    """What both policies share: runners, the semaphore, periodic tasks, lag logging and metrics."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any,
                 metrics: WorkerMetrics | None = None) -> None:
        self.config = config
        self.client = client
        self.jobs = jobs
        self.reactor = reactor
        self.me = config.name
        self.metrics = metrics or WorkerMetrics()
        self.semaphore = defer.DeferredSemaphore(config.concurrency)
        self._loops: list[task.LoopingCall] = []

    def _every(self, seconds: float, function: Callable[[], Any], now: bool = True) -> None:
        loop = task.LoopingCall(function)
        loop.clock = self.reactor
        loop.start(seconds, now=now).addErrback(lambda f: log.failure("periodic task failed", f))
        self._loops.append(loop)

    def _stop_loops(self) -> None:
        for loop in self._loops:
            if loop.running:
                loop.stop()
        self._loops = []

    def runners(self) -> list[PartitionRunner]:
        raise NotImplementedError

    def refresh_metrics(self) -> None:
        self.metrics.lag({r.partition: r.lag() for r in self.runners()})

    def log_lag(self) -> None:
        for runner in sorted(self.runners(), key=lambda r: r.partition):
            waiting, age = runner.lag()
            log.info("lag {partition}: {waiting} fetched and not done, oldest {age:.1f}s old; "
                     "offset {offset}; {processed} done here",
                     partition=runner.partition.name, waiting=waiting, age=age, offset=runner.offset or "-",
                     processed=runner.processed)

    def make_runner(self, partition: Partition, offset: str | None, commit: Commit, gate: Gate,
                    on_exit: Callable[[PartitionRunner, str], None] | None = None) -> PartitionRunner:
        config = self.config
        return PartitionRunner(partition, offset, client=self.client, jobs=self.jobs, commit=commit, gate=gate,
                               semaphore=self.semaphore, clock=self.reactor, batch_size=config.batch_size,
                               wait_interval=config.wait_interval, max_wait_interval=config.max_wait_interval,
                               long_poll=config.long_poll, commit_interval=config.commit_interval,
                               metrics=self.metrics, on_exit=on_exit)

    def _start_periodic(self) -> None:
        if self.config.lag_interval:
            self._every(self.config.lag_interval, self.log_lag, now=False)


class ManualCoordinator(Base):
    """``policy = manual``: this one worker takes the configured (or all) partitions; offsets in a file."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any,
                 offsets: FileOffsets | None = None, metrics: WorkerMetrics | None = None) -> None:
        super().__init__(config, client, jobs, reactor, metrics)
        self.offsets = offsets or FileOffsets(config.offsets_file, reactor)
        self.gate = Gate()
        self._runners: dict[Partition, PartitionRunner] = {}
        self.stopping = False

    def runners(self) -> list[PartitionRunner]:
        return list(self._runners.values())

    async def start(self) -> None:
        await self.offsets.load()
        log.info("Worker {me}: manual policy, offsets in {path}", me=self.me, path=self.offsets.path)
        self._every(self.config.discover_interval, lambda: defer.ensureDeferred(self._discover()))
        self._start_periodic()

    async def _discover(self) -> None:
        try:
            partitions = await discover(self.client, self.config)
        except Exception as e:
            log.warn("Could not list the queues: {error}", error=str(e))
            return
        new = partitions - set(self._runners)
        if new and not self.stopping:
            log.info("Working on {partitions}", partitions=names(new))
            for partition in sorted(new):
                runner = self.make_runner(partition, self.offsets.get(partition), self.offsets.commit, self.gate)
                self._runners[partition] = runner
                runner.start()

    async def stop(self) -> None:
        self.stopping = True
        self._stop_loops()
        await defer.gatherResults([r.stop() for r in self._runners.values()], consumeErrors=True)
        log.info("Worker {me} stopped; offsets of {n} partitions in {path}", me=self.me,
                 n=len(self.offsets.offsets), path=self.offsets.path)


class ZooKeeperCoordinator(Base):
    """``policy = automatic``: the parts of :mod:`qdo.coordinator`'s docstring, over one ZooKeeper session."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any,
                 zk: IZooKeeper | None = None, metrics: WorkerMetrics | None = None) -> None:
        super().__init__(config, client, jobs, reactor, metrics)
        zc = config.zookeeper
        self.zk: IZooKeeper = zk or ZooKeeper(zc.hosts, reactor, zc.session_timeout)
        self.paths = GroupPaths.of(zc.root, zc.group)
        self.token = uuid.uuid4().hex
        self.session = Session(self.zk, reactor, zc.session_timeout)
        self.membership = Membership(self.session, self.paths, self.me, self.token)
        self.leader = Leader(self.session, self.paths, self.membership, zc,
                             lambda: discover(self.client, self.config), config.discover_interval, reactor)
        self.offsets = ZooKeeperOffsets(self.session, self.paths, self.me, self.token)
        self.claims = Claims(self.session, self.paths, self.me, self.token, self.offsets, self._runner, reactor,
                             config.wait_interval, self.metrics)
        self.joining = False
        self.joined: defer.Deferred[None] = defer.Deferred()

    def runners(self) -> list[PartitionRunner]:
        return self.claims.runners()

    def _runner(self, partition: Partition, offset: str | None,
                on_exit: Callable[[PartitionRunner, str], None]) -> PartitionRunner:
        return self.make_runner(partition, offset, self.offsets.commit, self.session.gate, on_exit)

    async def start(self) -> None:
        """Connect, join the group; fires once joined (it keeps trying until then)."""
        self.zk.add_listener(self._on_state)
        log.info("Worker {me}: connecting to ZooKeeper {hosts}, group {base}", me=self.me, hosts=self.zk.hosts,
                 base=self.paths.base)
        self.metrics.session_state("suspended")
        await self.zk.start()
        self.session.heard()
        self._every(max(0.2, self.config.zookeeper.session_timeout / 4),
                    lambda: defer.ensureDeferred(self.session.beat()))
        self._start_periodic()
        self._join()
        await self.joined

    def _on_state(self, state: SessionState, session_id: int | None) -> None:
        if self.session.stopping:
            return
        self.metrics.session_state(state.value)
        if state == CONNECTED:
            self.session.heard()
            log.info("ZooKeeper session 0x{session:x} connected", session=session_id or 0)
            self._join()
        elif state == SUSPENDED:
            log.warn("ZooKeeper connection suspended: no new messages until it is back")
        elif state == LOST:
            self._lose_session()
        self.session.gate.changed()

    def _lose_session(self) -> None:
        dropped = self.claims.drop_all()
        log.error("ZooKeeper session lost: dropping {n} partitions without committing ({partitions}); "
                  "joining again", n=len(dropped), partitions=names(dropped))
        self.leader.forget()
        self.session.end_epoch()

    def _join(self) -> None:
        if self.session.joined or self.joining or self.session.stopping:
            return
        self.joining = True

        def over(result: Any) -> Any:
            self.joining = False
            return result
        self.session.spawn(self._join_epoch(self.session.epoch), "joining").addBoth(over)

    async def _join_epoch(self, epoch: int) -> None:
        while True:
            try:
                return await self._join_once(epoch)
            except (EpochOver, SessionLost, defer.CancelledError):
                raise
            except Exception as e:
                log.error("Joining group {base} failed ({error!r}); trying again in {s}s", base=self.paths.base,
                          error=e, s=self.config.wait_interval)
            await self.session.tracked(task.deferLater(self.reactor, self.config.wait_interval, lambda: None), epoch)

    async def _join_once(self, epoch: int) -> None:
        for section in SECTIONS:
            await self.session.retry(lambda: self.zk.ensure_path(self.paths.path(section)))
        self.session.check(epoch)
        await self.membership.register(epoch)
        await self.leader.elect(epoch)
        self.session.check(epoch)
        self.session.joined = True
        self.session.heard()
        log.info("Worker {me} joined group {base} (session 0x{session:x})", me=self.me, base=self.paths.base,
                 session=self.zk.session_id or 0)
        self.session.spawn(self.claims.follow(epoch), "following the assignment")
        if not self.joined.called:
            self.joined.callback(None)

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the messages in hand, commit, release every partition, leave the group."""
        timeout = self.config.zookeeper.session_timeout + 10 if timeout is None else timeout
        epoch = self.session.epoch
        self.leader.stop()
        self._stop_loops()
        log.info("Worker {me} stopping: handing over {partitions}", me=self.me, partitions=names(self.claims.held()))
        work = self.claims.release_all(epoch)
        everything = defer.gatherResults(work, consumeErrors=True)
        everything.addTimeout(timeout, self.reactor)
        try:
            await everything
        except Exception as e:
            log.warn("Not every partition was handed over cleanly: {error}", error=str(e))
        self.session.stopping = True
        for runner in self.claims.runners():
            runner.drop()
        if self.zk.state == CONNECTED:
            try:
                await self.membership.leave()
            except Exception:
                pass
        self.session.cancel_waits()
        await self.zk.stop()
        log.info("Worker {me} left group {base}", me=self.me, base=self.paths.base)
