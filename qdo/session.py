"""One worker's ZooKeeper session: its epochs, its lease, and the one retry-on-connection-loss helper.

An *epoch* is the life of one ZooKeeper session as the worker uses it: work
started in an epoch (watches, claims, commits) belongs to it and ends with it
(:class:`EpochOver`) when the session is lost or the worker stops. The
*lease* (rule 3): no new message starts while the session is suspended or
has not been heard from for half the session timeout.
"""

from __future__ import annotations

import math
from typing import Any, Awaitable, Callable, Coroutine, TypeVar

from kazoo.exceptions import (BadVersionError, ConnectionClosedError, ConnectionLoss, NodeExistsError, NoNodeError,
                              SessionExpiredError)
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qdo.runner import Gate
from qdo.zk import CONNECTED, IZooKeeper, SessionLost

log = Logger()
T = TypeVar("T")


class EpochOver(Exception):
    """The session this work belonged to is gone (or the worker stops)."""


class Abandon(Exception):
    """What was being waited for is no longer wanted."""


class Session:
    """Epochs, the lease gate, scoped waits and retries over one :class:`qdo.zk.IZooKeeper`."""

    def __init__(self, zk: IZooKeeper, clock: IReactorTime, session_timeout: float) -> None:
        self.zk = zk
        self.clock = clock
        self.epoch = 0
        self.joined = False
        self.stopping = False
        self.lease = session_timeout / 2
        self.last_ok = -math.inf
        self.gate = Gate(self.may_work)
        self._scope: list[defer.Deferred[Any]] = []

    # -- the lease ---------------------------------------------------------------

    def may_work(self) -> bool:
        return (self.zk.state == CONNECTED and self.joined and not self.stopping
                and self.clock.seconds() - self.last_ok < self.lease)

    def heard(self) -> None:
        """ZooKeeper answered just now: the lease runs on."""
        self.last_ok = self.clock.seconds()
        self.gate.changed()

    async def beat(self) -> None:
        if self.zk.state != CONNECTED:
            return
        try:
            await self.zk.exists("/")
        except Exception:
            return
        self.heard()

    # -- epochs --------------------------------------------------------------------

    def check(self, epoch: int) -> None:
        if epoch != self.epoch or self.stopping:
            raise EpochOver()

    def end_epoch(self) -> None:
        """The session is lost (or the worker stops): everything waiting in this epoch is cancelled."""
        self.epoch += 1
        self.joined = False
        self.cancel_waits()

    def cancel_waits(self) -> None:
        scope, self._scope = self._scope, []
        for d in scope:
            if not d.called:
                d.cancel()
        self.gate.changed()

    async def tracked(self, d: defer.Deferred[T], epoch: int) -> T:
        """Await ``d`` as part of ``epoch``: cancelled, with EpochOver, when the epoch ends."""
        self.check(epoch)
        self._scope.append(d)
        try:
            return await d
        except defer.CancelledError:
            self.check(epoch)
            raise
        finally:
            if d in self._scope:
                self._scope.remove(d)

    def spawn(self, coroutine: Coroutine[Any, Any, Any], what: str) -> defer.Deferred[Any]:
        """Run a coroutine of this worker's; an epoch's end is not an error, anything else is logged."""
        def failed(failure: Any) -> None:
            if not failure.check(EpochOver, SessionLost, defer.CancelledError, Abandon):
                log.failure("qdo: {what} failed", failure, what=what)
        return defer.ensureDeferred(coroutine).addErrback(failed)

    @staticmethod
    def watcher() -> tuple[defer.Deferred[Any], Callable[[Any], None]]:
        """A Deferred and the watch function that fires it (once)."""
        d: defer.Deferred[Any] = defer.Deferred()

        def fire(event: Any) -> None:
            if not d.called:
                d.callback(event)
        return d, fire

    # -- calls -------------------------------------------------------------------------

    async def retry(self, operation: Callable[[], defer.Deferred[T]],
                    recover: Callable[[], Awaitable[T | None]] | None = None) -> T:
        """``operation()``; after a connection loss, once connected again, again (in the same session only).

        A write whose answer was lost may have been applied: ``recover()``, if
        given, runs first after the loss and returns the answer if it finds the
        write done (else None, and the operation runs again); without it the
        caller must accept a repeat (reads, deletes of its own nodes), or tell it
        by the error the repeat gets (``NodeExistsError``, ``BadVersionError``).
        Raises :class:`SessionLost` when the session ends meanwhile.
        """
        session = self.zk.session_id
        while True:
            try:
                result = await operation()
                self.heard()
                return result
            except ConnectionLoss:
                await self.zk.wait_connected()
            except (SessionExpiredError, ConnectionClosedError) as e:
                raise SessionLost(str(e) or type(e).__name__) from None
            if self.zk.session_id != session:
                raise SessionLost("ZooKeeper session changed")
            if recover is not None:
                found = await recover()
                if found is not None:
                    return found

    async def acquire_ephemeral(self, path: str, data: Callable[[], bytes], epoch: int, *,
                                held: Callable[[bytes, Any], None],
                                wait: Callable[[defer.Deferred[Any]], Awaitable[Any]] | None = None,
                                wanted: Callable[[], bool] = lambda: True, makepath: bool = False) -> None:
        """Create the ephemeral node ``path`` (rules 1 and 3), waiting by watch while another session holds it.

        A node that exists is ours only if its ``ephemeralOwner`` is this session (a
        create retried after a connection loss); any other holder is reported to
        ``held(value, stat)`` and then waited out: ``wait(gone)`` awaits the watch
        (by default tracked in this epoch), and the create is tried again. Raises
        :class:`EpochOver` once the epoch is over, :class:`Abandon` once ``wanted()`` says no.
        """
        while True:
            self.check(epoch)
            if not wanted():
                raise Abandon()
            try:
                await self.retry(lambda: self.zk.create(path, data(), ephemeral=True, makepath=makepath))
                return
            except NodeExistsError:
                pass
            gone, watch = self.watcher()
            try:
                value, stat = await self.retry(lambda: self.zk.get(path, watch=watch))
            except NoNodeError:
                continue
            if stat.ephemeralOwner == self.zk.session_id:
                return  # ours: a create that was retried after a connection loss
            held(value, stat)
            await (self.tracked(gone, epoch) if wait is None else wait(gone))

    async def delete_own(self, path: str) -> None:
        """Delete an ephemeral node if this session holds it."""
        try:
            _, stat = await self.retry(lambda: self.zk.get(path))
            if stat.ephemeralOwner == self.zk.session_id:
                await self.retry(lambda: self.zk.delete(path, version=stat.version))
        except (NoNodeError, BadVersionError, SessionLost):
            pass
