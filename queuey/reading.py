"""Reading messages: one page of a range, reads shared after a wake-up, and reads held until one arrives.

The core checks who may read what; this module only reads.  A read never sees
past now less the queue's read delay, so a cursor never jumps over a message
that is still being written elsewhere.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any, Mapping

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime

from queuey import timeuuid
from queuey.config import Config
from queuey.holding import Deliver, HeldReads
from queuey.interfaces import IMessageStore, MessageRange, QueueSettings
from queuey.longpoll import LongPollHub
from queuey.metrics import Metrics
from queuey.pages import Page, cut_page
from queuey.sharing import SharedCalls
from queuey.storage.directory import gather
from queuey.validation import ReadQuery


def _after(wanted: MessageRange, position: uuid.UUID) -> MessageRange:
    """``wanted`` starting strictly after ``position``, unless its own lower bound is later."""
    if wanted.lower is not None and timeuuid.sort_key(wanted.lower) > timeuuid.sort_key(position):
        return wanted
    return replace(wanted, lower=position, lower_inclusive=False)


class Reader:
    """Reads pages of messages from the store, for range reads, held reads and streams."""

    def __init__(self, config: Config, store: IMessageStore, hub: LongPollHub, clock: IReactorTime,
                 ids: timeuuid.TimeUUIDGenerator, metrics: Metrics) -> None:
        self.config = config
        self.store = store
        self.hub = hub
        self.clock = clock
        self.metrics = metrics
        self._ids = ids
        self._shared: SharedCalls[Page] = SharedCalls(clock)
        self.held_reads = HeldReads(hub, clock, lambda queue, query: defer.ensureDeferred(self.once(queue, query)))

    def now_ticks(self) -> int:
        return round(self.clock.seconds() * timeuuid.TICKS_PER_SECOND)

    def delay(self, queue: QueueSettings) -> float:
        """The queue's read delay (seconds), from its consistency level."""
        return self.config.delays.get(queue.consistency, 0.0)

    def range(self, queue: QueueSettings, query: ReadQuery, max_bytes: int) -> MessageRange:
        """The ids a read may see: from its cursor up to now (less the read delay), never later."""
        lower, inclusive = None, True
        if query.since_id is not None:
            lower = query.since_id
        elif query.since_ticks is not None:
            lower = timeuuid.lowest_uuid_at(query.since_ticks)
        if query.after_id is not None and (
                lower is None or timeuuid.sort_key(query.after_id) >= timeuuid.sort_key(lower)):
            lower, inclusive = query.after_id, False
        delay = self.delay(queue)
        upper_ticks = self._ids.now_ticks()
        if delay:
            upper_ticks = self.now_ticks() - round(delay * timeuuid.TICKS_PER_SECOND)
        return MessageRange(lower, inclusive, timeuuid.highest_uuid_at(upper_ticks), query.limit,
                            query.descending, max_bytes)

    async def once(self, queue: QueueSettings, query: ReadQuery,
                   positions: Mapping[int, uuid.UUID] | None = None, budget: int | None = None) -> Page:
        """One read of every partition asked, each within its share of the budget; a partition
        with a position in ``positions`` is read strictly after it (a stream's cursor)."""
        budget = budget or self.config.max_response_bytes
        share = max(budget // len(query.partitions), self.config.max_message_bytes)
        wanted = self.range(queue, query, share)
        if not positions:  # one store call for every partition
            groups = await self.store.read_rendered(queue, query.partitions, wanted)
        else:
            groups = [group for (group,) in await gather([
                self.store.read_rendered(queue, (p,), _after(wanted, positions[p]) if p in positions else wanted)
                for p in query.partitions])]
        return cut_page(query.partitions, groups, query.limit, share, budget)

    def shared(self, queue: QueueSettings, query: ReadQuery,
               positions: Mapping[int, uuid.UUID] | None = None, budget: int | None = None) -> defer.Deferred[Page]:
        """The read of a woken long-poll or stream, shared by every woken read that asks for the same page.

        The key holds the hub's generation, which each wake-up moves on: a read
        joins only reads started after what woke it, so it never misses that.
        """
        key = (queue.application, queue.queue_name, queue.created, query.partitions, query.since_ticks,
               query.since_id, query.after_id, query.limit, query.descending,
               tuple(sorted((positions or {}).items())), budget, self.hub.generation)
        return self._shared.call(key, lambda: defer.ensureDeferred(self.once(queue, query, positions, budget)))

    async def after(self, queue: QueueSettings, query: ReadQuery, positions: Mapping[int, uuid.UUID],
                    budget: int, woken: bool = False) -> Page:
        """What a stream reads next: ``query``'s partitions after their ``positions`` (or from the
        query's own bound), within ``budget`` body bytes, up to now less the read delay.  ``woken``
        (a wake-up just ended its wait): shared with the streams at the same place."""
        read = self.shared if woken and not self.delay(queue) else self.once
        page = await read(queue, query, positions, budget)
        self.metrics.messages_read.inc(len(page.messages))
        return page

    async def wait(self, queue: QueueSettings, partitions: tuple[int, ...], looked_at: int,
                   timeout: float, seen_generation: int | None = None) -> bool:
        """True once a message may have arrived on ``partitions`` since ``looked_at`` (ticks; the
        hub's generation then: ``seen_generation``) and is old enough for the queue's read delay;
        False when ``timeout`` passes first."""
        deadline = self.clock.seconds() + timeout
        arrived = await self.hub.wait(queue, partitions, looked_at, timeout, seen_generation)
        delay = self.delay(queue)
        if arrived and delay:  # the new message becomes readable only after the read delay
            await task.deferLater(self.clock, min(delay, max(deadline - self.clock.seconds(), 0)))
        return arrived

    async def held(self, queue: QueueSettings, query: ReadQuery, deliver: Deliver | None = None,
                   token: Any = None) -> Page:
        """A range read held up to ``query.wait`` seconds while it finds nothing.

        ``deliver`` gets the page first (with ``token``) when a wake-up ends the wait (see
        :mod:`queuey.holding`): the caller may answer there, before this returns.
        """
        deadline = self.clock.seconds() + query.wait
        looked_at, seen = self.now_ticks(), self.hub.generation
        page = await self.once(queue, query)
        if not page.messages and deadline > self.clock.seconds():
            page = await (self._held_with_delay(queue, query, deadline, looked_at, seen) if self.delay(queue) else
                          self._held_in_group(queue, query, deadline, looked_at, seen, deliver, token))
        self.metrics.messages_read.inc(len(page.messages))
        return page

    async def _held_in_group(self, queue: QueueSettings, query: ReadQuery, deadline: float, looked_at: int,
                             seen: int, deliver: Deliver | None, token: Any) -> Page:
        found = await self.held_reads.hold(queue, query, looked_at, seen, deadline - self.clock.seconds(),
                                           deliver, token)
        return found if found is not None else await self.once(queue, query)  # time is up: one last look

    async def _held_with_delay(self, queue: QueueSettings, query: ReadQuery, deadline: float, looked_at: int,
                               seen: int) -> Page:
        """A queue with a read delay: each read waits for its own wake-up plus the delay."""
        while True:
            remaining = deadline - self.clock.seconds()
            if remaining <= 0 or not await self.wait(queue, query.partitions, looked_at, remaining, seen):
                return await self.once(queue, query)  # time is up: one last look
            looked_at, seen = self.now_ticks(), self.hub.generation
            page = await self.once(queue, query)
            if page.messages:
                return page
