"""Delayed messages: dated when they become visible, unseen until then, woken for, TTL from then.

The app's clock is a ``task.Clock``; the store is SQLite in memory (this
module) or Cassandra (``tests/test_cassandra_http.py`` runs the same tests).
The real-time end-to-end test through ``twistd queuey`` and a ``qdo`` worker
is ``tests/test_delayed_process.py``.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import Config
from queuey.interfaces import NewMessage
from queuey.testing import DEFAULT_KEYS, MemoryQueuey
from tests.test_http import HTTPCase
from tests.test_longpoll import CountingStore

DAY = 86400


def ticks_of(timestamp: str) -> int:
    return timeuuid.parse_timestamp(timestamp)


class DelayTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS, max_delay=2 * DAY)

    @defer.inlineCallbacks
    def bodies(self, query: str = "partitions=all") -> Any:
        code, document, _ = yield self.call("GET", f"/v1/queuey/q?{query}")
        self.assertEqual(code, 200, document)
        return [m["body"] for m in document["messages"]]

    def now_ticks(self) -> int:
        return round(self.memory.clock.seconds() * timeuuid.TICKS_PER_SECOND)

    @defer.inlineCallbacks
    def test_single_post_is_dated_when_it_becomes_visible(self) -> Any:
        yield self.make_queue()
        now = self.now_ticks()
        later = yield self.post(b"later", **{"X-Delay": "30"})
        self.assertEqual(ticks_of(later["timestamp"]), now + 30 * timeuuid.TICKS_PER_SECOND)
        self.assertEqual(timeuuid.ticks_from_uuid(timeuuid.parse_message_id(later["key"])),
                         ticks_of(later["timestamp"]))
        yield self.post(b"now")
        self.assertEqual((yield self.bodies()), ["now"])
        self.memory.advance(29.9)
        self.assertEqual((yield self.bodies()), ["now"])
        self.memory.advance(0.2)
        self.assertEqual((yield self.bodies()), ["now", "later"])  # sorted where it became readable

    @defer.inlineCallbacks
    def test_batch_delays_per_message_keep_the_batch_order(self) -> Any:
        yield self.make_queue()
        code, document, _ = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
            {"body": "a", "delay": 10}, {"body": "b"}, {"body": "c", "delay": 10}, {"body": "d", "delay": 5},
            {"body": "e", "delay": 0}]})
        self.assertEqual(code, 201, document)
        self.assertEqual(len({m["key"] for m in document["messages"]}), 5)
        self.assertEqual((yield self.bodies()), ["b", "e"])
        self.memory.advance(5)
        self.assertEqual((yield self.bodies()), ["b", "e", "d"])
        self.memory.advance(5)
        self.assertEqual((yield self.bodies()), ["b", "e", "d", "a"])  # c is one tick (100 ns) later
        self.memory.advance(0.001)
        self.assertEqual((yield self.bodies()), ["b", "e", "d", "a", "c"])

    @defer.inlineCallbacks
    def test_delay_bounds_are_400s(self) -> Any:
        yield self.make_queue()
        for value in ("x", "-1", "1.5", str(2 * DAY + 1), "99999999999999"):
            self.assertError((yield self.call("POST", "/v1/queuey/q", body=b"m", headers={
                "Content-Type": "text/plain", "X-Delay": value})), 400, "delay")
        self.assertError((yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
            {"body": "ok"}, {"body": "late", "delay": 2 * DAY + 1}]})), 400, "1.delay")
        self.assertError((yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
            {"body": "ok", "delay": "soon"}]})), 400, "0.delay")
        self.assertError((yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "ok"}]},
                                          headers={"X-Delay": "5"})), 400, "delay")
        self.assertEqual((yield self.bodies()), [])  # nothing of a refused batch was stored
        yield self.post(b"longest", **{"X-Delay": str(2 * DAY)})
        yield self.post(b"none", **{"X-Delay": "0"})
        self.assertEqual((yield self.bodies()), ["none"])

    @defer.inlineCallbacks
    def test_read_by_id_finds_it_before_it_is_visible(self) -> Any:
        yield self.make_queue()
        later = yield self.post(b"later", **{"X-Delay": "600"})
        code, document, _ = yield self.call("GET", f"/v1/queuey/q/{later['key']}")
        self.assertEqual([m["body"] for m in document["messages"]], ["later"])


class DelayedWakeTests(unittest.TestCase):
    """Held reads are woken when a delayed message becomes visible, in this process and in others."""

    def setUp(self) -> None:
        config = Config(application_keys=DEFAULT_KEYS, poll_interval=1.0)
        first = MemoryQueuey(config)
        self.store = CountingStore(first.store)
        self.here = MemoryQueuey(config, clock=first.clock, store=self.store)
        self.elsewhere = MemoryQueuey(config, clock=first.clock, store=self.store)
        self.addCleanup(first.close)

    @defer.inlineCallbacks
    def request(self, memory: MemoryQueuey, method: str, path: str, **kwargs: Any) -> Any:
        response = yield memory.treq.request(method, memory.url(path), headers={
            **memory.auth(), **kwargs.pop("headers", {})}, **kwargs)
        return response.code, json.loads((yield response.content()))

    @defer.inlineCallbacks
    def held_bodies(self, held: defer.Deferred[Any]) -> Any:
        response = yield held
        return [m["body"] for m in json.loads((yield response.content()))["messages"]]

    def hold(self, memory: MemoryQueuey, query: str) -> defer.Deferred[Any]:
        return memory.treq.get(memory.url(f"/v1/queuey/q?{query}"), headers=memory.auth())

    @defer.inlineCallbacks
    def make_queue(self) -> Any:
        code, _ = yield self.request(self.here, "POST", "/v1/queuey", data={"queue_name": "q", "partitions": "2"})
        self.assertEqual(code, 201)

    @defer.inlineCallbacks
    def post_later(self, memory: MemoryQueuey, body: bytes, delay: int, partition: int = 1) -> Any:
        code, document = yield self.request(memory, "POST", "/v1/queuey/q", data=body, headers={
            "Content-Type": "text/plain", "X-Delay": str(delay), "X-Partition": str(partition)})
        self.assertEqual(code, 201, document)

    @defer.inlineCallbacks
    def test_a_held_read_in_the_posting_process_wakes_when_it_becomes_visible(self) -> Any:
        yield self.make_queue()
        yield self.post_later(self.here, b"later", 20)
        self.here.advance(0.5)  # the store checks come at 1.5, 2.5, ... 20.5 s
        held = self.hold(self.here, "wait=60&partitions=1")
        other_partition = self.hold(self.here, "wait=60&partitions=2")
        self.here.advance(19.4)
        self.assertNoResult(held)
        self.here.advance(0.11)  # not by a check: the posting process knows the time
        self.assertTrue(held.called, "not woken when its message became visible")
        self.assertEqual((yield self.held_bodies(held)), ["later"])
        self.assertNoResult(other_partition)
        self.here.advance(60)
        self.assertEqual((yield self.held_bodies(other_partition)), [])

    @defer.inlineCallbacks
    def test_another_process_notices_it_once_by_its_poll(self) -> Any:
        yield self.make_queue()
        yield self.post_later(self.here, b"far", 3600)   # newest in the partition, for an hour
        yield self.post_later(self.here, b"soon", 10)
        held = self.hold(self.elsewhere, "wait=60&partitions=1")
        reads = self.store.calls["read_messages"]
        for _ in range(9):
            self.elsewhere.advance(1.0)
        self.assertNoResult(held)
        # The far message, newest in the partition, is not taken for an arrival at each poll.
        self.assertEqual(self.store.calls["read_messages"], reads)
        self.elsewhere.advance(1.0)  # "soon" is visible now; this process hears of it by its poll
        self.assertEqual((yield self.held_bodies(held)), ["soon"])

    @defer.inlineCallbacks
    def test_a_stored_later_id_from_another_process_wakes_readers_in_time(self) -> Any:
        """A message another process stored dated ahead (no timer here knows it)."""
        yield self.make_queue()
        queue = yield self.store.get_queue("queuey", "q")
        due = round((self.here.clock.seconds() + 5) * timeuuid.TICKS_PER_SECOND)
        yield self.store.put_messages(queue, [NewMessage(timeuuid.LaterIds().at(due), 1, b"x", "text/plain", 60)])
        held = self.hold(self.here, "wait=30")
        self.here.advance(4.0)
        self.assertNoResult(held)
        self.here.advance(1.0)
        self.assertEqual((yield self.held_bodies(held)), ["x"])


class TTLTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_ttl_counts_from_when_it_becomes_visible(self) -> Any:
        memory = MemoryQueuey()
        self.addCleanup(memory.close)
        response = yield memory.treq.post(memory.url("/v1/queuey"), data={"queue_name": "q"}, headers=memory.auth())
        self.assertEqual(response.code, 201)
        response = yield memory.treq.post(memory.url("/v1/queuey/q"), data=b"later", headers={
            **memory.auth(), "Content-Type": "text/plain", "X-Delay": "100", "X-TTL": "10"})
        self.assertEqual(response.code, 201)

        @defer.inlineCallbacks
        def bodies() -> Any:
            answer = yield memory.treq.get(memory.url("/v1/queuey/q"), headers=memory.auth())
            return [m["body"] for m in json.loads((yield answer.content()))["messages"]]

        memory.advance(105)
        self.assertEqual((yield bodies()), ["later"])  # 105 s after the post, 5 s into its TTL
        memory.advance(4.9)
        self.assertEqual((yield bodies()), ["later"])
        memory.advance(0.2)
        self.assertEqual((yield bodies()), [])
