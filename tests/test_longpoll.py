"""Long-poll: held reads wake on new messages, cost no storage polling per request."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

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



class LongPollTests(LongPollCase):
    @defer.inlineCallbacks
    def test_woken_at_once_by_a_post(self) -> Any:
        held = self.get("wait=30&partitions=1")
        self.assertNoResult(held)
        self.assertEqual(self.memory.core.hub.held, 1)
        yield self.post(b"other partition", 2)
        self.assertNoResult(held)
        yield self.post(b"hello", 1)
        self.memory.treq.flush()
        self.assertEqual((yield self.bodies(held)), ["hello"])
        self.assertEqual(self.memory.core.hub.held, 0)

    @defer.inlineCallbacks
    def test_times_out_empty(self) -> Any:
        held = self.get("wait=10")
        self.memory.advance(9.9)
        self.assertNoResult(held)
        self.memory.advance(0.2)
        self.assertEqual((yield self.bodies(held)), [])
        self.assertEqual(self.memory.core.hub.held, 0)

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
        self.assertEqual(core.hub.held, 1)
        pending.cancel()
        self.failureResultOf(pending, defer.CancelledError)
        self.assertEqual(core.hub.held, 0)
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

