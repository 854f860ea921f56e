"""Waking held reads and streams when a delayed message becomes visible.

A message posted with a delay is dated when it becomes visible, so no read
returns it before then; nothing is posted at that moment, though, so nothing
would wake the long-polls and streams waiting on its partition.  This keeps
the delayed messages stored through this process by their time, and tells
the long-poll hub about each as its time comes, as if it had just been
posted.  Other processes notice it with their store check (the hub's poll
looks only at ids up to now), within ``[longpoll] poll_interval``.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable, Iterable

from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from queuey import timeuuid

log = Logger()
Notify = Callable[[str, str, Iterable[int]], None]
#: Delayed messages remembered at once; past it the hub's store check wakes their readers.
MAX_PENDING = 100_000
#: Wakes come this much after the time (a few float roundings of it), never before it.
LATE = 1e-5


class VisibilityTimer:
    """Delayed messages' (time, queue, partition), earliest first, under one reactor timer."""

    def __init__(self, clock: IReactorTime, notify: Notify, limit: int = MAX_PENDING) -> None:
        self._clock = clock
        self._notify = notify
        self._limit = limit
        self._pending: list[tuple[int, str, str, int]] = []
        self._call: Any = None
        self._warned = False

    @property
    def pending(self) -> int:
        return len(self._pending)

    def schedule(self, application: str, queue_name: str, partition: int, ticks: int) -> None:
        """Notify ``partition`` of the queue at ``ticks`` (100-ns since the Unix epoch)."""
        if len(self._pending) >= self._limit:
            if not self._warned:
                self._warned = True
                log.warn("{count} delayed messages wait to become visible; readers of more are woken "
                         "by the store check ([longpoll] poll_interval)", count=self._limit)
            return
        heapq.heappush(self._pending, (ticks, application, queue_name, partition))
        if self._pending[0][0] == ticks:
            self._arm()

    def _now_ticks(self) -> int:
        return round(self._clock.seconds() * timeuuid.TICKS_PER_SECOND)

    def _arm(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._pending:
            wait = (self._pending[0][0] - self._now_ticks()) / timeuuid.TICKS_PER_SECOND
            self._call = self._clock.callLater(max(wait, 0.0) + LATE, self._due)

    def _due(self) -> None:
        self._call = None
        now = self._now_ticks()
        due: dict[tuple[str, str], set[int]] = {}
        while self._pending and self._pending[0][0] <= now:
            _, application, queue_name, partition = heapq.heappop(self._pending)
            due.setdefault((application, queue_name), set()).add(partition)
        if len(self._pending) < self._limit:
            self._warned = False
        self._arm()
        for (application, queue_name), partitions in due.items():
            self._notify(application, queue_name, partitions)

    def stop(self) -> None:
        """Forget every pending wake (the service stops)."""
        self._pending.clear()
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
