"""Held reads in groups: one wake-up, one read, every answer handed out before any read resumes."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from queuey import holding
from queuey.holding import HeldReads
from queuey.interfaces import QueueSettings
from queuey.longpoll import LongPollHub
from queuey.pages import Page
from queuey.rendering import Rendered
from queuey.validation import ReadQuery

QUEUE = QueueSettings("a", "q", 2)
ONE = Page([Rendered(5, b'{"message_id":"00000000000000000000000000000001","body":"hello"}')])
EMPTY = Page([])


class Reads:
    """The group's storage reads, each answered by the test."""

    def __init__(self) -> None:
        self.pending: list[tuple[ReadQuery, defer.Deferred[Page]]] = []

    def __call__(self, queue: QueueSettings, query: ReadQuery) -> defer.Deferred[Page]:
        reading: defer.Deferred[Page] = defer.Deferred()
        self.pending.append((query, reading))
        return reading

    def answer(self, page: Page) -> None:
        _, reading = self.pending.pop(0)
        reading.callback(page)


class HeldReadsTests(unittest.TestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.hub = LongPollHub(self.clock, store=None, poll_interval=0)  # type: ignore[arg-type]
        self.reads = Reads()
        self.held = HeldReads(self.hub, self.clock, self.reads)
        self.delivered: list[tuple[Page, list[Any]]] = []

    def deliver(self, page: Page, tokens: list[Any]) -> None:
        self.delivered.append((page, list(tokens)))

    def hold(self, query: ReadQuery = ReadQuery(), timeout: float = 30, token: Any = None,
             generation: int | None = None) -> defer.Deferred[Page | None]:
        seen = self.hub.generation if generation is None else generation
        return self.held.hold(QUEUE, query, 0, seen, timeout, self.deliver, token)

    def test_one_wake_up_one_read_and_every_answer_before_any_read_resumes(self) -> None:
        count = holding.RESUME_BATCH + 10
        members = [self.hold(token=n) for n in range(count)]
        self.assertEqual((len(self.held), self.held.held, self.hub.held), (1, count, 0))
        self.hub.notify("a", "q", [1])
        self.assertEqual(len(self.reads.pending), 1)
        self.reads.answer(ONE)
        self.assertEqual(self.delivered, [(ONE, list(range(count)))])  # one call, tokens in the order held
        self.assertEqual([m.called for m in members], [True] * holding.RESUME_BATCH + [False] * 10)
        self.clock.advance(0)  # the rest resume on the next turn
        self.assertEqual([self.successResultOf(m) for m in members], [ONE] * count)
        self.assertEqual((len(self.held), self.held.held), (0, 0))

    def test_other_cursors_and_partitions_make_other_groups(self) -> None:
        first = self.hold(ReadQuery(partitions=(1,)))
        limited = self.hold(ReadQuery(partitions=(1,), limit=7))
        second = self.hold(ReadQuery(partitions=(2,)))
        self.assertEqual(len(self.held), 3)
        self.hub.notify("a", "q", [1])
        self.assertEqual(sorted(q.limit for q, _ in self.reads.pending), [7, 100])
        self.reads.answer(ONE)
        self.reads.answer(ONE)
        self.assertEqual(self.successResultOf(first), ONE)
        self.assertEqual(self.successResultOf(limited), ONE)
        self.assertNoResult(second)

    def test_an_empty_read_waits_again_and_a_post_during_it_wakes_it_at_once(self) -> None:
        member = self.hold()
        self.hub.notify("a", "q", [1])
        self.reads.answer(EMPTY)  # woken for nothing it can see
        self.assertNoResult(member)
        self.assertEqual(self.reads.pending, [])
        self.hub.notify("a", "q", [1])
        self.hub.notify("a", "q", [1])  # lands while the read is in flight
        self.reads.answer(EMPTY)
        self.assertEqual(len(self.reads.pending), 1)  # so it reads again at once
        self.reads.answer(ONE)
        self.assertEqual(self.successResultOf(member), ONE)

    def test_a_post_before_the_group_waited_wakes_it_at_once(self) -> None:
        seen = self.hub.generation
        self.hub.notify("a", "q", [1])  # after the caller looked, before it held
        member = self.hold(generation=seen)
        self.assertEqual(len(self.reads.pending), 1)
        self.reads.answer(ONE)
        self.assertEqual(self.successResultOf(member), ONE)

    def test_a_read_held_while_the_group_reads_gets_that_page(self) -> None:
        first = self.hold(token="first")
        self.hub.notify("a", "q", [1])
        late = self.hold(token="late")
        self.reads.answer(ONE)
        self.assertEqual(self.delivered, [(ONE, ["first", "late"])])
        self.assertEqual((self.successResultOf(first), self.successResultOf(late)), (ONE, ONE))

    def test_timeouts_answer_none_and_the_last_one_out_stops_waiting(self) -> None:
        short = self.hold(timeout=1)
        long = self.hold(timeout=5)
        self.clock.advance(1)
        self.assertIsNone(self.successResultOf(short))
        self.assertNoResult(long)
        self.assertEqual((self.held.held, len(self.hub._waiters)), (1, 1))
        self.clock.advance(4)
        self.assertIsNone(self.successResultOf(long))
        self.assertEqual((len(self.held), self.held.held, self.hub._waiters), (0, 0, {}))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_cancelled_read_leaves_and_gets_nothing(self) -> None:
        gone = self.hold(token="gone")
        stays = self.hold(token="stays")
        self.hub.notify("a", "q", [1])
        gone.cancel()
        self.failureResultOf(gone, defer.CancelledError)
        self.assertEqual(self.held.held, 1)
        self.reads.answer(ONE)
        self.assertEqual(self.delivered, [(ONE, ["stays"])])
        self.assertEqual(self.successResultOf(stays), ONE)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_when_every_read_left_a_late_page_goes_nowhere(self) -> None:
        gone = self.hold()
        self.hub.notify("a", "q", [1])
        gone.cancel()
        self.assertEqual(len(self.held), 0)
        self.reads.answer(ONE)
        self.assertEqual(self.delivered, [])
        self.failureResultOf(gone, defer.CancelledError)

    def test_a_failed_read_fails_every_member_and_delivers_nothing(self) -> None:
        members = [self.hold() for _ in range(3)]
        self.hub.notify("a", "q", [1])
        _, reading = self.reads.pending.pop()
        reading.errback(RuntimeError("disk on fire"))
        for member in members:
            self.failureResultOf(member, RuntimeError)
        self.assertEqual(self.delivered, [])

    def test_a_failing_delivery_is_logged_and_the_reads_still_resume(self) -> None:
        def broken(page: Page, tokens: list[Any]) -> None:
            raise ValueError("broken answer")
        member = self.held.hold(QUEUE, ReadQuery(), 0, self.hub.generation, 30, broken)
        self.hub.notify("a", "q", [1])
        self.reads.answer(ONE)
        self.assertEqual(self.successResultOf(member), ONE)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_stopping_the_hub_answers_every_member_with_none(self) -> None:
        members = [self.hold() for _ in range(2)]
        self.hub.stop()
        self.assertEqual([self.successResultOf(m) for m in members], [None, None])
        self.assertEqual((len(self.held), self.held.held), (0, 0))

    def test_deliveries_are_grouped_by_function(self) -> None:
        other: list[list[Any]] = []
        self.hold(token=1)
        self.held.hold(QUEUE, ReadQuery(), 0, self.hub.generation, 30, lambda page, tokens: other.append(tokens), 2)
        self.hold(token=3)
        self.hub.notify("a", "q", [1])
        self.reads.answer(ONE)
        self.assertEqual((self.delivered, other), ([(ONE, [1, 3])], [[2]]))
