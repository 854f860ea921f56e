"""The queue cache and shared calls: what they may serve, for how long, and to whom."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from queuey.config import Config
from queuey.interfaces import QueueSettings
from queuey.queuecache import QueueCache
from queuey.sharing import SharedCalls
from queuey.testing import DEFAULT_KEYS, MemoryQueuey


class QueueCacheTests(unittest.TestCase):
    def test_entries_live_their_time_and_are_forgotten(self) -> None:
        clock = Clock()
        cache = QueueCache(clock, seconds=1.0)
        queue = QueueSettings("a", "q", 2)
        cache.put(queue)
        clock.advance(0.9)
        self.assertEqual(cache.get("a", "q"), queue)
        clock.advance(0.1)
        self.assertIsNone(cache.get("a", "q"))
        cache.put(queue)
        cache.forget("a", "q")
        self.assertIsNone(cache.get("a", "q"))

    def test_bounded_and_off_at_zero(self) -> None:
        clock = Clock()
        cache = QueueCache(clock, seconds=10, size=3)
        for n in range(5):
            cache.put(QueueSettings("a", f"q{n}"))
        self.assertEqual(len(cache), 3)
        self.assertIsNone(cache.get("a", "q0"))
        self.assertEqual(cache.get("a", "q4"), QueueSettings("a", "q4"))
        off = QueueCache(clock, seconds=0)
        off.put(QueueSettings("a", "q"))
        self.assertIsNone(off.get("a", "q"))


class SharedCallsTests(unittest.TestCase):
    def test_one_operation_per_key_while_it_runs(self) -> None:
        shared: SharedCalls[int] = SharedCalls()
        started: list[defer.Deferred[int]] = []

        def start() -> defer.Deferred[int]:
            started.append(defer.Deferred())
            return started[-1]
        first, second = shared.call("k", start), shared.call("k", start)
        other = shared.call("other", start)
        self.assertEqual(len(started), 2)
        started[0].callback(7)
        self.assertEqual((self.successResultOf(first), self.successResultOf(second)), (7, 7))
        self.assertNoResult(other)
        third = shared.call("k", start)  # done: a new call starts anew
        self.assertEqual(len(started), 3)
        self.assertNoResult(third)

    def test_cancelling_one_caller_leaves_the_others_and_the_last_cancels_the_operation(self) -> None:
        shared: SharedCalls[int] = SharedCalls()
        cancelled: list[bool] = []
        operation: defer.Deferred[int] = defer.Deferred(lambda _: cancelled.append(True))
        first, second = shared.call("k", lambda: operation), shared.call("k", lambda: operation)
        first.cancel()
        self.failureResultOf(first, defer.CancelledError)
        self.assertEqual(cancelled, [])
        second.cancel()
        self.failureResultOf(second, defer.CancelledError)
        self.assertEqual(cancelled, [True])
        self.assertEqual(len(shared), 0)

    def test_with_a_clock_callers_get_the_result_a_batch_per_turn(self) -> None:
        clock = Clock()
        shared: SharedCalls[int] = SharedCalls(clock, batch=2)
        operation: defer.Deferred[int] = defer.Deferred()
        callers = [shared.call("k", lambda: operation) for _ in range(5)]
        callers[4].cancel()  # gone before its turn: skipped
        operation.callback(3)
        answered = [c for c in callers[:4] if c.called]
        self.assertEqual(len(answered), 2)
        clock.advance(0)
        self.assertEqual([self.successResultOf(c) for c in callers[:4]], [3, 3, 3, 3])
        self.failureResultOf(callers[4], defer.CancelledError)

    def test_failures_reach_every_caller(self) -> None:
        shared: SharedCalls[int] = SharedCalls()
        operation: defer.Deferred[int] = defer.Deferred()
        callers = [shared.call("k", lambda: operation) for _ in range(3)]
        operation.errback(ValueError("no"))
        for caller in callers:
            self.failureResultOf(caller, ValueError)


class CachedQueueTests(unittest.TestCase):
    """Two servers on one store: what one sees of the other's queue changes, and when."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        config = Config(application_keys=DEFAULT_KEYS, queue_cache_seconds=5)
        self.one = MemoryQueuey(config)
        self.two = MemoryQueuey(config, clock=self.one.clock, store=self.one.store)
        response = yield self.one.treq.post(self.one.url("/v1/queuey"), data={"queue_name": "q"},
                                            headers=self.one.auth())
        self.assertEqual(response.code, 201)

    def post(self, memory: MemoryQueuey) -> defer.Deferred[Any]:
        return memory.treq.post(memory.url("/v1/queuey/q"), data=b"m",
                                headers={**memory.auth(), "Content-Type": "text/plain"})

    @defer.inlineCallbacks
    def test_a_post_to_a_queue_deleted_elsewhere_is_refused(self) -> Any:
        self.assertEqual((yield self.post(self.two)).code, 201)  # two has it cached now
        self.assertIsNotNone(self.two.core.queues.get("queuey", "q"))
        response = yield self.one.treq.delete(self.one.url("/v1/queuey/q"), headers=self.one.auth())
        self.assertEqual(response.code, 200)
        response = yield self.post(self.two)
        self.assertEqual(response.code, 404)  # the write rechecked the queue
        self.assertIsNone(self.two.core.queues.get("queuey", "q"))  # and the cache forgot it

    @defer.inlineCallbacks
    def test_a_change_elsewhere_is_seen_after_the_cache_time_and_at_once_here(self) -> Any:
        read = yield self.two.treq.get(self.two.url("/v1/queuey/q"), headers=self.two.auth("other"))
        self.assertEqual(read.code, 403)
        response = yield self.one.treq.put(self.one.url("/v1/queuey/q"), data={"principles": "app:other"},
                                           headers=self.one.auth())
        self.assertEqual(response.code, 200)
        read = yield self.one.treq.get(self.one.url("/v1/queuey/q"), headers=self.one.auth("other"))
        self.assertEqual(read.code, 200)  # the process that changed it: at once
        read = yield self.two.treq.get(self.two.url("/v1/queuey/q"), headers=self.two.auth("other"))
        self.assertEqual(read.code, 403)  # another: still its cached settings
        self.one.clock.advance(5)
        read = yield self.two.treq.get(self.two.url("/v1/queuey/q"), headers=self.two.auth("other"))
        self.assertEqual(read.code, 200)
