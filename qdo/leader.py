"""Rules 2 and 5: the election, and what the leader does — watch members, poll partitions, publish assignments.

The lowest ``leader/n_<sequence>`` node leads. The leader computes the next
assignment with :func:`qdo.assign.assign` once membership or the partition set
changed and ``party_wait`` has passed quietly (at most ``max_party_wait`` after
the first change), and publishes it with a versioned write; a conflict makes it
start again from what is there. Queuey has no watch: partitions are polled
every ``discover_interval``.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable

import orjson
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from twisted.internet import task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qdo.assign import Partition, assign, moved
from qdo.config import ZooKeeperConfig
from qdo.layout import GroupPaths, assignment_of, loads
from qdo.membership import Membership
from qdo.session import Session

log = Logger()


def names(partitions: Any) -> str:
    listed = sorted(partitions)
    return " ".join(p.name for p in listed) if listed else "-"


class Leader:
    """This worker's part in the election, and the leader's work while it leads."""

    def __init__(self, session: Session, paths: GroupPaths, membership: Membership, settings: ZooKeeperConfig,
                 discover: Callable[[], Awaitable[set[Partition]]], discover_interval: float,
                 clock: IReactorTime) -> None:
        self.session = session
        self.zk = session.zk
        self.paths = paths
        self.membership = membership
        self.settings = settings
        self.discover = discover
        self.discover_interval = discover_interval
        self.clock = clock
        self.me = membership.worker
        self.token = membership.token
        self.node: str | None = None
        self.leading = False
        self.members: set[str] = set()
        self.partitions: set[Partition] | None = None
        self._loop: task.LoopingCall | None = None
        self._party_started: float | None = None
        self._party_timer: Any = None
        self._publishing = False
        self._again = False

    # -- the election ---------------------------------------------------------------

    async def elect(self, epoch: int) -> None:
        """Put this worker's sequential node in the election, then follow it."""
        prefix = self.paths.path("leader", "n_")
        created = await self.session.retry(
            lambda: self.zk.create(prefix, self.token.encode(), ephemeral=True, sequence=True),
            recover=self._find_own_node)
        self.node = created.rsplit("/", 1)[1]
        self.session.spawn(self._follow(epoch), "watching the election")

    async def _find_own_node(self) -> str | None:
        """After a create lost in a connection drop: our own node(s) of this session, the lowest kept."""
        ours = []
        for child in await self.session.retry(lambda: self.zk.children(self.paths.leader)):
            path = self.paths.path("leader", child)
            try:
                value, stat = await self.session.retry(lambda: self.zk.get(path))
            except NoNodeError:
                continue
            if stat.ephemeralOwner == self.zk.session_id and value == self.token.encode():
                ours.append(child)
        ours.sort()
        for extra in ours[1:]:
            await self.session.delete_own(self.paths.path("leader", extra))
        return self.paths.path("leader", ours[0]) if ours else None

    async def _follow(self, epoch: int) -> None:
        while True:
            self.session.check(epoch)
            changed, watch = self.session.watcher()
            children = await self.session.retry(lambda: self.zk.children(self.paths.leader, watch=watch))
            self.session.check(epoch)
            children.sort(key=lambda c: c.rsplit("_", 1)[-1])
            first = bool(children) and children[0] == self.node
            if first and not self.leading:
                self._lead(epoch)
            elif not first and self.leading:
                self.stop()
            await self.session.tracked(changed, epoch)

    def _lead(self, epoch: int) -> None:
        log.info("Worker {me} leads group {base}", me=self.me, base=self.paths.base)
        self.leading = True
        self.partitions = None
        self.members = set()
        self.session.spawn(self._watch_members(epoch), "watching the members")
        loop = task.LoopingCall(lambda: self.session.spawn(self._discover(epoch), "discovering partitions"))
        loop.clock = self.clock
        loop.start(self.discover_interval, now=True)
        self._loop = loop

    def stop(self) -> None:
        """Stop leading (the session is lost, another node is first, or the worker stops)."""
        if self.leading:
            log.info("Worker {me} no longer leads", me=self.me)
        self.leading = False
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._party_timer is not None and self._party_timer.active():
            self._party_timer.cancel()
        self._party_timer = self._party_started = None

    def forget(self) -> None:
        """The session is gone: so is our election node."""
        self.stop()
        self.node = None

    # -- what the leader watches --------------------------------------------------------

    async def _watch_members(self, epoch: int) -> None:
        while self.leading:
            self.session.check(epoch)
            changed, watch = self.session.watcher()
            members = await self.membership.members(watch)
            self.session.check(epoch)
            if members != self.members:
                joined, left = members - self.members, self.members - members
                if joined:
                    log.info("Workers joined: {workers}", workers=" ".join(sorted(joined)))
                if left:
                    log.info("Workers left: {workers}", workers=" ".join(sorted(left)))
                self.members = members
                self._schedule(epoch)
            await self.session.tracked(changed, epoch)

    async def _discover(self, epoch: int) -> None:
        if not self.leading:
            return
        try:
            partitions = await self.discover()
        except Exception as e:
            log.warn("Could not list the queues: {error}", error=str(e))
            return
        self.session.check(epoch)
        if partitions != self.partitions:
            if self.partitions is not None:
                new, gone = partitions - self.partitions, self.partitions - partitions
                if new:
                    log.info("New partitions: {partitions}", partitions=names(new))
                if gone:
                    log.info("Partitions gone: {partitions}", partitions=names(gone))
            self.partitions = partitions
            self._schedule(epoch)

    def _schedule(self, epoch: int) -> None:
        """Publish after a quiet period of party_wait, but never later than max_party_wait after the first change."""
        now = self.clock.seconds()
        if self._party_started is None:
            self._party_started = now
        delay = max(0.0, min(self.settings.party_wait, self._party_started + self.settings.max_party_wait - now))
        if self._party_timer is not None and self._party_timer.active():
            self._party_timer.cancel()

        def fire() -> None:
            self._party_timer = self._party_started = None
            self.session.spawn(self._publish_until_current(epoch), "rebalancing")

        self._party_timer = self.clock.callLater(delay, fire)

    # -- publishing -------------------------------------------------------------------------

    async def _publish_until_current(self, epoch: int) -> None:
        if self._publishing:
            self._again = True
            return
        self._publishing = True
        try:
            while True:
                self._again = False
                await self.publish(epoch)
                if not self._again:
                    return
        finally:
            self._publishing = False

    async def publish(self, epoch: int) -> None:
        """Write the next assignment (compare and set), unless it is the one in force."""
        if not self.leading or self.partitions is None:
            return
        path = self.paths.assignment
        while True:
            self.session.check(epoch)
            workers = sorted(await self.membership.members())
            try:
                value, stat = await self.session.retry(lambda: self.zk.get(path))
                document: dict[str, Any] | None = loads(value)
                version: int | None = stat.version
            except NoNodeError:
                document, version = None, None
            previous = assignment_of(document or {})
            result = assign(self.partitions, workers, previous)
            if document is not None and result == previous:
                return
            generation = int((document or {}).get("generation", 0)) + 1
            payload = orjson.dumps({"generation": generation, "leader": self.me, "workers": workers,
                                    "assignment": {p.key: w for p, w in sorted(result.items())}})
            self.session.check(epoch)
            if not self.leading:
                return
            try:
                if version is None:
                    await self.session.retry(lambda: self.zk.create(path, payload))
                else:
                    await self.session.retry(lambda: self.zk.set(path, payload, version=version))
            except (NodeExistsError, BadVersionError):
                continue  # written meanwhile (by another, or by us before a lost answer): start from what is there
            self._log(generation, previous, result, workers)
            return

    @staticmethod
    def _log(generation: int, previous: dict[Partition, str], result: dict[Partition, str],
             workers: list[str]) -> None:
        changes = moved(previous, result)
        counts = {w: sum(1 for x in result.values() if x == w) for w in workers}
        log.info("Assignment generation {generation}: {n} partitions over {w} workers ({counts}); "
                 "{m} moved{detail}", generation=generation, n=len(result), w=len(workers),
                 counts=", ".join(f"{w}={c}" for w, c in counts.items()), m=len(changes),
                 detail=(": " + ", ".join(f"{p.name} {a}->{b}" for p, (a, b) in sorted(changes.items())))
                 if changes else "")
