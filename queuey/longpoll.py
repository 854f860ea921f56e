"""Holding range reads until a message arrives (long-poll).

Posts through this process wake the held reads of their partitions at once;
so do posts through its sibling workers (``notify(..., local=False)``, from
:mod:`queuey.workers`).  Posts through other server processes are noticed by
one poll per watched queue per ``poll_interval`` (not one per held request):
the hub asks the store for the newest id of each watched partition and wakes
the reads that waited since before it.

Any long-lived reader (a held read, a stream) waits with ``wait()`` and is
woken by ``notify()``.  ``generation`` moves on before every wake-up: reads
made after a wake-up may share one storage read (see
``Reader.shared`` in :mod:`queuey.reading`), reads made before it may not, so none misses
what woke it.
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
#: Partitions whose last wake-up the hub remembers (see LongPollHub.wait); past this
#: many it forgets them all, and a waiter that looked before then is woken at once.
RECENT_WAKEUPS = 65536


class _Waiter:
    __slots__ = ("queue", "partitions", "since_ticks", "deferred", "timeout", "counted")

    def __init__(self, queue: QueueSettings, partitions: tuple[int, ...], since_ticks: int,
                 on_cancel: Callable[["_Waiter"], None], counted: bool = True) -> None:
        self.queue = queue
        self.counted = counted
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
        #: Moves on before every wake-up: reads started since may share their page
        #: (see Reader.shared); reads started before may not.
        self.generation = 0
        #: The generation of each partition's last wake-up by a post, and the generation
        #: before which the hub forgot them (bounded: RECENT_WAKEUPS).
        self._woken_at: dict[PartitionKey, int] = {}
        self._forgotten_before = 0
        #: Called with (application, queue_name, partitions) on each local post, for the
        #: sibling workers (queuey.workers) to wake their reads too.
        self.on_local_post: Callable[[str, str, Iterable[int]], None] | None = None

    def wait(self, queue: QueueSettings, partitions: tuple[int, ...], since_ticks: int,
             timeout: float | None, since_generation: int | None = None,
             counted: bool = True) -> defer.Deferred[bool]:
        """Fire with True when a message may have arrived on ``partitions``, False at timeout.

        ``since_ticks`` is when the caller last looked: messages from then on wake it.
        ``since_generation`` is :attr:`generation` when it looked: a post to these partitions
        woken since then (while the caller was reading, before it waited) fires at once,
        rather than at the next store poll.
        Cancelling the Deferred (the client went away) forgets the waiter.  With no
        ``timeout`` it waits until woken or cancelled.  A waiter not ``counted`` is not one
        held read of :attr:`held` (a group of them, counted by its owner).
        """
        if since_generation is not None and self._posted_since(queue, partitions, since_generation):
            return defer.succeed(True)
        waiter = _Waiter(queue, partitions, since_ticks, self._forget, counted)
        if timeout is not None:
            waiter.timeout = self._clock.callLater(timeout, self._fire, waiter, False)
        for key in waiter.keys():
            self._waiters.setdefault(key, set()).add(waiter)
        self.held += counted
        if not self._poll.running and self._poll_interval:
            self._poll.start(self._poll_interval, now=False).addErrback(
                lambda f: log.failure("Long-poll store check stopped", f))
        return waiter.deferred

    def notify(self, application: str, queue_name: str, partitions: Iterable[int], local: bool = True) -> None:
        """Messages were stored on these partitions (by this process when ``local``): wake whoever
        waits on them here, and tell the sibling workers of a local post."""
        if local and self.on_local_post is not None:
            self.on_local_post(application, queue_name, partitions)
        woken: set[_Waiter] = set()
        self.generation += 1
        if len(self._woken_at) >= RECENT_WAKEUPS:
            self._woken_at.clear()
            self._forgotten_before = self.generation
        for partition in partitions:
            key = (application, queue_name, partition)
            woken.update(self._waiters.get(key, ()))
            self._woken_at[key] = self.generation
        for waiter in woken:
            self._fire(waiter, True)

    def _posted_since(self, queue: QueueSettings, partitions: Iterable[int], generation: int) -> bool:
        if generation < self._forgotten_before:
            return True  # forgotten: perhaps
        return any(self._woken_at.get((queue.application, queue.queue_name, p), -1) > generation
                   for p in partitions)

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
        self.held -= waiter.counted
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
            self.generation += 1
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
