"""One operation in flight per key, its result handed to every caller that asked meanwhile.

Long-poll uses it so that the many held reads a post wakes, when they ask for
the same page, cause one storage read and one encoding of it.  Each caller
gets a Deferred of its own: cancelling it (the client went away) leaves the
others waiting; the operation itself is cancelled when nobody waits any more.
"""

from __future__ import annotations

from typing import Any, Callable, Generic, Hashable, TypeVar

from twisted.internet import defer
from twisted.python.failure import Failure

T = TypeVar("T")


class _Flight(Generic[T]):
    __slots__ = ("operation", "callers")

    def __init__(self) -> None:
        self.operation: defer.Deferred[T] | None = None
        self.callers: set[defer.Deferred[T]] = set()


class SharedCalls(Generic[T]):
    """``call(key, start)``: ``start()`` once per key while it runs; everyone gets its result."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight[T]] = {}

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
        callers, flight.callers = flight.callers, set()
        for caller in callers:
            if isinstance(result, Failure):
                caller.errback(result)
            else:
                caller.callback(result)
        return None

    def _leave(self, key: Hashable, flight: _Flight[T], caller: defer.Deferred[T]) -> None:
        flight.callers.discard(caller)
        if not flight.callers and flight.operation is not None and not flight.operation.called:
            if self._flights.get(key) is flight:
                del self._flights[key]
            flight.operation.cancel()
