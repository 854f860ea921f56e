"""Following a queue from a cursor, for event streams: what to send next, and waiting for more.

A stream's cursor holds, for each partition that has delivered a message, the
last message delivered; the other partitions start where the stream's query
says (``since``/``after``, or the oldest message).  No HTTP here:
:mod:`queuey.streams` turns what a :class:`Follower` reads into events.
"""

from __future__ import annotations

import heapq
import uuid
from dataclasses import dataclass
from typing import Any, Sequence

from twisted.internet import defer

from queuey import timeuuid
from queuey.errors import InvalidParameters
from queuey.interfaces import Message, QueueSettings
from queuey.validation import MAX_PARTITIONS, ReadQuery, parse_int, parse_message_id

CURSOR_FIELD = "Last-Event-ID"


def parse_cursor(text: str) -> dict[int, uuid.UUID]:
    """A cursor as sent back in ``Last-Event-ID``: ``<partition>:<id>`` items, comma-separated."""
    positions: dict[int, uuid.UUID] = {}
    items = text.split(",", MAX_PARTITIONS)
    if len(items) > MAX_PARTITIONS:
        raise InvalidParameters({CURSOR_FIELD: f"A cursor names at most {MAX_PARTITIONS} partitions."})
    for item in items:
        prefix, colon, hex_id = item.strip().partition(":")
        try:
            if not colon:
                raise ValueError("Each item must be <partition>:<message id>.")
            partition = parse_int(prefix, 1, MAX_PARTITIONS, "a partition number")
            if partition in positions:
                raise ValueError(f"Partition {partition} is named twice.")
            positions[partition] = parse_message_id(hex_id)
        except ValueError as e:
            raise InvalidParameters({CURSOR_FIELD: f"Not a stream cursor ({item.strip()[:80]!r}): {e}"}) from None
    return positions


def format_cursor(positions: dict[int, uuid.UUID]) -> str:
    return ",".join(f"{partition}:{positions[partition].hex}" for partition in sorted(positions))


@dataclass(frozen=True)
class Delivery:
    """A message to send, and the cursor once it is sent."""

    message: Message
    cursor: str


class Follower:
    """One stream's reading of a queue: each :meth:`read` gives the messages after the cursor
    (in time order across partitions) and moves the cursor past them."""

    def __init__(self, core: Any, queue: QueueSettings, query: ReadQuery,
                 positions: dict[int, uuid.UUID] | None = None) -> None:
        self._core = core
        self.queue = queue
        self.query = query
        self.positions = dict(positions or {})
        beyond = sorted(set(self.positions) - set(query.partitions))
        if beyond:
            raise InvalidParameters({CURSOR_FIELD: f"The cursor names partition {beyond[0]}, which this "
                                                   "stream does not read."})
        self._looked_at = 0

    async def read(self, budget: int) -> tuple[list[Delivery], bool]:
        """The next messages (their bodies within ``budget`` bytes, one at least), and whether
        more may be there already."""
        self._looked_at = round(self._core.clock.seconds() * timeuuid.TICKS_PER_SECOND)
        page = await self._core.read_after(self.queue, self.query, self.positions, budget)
        groups: dict[int, list[Message]] = {}
        for message in page.messages:
            groups.setdefault(message.partition, []).append(message)
        more = page.truncated or any(len(group) >= self.query.limit for group in groups.values())
        deliveries = []
        for message in _in_time_order(groups.values()):
            self.positions[message.partition] = message.id
            deliveries.append(Delivery(message, format_cursor(self.positions)))
        return deliveries, more

    def wait(self, timeout: float) -> defer.Deferred[bool]:
        """True once a message may have arrived since the last read (read delay included),
        False after ``timeout`` seconds.  Cancel it to stop waiting."""
        return defer.ensureDeferred(self._core.wait_for_messages(self.queue, self.query.partitions,
                                                                 self._looked_at, timeout))


def _in_time_order(groups: Any) -> Sequence[Message]:
    """Each partition's messages (each group in order) merged into the store's id order."""
    return list(heapq.merge(*groups, key=lambda m: timeuuid.sort_key(m.id)))
