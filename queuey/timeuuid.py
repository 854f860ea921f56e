"""Version-1 (time) UUIDs as Queuey uses them for message ids.

Queuey orders messages the way Cassandra orders its ``timeuuid`` type: by the
60-bit timestamp, then by the remaining eight bytes compared as *signed*
bytes.  :func:`sort_key` turns an id into 16 bytes whose plain byte order is
that order, so any store that can compare blobs can keep messages sorted.
"""

from __future__ import annotations

import os
import uuid
from typing import Callable

#: 100-ns intervals between the UUID epoch (1582-10-15) and the Unix epoch.
UUID_EPOCH_OFFSET = 0x01B21DD213814000
TICKS_PER_SECOND = 10_000_000
MAX_TICKS = (1 << 60) - 1 - UUID_EPOCH_OFFSET

#: XOR with this flips the sign bit of each of 8 bytes: signed byte order becomes unsigned.
_FLIP = 0x8080808080808080


def _uuid_time(value: uuid.UUID) -> int:
    """``value.time``, computed straight from the integer (the property is slow)."""
    n = value.int
    return (((n >> 64) & 0x0FFF) << 48) | (((n >> 80) & 0xFFFF) << 32) | (n >> 96)


def ticks_from_uuid(value: uuid.UUID) -> int:
    """The id's time in 100-ns ticks since the Unix epoch."""
    return _uuid_time(value) - UUID_EPOCH_OFFSET


def format_ticks(ticks: int) -> str:
    """Render ticks as the API's decimal seconds string, e.g. '1323973966.2826370'."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    return f"{seconds}.{fraction:07d}"


def parse_timestamp(text: str) -> int:
    """Parse decimal seconds (at most 7 fractional digits kept) into ticks.

    Raises ValueError for anything that is not a plain non-negative decimal.
    """
    whole, dot, fraction = text.partition(".")
    if not whole.isdigit() or not whole.isascii():
        raise ValueError(text)
    if dot and not (fraction.isdigit() and fraction.isascii()):
        raise ValueError(text)
    ticks = int(whole) * TICKS_PER_SECOND + int((fraction[:7] or "0").ljust(7, "0"))
    if ticks > MAX_TICKS:
        raise ValueError(text)
    return ticks


def timestamp_of(value: uuid.UUID) -> str:
    """The API timestamp string of a message id."""
    return format_ticks(ticks_from_uuid(value))


def sort_key(value: uuid.UUID) -> bytes:
    """16 bytes that sort like Cassandra's timeuuid: time, then signed tail bytes."""
    tail = (value.int & 0xFFFFFFFFFFFFFFFF) ^ _FLIP
    return _uuid_time(value).to_bytes(8, "big") + tail.to_bytes(8, "big")


def from_sort_key(key: bytes) -> uuid.UUID:
    """Invert :func:`sort_key`."""
    return _make(int.from_bytes(key[:8], "big"), int.from_bytes(key[8:], "big") ^ _FLIP)


def lowest_key_at(ticks: int) -> bytes:
    """The smallest sort key of any id at this time (for 'since <timestamp>')."""
    return (ticks + UUID_EPOCH_OFFSET).to_bytes(8, "big") + bytes(8)


def highest_key_at(ticks: int) -> bytes:
    """The largest sort key of any id at this time (for read delays)."""
    return (ticks + UUID_EPOCH_OFFSET).to_bytes(8, "big") + b"\xff" * 8


def _make(time: int, tail: int) -> uuid.UUID:
    """Build a version-1 UUID from its 60-bit time and its 8 tail bytes.

    Reads build one of these per message returned, so this skips
    ``uuid.UUID.__init__``'s argument checks: the value is in range by construction.
    """
    high = ((time & 0xFFFFFFFF) << 32) | (((time >> 32) & 0xFFFF) << 16) | ((time >> 48) & 0x0FFF) | 0x1000
    value = object.__new__(uuid.UUID)
    object.__setattr__(value, "int", (high << 64) | tail)
    object.__setattr__(value, "is_safe", uuid.SafeUUID.unknown)
    return value


def make_uuid(ticks: int, clock_seq: int, node: int) -> uuid.UUID:
    """A version-1, RFC 4122 variant UUID for ``ticks`` since the Unix epoch."""
    tail = (0x8000 | (clock_seq & 0x3FFF)) << 48 | (node & 0xFFFFFFFFFFFF)
    return _make(ticks + UUID_EPOCH_OFFSET, tail)


def parse_message_id(text: str) -> uuid.UUID:
    """Parse the API's 32-hex-digit id of a version-1 UUID; ValueError otherwise."""
    if len(text) != 32:
        raise ValueError(text)
    value = uuid.UUID(hex=text)
    if value.version != 1 or value.variant != uuid.RFC_4122:
        raise ValueError(text)
    return value


class TimeUUIDGenerator:
    """Make message ids that never repeat and always increase within a process.

    The node is 48 random bits (multicast bit set, as RFC 4122 asks for ids not
    tied to a MAC address), so processes and hosts do not collide.  When the
    clock has not moved on (or went backwards) the time is bumped by one tick
    past the last id, which keeps ids unique and in order.
    """

    def __init__(self, now_ticks: Callable[[], int], node: int | None = None,
                 clock_seq: int | None = None) -> None:
        self._now_ticks = now_ticks
        self.node = _random_node() if node is None else node
        self.clock_seq = int.from_bytes(os.urandom(2), "big") & 0x3FFF if clock_seq is None else clock_seq
        self._last = -1

    def now_ticks(self) -> int:
        """The later of the clock and the last id made: no id of this process is after it."""
        return max(self._now_ticks(), self._last)

    def next(self) -> uuid.UUID:
        ticks = max(self._now_ticks(), self._last + 1)
        self._last = ticks
        return make_uuid(ticks, self.clock_seq, self.node)


class LaterIds:
    """Make ids dated ahead of now (delayed messages), none ever repeated within a process.

    They cannot come from the :class:`TimeUUIDGenerator`, whose ids only go up:
    one id a day ahead would date every later id of the process a day ahead.
    These have a node of their own, so they never meet that generator's ids,
    and a clock sequence that counts up with each id, so two of them at the
    same time differ; when it wraps, a new random node is drawn.
    """

    def __init__(self, node: int | None = None) -> None:
        self.node = _random_node() if node is None else node
        self._sequence = 0

    def at(self, ticks: int) -> uuid.UUID:
        """An id dated ``ticks`` (100-ns since the Unix epoch) that this process never made before."""
        if self._sequence > 0x3FFF:
            self.node, self._sequence = _random_node(), 0
        value = make_uuid(ticks, self._sequence, self.node)
        self._sequence += 1
        return value


def _random_node() -> int:
    """48 random bits with the multicast bit set (RFC 4122, section 4.5)."""
    return int.from_bytes(os.urandom(6), "big") | (1 << 40)


def lowest_uuid_at(ticks: int) -> uuid.UUID:
    """The first id, in store order, of all ids at this time."""
    return from_sort_key(lowest_key_at(ticks))


def highest_uuid_at(ticks: int) -> uuid.UUID:
    """The last id, in store order, of all ids at this time."""
    return from_sort_key(highest_key_at(ticks))
