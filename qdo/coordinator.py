"""Who works on which partition: ZooKeeper coordination (``automatic``) or none (``manual``).

ZooKeeper layout, under ``<root>/<group>`` (root from the connection's chroot,
default ``/qdo``)::

    workers/<worker-id>                  ephemeral: membership, stable ids
    leader/n_<sequence>                  ephemeral sequential: the lowest leads
    assignment                           persistent: {generation, assignment: {app/queue/n: worker}}
    owners/<app>/<queue>/<n>             ephemeral: who reads that partition now
    offsets/<app>/<queue>/<n>            persistent: {offset: last processed id, worker, token}

The rules (see docs/qdo.rst):

1. A worker joins with an ephemeral node named by its stable id. If that node
   exists and its ``ephemeralOwner`` is not this session, it belongs to an
   earlier (dead) session of the same id or to a live rival: either way the
   worker waits, by watch, for it to go; only a node of its own session (a
   create retried after a connection loss) is taken as its own.
2. The leader computes the assignment with :func:`qdo.assign.assign` after a
   quiet period (``party_wait``, at most ``max_party_wait`` in all), and
   publishes it with a versioned write. Every worker hands over only what it
   loses and claims what it gains.
3. A worker processes a partition only while it holds its owner node; no new
   message starts while the session is suspended (or not heard of lately: a
   lease of half the session timeout); when the session is lost every
   partition is dropped without committing, and the worker joins again.
4. Offsets are written after the job, with the node's version: a claim first
   rewrites the offset node (fencing every earlier owner), so a worker that
   lost a partition can never overwrite the new owner's offset. Offsets never
   go backwards.
5. The leader polls Queuey for queues and partitions (Queuey has no watch).
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Iterable

import orjson
from kazoo.exceptions import BadVersionError, ConnectionLoss, NodeExistsError, NoNodeError
from twisted.internet import defer, task
from twisted.logger import Logger

from qdo.assign import Partition, assign, moved
from qdo.config import WorkerConfig
from qdo.worker import FileOffsets, Fenced, Gate, Jobs, PartitionRunner, id_key
from qdo.zk import CONNECTED, LOST, SUSPENDED, SessionLost, ZooKeeper

log = Logger()


async def discover(client: Any, config: WorkerConfig) -> set[Partition]:
    """The partitions to work on: the configured ``ids``, or every partition of every queue."""
    if config.ids:
        return set(config.ids)
    queues = await client.all_queues(details=True)
    return {Partition(config.application, q["queue_name"], n)
            for q in queues if q["queue_name"] not in config.exclude
            for n in range(1, int(q.get("partitions", 1)) + 1)}


def names(partitions: Iterable[Partition]) -> str:
    listed = sorted(partitions)
    return " ".join(p.name for p in listed) if listed else "-"


class _EpochOver(Exception):
    """The session this work belonged to is gone (or the worker stops)."""


class _Abandon(Exception):
    pass


@dataclass(eq=False)
class Slot:
    partition: Partition
    desired: bool = False
    state: str = "idle"  # idle, claiming, running, releasing
    task: defer.Deferred[Any] | None = None
    wait: defer.Deferred[Any] | None = None
    runner: PartitionRunner | None = None
    offset: str | None = None
    version: int = -1
    epoch: int = -1
    extra: dict[str, Any] = field(default_factory=dict)


class Base:
    """What both policies share: runners, the semaphore, lag logging."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any) -> None:
        self.config = config
        self.client = client
        self.jobs = jobs
        self.reactor = reactor
        self.me = config.name
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

    def log_lag(self) -> None:
        for runner in sorted(self.runners(), key=lambda r: r.partition):
            waiting, age = runner.lag()
            log.info("lag {partition}: {waiting} fetched and not done, oldest {age:.1f}s old; "
                     "offset {offset}; {processed} done here",
                     partition=runner.partition.name, waiting=waiting, age=age, offset=runner.offset or "-",
                     processed=runner.processed)

    def make_runner(self, partition: Partition, offset: str | None, commit: Callable[..., Any], gate: Gate,
                    on_exit: Callable[[PartitionRunner, str], None] | None = None) -> PartitionRunner:
        config = self.config
        return PartitionRunner(partition, offset, client=self.client, jobs=self.jobs, commit=commit, gate=gate,
                               semaphore=self.semaphore, clock=self.reactor, batch_size=config.batch_size,
                               wait_interval=config.wait_interval, max_wait_interval=config.max_wait_interval,
                               long_poll=config.long_poll, on_exit=on_exit)


