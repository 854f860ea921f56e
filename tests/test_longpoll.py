"""Long-poll: held reads wake on new messages, cost no storage polling per request."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from queuey import longpoll
from queuey.config import Config
from queuey.interfaces import NewMessage
from queuey.testing import DEFAULT_KEYS, MemoryQueuey
from queuey.validation import ReadQuery


class CountingStore:
    """Wraps a store and counts the calls of each method (to prove the polling cost)."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)
        if not callable(method):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)
        return counted


class LongPollCase(unittest.TestCase):
    delays = {"weak": 0.0, "strong": 0.0, "very_strong": 0.0}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        config = Config(application_keys=DEFAULT_KEYS, poll_interval=1.0, delays=self.delays)
        memory = MemoryQueuey(config)
        self.memory = MemoryQueuey(config, clock=memory.clock, store=CountingStore(memory.store))
        self.store = self.memory.store
        self.addCleanup(self.memory.close)
        response = yield self.memory.treq.post(self.memory.url("/v1/queuey"), data={
            "queue_name": "q", "partitions": "2"}, headers=self.memory.auth())
        self.assertEqual(response.code, 201)

    def get(self, query: str) -> defer.Deferred[Any]:
        return self.memory.treq.get(self.memory.url(f"/v1/queuey/q?{query}"), headers=self.memory.auth())

    @defer.inlineCallbacks
    def post(self, body: bytes, partition: int) -> Any:
        response = yield self.memory.treq.post(self.memory.url("/v1/queuey/q"), data=body, headers={
            **self.memory.auth(), "Content-Type": "text/plain", "X-Partition": str(partition)})
        self.assertEqual(response.code, 201)
        return json.loads((yield response.content()))["messages"][0]["key"]

    @defer.inlineCallbacks
    def bodies(self, held: defer.Deferred[Any]) -> Any:
        response = yield held
        self.assertEqual(response.code, 200)
        document = json.loads((yield response.content()))
        return [m["body"] for m in document["messages"]]



class HeldReadStore(CountingStore):
    """A store whose next range read answers only when the test says: what it read, later."""

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self.hold_next = False
        self.held: list[tuple[defer.Deferred[Any], Any]] = []

    def read_rendered(self, *args: Any) -> defer.Deferred[Any]:
        read = self._store.read_rendered(*args)
        if not self.hold_next:
            return read
        self.hold_next = False
        late: defer.Deferred[Any] = defer.Deferred()
        self.held.append((late, read))
        return late

    def release(self) -> None:
        for late, read in self.held:
            read.chainDeferred(late)
        self.held.clear()


