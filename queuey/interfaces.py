"""The storage contract every Queuey backend implements, and the values it trades in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Sequence

from zope.interface import Attribute, Interface

from queuey import timeuuid

QUEUE_TYPES = ("user", "public")
CONSISTENCY_LEVELS = ("weak", "strong", "very_strong")


@dataclass(frozen=True)
class QueueSettings:
    """A queue's stored settings; ``created`` is in 100-ns ticks since the Unix epoch."""

    application: str
    queue_name: str
    partitions: int = 1
    type: str = "user"
    consistency: str = "strong"
    principles: tuple[str, ...] = ()
    created: int = 0


@dataclass(frozen=True)
class NewMessage:
    """A message to store (or to replace, when its id exists).

    Its id's time is when it becomes visible: a delayed message is dated ahead
    of now.  Its ``ttl`` counts from then (or from now, for an id in the past).
    """

    id: uuid.UUID
    partition: int
    body: bytes
    content_type: str
    ttl: int

    def lifetime(self, now: float) -> float:
        """Seconds from ``now`` (Unix seconds) until it expires: its delay, then its TTL."""
        visible = timeuuid.ticks_from_uuid(self.id) / timeuuid.TICKS_PER_SECOND
        return max(visible - now, 0.0) + self.ttl


@dataclass(frozen=True)
class Message:
    """A stored message as read back."""

    id: uuid.UUID
    partition: int
    body: bytes
    content_type: str


@dataclass(frozen=True)
class MessageRange:
    """Which messages of one partition a range read wants, in the store's id order.

    ``lower`` is compared in the store's timeuuid order (see queuey.timeuuid);
    ``upper`` is inclusive and comes from the read delay.  ``max_bytes`` bounds
    the bodies read: rows come until their bodies add up to it (the row that
    reaches it included, so at least one), however many ``limit`` allows.
    """

    lower: uuid.UUID | None = None
    lower_inclusive: bool = True
    upper: uuid.UUID | None = None
    limit: int = 100
    descending: bool = False
    max_bytes: int | None = None

    def full(self, body_bytes: int) -> bool:
        """True once bodies of ``body_bytes`` have reached ``max_bytes``."""
        return self.max_bytes is not None and body_bytes >= self.max_bytes


@dataclass(frozen=True)
class MessageRef:
    """A message named by partition and id."""

    partition: int
    id: uuid.UUID


class IMessageStore(Interface):
    """Where queues and messages live.  Every method returns a Deferred.

    Failures of the store itself errback with
    :class:`queuey.errors.StorageUnavailable`; the other storage errors are
    :class:`queuey.errors.QueueExists` and :class:`queuey.errors.QueueMissing`.  Expired messages are never
    returned or counted.
    """

    name = Attribute("Short name of the backend, for logs and /__heartbeat__.")

    def open():
        """Connect, create the schema if needed; fires when ready to serve."""

    def close():
        """Release connections and threads; fires when done."""

    def check():
        """Fire when the store answers a trivial query (for /__heartbeat__)."""

    def create_queue(settings: QueueSettings):
        """Store a new queue; errback with QueueExists if the name is taken."""

    def get_queue(application: str, queue_name: str):
        """Fire with the QueueSettings, or None when there is no such queue."""

    def update_queue(settings: QueueSettings):
        """Replace an existing queue's settings; fire with them, or None if gone."""

    def delete_queue(application: str, queue_name: str):
        """Remove a queue and all its messages; fire with True if it existed."""

    def list_queues(application: str, after: str | None, limit: int):
        """Fire with up to ``limit`` QueueSettings named after ``after``, by name."""

    def count_messages(queue: QueueSettings):
        """Fire with the number of unexpired messages over all partitions."""

    def put_messages(queue: QueueSettings, messages: Sequence[NewMessage]):
        """Store all messages durably (replacing any with the same id); fire with None."""

    def read_messages(queue: QueueSettings, partition: int, wanted: MessageRange):
        """Fire with the partition's messages in ``wanted``, ordered as asked."""

    def get_messages(queue: QueueSettings, refs: Sequence[MessageRef]):
        """Fire with those of the named messages that exist, in the order named."""

    def delete_messages(queue: QueueSettings, refs: Sequence[MessageRef]):
        """Remove the named messages; fire with None."""

    def newest_message_ids(queue: QueueSettings, partitions: Sequence[int], upto: uuid.UUID | None = None):
        """Fire with {partition: newest message id} for the partitions that have one;
        with ``upto``, the newest at or before it (in the store's id order).

        Long-poll uses it, up to now, to notice messages posted through other
        processes, and delayed messages that became visible.
        """
