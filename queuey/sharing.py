"""One operation in flight per key, its result handed to every caller that asked meanwhile.

Long-poll uses it so that the many held reads a post wakes, when they ask for
the same page, cause one storage read and one encoding of it.  Each caller
gets a Deferred of its own: cancelling it (the client went away) leaves the
others waiting; the operation itself is cancelled when nobody waits any more.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Hashable, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("operation", "callers")

    def __init__(self) -> None:
        self.operation: defer.Deferred[T] | None = None
        self.callers: set[defer.Deferred[T]] = set()


class SharedCalls(Generic[T]):
    """``call(key, start)``: ``start()`` once per key while it runs; everyone gets its result.

    With a ``clock``, the callers get the result ``batch`` at a time, one batch per turn of
    the reactor: what the first ones do with it (write their answers) goes out while the
    others still wait, instead of everything going out after the last one.
    """

    def __init__(self, clock: IReactorTime | None = None, batch: int = 256) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}
        self._clock = clock
        self._batch = batch

    def __len__(self) -> int:
        return len(self._flights)

    def call(self, key: Hashable, start: Callable[[], defer.Deferred[T]]) -> defer.Deferred[T]:
        flight = self._flights.get(key)
        fresh = flight is None
        if flight is None:
            flight = self._flights[key] = _Flight()
        caller: defer.Deferred[T] = defer.Deferred(lambda d: self._leave(key, flight, d))
        flight.callers.add(caller)
        if fresh:
            operation = start()
            flight.operation = operation
            operation.addBoth(self._done, key, flight)
        return caller

    def _done(self, result: Any, key: Hashable, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]
        callers, flight.callers = list(flight.callers), set()
        self._hand(result, callers)
        return None

    def _hand(self, result: Any, callers: list[defer.Deferred[T]]) -> None:
        now, later = (callers, []) if self._clock is None else (callers[:self._batch], callers[self._batch:])
        for caller in now:
            if caller.called:  # cancelled while it waited for its batch
                continue
            if isinstance(result, Failure):
                caller.errback(result)
            else:
                caller.callback(result)
        if later:
            assert self._clock is not None
            self._clock.callLater(0, self._hand, result, later)

    def _leave(self, key: Hashable, flight: _Flight[T], caller: defer.Deferred[T]) -> None:
        flight.callers.discard(caller)
        if not flight.callers and flight.operation is not None and not flight.operation.called:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.operation.cancel()
