"""Holding range reads until a message arrives (long-poll).

Posts through this process wake the held reads of their partitions at once.
Posts through other server processes are noticed by one poll per watched
queue per ``poll_interval`` (not one per held request): the hub asks the
store for the newest id of each watched partition and wakes the reads that
waited since before it.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from queuey import timeuuid
from queuey.interfaces import IMessageStore, QueueSettings

log = Logger()
PartitionKey = tuple[str, str, int]


class _Waiter:
    __slots__ = ("queue", "partitions", "since_ticks", "deferred", "timeout")

    def __init__(self, queue: QueueSettings, partitions: tuple[int, ...], since_ticks: int,
                 on_cancel: Callable[["_Waiter"], None]) -> None:
        self.queue = queue
        self.partitions = partitions
        self.since_ticks = since_ticks
        self.deferred: defer.Deferred[bool] = defer.Deferred(lambda _: on_cancel(self))
        self.timeout: Any = None

    def keys(self) -> Iterable[PartitionKey]:
        return ((self.queue.application, self.queue.queue_name, p) for p in self.partitions)


class LongPollHub:
    """Waiters by partition, woken by local posts or by a shared poll of the store."""

    def __init__(self, clock: IReactorTime, store: IMessageStore, poll_interval: float = 1.0) -> None:
        self._clock = clock
        self._store = store
        self._poll_interval = poll_interval
        self._waiters: dict[PartitionKey, set[_Waiter]] = {}
        self._poll = LoopingCall(self._check_store)
        self._poll.clock = clock
        self.held = 0

    def wait(self, queue: QueueSettings, partitions: tuple[int, ...], since_ticks: int,
             timeout: float) -> defer.Deferred[bool]:
        """Fire with True when a message may have arrived on ``partitions``, False at timeout.

        ``since_ticks`` is when the caller last looked: messages from then on wake it.
        Cancelling the Deferred (the client went away) forgets the waiter.
        """
        waiter = _Waiter(queue, partitions, since_ticks, self._forget)
        waiter.timeout = self._clock.callLater(timeout, self._fire, waiter, False)
        for key in waiter.keys():
            self._waiters.setdefault(key, set()).add(waiter)
        self.held += 1
        if not self._poll.running and self._poll_interval:
            self._poll.start(self._poll_interval, now=False).addErrback(
                lambda f: log.failure("Long-poll store check stopped", f))
        return waiter.deferred

    def notify(self, application: str, queue_name: str, partitions: Iterable[int]) -> None:
        """Messages were stored on these partitions: wake whoever waits on them."""
        woken: set[_Waiter] = set()
        for partition in partitions:
            woken.update(self._waiters.get((application, queue_name, partition), ()))
        for waiter in woken:
            self._fire(waiter, True)

    def _forget(self, waiter: _Waiter) -> None:
        if waiter.timeout is not None and waiter.timeout.active():
            waiter.timeout.cancel()
        waiter.timeout = None
        for key in waiter.keys():
            waiting = self._waiters.get(key)
            if waiting is not None:
                waiting.discard(waiter)
                if not waiting:
                    del self._waiters[key]
        self.held -= 1
        if not self._waiters and self._poll.running:
            self._poll.stop()

    def _fire(self, waiter: _Waiter, arrived: bool) -> None:
        if waiter.deferred.called:
            return
        self._forget(waiter)
        waiter.deferred.callback(arrived)

    @defer.inlineCallbacks
    def _check_store(self) -> Any:
        """One newest-id query per watched queue; wake the waiters that are behind."""
        queues: dict[tuple[str, str], tuple[QueueSettings, set[int]]] = {}
        for (application, queue_name, partition), waiters in list(self._waiters.items()):
            if waiters:
                queue = next(iter(waiters)).queue
                queues.setdefault((application, queue_name), (queue, set()))[1].add(partition)
        for (application, queue_name), (queue, partitions) in queues.items():
            # Only ids up to now: a delayed message dated later has not arrived yet, and
            # counts as arriving once its time is passed (then it is the newest up to now).
            upto = timeuuid.highest_uuid_at(round(self._clock.seconds() * timeuuid.TICKS_PER_SECOND))
            try:
                newest = yield self._store.newest_message_ids(queue, sorted(partitions), upto)
            except Exception:
                log.failure("Long-poll check of {queue} failed", queue=queue_name)
                continue
            for partition, message_id in newest.items():
                ticks = timeuuid.ticks_from_uuid(message_id)
                for waiter in list(self._waiters.get((application, queue_name, partition), ())):
                    if ticks >= waiter.since_ticks:
                        self._fire(waiter, True)

    def stop(self) -> None:
        """Release every held read (they answer with what they have)."""
        for waiters in list(self._waiters.values()):
            for waiter in list(waiters):
                self._fire(waiter, False)
