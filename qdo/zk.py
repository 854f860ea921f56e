"""ZooKeeper as qdo sees it: one typed interface, kazoo bridged to Twisted behind it.

:class:`IZooKeeper` is what the rest of qdo uses: ``create``, ``get``, ``set``,
``delete``, ``children``, ``exists`` returning Deferreds fired on the reactor
thread, and session states delivered to listeners on the reactor thread.
:class:`ZooKeeper` implements it on kazoo (whose connection and callbacks run
on threads of its own; everything is handed to the reactor with
``reactor.callFromThread``, and ``stop`` joins kazoo's threads in the reactor's
thread pool); ``qdo.testing.FakeZooKeeper`` implements it in memory on a
``task.Clock``.

Sessions:

- ``CONNECTED``: the session is live (``session_id`` says which one).
- ``SUSPENDED``: the connection dropped; the session may still live on the
  server. Pending calls fail with ``ConnectionLoss`` and every watch fires
  with an event of type ``NONE`` (watches must be re-armed).
- ``LOST``: the session expired (or was closed). Its ephemeral nodes are gone;
  a new session follows, announced by ``CONNECTED`` again.

Errors are kazoo's (``NoNodeError``, ``NodeExistsError``, ``BadVersionError``,
``ConnectionLoss``, ``SessionExpiredError``), from either implementation.
"""

from __future__ import annotations

import enum
import logging
import time
from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import KazooState, ZnodeStat
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface, implementer

log = Logger()

Watch = Callable[[Any], None]


class SessionState(enum.Enum):
    CONNECTED = "CONNECTED"
    SUSPENDED = "SUSPENDED"
    LOST = "LOST"


CONNECTED, SUSPENDED, LOST = SessionState.CONNECTED, SessionState.SUSPENDED, SessionState.LOST
StateListener = Callable[[SessionState, "int | None"], None]


class SessionLost(Exception):
    """The ZooKeeper session ended while a call was waiting for the connection."""


