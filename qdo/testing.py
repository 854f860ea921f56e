"""ZooKeeper in memory, on a ``task.Clock``: for fast, deterministic tests of qdo's coordination rules.

Like ``queuey.testing.MemoryQueuey`` for the server: a :class:`FakeZooKeeperServer`
holds the tree (versions, ephemeral nodes and their owners, sequence numbers,
data and child watches) and the sessions; each :class:`FakeZooKeeper` is one
client session implementing :class:`qdo.zk.IZooKeeper`::

    clock = Clock()
    server = FakeZooKeeperServer(clock)
    zk = server.client(session_timeout=10)
    zk.start()
    server.settle()                      # deliver what is due now

Results and watch events are delivered through ``clock.callLater(0, ...)``,
never re-entrantly. The test drives failures: :meth:`FakeZooKeeper.disconnect`
(suspended; calls in flight fail with ``ConnectionLoss`` although the server
may have applied them; watches fire with a ``NONE`` event), :meth:`reconnect`
(the same session if it still lives, else ``LOST`` then a new session),
:meth:`FakeZooKeeperServer.expire` (the session ends on the server: its
ephemeral nodes go). A session disconnected for longer than its timeout
expires by itself when the clock passes that point.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Callable

from kazoo.exceptions import (BadVersionError, ConnectionLoss, NodeExistsError, NoNodeError, NotEmptyError,
                              SessionExpiredError)
from kazoo.protocol.states import EventType, KeeperState, WatchedEvent, ZnodeStat
from twisted.internet import defer
from twisted.internet.task import Clock
from zope.interface import implementer

from qdo.zk import CONNECTED, LOST, SUSPENDED, IZooKeeper, Listeners, SessionLost, Watch


@dataclass
class _Node:
    data: bytes
    czxid: int
    mzxid: int
    ctime: int
    owner: int = 0  # ephemeralOwner: the session id, 0 for persistent nodes
    version: int = 0
    cversion: int = 0
    children: set[str] = field(default_factory=set)
    sequence: int = 0


@dataclass
class _Session:
    id: int
    timeout: float
    client: "FakeZooKeeper"
    alive: bool = True
    expiry: Any = None  # the DelayedCall that expires it while disconnected


class FakeZooKeeperServer:
    """The tree and the sessions of one ZooKeeper (ensemble), in memory."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.nodes: dict[str, _Node] = {"/": _Node(b"", 0, 0, 0)}
        self.sessions: dict[int, _Session] = {}
        self._zxid = itertools.count(1)
        self._ids = itertools.count(0x1000)
        self.data_watches: dict[str, list[tuple[int, Watch]]] = {}
        self.child_watches: dict[str, list[tuple[int, Watch]]] = {}
        self.writes = 0  # create, set and delete operations applied

    def client(self, session_timeout: float = 10.0) -> "FakeZooKeeper":
        return FakeZooKeeper(self, session_timeout)

    def settle(self, rounds: int = 1000) -> None:
        """Deliver everything due at the clock's current time (results, watches, and what they cause)."""
        for _ in range(rounds):
            due = [c for c in self.clock.getDelayedCalls() if c.getTime() <= self.clock.seconds()]
            if not due:
                return
            self.clock.advance(0)
        raise AssertionError("FakeZooKeeperServer.settle: still busy after %d rounds" % rounds)

    def advance(self, seconds: float, step: float = 0.1) -> None:
        """Move time on in steps, settling at each."""
        self.settle()
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.settle()

    # -- sessions -------------------------------------------------------------

    def open_session(self, client: "FakeZooKeeper", timeout: float) -> _Session:
        session = _Session(next(self._ids), timeout, client)
        self.sessions[session.id] = session
        return session

    def disconnected(self, session: _Session) -> None:
        """The client's connection dropped: the session expires unless it reconnects in time."""
        if session.alive and session.expiry is None:
            session.expiry = self.clock.callLater(session.timeout, self.expire, session.id)

    def reconnected(self, session: _Session) -> bool:
        if session.expiry is not None and session.expiry.active():
            session.expiry.cancel()
        session.expiry = None
        return session.alive

    def expire(self, session_id: int) -> None:
        """End a session on the server (as a timeout would): its ephemeral nodes and watches go."""
        session = self.sessions.get(session_id)
        if session is None or not session.alive:
            return
        session.alive = False
        if session.expiry is not None and session.expiry.active():
            session.expiry.cancel()
        session.expiry = None
        for watches in (self.data_watches, self.child_watches):
            for path in list(watches):
                watches[path] = [(s, w) for s, w in watches[path] if s != session_id]
        for path in sorted((p for p, n in self.nodes.items() if n.owner == session_id), reverse=True):
            self._remove(path)
        session.client._expired_on_server()

    def owned_by(self, session_id: int) -> list[str]:
        return sorted(p for p, n in self.nodes.items() if n.owner == session_id)

    # -- the tree ---------------------------------------------------------------

    def stat(self, path: str) -> ZnodeStat:
        n = self.nodes[path]
        return ZnodeStat(n.czxid, n.mzxid, n.ctime, n.ctime, n.version, n.cversion, 0, n.owner, len(n.data),
                         len(n.children), n.mzxid)

    @staticmethod
    def parent(path: str) -> str:
        head = path.rsplit("/", 1)[0]
        return head or "/"

    def _fire(self, watches: dict[str, list[tuple[int, Watch]]], path: str, kind: str) -> None:
        for _, watch in watches.pop(path, []):
            self.clock.callLater(0, watch, WatchedEvent(kind, KeeperState.CONNECTED, path))

    def _watch(self, watches: dict[str, list[tuple[int, Watch]]], path: str, session: int, watch: Watch) -> None:
        watches.setdefault(path, []).append((session, watch))

    def create(self, session: int, path: str, data: bytes, ephemeral: bool, sequence: bool, makepath: bool) -> str:
        parent = self.parent(path)
        if parent not in self.nodes:
            if not makepath:
                raise NoNodeError(parent)
            self.create(session, parent, b"", False, False, True)
        if sequence:
            self.nodes[parent].sequence += 1
            path = f"{path}{self.nodes[parent].sequence - 1:010d}"
        if path in self.nodes:
            raise NodeExistsError(path)
        zxid = next(self._zxid)
        self.nodes[path] = _Node(bytes(data), zxid, zxid, int(self.clock.seconds() * 1000),
                                 owner=session if ephemeral else 0)
        self.nodes[parent].children.add(path.rsplit("/", 1)[1])
        self.nodes[parent].cversion += 1
        self.writes += 1
        self._fire(self.data_watches, path, EventType.CREATED)
        self._fire(self.child_watches, parent, EventType.CHILD)
        return path

    def set(self, path: str, data: bytes, version: int) -> ZnodeStat:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError(path)
        if version != -1 and version != node.version:
            raise BadVersionError(path)
        node.data, node.version, node.mzxid = bytes(data), node.version + 1, next(self._zxid)
        self.writes += 1
        self._fire(self.data_watches, path, EventType.CHANGED)
        return self.stat(path)

    def delete(self, path: str, version: int) -> None:
        node = self.nodes.get(path)
        if node is None:
            raise NoNodeError(path)
        if version != -1 and version != node.version:
            raise BadVersionError(path)
        if node.children:
            raise NotEmptyError(path)
        self.writes += 1
        self._remove(path)

    def _remove(self, path: str) -> None:
        del self.nodes[path]
        parent = self.parent(path)
        if parent in self.nodes:
            self.nodes[parent].children.discard(path.rsplit("/", 1)[1])
            self.nodes[parent].cversion += 1
        self._fire(self.data_watches, path, EventType.DELETED)
        self._fire(self.child_watches, path, EventType.DELETED)
        self._fire(self.child_watches, parent, EventType.CHILD)

    def get(self, session: int, path: str, watch: Watch | None) -> tuple[bytes, ZnodeStat]:
        if path not in self.nodes:
            raise NoNodeError(path)
        if watch is not None:
            self._watch(self.data_watches, path, session, watch)
        return self.nodes[path].data, self.stat(path)

    def children(self, session: int, path: str, watch: Watch | None) -> list[str]:
        if path not in self.nodes:
            raise NoNodeError(path)
        if watch is not None:
            self._watch(self.child_watches, path, session, watch)
        return sorted(self.nodes[path].children)

    def exists(self, session: int, path: str, watch: Watch | None) -> ZnodeStat | None:
        if watch is not None:
            self._watch(self.data_watches, path, session, watch)
        return self.stat(path) if path in self.nodes else None