class LostWakeUpTests(LongPollCase):
    """A post that lands while a held read is still reading, before it waits, wakes it at once."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        config = Config(application_keys=DEFAULT_KEYS, poll_interval=600.0, delays=self.delays)
        memory = MemoryQueuey(config)
        self.store = HeldReadStore(memory.store)
        self.memory = MemoryQueuey(config, clock=memory.clock, store=self.store)
        self.addCleanup(self.memory.close)
        response = yield self.memory.treq.post(self.memory.url("/v1/queuey"), data={
            "queue_name": "q", "partitions": "2"}, headers=self.memory.auth())
        self.assertEqual(response.code, 201)

    @defer.inlineCallbacks
    def test_a_post_during_the_first_read(self) -> Any:
        self.store.hold_next = True
        held = self.get("wait=60&partitions=1").addCallback(self.bodies)
        self.memory.treq.flush()
        self.assertEqual(len(self.store.held), 1)  # it read (nothing yet) and has not waited
        yield self.post(b"meanwhile", 1)
        self.store.release()
        self.memory.treq.flush()
        self.assertEqual(self.successResultOf(held), ["meanwhile"])  # not at the store poll, 600 s on

    @defer.inlineCallbacks
    def test_a_post_to_another_partition_does_not_wake_it(self) -> Any:
        self.store.hold_next = True
        held = self.get("wait=60&partitions=1").addCallback(self.bodies)
        self.memory.treq.flush()
        yield self.post(b"elsewhere", 2)
        self.store.release()
        self.memory.treq.flush()
        self.assertNoResult(held)
        yield self.post(b"here", 1)
        self.memory.treq.flush()
        self.assertEqual(self.successResultOf(held), ["here"])


    @defer.inlineCallbacks
    def test_the_memory_of_wake_ups_is_bounded_and_forgetting_wakes(self) -> Any:
        self.patch(longpoll, "RECENT_WAKEUPS", 2)
        hub = self.memory.core.hub
        queue = yield self.store.get_queue("queuey", "q")
        seen = hub.generation
        for name in ("a", "b"):
            hub.notify("queuey", name, [1])
        self.assertNoResult(hub.wait(queue, (1,), 0, 10, seen))  # remembered: not this queue
        hub.notify("queuey", "c", [1])  # the third: all forgotten
        self.assertEqual(self.successResultOf(hub.wait(queue, (1,), 0, 10, seen)), True)  # perhaps
        self.assertNoResult(hub.wait(queue, (1,), 0, 10, hub.generation))
        hub.stop()


class LongPollTests(LongPollCase):
    @defer.inlineCallbacks
    def test_woken_at_once_by_a_post(self) -> Any:
        held = self.get("wait=30&partitions=1")
        self.assertNoResult(held)
        self.assertEqual(self.memory.core.reads_held, 1)
        yield self.post(b"other partition", 2)
        self.assertNoResult(held)
        yield self.post(b"hello", 1)
        self.memory.treq.flush()
        self.assertEqual((yield self.bodies(held)), ["hello"])
        self.assertEqual(self.memory.core.reads_held, 0)

    @defer.inlineCallbacks
    def test_times_out_empty(self) -> Any:
        held = self.get("wait=10")
        self.memory.advance(9.9)
        self.assertNoResult(held)
        self.memory.advance(0.2)
        self.assertEqual((yield self.bodies(held)), [])
        self.assertEqual(self.memory.core.reads_held, 0)

    @defer.inlineCallbacks
    def test_after_cursor_waits_for_newer(self) -> Any:
        first = yield self.post(b"first", 1)
        held = self.get(f"wait=30&after={first}")
        self.assertNoResult(held)
        yield self.post(b"second", 1)
        self.memory.treq.flush()
        self.assertEqual((yield self.bodies(held)), ["second"])

    @defer.inlineCallbacks
    def test_answers_at_once_when_messages_exist(self) -> Any:
        yield self.post(b"there", 1)
        self.assertEqual((yield self.bodies(self.get("wait=30"))), ["there"])

    @defer.inlineCallbacks
    def test_other_process_posts_noticed_by_one_poll_per_queue(self) -> Any:
        """Held reads share one newest-id query per queue per poll interval."""
        held = [self.get(f"wait=30&partitions={p}") for p in (1, 2, 1, 2, 1)]
        answered: dict[int, Any] = {}
        for index, response in enumerate(held):
            response.addCallback(self.bodies).addCallback(lambda bodies, i=index: answered.__setitem__(i, bodies))
        queue = yield self.store.get_queue("queuey", "q")
        for _ in range(3):
            self.memory.advance(1.0)
        self.assertEqual(self.store.calls.get("newest_message_ids"), 3)
        # A message stored by another process: this one's hub hears nothing of it.
        message = NewMessage(self.memory.core._ids.next(), 2, b"elsewhere", "text/plain", 60)
        yield self.store.put_messages(queue, [message])
        self.assertEqual(answered, {})
        self.memory.advance(1.0)
        self.assertEqual(self.store.calls["newest_message_ids"], 4)
        self.assertEqual(answered, {1: ["elsewhere"], 3: ["elsewhere"]})
        self.memory.advance(30)
        self.assertEqual(answered, {0: [], 1: ["elsewhere"], 2: [], 3: ["elsewhere"], 4: []})
        # No held request: no polling at all.
        polls = self.store.calls["newest_message_ids"]
        self.memory.advance(10)
        self.assertEqual(self.store.calls["newest_message_ids"], polls)

    @defer.inlineCallbacks
    def test_cancelled_read_forgets_its_waiter(self) -> Any:
        core = self.memory.core
        pending = defer.ensureDeferred(core.read_messages("queuey", "queuey", "q", ReadQuery(wait=30)))
        self.assertEqual(core.reads_held, 1)
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)
        self.assertEqual(core.reads_held, 0)
        yield self.post(b"after", 1)  # waking nobody is fine

    @defer.inlineCallbacks
    def test_held_gauge(self) -> Any:
        held = self.get("wait=5")
        response = yield self.memory.treq.get(self.memory.url("/metrics"))
        self.assertIn(b"queuey_longpolls_held 1.0", (yield response.content()))
        self.memory.advance(6)
        yield held


class LongPollWithDelayTests(LongPollCase):
    delays = {"weak": 0.0, "strong": 2.0, "very_strong": 0.0}

    @defer.inlineCallbacks
    def test_woken_when_the_delay_has_passed(self) -> Any:
        """With a read delay the message is returned once the delay has passed."""
        held = self.get("wait=30&partitions=1")
        yield self.post(b"hello", 1)
        self.memory.advance(1.9)
        self.assertNoResult(held)
        self.memory.advance(0.2)
        self.assertEqual((yield self.bodies(held)), ["hello"])

    @defer.inlineCallbacks
    def test_answers_at_once_when_visible_messages_exist(self) -> Any:
        yield self.post(b"there", 1)
        self.memory.advance(2)
        self.assertEqual((yield self.bodies(self.get("wait=30"))), ["there"])



class LaterStore(CountingStore):
    """A CountingStore whose range reads answer on the next turn of the clock, as a threaded store's do."""

    def __init__(self, store: Any, clock: Any) -> None:
        super().__init__(store)
        self._clock = clock

    def __getattr__(self, name: str) -> Any:
        counted = super().__getattr__(name)
        if name != "read_rendered":
            return counted

        def later(*args: Any, **kwargs: Any) -> defer.Deferred[Any]:
            result = counted(*args, **kwargs)
            delayed: defer.Deferred[Any] = defer.Deferred()
            self._clock.callLater(0, result.chainDeferred, delayed)
            return delayed
        return later