class IZooKeeper(Interface):
    """A ZooKeeper session; every call returns a Deferred fired on the reactor thread."""

    hosts = Attribute("The servers, host:port[,host:port...]")
    state = Attribute("The SessionState now")
    session_id = Attribute("The live session's id, or None")

    def add_listener(listener: StateListener) -> None:
        """``listener(state, session_id)`` on the reactor thread at every change."""

    def start() -> defer.Deferred[None]:
        """Connect; fires once a session is established (trying forever until then)."""

    def stop() -> defer.Deferred[None]:
        """Close the session: its ephemeral nodes go at once."""

    def wait_connected() -> defer.Deferred[None]:
        """Fires when connected; fails with SessionLost if the session expires first."""

    def create(path: str, data: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> defer.Deferred[str]:
        """Create a node; fires with its path (with the sequence number, if any)."""

    def get(path: str, watch: Watch | None = None) -> defer.Deferred[tuple[bytes, ZnodeStat]]:
        """A node's data and stat; ``watch`` fires once when it changes or goes."""

    def set(path: str, data: bytes, version: int = -1) -> defer.Deferred[ZnodeStat]:
        """Write a node's data if its version is ``version`` (-1: any); fires with the new stat."""

    def delete(path: str, version: int = -1) -> defer.Deferred[None]:
        """Delete a node if its version is ``version`` (-1: any)."""

    def children(path: str, watch: Watch | None = None) -> defer.Deferred[list[str]]:
        """A node's children's names; ``watch`` fires once when they change or the node goes."""

    def exists(path: str, watch: Watch | None = None) -> defer.Deferred[ZnodeStat | None]:
        """A node's stat or None; ``watch`` fires once when it is created, changes or goes."""

    def ensure_path(path: str) -> defer.Deferred[None]:
        """Create a persistent node and its parents unless they exist."""


def parse_session_hosts(hosts: str) -> str:
    return ",".join(h.strip() for h in hosts.split(",") if h.strip())


class Listeners:
    """Session-state listeners and ``wait_connected`` waiters: what both implementations share."""

    def __init__(self) -> None:
        self.state = SUSPENDED
        self.session_id: int | None = None
        self._listeners: list[StateListener] = []
        self._waiters: list[defer.Deferred[None]] = []
        self._started: defer.Deferred[None] | None = None
        self.stopping = False

    def add_listener(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def wait_connected(self) -> defer.Deferred[None]:
        if self.state == CONNECTED:
            return defer.succeed(None)
        if self.stopping:
            return defer.fail(SessionLost("stopping"))
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    def _begin(self) -> defer.Deferred[None]:
        self._started = defer.Deferred()
        return self._started

    def _end(self) -> None:
        self.stopping = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(SessionLost("stopping"))

    def changed(self, state: SessionState, session: int | None) -> None:
        """Record a new state and tell everyone: listeners first, so they learn of a loss before waiters fail."""
        if self.stopping:
            return
        self.state = state
        if state == CONNECTED:
            self.session_id = session
        elif state == LOST:
            self.session_id = None
        for listener in list(self._listeners):
            try:
                listener(state, self.session_id)
            except Exception:
                log.failure("ZooKeeper state listener failed")
        if state == SUSPENDED:
            return
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if state == CONNECTED:
                waiter.callback(None)
            else:
                waiter.errback(SessionLost("ZooKeeper session lost"))
        if state == CONNECTED and self._started is not None and not self._started.called:
            self._started.callback(None)


# kazoo's messages while no server answers: said once (and again, less and less often) by ConnectionNotices.
_CONNECTING_NOISE = ("Connection dropped", "Connection time-out", "Transition to CONNECTING", "Cannot resolve",
                     "Zookeeper connection lost", "Zookeeper session closed", "Failed connecting to Zookeeper")


class ConnectionNotices(logging.Filter):
    """Turns kazoo's warning per failed connection attempt into one clear line, then fewer and fewer.

    The first failure says where qdo tries to connect and that it keeps trying;
    reminders follow after ``first_reminder`` seconds, each interval twice the
    last, at most ``max_interval``. Once connected, the next outage starts over.
    """

    def __init__(self, hosts: str, say: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 first_reminder: float = 30.0, max_interval: float = 600.0) -> None:
        super().__init__()
        self.hosts = hosts
        self.say = say
        self.clock = clock
        self.first_reminder = first_reminder
        self.max_interval = max_interval
        self.failing_since: float | None = None
        self.next_notice = 0.0
        self.interval = first_reminder
        self.attempts = 0

    def connected(self) -> None:
        if self.failing_since is not None:
            self.say(f"ZooKeeper at {self.hosts} answers again after {self.attempts} failed attempt(s)")
        self.failing_since = None
        self.attempts = 0

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno < logging.WARNING or not message.startswith(_CONNECTING_NOISE):
            return True
        if not message.startswith(("Connection dropped", "Connection time-out", "Cannot resolve")):
            return False
        now = self.clock()
        self.attempts += 1
        if self.failing_since is None:
            self.failing_since, self.interval = now, self.first_reminder
            self.next_notice = now + self.interval
            self.say(f"Cannot reach ZooKeeper at {self.hosts} ({message}); qdo keeps trying, with back-off, "
                     f"and says so again in {self.interval:.0f}s")
        elif now >= self.next_notice:
            self.interval = min(self.max_interval, self.interval * 2)
            self.next_notice = now + self.interval
            self.say(f"Still cannot reach ZooKeeper at {self.hosts} after {now - self.failing_since:.0f}s and "
                     f"{self.attempts} attempts ({message}); still trying")
        return False


@implementer(IZooKeeper)
class ZooKeeper(Listeners):
    """:class:`IZooKeeper` on one kazoo client."""

    def __init__(self, hosts: str, reactor: Any, session_timeout: float = 10.0,
                 client: KazooClient | None = None) -> None:
        super().__init__()
        self.reactor = reactor
        self.hosts = parse_session_hosts(hosts)
        self.session_timeout = session_timeout
        kazoo_log = logging.getLogger(f"qdo.kazoo.{id(self):x}")
        self.notices = ConnectionNotices(self.hosts, lambda text: reactor.callFromThread(log.warn, text))
        kazoo_log.addFilter(self.notices)
        self.client = client or KazooClient(
            hosts=self.hosts, timeout=session_timeout, logger=kazoo_log,
            # Never give up connecting (the delay doubles up to a fraction of the session, so that a
            # server back in time still finds the session alive); commands are retried by qdo.
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2,
                              "max_delay": max(1.0, min(5.0, session_timeout / 3))},
            command_retry=None)
        self.client.add_listener(self._kazoo_state)

    def _kazoo_state(self, state: str) -> None:
        """kazoo's listener: on a kazoo thread; must not block."""
        session = None
        if state == KazooState.CONNECTED:
            client_id = self.client.client_id
            session = client_id[0] if client_id else None
            self.notices.connected()
        self.reactor.callFromThread(self.changed, SessionState(str(state)), session)

    def changed(self, state: SessionState, session: int | None) -> None:
        if state == CONNECTED and self.session_id is not None and session != self.session_id:
            log.info("ZooKeeper: new session 0x{session:x}", session=session or 0)
        super().changed(state, session)

    def start(self) -> defer.Deferred[None]:
        started = self._begin()
        self.client.start_async()
        return started

    def stop(self) -> defer.Deferred[None]:
        self._end()

        def close() -> None:
            try:
                self.client.stop()
            finally:
                self.client.close()

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), close)

    # -- calls --------------------------------------------------------------

    def _call(self, name: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """``client.<name>_async(*args, **kwargs)`` as a Deferred fired on the reactor thread."""
        watch = kwargs.get("watch")
        if watch is not None:
            kwargs["watch"] = self._on_reactor(watch)
        d: defer.Deferred[Any] = defer.Deferred()
        try:
            result = getattr(self.client, name + "_async")(*args, **kwargs)
        except Exception:
            return defer.fail()

        def fire(value: Any) -> None:  # on the reactor thread; the caller may have given up
            if not d.called:
                if isinstance(value, Failure):
                    d.errback(value)
                else:
                    d.callback(value)

        def deliver(async_result: Any) -> None:  # on a kazoo thread (or this one)
            try:
                value = async_result.get_nowait()
            except Exception as e:
                value = Failure(e)
            self.reactor.callFromThread(fire, value)

        result.rawlink(deliver)
        return d

    def _on_reactor(self, function: Watch) -> Watch:
        def on_kazoo_thread(event: Any) -> None:
            self.reactor.callFromThread(function, event)
        return on_kazoo_thread

    def create(self, path: str, data: bytes = b"", ephemeral: bool = False, sequence: bool = False,
               makepath: bool = False) -> defer.Deferred[str]:
        return self._call("create", path, data, ephemeral=ephemeral, sequence=sequence, makepath=makepath)

    def get(self, path: str, watch: Watch | None = None) -> defer.Deferred[tuple[bytes, ZnodeStat]]:
        return self._call("get", path, watch=watch)

    def set(self, path: str, data: bytes, version: int = -1) -> defer.Deferred[ZnodeStat]:
        return self._call("set", path, data, version=version)

    def delete(self, path: str, version: int = -1) -> defer.Deferred[None]:
        return self._call("delete", path, version=version).addCallback(lambda _: None)

    def children(self, path: str, watch: Watch | None = None) -> defer.Deferred[list[str]]:
        return self._call("get_children", path, watch=watch)

    def exists(self, path: str, watch: Watch | None = None) -> defer.Deferred[ZnodeStat | None]:
        return self._call("exists", path, watch=watch)

    def ensure_path(self, path: str) -> defer.Deferred[None]:
        return self._call("ensure_path", path).addCallback(lambda _: None)