@implementer(IZooKeeper)
class FakeZooKeeper(Listeners):
    """One client session of a :class:`FakeZooKeeperServer` (see the module's docstring)."""

    def __init__(self, server: FakeZooKeeperServer, session_timeout: float = 10.0) -> None:
        super().__init__()
        self.server = server
        self.clock = server.clock
        self.hosts = "fake:2181"
        self.session_timeout = session_timeout
        self.session: Any = None
        self.link = 0  # one per connection: answers of an earlier connection come back as ConnectionLoss
        self.up = False
        self.watches: list[Watch] = []

    # -- what the test does -------------------------------------------------------

    def disconnect(self) -> None:
        """The connection drops: SUSPENDED; watches fire with NONE; answers in flight are lost."""
        if not self.up:
            return
        self.up = False
        self.link += 1
        self.server.disconnected(self.session)
        self._drop_watches()
        self._announce(SUSPENDED, None)

    def reconnect(self) -> None:
        """The connection is back: the same session if it still lives, else LOST and a new one."""
        if self.up or self.stopping:
            return
        if self.session is not None and self.server.reconnected(self.session):
            self.up = True
            self._announce(CONNECTED, self.session.id)
            return
        self._new_session()

    def _expired_on_server(self) -> None:
        if self.stopping:
            return
        if self.up:  # told at once; a disconnected client learns it when it reconnects
            self.up = False
            self.link += 1
            self._drop_watches()
            self._announce(LOST, None)
            self._new_session()

    def _new_session(self) -> None:
        if self.state != LOST and self.session is not None:
            self._announce(LOST, None)
        self.session = self.server.open_session(self, self.session_timeout)
        self.up = True
        self.link += 1
        self._announce(CONNECTED, self.session.id)

    def _drop_watches(self) -> None:
        watches, self.watches = self.watches, []
        for watch in watches:
            self.clock.callLater(0, watch, WatchedEvent(EventType.NONE, KeeperState.CONNECTING, None))
        sid = self.session.id if self.session is not None else None
        for registry in (self.server.data_watches, self.server.child_watches):
            for path in list(registry):
                registry[path] = [(s, w) for s, w in registry[path] if s != sid]

    def _announce(self, state: Any, session: int | None) -> None:
        # State changes are delivered synchronously, like kazoo's listener followed by callFromThread.
        self.changed(state, session)

    # -- IZooKeeper ------------------------------------------------------------------

    def start(self) -> defer.Deferred[None]:
        started = self._begin()
        self.clock.callLater(0, self._new_session)
        return started

    def stop(self) -> defer.Deferred[None]:
        self._end()
        if self.session is not None:
            self.server.expire(self.session.id)
        self.up = False
        return defer.succeed(None)

    def _run(self, operation: Callable[[int], Any], watch: Watch | None = None) -> defer.Deferred[Any]:
        d: defer.Deferred[Any] = defer.Deferred()
        if not self.up:
            error: Exception = SessionExpiredError() if self.stopping else ConnectionLoss()
            self.clock.callLater(0, d.errback, error)
            return d
        link = self.link
        tracked = None
        if watch is not None:
            tracked = self._track(watch, link)
        try:
            result: Any = operation(self.session.id) if tracked is None else operation(self.session.id, tracked)
        except Exception as e:
            result = e

        def deliver() -> None:
            if d.called:
                return
            if link != self.link:  # the answer was lost with the connection (the server may have acted)
                d.errback(ConnectionLoss())
            elif isinstance(result, Exception):
                d.errback(result)
            else:
                d.callback(result)
        self.clock.callLater(0, deliver)
        return d

    def _track(self, watch: Watch, link: int) -> Watch:
        """A watch that fires at most once, and only for the connection it was set on."""
        fired = []

        def once(event: Any) -> None:
            if fired or (event.type != EventType.NONE and link != self.link):
                return
            fired.append(event)
            if once in self.watches:
                self.watches.remove(once)
            watch(event)
        self.watches.append(once)
        return once

    def create(self, path: str, data: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> defer.Deferred[str]:
        return self._run(lambda s: self.server.create(s, path, data, ephemeral, sequence, makepath))

    def get(self, path: str, watch: Watch | None = None) -> defer.Deferred[Any]:
        return self._run(lambda s, w=None: self.server.get(s, path, w), watch)

    def set(self, path: str, data: bytes, version: int = -1) -> defer.Deferred[ZnodeStat]:
        return self._run(lambda s: self.server.set(path, data, version))

    def delete(self, path: str, version: int = -1) -> defer.Deferred[None]:
        return self._run(lambda s: self.server.delete(path, version))

    def children(self, path: str, watch: Watch | None = None) -> defer.Deferred[list[str]]:
        return self._run(lambda s, w=None: self.server.children(s, path, w), watch)

    def exists(self, path: str, watch: Watch | None = None) -> defer.Deferred[ZnodeStat | None]:
        return self._run(lambda s, w=None: self.server.exists(s, path, w), watch)

    def ensure_path(self, path: str) -> defer.Deferred[None]:
        def ensure(session: int) -> None:
            if path not in self.server.nodes:
                self.server.create(session, path, b"", False, False, True)
        return self._run(ensure)


__all__ = ["FakeZooKeeperServer", "FakeZooKeeper", "SessionLost"]