class ManualCoordinator(Base):
    """``policy = manual``: this one worker takes the configured (or all) partitions; offsets in a file."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any,
                 offsets: FileOffsets | None = None) -> None:
        super().__init__(config, client, jobs, reactor)
        self.offsets = offsets or FileOffsets(config.offsets_file, reactor)
        self.gate = Gate()
        self._runners: dict[Partition, PartitionRunner] = {}
        self.stopping = False

    def runners(self) -> list[PartitionRunner]:
        return list(self._runners.values())

    async def start(self) -> None:
        await self.offsets.load()
        log.info("Worker {me}: manual policy, offsets in {path}", me=self.me, path=self.offsets.path)
        self._every(self.config.discover_interval, self._discover)
        if self.config.lag_interval:
            self._every(self.config.lag_interval, self.log_lag, now=False)

    async def _discover_once(self) -> None:
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

    def _discover(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._discover_once())

    async def stop(self) -> None:
        self.stopping = True
        self._stop_loops()
        await defer.gatherResults([r.stop() for r in self._runners.values()], consumeErrors=True)
        log.info("Worker {me} stopped; offsets of {n} partitions in {path}", me=self.me,
                 n=len(self.offsets.offsets), path=self.offsets.path)


class ZooKeeperCoordinator(Base):
    """``policy = automatic``: membership, leader, assignment, ownership and offsets in ZooKeeper."""

    def __init__(self, config: WorkerConfig, client: Any, jobs: Jobs, reactor: Any,
                 zk: ZooKeeper | None = None) -> None:
        super().__init__(config, client, jobs, reactor)
        zc = config.zookeeper
        self.zk = zk or ZooKeeper(zc.hosts, reactor, zc.session_timeout)
        self.base = f"{zc.root.rstrip('/')}/{zc.group}"
        self.token = uuid.uuid4().hex
        self.host = socket.gethostname()
        self.slots: dict[Partition, Slot] = {}
        self.epoch = 0
        self.joined = False
        self.joining = False
        self.stopping = False
        self.last_ok = -math.inf
        self.lease = zc.session_timeout / 2
        self.gate = Gate(self.may_work)
        self.generation = 0
        self.election_node: str | None = None
        self.is_leader = False
        self.members: set[str] = set()
        self.partitions: set[Partition] | None = None
        self._scope: list[defer.Deferred[Any]] = []
        self._leader_loop: task.LoopingCall | None = None
        self._party_started: float | None = None
        self._party_timer: Any = None
        self._rebalancing = False
        self._rebalance_again = False
        self.joined_event: defer.Deferred[None] | None = None
        self.on_assignment: Callable[[dict[str, Any]], None] | None = None  # for tests

    # -- paths ----------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return "/".join((self.base,) + parts)

    def owner_path(self, partition: Partition) -> str:
        return self.path("owners", partition.key)

    def offset_path(self, partition: Partition) -> str:
        return self.path("offsets", partition.key)

    # -- the gate ---------------------------------------------------------------

    def may_work(self) -> bool:
        return (self.zk.state == CONNECTED and self.joined and not self.stopping
                and self.reactor.seconds() - self.last_ok < self.lease)

    def _heard(self) -> None:
        self.last_ok = self.reactor.seconds()
        self.gate.changed()

    async def _beat(self) -> None:
        if self.zk.state != CONNECTED:
            return
        try:
            await self.zk.call("exists", "/")
        except Exception:
            return
        self._heard()

    # -- scope of one session ------------------------------------------------------

    def _check(self, epoch: int) -> None:
        if epoch != self.epoch or self.stopping and epoch >= 0:
            raise _EpochOver()

    async def _tracked(self, d: defer.Deferred[Any], epoch: int) -> Any:
        self._check(epoch)
        self._scope.append(d)
        try:
            return await d
        except defer.CancelledError:
            self._check(epoch)
            raise
        finally:
            if d in self._scope:
                self._scope.remove(d)

    def _spawn(self, coroutine: Any, what: str) -> defer.Deferred[Any]:
        d = defer.ensureDeferred(coroutine)

        def failed(failure: Any) -> None:
            if failure.check(_EpochOver, SessionLost, defer.CancelledError, _Abandon):
                return None
            log.failure("qdo: {what} failed", failure, what=what)
            return None

        return d.addErrback(failed)

    def _watcher(self) -> tuple[defer.Deferred[Any], Callable[[Any], None]]:
        d: defer.Deferred[Any] = defer.Deferred()

        def fire(event: Any) -> None:
            if not d.called:
                d.callback(event)
        return d, fire

    async def _acquire_ephemeral(self, path: str, data: Callable[[], bytes], epoch: int, *,
                                 held: Callable[[bytes, Any], None],
                                 wait: Callable[[defer.Deferred[Any]], Awaitable[Any]] | None = None,
                                 wanted: Callable[[], bool] = lambda: True,
                                 makepath: bool = False) -> None:
        """Create the ephemeral node ``path`` (rules 1 and 3), waiting by watch while another session holds it.

        A node that exists is ours only if its ``ephemeralOwner`` is this session (a create
        retried after a connection loss); any other holder is reported to ``held(value, stat)``
        and then waited out: ``wait(gone)`` awaits the watch that fires when the node changes or
        goes (by default tracked in this epoch's scope), and the create is tried again. Raises
        ``_EpochOver`` once ``epoch`` is over, ``_Abandon`` once ``wanted()`` says no.
        """
        while True:
            self._check(epoch)
            if not wanted():
                raise _Abandon()
            try:
                await self.zk.call("create", path, data(), ephemeral=True, makepath=makepath)
                return
            except ConnectionLoss:
                await self.zk.wait_connected()
                continue
            except NodeExistsError:
                pass
            gone, watcher = self._watcher()
            try:
                value, stat = await self.zk.retrying("get", path, watch=watcher)
            except NoNodeError:
                continue
            if stat.ephemeralOwner == self.zk.session_id:
                return  # ours: a create that was retried after a connection loss
            held(value, stat)
            if wait is None:
                await self._tracked(gone, epoch)
            else:
                await wait(gone)

    # -- life -----------------------------------------------------------------------

    def runners(self) -> list[PartitionRunner]:
        return [s.runner for s in self.slots.values() if s.runner is not None]

    async def start(self) -> None:
        self.zk.add_listener(self._on_state)
        log.info("Worker {me}: connecting to ZooKeeper {hosts}, group {base}", me=self.me, hosts=self.zk.hosts,
                 base=self.base)
        self.joined_event = defer.Deferred()
        await self.zk.start()
        self._heard()
        self._every(max(0.2, self.config.zookeeper.session_timeout / 4), lambda: defer.ensureDeferred(self._beat()))
        if self.config.lag_interval:
            self._every(self.config.lag_interval, self.log_lag, now=False)
        self._start_join()
        await self.joined_event

    def _start_join(self) -> None:
        if self.joined or self.joining or self.stopping:
            return
        self.joining = True
        epoch = self.epoch

        def done(result: Any) -> Any:
            self.joining = False
            return result
        self._spawn(self._join(epoch), "joining").addBoth(done)

    def _on_state(self, state: str, session: int | None) -> None:
        if self.stopping:
            return
        if state == CONNECTED:
            self._heard()
            log.info("ZooKeeper session 0x{session:x} connected", session=session or 0)
            self._start_join()
        elif state == SUSPENDED:
            log.warn("ZooKeeper connection suspended: no new messages until it is back")
        elif state == LOST:
            self._lose_session()
        self.gate.changed()

    def _lose_session(self) -> None:
        dropped = sorted(p for p, s in self.slots.items() if s.state != "idle")
        log.error("ZooKeeper session lost: dropping {n} partitions without committing ({partitions}); "
                  "joining again", n=len(dropped), partitions=names(dropped))
        self.epoch += 1
        self.joined = False
        self._stop_leading()
        for slot in self.slots.values():
            if slot.runner is not None:
                slot.runner.drop()
                slot.runner = None
            slot.state = "idle"
        self.slots.clear()
        scope, self._scope = self._scope, []
        for d in scope:
            if not d.called:
                d.cancel()
        self.generation = 0
        self.election_node = None

    async def _join(self, epoch: int) -> None:
        for sub in ("workers", "leader", "owners", "offsets"):
            await self.zk.retrying("ensure_path", self.path(sub))
        self._check(epoch)
        await self._register(epoch)
        await self._elect(epoch)
        self._check(epoch)
        self.joined = True
        self._heard()
        log.info("Worker {me} joined group {base} (session 0x{session:x})", me=self.me, base=self.base,
                 session=self.zk.session_id or 0)
        self._spawn(self._watch_assignment(epoch), "watching the assignment")
        if self.joined_event is not None and not self.joined_event.called:
            self.joined_event.callback(None)

    # -- rule 1: membership -----------------------------------------------------------

    def _member_data(self) -> bytes:
        return orjson.dumps({"worker": self.me, "host": self.host, "pid": os.getpid(), "token": self.token,
                             "started": time.time()})

    async def _register(self, epoch: int) -> None:
        warned = False

        def held(value: bytes, stat: Any) -> None:
            """Say once whose the node looks like: an earlier session of this worker, or a live rival."""
            nonlocal warned
            if warned:
                return
            warned = True
            other = _loads(value)
            if other.get("token") == self.token or (other.get("host") == self.host and not _alive(other.get("pid"))):
                log.warn("Worker id {me} is still held by an earlier session (0x{owner:x}) of this worker; "
                         "waiting for it to expire", me=self.me, owner=stat.ephemeralOwner)
            else:
                log.error("Worker id {me} is held by another live worker (host {host}, pid {pid}, session "
                          "0x{owner:x}); waiting until it leaves: give each worker its own name",
                          me=self.me, host=other.get("host"), pid=other.get("pid"), owner=stat.ephemeralOwner)

        await self._acquire_ephemeral(self.path("workers", self.me), self._member_data, epoch, held=held)

    # -- the leader ----------------------------------------------------------------------

    async def _elect(self, epoch: int) -> None:
        prefix = self.path("leader", "n_")
        try:
            created = await self.zk.call("create", prefix, self.token.encode(), ephemeral=True, sequence=True)
            self.election_node = created.rsplit("/", 1)[1]
        except ConnectionLoss:
            await self.zk.wait_connected()
            self.election_node = await self._find_election_node()
            if self.election_node is None:
                return await self._elect(epoch)
        self._spawn(self._watch_election(epoch), "watching the election")

    async def _find_election_node(self) -> str | None:
        """After a create lost in a connection drop: our own node(s), lowest kept."""
        ours = []
        for child in await self.zk.retrying("get_children", self.path("leader")):
            try:
                value, stat = await self.zk.retrying("get", self.path("leader", child))
            except NoNodeError:
                continue
            if stat.ephemeralOwner == self.zk.session_id and value == self.token.encode():
                ours.append(child)
        ours.sort()
        for extra in ours[1:]:
            try:
                await self.zk.retrying("delete", self.path("leader", extra))
            except NoNodeError:
                pass
        return ours[0] if ours else None

    async def _watch_election(self, epoch: int) -> None:
        while True:
            self._check(epoch)
            changed, watcher = self._watcher()
            children = await self.zk.retrying("get_children", self.path("leader"), watch=watcher)
            self._check(epoch)
            children.sort(key=lambda c: c.rsplit("_", 1)[-1])
            leading = bool(children) and children[0] == self.election_node
            if leading and not self.is_leader:
                self._start_leading(epoch)
            elif not leading and self.is_leader:
                self._stop_leading()
            await self._tracked(changed, epoch)

    def _start_leading(self, epoch: int) -> None:
        log.info("Worker {me} leads group {base}", me=self.me, base=self.base)
        self.is_leader = True
        self.partitions = None
        self._spawn(self._watch_members(epoch), "watching the members")
        loop = task.LoopingCall(lambda: self._spawn(self._discover(epoch), "discovering partitions"))
        loop.clock = self.reactor
        loop.start(self.config.discover_interval, now=True)
        self._leader_loop = loop

    def _stop_leading(self) -> None:
        if self.is_leader:
            log.info("Worker {me} no longer leads", me=self.me)
        self.is_leader = False
        if self._leader_loop is not None and self._leader_loop.running:
            self._leader_loop.stop()
        self._leader_loop = None
        if self._party_timer is not None and self._party_timer.active():
            self._party_timer.cancel()
        self._party_timer = None
        self._party_started = None

    async def _watch_members(self, epoch: int) -> None:
        while self.is_leader:
            self._check(epoch)
            changed, watcher = self._watcher()
            members = set(await self.zk.retrying("get_children", self.path("workers"), watch=watcher))
            self._check(epoch)
            if members != self.members:
                joined, left = members - self.members, self.members - members
                if joined:
                    log.info("Workers joined: {workers}", workers=" ".join(sorted(joined)))
                if left:
                    log.info("Workers left: {workers}", workers=" ".join(sorted(left)))
                self.members = members
                self._schedule_rebalance(epoch, "membership")
            await self._tracked(changed, epoch)

    async def _discover(self, epoch: int) -> None:
        if not self.is_leader:
            return
        try:
            partitions = await discover(self.client, self.config)
        except Exception as e:
            log.warn("Could not list the queues of {app}: {error}", app=self.config.application, error=str(e))
            return
        self._check(epoch)
        if partitions != self.partitions:
            if self.partitions is not None:
                new, gone = partitions - self.partitions, self.partitions - partitions
                if new:
                    log.info("New partitions: {partitions}", partitions=names(new))
                if gone:
                    log.info("Partitions gone: {partitions}", partitions=names(gone))
            self.partitions = partitions
            self._schedule_rebalance(epoch, "partitions")

    def _schedule_rebalance(self, epoch: int, why: str) -> None:
        """After a quiet period of party_wait, but never later than max_party_wait after the first change."""
        zc = self.config.zookeeper
        now = self.reactor.seconds()
        if self._party_started is None:
            self._party_started = now
        delay = max(0.0, min(zc.party_wait, self._party_started + zc.max_party_wait - now))
        if self._party_timer is not None and self._party_timer.active():
            self._party_timer.cancel()

        def fire() -> None:
            self._party_timer = None
            self._party_started = None
            self._spawn(self._rebalance(epoch), "rebalancing")

        self._party_timer = self.reactor.callLater(delay, fire)

    async def _rebalance(self, epoch: int) -> None:
        if self._rebalancing:
            self._rebalance_again = True
            return
        self._rebalancing = True
        try:
            while True:
                self._rebalance_again = False
                await self._publish(epoch)
                if not self._rebalance_again:
                    return
        finally:
            self._rebalancing = False

    async def _publish(self, epoch: int) -> None:
        if not self.is_leader or self.partitions is None:
            return
        path = self.path("assignment")
        while True:
            self._check(epoch)
            workers = sorted(await self.zk.retrying("get_children", self.path("workers")))
            try:
                value, stat = await self.zk.retrying("get", path)
                document: dict[str, Any] | None = _loads(value)
                version: int | None = stat.version
            except NoNodeError:
                document, version = None, None
            previous = {Partition.from_key(k): w for k, w in (document or {}).get("assignment", {}).items()}
            result = assign(self.partitions, workers, previous)
            if document is not None and result == previous:
                return
            generation = int((document or {}).get("generation", 0)) + 1
            payload = orjson.dumps({"generation": generation, "leader": self.me, "workers": workers,
                                    "assignment": {p.key: w for p, w in sorted(result.items())}})
            self._check(epoch)
            if not self.is_leader:
                return
            try:
                if version is None:
                    await self.zk.call("create", path, payload)
                else:
                    await self.zk.call("set", path, payload, version=version)
            except (NodeExistsError, BadVersionError):
                continue  # someone else wrote meanwhile: start again from theirs
            except ConnectionLoss:
                await self.zk.wait_connected()
                continue  # the write may have gone through: re-read and compare
            changes = moved(previous, result)
            counts = {w: sum(1 for x in result.values() if x == w) for w in workers}
            log.info("Assignment generation {generation}: {n} partitions over {w} workers ({counts}); "
                     "{m} moved{detail}", generation=generation, n=len(result), w=len(workers),
                     counts=", ".join(f"{w}={c}" for w, c in counts.items()), m=len(changes),
                     detail=(": " + ", ".join(f"{p.name} {a}->{b}" for p, (a, b) in sorted(changes.items())))
                     if changes else "")
            return

    # -- rule 2 and 3: the assignment, claims and hand-overs ---------------------------------

    async def _watch_assignment(self, epoch: int) -> None:
        path = self.path("assignment")
        while True:
            self._check(epoch)
            changed, watcher = self._watcher()
            try:
                value, stat = await self.zk.retrying("get", path, watch=watcher)
            except NoNodeError:
                if await self.zk.retrying("exists", path, watch=watcher) is not None:
                    continue
                await self._tracked(changed, epoch)
                continue
            self._check(epoch)
            self._apply(_loads(value), epoch)
            await self._tracked(changed, epoch)

    def _apply(self, document: dict[str, Any], epoch: int) -> None:
        generation = int(document.get("generation", 0))
        if generation <= self.generation:
            return
        self.generation = generation
        mine = {Partition.from_key(k) for k, w in document.get("assignment", {}).items() if w == self.me}
        current = {p for p, s in self.slots.items() if s.desired}
        gained, lost = mine - current, current - mine
        log.info("Assignment generation {generation}: {me} keeps {kept}, gains [{gained}], hands over [{lost}]",
                 generation=generation, me=self.me, kept=len(mine & current), gained=names(gained),
                 lost=names(lost))
        if self.on_assignment is not None:
            self.on_assignment(document)
        for partition in lost:
            self._want(partition, False, epoch)
        for partition in gained:
            self._want(partition, True, epoch)

    def _want(self, partition: Partition, wanted: bool, epoch: int) -> None:
        slot = self.slots.get(partition)
        if slot is None:
            slot = self.slots[partition] = Slot(partition, epoch=epoch)
        slot.desired = wanted
        if not wanted and slot.wait is not None and not slot.wait.called:
            slot.wait.cancel()
        if slot.task is None:
            slot.task = self._spawn(self._reconcile(slot, epoch), f"managing {partition.name}")

            def finished(result: Any) -> Any:
                slot.task = None
                return result
            slot.task.addBoth(finished)

    async def _reconcile(self, slot: Slot, epoch: int) -> None:
        while True:
            self._check(epoch)
            if slot.desired and slot.state == "idle":
                await self._claim(slot, epoch)
            elif not slot.desired and slot.state == "running":
                await self._release(slot, epoch)
            else:
                break
        if not slot.desired and slot.state == "idle" and self.slots.get(slot.partition) is slot:
            del self.slots[slot.partition]

    async def _claim(self, slot: Slot, epoch: int) -> None:
        partition = slot.partition
        path = self.owner_path(partition)
        data = orjson.dumps({"worker": self.me, "token": self.token})
        slot.state = "claiming"
        waited_for = None

        def held(value: bytes, stat: Any) -> None:
            """Say whom it waits for, again only when that changes."""
            nonlocal waited_for
            holder = _loads(value).get("worker")
            if holder != waited_for:
                waited_for = holder
                log.info("{partition}: waiting for {holder} to hand it over", partition=partition.name,
                         holder=holder)

        async def wait(gone: defer.Deferred[Any]) -> None:
            """Cancellable through slot.wait: losing the partition meanwhile abandons the claim."""
            slot.wait = gone
            try:
                await self._tracked(gone, epoch)
            except defer.CancelledError:
                raise _Abandon() from None
            finally:
                slot.wait = None

        try:
            await self._acquire_ephemeral(path, lambda: data, epoch, held=held, wait=wait,
                                          wanted=lambda: slot.desired, makepath=True)
            offset, version = await self._fence(partition, epoch)
            self._check(epoch)
            if not slot.desired:
                raise _Abandon()
        except _Abandon:
            await self._delete_own(path)
            slot.state = "idle"
            return
        except BaseException:
            slot.state = "idle"
            raise
        slot.offset, slot.version = offset, version
        slot.runner = self.make_runner(partition, offset, lambda p, mid: defer.ensureDeferred(
            self._commit(slot, mid, epoch)), self.gate, on_exit=lambda r, why: self._runner_exit(slot, r, why, epoch))
        slot.state = "running"
        log.info("{partition}: claimed, resuming after {offset}", partition=partition.name, offset=offset or "the start")
        slot.runner.start()

    async def _delete_own(self, path: str) -> None:
        """Delete an ephemeral node if this session owns it."""
        try:
            value, stat = await self.zk.retrying("get", path)
            if stat.ephemeralOwner == self.zk.session_id:
                await self.zk.retrying("delete", path, version=stat.version)
        except (NoNodeError, BadVersionError, SessionLost):
            pass

    async def _release(self, slot: Slot, epoch: int) -> None:
        slot.state = "releasing"
        runner = slot.runner
        if runner is not None:
            await runner.stop()
        slot.runner = None
        self._check(epoch)
        await self._delete_own(self.owner_path(slot.partition))
        slot.state = "idle"
        log.info("{partition}: handed over at offset {offset}", partition=slot.partition.name,
                 offset=slot.offset or "-")

    def _runner_exit(self, slot: Slot, runner: PartitionRunner, why: str, epoch: int) -> None:
        if slot.runner is not runner or slot.state != "running" or why in ("stopped", "dropped"):
            return
        # Fenced or failed on its own: give the partition up, then maybe claim it again later.
        slot.runner = None
        slot.state = "releasing"

        async def give_up() -> None:
            await self._delete_own(self.owner_path(slot.partition))
            slot.state = "idle"
            await self._tracked(task.deferLater(self.reactor, self.config.wait_interval, lambda: None), epoch)
            if slot.desired and slot.task is None and self.slots.get(slot.partition) is slot:
                self._want(slot.partition, True, epoch)
        self._spawn(give_up(), f"giving up {slot.partition.name}")

    # -- rule 4: offsets ----------------------------------------------------------------------

    async def _fence(self, partition: Partition, epoch: int) -> tuple[str | None, int]:
        """Read the offset and rewrite it with our token: from now on only our version may write."""
        path = self.offset_path(partition)
        while True:
            self._check(epoch)
            try:
                value, stat = await self.zk.retrying("get", path)
            except NoNodeError:
                try:
                    await self.zk.call("create", path, self._offset_data(None), makepath=True)
                    return None, 0
                except NodeExistsError:
                    continue
                except ConnectionLoss:
                    await self.zk.wait_connected()
                    continue
            offset = _loads(value).get("offset")
            try:
                new = await self.zk.call("set", path, self._offset_data(offset), version=stat.version)
                return offset, new.version
            except BadVersionError:
                continue
            except ConnectionLoss:
                await self.zk.wait_connected()
                continue

    def _offset_data(self, offset: str | None) -> bytes:
        return orjson.dumps({"offset": offset, "worker": self.me, "token": self.token, "at": time.time()})

    async def _commit(self, slot: Slot, message_id: str, epoch: int) -> None:
        if id_key(message_id) <= id_key(slot.offset):
            return  # never backwards
        path = self.offset_path(slot.partition)
        data = self._offset_data(message_id)
        while True:
            if epoch != self.epoch:
                raise SessionLost("the session of this partition is gone")
            try:
                stat = await self.zk.call("set", path, data, version=slot.version)
            except ConnectionLoss:
                await self.zk.wait_connected()
                continue  # the write may have gone through: a BadVersion below tells
            except BadVersionError:
                try:
                    value, stat = await self.zk.retrying("get", path)
                except NoNodeError:
                    raise Fenced("its offset node is gone") from None
                written = _loads(value)
                if written.get("token") == self.token and written.get("offset") == message_id:
                    slot.version, slot.offset = stat.version, message_id
                    return
                raise Fenced(f"offset written by {written.get('worker')}") from None
            except NoNodeError:
                raise Fenced("its offset node is gone") from None
            slot.version, slot.offset = stat.version, message_id
            self._heard()
            return

    # -- leaving ---------------------------------------------------------------------------------

    async def stop(self, timeout: float | None = None) -> None:
        """Finish the messages in hand, commit, release every partition, leave the group."""
        timeout = self.config.zookeeper.session_timeout + 10 if timeout is None else timeout
        epoch = self.epoch
        self._stop_leading()
        self._stop_loops()
        for partition, slot in list(self.slots.items()):
            slot.desired = False
            if slot.wait is not None and not slot.wait.called:
                slot.wait.cancel()
        work = [defer.ensureDeferred(self._release(s, epoch)) for s in list(self.slots.values())
                if s.state == "running"]
        held = sorted(s.partition for s in self.slots.values() if s.state == "running")
        log.info("Worker {me} stopping: handing over {partitions}", me=self.me, partitions=names(held))
        everything = defer.gatherResults(work, consumeErrors=True)
        everything.addTimeout(timeout, self.reactor)
        try:
            await everything
        except Exception as e:
            log.warn("Not every partition was handed over cleanly: {error}", error=str(e))
        self.stopping = True
        self.gate.changed()
        for slot in self.slots.values():
            if slot.runner is not None:
                slot.runner.drop()
        try:
            if self.zk.state == CONNECTED:
                await self._delete_own(self.path("workers", self.me))
        except Exception:
            pass
        for d in list(self._scope):
            if not d.called:
                d.cancel()
        await self.zk.stop()
        log.info("Worker {me} left group {base}", me=self.me, base=self.base)


def _loads(value: bytes | None) -> dict[str, Any]:
    if not value:
        return {}
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def _alive(pid: Any) -> bool:
    """Whether a process of this host with that pid runs (a zombie does not)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
