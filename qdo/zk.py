"""kazoo, bridged to Twisted: results, watches and session states arrive on the reactor thread.

kazoo runs its connection and callbacks on threads of its own. Every result of
an ``*_async`` call, every watch and every session-state change is handed to
the reactor with ``reactor.callFromThread``; nothing here blocks the reactor
thread (``stop`` joins kazoo's threads in the reactor's thread pool).

Sessions as qdo sees them:

- ``CONNECTED``: the session is live (``session_id`` says which one).
- ``SUSPENDED``: the connection dropped; the session may still live on the
  server. Pending calls fail with ``ConnectionLoss`` and kazoo fires every
  watch with an event of type ``NONE`` (watches must be re-armed).
- ``LOST``: the session expired (or was closed). Its ephemeral nodes are gone;
  kazoo goes on to make a new session, announced by ``CONNECTED`` again.
"""

from __future__ import annotations

from typing import Any, Callable

from kazoo.client import KazooClient
from kazoo.exceptions import ConnectionClosedError, ConnectionLoss, SessionExpiredError
from kazoo.protocol.states import KazooState
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

CONNECTED, SUSPENDED, LOST = "CONNECTED", "SUSPENDED", "LOST"


class SessionLost(Exception):
    """The ZooKeeper session ended while a call was waiting for the connection."""


def parse_session_hosts(hosts: str) -> str:
    return ",".join(h.strip() for h in hosts.split(",") if h.strip())


class ZooKeeper:
    """One kazoo client; Deferred-returning calls; state listeners on the reactor thread."""

    def __init__(self, hosts: str, reactor: Any, session_timeout: float = 10.0,
                 client: KazooClient | None = None) -> None:
        self.reactor = reactor
        self.hosts = parse_session_hosts(hosts)
        self.client = client or KazooClient(
            hosts=self.hosts, timeout=session_timeout,
            # Never give up connecting; commands are retried here, not by kazoo.
            connection_retry={"max_tries": -1, "delay": 0.1, "backoff": 2, "max_delay": 2.0},
            command_retry=None)
        self.state = SUSPENDED
        self.session_id: int | None = None
        self.session_timeout = session_timeout
        self._listeners: list[Callable[[str, int | None], None]] = []
        self._waiters: list[defer.Deferred[None]] = []
        self._started: defer.Deferred[None] | None = None
        self._stopping = False
        self.client.add_listener(self._kazoo_state)

    # -- session ------------------------------------------------------------

    def _kazoo_state(self, state: str) -> None:
        """kazoo's listener: on a kazoo thread; must not block."""
        session = None
        if state == KazooState.CONNECTED:
            client_id = self.client.client_id
            session = client_id[0] if client_id else None
        self.reactor.callFromThread(self._on_state, str(state), session)

    def _on_state(self, state: str, session: int | None) -> None:
        if self._stopping:
            return
        previous, self.state = self.state, state
        if state == CONNECTED:
            if session != self.session_id and self.session_id is not None:
                log.info("ZooKeeper: new session 0x{session:x}", session=session or 0)
            self.session_id = session
        elif state == LOST:
            self.session_id = None
        log.debug("ZooKeeper state {previous} -> {state}", previous=previous, state=state)
        # Listeners first: they learn of a lost session before the calls waiting on it fail.
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

    def add_listener(self, listener: Callable[[str, int | None], None]) -> None:
        """``listener(state, session_id)`` on the reactor thread at every change."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[str, int | None], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def start(self) -> defer.Deferred[None]:
        """Connect; fires once a session is established (retrying forever until then)."""
        self._started = defer.Deferred()
        self.client.start_async()
        return self._started

    def stop(self) -> defer.Deferred[None]:
        """Close the session (its ephemeral nodes go at once) and stop kazoo's threads."""
        self._stopping = True
        for waiter in self._waiters:
            waiter.errback(SessionLost("stopping"))
        self._waiters = []

        def close() -> None:
            try:
                self.client.stop()
            finally:
                self.client.close()

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), close)

    def wait_connected(self) -> defer.Deferred[None]:
        """Fires when the session is connected; fails with SessionLost if it expires first."""
        if self.state == CONNECTED:
            return defer.succeed(None)
        if self._stopping:
            return defer.fail(SessionLost("stopping"))
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    # -- calls --------------------------------------------------------------

    def call(self, name: str, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """``client.<name>_async(*args, **kwargs)`` as a Deferred fired on the reactor thread.

        A ``watch=`` callable is wrapped so that it, too, runs on the reactor thread.
        """
        watch = kwargs.get("watch")
        if watch is not None:
            kwargs["watch"] = self.watch(watch)
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

    def watch(self, function: Callable[[Any], None]) -> Callable[[Any], None]:
        """A kazoo watch callback that calls ``function(event)`` on the reactor thread."""
        def on_kazoo_thread(event: Any) -> None:
            self.reactor.callFromThread(function, event)
        return on_kazoo_thread

    async def retrying(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """:meth:`call`, retried after a connection loss once the session is back.

        Only for calls whose repetition is harmless (reads, deletes of our own
        nodes, unconditional writes); raises :class:`SessionLost` when the
        session expires meanwhile.
        """
        session = self.session_id
        while True:
            try:
                return await self.call(name, *args, **kwargs)
            except ConnectionLoss:
                await self.wait_connected()
            except (SessionExpiredError, ConnectionClosedError) as e:
                raise SessionLost(str(e)) from None
            if self.session_id != session:
                raise SessionLost("ZooKeeper session changed")
