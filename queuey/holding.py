"""Held range reads grouped by what they read: one wake-up, one storage read, one pass over the group.

A long-poll that found nothing joins the group of held reads that ask for the
same page (same queue incarnation, partitions and cursor).  The group, not
each read, waits on the hub.  A post wakes it once; it reads once; and it hands
the page to every member in one pass (each member's ``deliver``: the HTTP
layer writes its answer there) before any member's coroutine resumes, which
then happens a batch per reactor turn.  So the last of 10,000 reads of one
queue waits for 10,000 writes, not for 10,000 wake-ups, reads and requests.

A member may join a group that is reading: the read started after the
wake-up that began it, and a group whose read finds nothing waits again
from the generation it read at, so a post made meanwhile wakes it at once.
"""

from __future__ import annotations

from typing import Any, Callable, Hashable

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from queuey import timeuuid
from queuey.interfaces import QueueSettings
from queuey.longpoll import LongPollHub
from queuey.pages import Page
from queuey.validation import ReadQuery

log = Logger()
#: Gets a page and the tokens of the members that gave this same function, before their
#: Deferreds fire: the HTTP layer answers all of them there, in one loop.
Deliver = Callable[[Page, list[Any]], None]
ReadPage = Callable[[QueueSettings, ReadQuery], "defer.Deferred[Page]"]
#: Members whose coroutines resume per reactor turn, once their answers are out.
RESUME_BATCH = 256


class _Member:
    __slots__ = ("deferred", "deliver", "token", "timeout")

    deferred: defer.Deferred[Page | None]

    def __init__(self, deliver: Deliver | None, token: Any) -> None:
        self.deliver = deliver
        self.token = token
        self.timeout: IDelayedCall | None = None


class _Group:
    __slots__ = ("key", "queue", "query", "members", "waiting")

    def __init__(self, key: Hashable, queue: QueueSettings, query: ReadQuery) -> None:
        self.key = key
        self.queue = queue
        self.query = query
        self.members: dict[defer.Deferred[Page | None], _Member] = {}
        #: The hub's wait while the group waits; None while its storage read is in flight.
        self.waiting: defer.Deferred[bool] | None = None


def group_key(queue: QueueSettings, query: ReadQuery) -> Hashable:
    """Reads with equal keys read the same page at the same moment."""
    return (queue.application, queue.queue_name, queue.created, query.partitions, query.since_ticks,
            query.since_id, query.after_id, query.limit, query.descending)


class HeldReads:
    """The groups of held reads of one process, woken through ``hub``, reading with ``read``."""

    def __init__(self, hub: LongPollHub, clock: IReactorTime, read: ReadPage) -> None:
        self._hub = hub
        self._clock = clock
        self._read = read
        self._groups: dict[Hashable, _Group] = {}
        #: Reads held (members of every group).
        self.held = 0

    def hold(self, queue: QueueSettings, query: ReadQuery, looked_at: int, seen_generation: int,
             timeout: float, deliver: Deliver | None = None, token: Any = None) -> defer.Deferred[Page | None]:
        """The first page with messages read after a wake-up, or None when ``timeout`` passes first.

        ``looked_at`` (ticks) and ``seen_generation`` (the hub's) are when the caller last
        found nothing.  ``deliver`` gets the page first, with ``token`` among the tokens of
        the group's members that gave the same ``deliver``, before the returned Deferred
        fires.  Cancelling the Deferred leaves the group.
        """
        key = group_key(queue, query)
        group = self._groups.get(key)
        fresh = group is None
        if group is None:
            group = self._groups[key] = _Group(key, queue, query)
        member = _Member(deliver, token)
        member.deferred = defer.Deferred(lambda d: self._leave(group, member))
        member.timeout = self._clock.callLater(timeout, self._time_up, group, member)
        group.members[member.deferred] = member
        self.held += 1
        if fresh:  # last: the hub may wake it at once (a post since seen_generation)
            self._wait(group, looked_at, seen_generation)
        return member.deferred

    def _wait(self, group: _Group, looked_at: int, seen_generation: int) -> None:
        waiting = group.waiting = self._hub.wait(group.queue, group.query.partitions, looked_at, None,
                                                 seen_generation, counted=False)
        waiting.addCallbacks(self._woken, lambda f: f.trap(defer.CancelledError) and None, (group,))

    def _woken(self, arrived: bool, group: _Group) -> None:
        group.waiting = None
        if not arrived:  # the hub stops: every member answers with what it has
            self._dissolve(group, None)
            return
        looked_at, generation = self._now_ticks(), self._hub.generation
        reading = self._read(group.queue, group.query)
        reading.addCallbacks(self._read_done, self._read_failed, (group, looked_at, generation), None, (group,))

    def _read_done(self, page: Page, group: _Group, looked_at: int, generation: int) -> None:
        if not group.members:
            return
        if not page.messages:  # woken for another cursor's messages, or by a poll: wait again
            self._wait(group, looked_at, generation)
            return
        self._dissolve(group, page)

    def _read_failed(self, failure: Failure, group: _Group) -> None:
        self._dissolve(group, failure)  # each member's caller answers it

    def _dissolve(self, group: _Group, outcome: Page | Failure | None) -> None:
        """The group is done: answers out first (every ``deliver``), then the members' Deferreds."""
        if self._groups.get(group.key) is group:
            del self._groups[group.key]
        members = list(group.members.values())
        group.members.clear()
        self.held -= len(members)
        if isinstance(outcome, Page):
            deliveries: dict[Deliver, list[Any]] = {}
            for member in members:
                if member.deliver is not None:
                    deliveries.setdefault(member.deliver, []).append(member.token)
            for deliver, tokens in deliveries.items():
                try:
                    deliver(outcome, tokens)
                except Exception:
                    log.failure("Delivering a held read's page failed")
        for member in members:
            if member.timeout is not None and member.timeout.active():
                member.timeout.cancel()
            member.timeout = None
        self._resume(outcome, members)

    def _resume(self, outcome: Page | Failure | None, members: list[_Member]) -> None:
        for member in members[:RESUME_BATCH]:
            if not member.deferred.called:  # not cancelled meanwhile
                if isinstance(outcome, Failure):
                    member.deferred.errback(outcome)
                else:
                    member.deferred.callback(outcome)
        if len(members) > RESUME_BATCH:
            self._clock.callLater(0, self._resume, outcome, members[RESUME_BATCH:])

    def _time_up(self, group: _Group, member: _Member) -> None:
        member.timeout = None
        if self._drop(group, member):
            member.deferred.callback(None)

    def _leave(self, group: _Group, member: _Member) -> None:
        if member.timeout is not None and member.timeout.active():
            member.timeout.cancel()
        member.timeout = None
        self._drop(group, member)

    def _drop(self, group: _Group, member: _Member) -> bool:
        """Take ``member`` out of ``group`` (False if it was not in it); the last one out ends it."""
        if group.members.pop(member.deferred, None) is None:
            return False
        self.held -= 1
        if not group.members:
            if self._groups.get(group.key) is group:
                del self._groups[group.key]
            if group.waiting is not None:
                waiting, group.waiting = group.waiting, None
                waiting.cancel()
        return True

    def _now_ticks(self) -> int:
        return round(self._clock.seconds() * timeuuid.TICKS_PER_SECOND)

    def __len__(self) -> int:
        """The number of groups."""
        return len(self._groups)
