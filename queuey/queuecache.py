"""Recently looked-up queue settings, so that most requests make no storage trip for them.

Entries live ``seconds`` at most and are forgotten at once when this process
(or, through :mod:`queuey.workers`, a sibling worker) updates or deletes the
queue.  What a stale entry can do is bounded by that time and by the store:
a post to a queue deleted elsewhere still fails where the store rechecks the
queue in its write (``IMessageStore.rechecks_queue_on_write``), and a read of
a deleted queue finds no messages.  Misses are not kept, so a queue created
elsewhere is found at once, and a client asking for unknown queues fills
nothing.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorTime

from queuey.interfaces import QueueSettings

Key = tuple[str, str]


class QueueCache:
    """At most ``size`` queues' settings, each for at most ``seconds``; 0 seconds keeps none."""

    def __init__(self, clock: IReactorTime, seconds: float, size: int = 10_000) -> None:
        self._clock = clock
        self._seconds = seconds
        self._size = size
        self._entries: dict[Key, tuple[float, QueueSettings]] = {}

    def get(self, application: str, queue_name: str) -> QueueSettings | None:
        entry = self._entries.get((application, queue_name))
        if entry is None:
            return None
        if self._clock.seconds() >= entry[0]:
            del self._entries[(application, queue_name)]
            return None
        return entry[1]

    def put(self, queue: QueueSettings) -> None:
        if self._seconds <= 0:
            return
        if len(self._entries) >= self._size:
            del self._entries[next(iter(self._entries))]  # the oldest entry made
        key = (queue.application, queue.queue_name)
        self._entries.pop(key, None)
        self._entries[key] = (self._clock.seconds() + self._seconds, queue)

    def forget(self, application: str, queue_name: str) -> None:
        self._entries.pop((application, queue_name), None)

    def __len__(self) -> int:
        return len(self._entries)