class SharedWakeTests(unittest.TestCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        config = Config(application_keys=DEFAULT_KEYS, poll_interval=0)
        memory = MemoryQueuey(config)
        self.memory = MemoryQueuey(config, clock=memory.clock, store=LaterStore(memory.store, memory.clock))
        self.addCleanup(self.memory.close)
        response = yield self.memory.treq.post(self.memory.url("/v1/queuey"), data={"queue_name": "q"},
                                               headers=self.memory.auth())
        self.assertEqual(response.code, 201)

    def get(self, query: str) -> defer.Deferred[Any]:
        return self.memory.treq.get(self.memory.url(f"/v1/queuey/q?{query}"), headers=self.memory.auth())

    @defer.inlineCallbacks
    def test_reads_woken_together_for_the_same_page_share_one_read(self) -> Any:
        same = [self.get("wait=30") for _ in range(5)]
        other = self.get("wait=30&limit=7")
        self.memory.advance(0)
        self.assertEqual(self.memory.core.reads_held, 6)
        before = self.memory.store.calls["read_rendered"]
        posted = self.memory.treq.post(self.memory.url("/v1/queuey/q"), data=b"hello",
                                       headers={**self.memory.auth(), "Content-Type": "text/plain"})
        self.memory.advance(0)
        self.memory.advance(0)
        self.assertEqual((yield posted).code, 201)
        self.assertEqual(self.memory.store.calls["read_rendered"] - before, 2)  # one per distinct page
        for held in [*same, other]:
            response = yield held
            self.assertEqual([m["body"] for m in (yield response.json())["messages"]], ["hello"])
