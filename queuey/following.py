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
from queuey.reading import Reader
from queuey.rendering import parse_rendered
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
    """A message to send (and its JSON, as rendered when it was written), and the cursor once it is sent."""

    message: Message
    cursor: str
    json: bytes


class Follower:
    """One stream's reading of a queue: each :meth:`read` gives the messages after the cursor
    (in time order across partitions) and moves the cursor past them."""

    def __init__(self, reader: Reader, queue: QueueSettings, query: ReadQuery,
                 positions: dict[int, uuid.UUID] | None = None) -> None:
        self._reader = reader
        self.queue = queue
        self.query = query
        self.positions = dict(positions or {})
        beyond = sorted(set(self.positions) - set(query.partitions))
        if beyond:
            raise InvalidParameters({CURSOR_FIELD: f"The cursor names partition {beyond[0]}, which this "
                                                   "stream does not read."})
        self._looked_at = 0
        self._seen_generation: int | None = None
        self._woken = False

    async def read(self, budget: int) -> tuple[list[Delivery], bool]:
        """The next messages (their bodies within ``budget`` bytes, one at least), and whether
        more may be there already.  A read right after a wake-up shares its store read with the
        other streams woken at the same place."""
        self._looked_at = round(self._reader.clock.seconds() * timeuuid.TICKS_PER_SECOND)
        self._seen_generation = self._reader.hub.generation
        woken, self._woken = self._woken, False
        page = await self._reader.after(self.queue, self.query, self.positions, budget, woken)
        groups: dict[int, list[tuple[Message, bytes]]] = {}
        for _, json in page.messages:  # (body size, rendered JSON)
            message = parse_rendered(json)
            groups.setdefault(message.partition, []).append((message, json))
        more = page.truncated or any(len(group) >= self.query.limit for group in groups.values())
        deliveries = []
        for message, json in _in_time_order(groups.values()):
            self.positions[message.partition] = message.id
            deliveries.append(Delivery(message, format_cursor(self.positions), json))
        return deliveries, more

    def wait(self, timeout: float) -> defer.Deferred[bool]:
        """True once a message may have arrived since the last read (read delay included),
        False after ``timeout`` seconds.  Cancel it to stop waiting."""
        def woke(arrived: bool) -> bool:
            self._woken = arrived
            return arrived
        return defer.ensureDeferred(self._reader.wait(self.queue, self.query.partitions,
                                                                 self._looked_at, timeout,
                                                                 self._seen_generation)).addCallback(woke)


def _in_time_order(groups: Any) -> Sequence[tuple[Message, bytes]]:
    """Each partition's messages (each group in order) merged into the store's id order."""
    return list(heapq.merge(*groups, key=lambda pair: timeuuid.sort_key(pair[0].id)))
