"""The pieces of event streams alone: cursors, following a queue (injected clock), the outbox."""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import Config
from queuey.errors import InvalidParameters
from queuey.following import Follower, format_cursor, parse_cursor
from queuey.responses import ResponseWriter
from queuey.metrics import Metrics
from queuey.streams import EventStream, Outbox, Overflow, StreamSettings, wants_events
from queuey.testing import DEFAULT_KEYS, MemoryQueuey
from queuey.validation import ReadQuery


class CursorTests(unittest.TestCase):
    def test_round_trip_in_partition_order(self) -> None:
        a, b = uuid.UUID("1ee0c5a0a8e611ef8e3f0b5a7a1c2d3e"), uuid.UUID("1ee0c5a1b2c311ef8e3f0b5a7a1c2d3e")
        text = format_cursor({3: a, 1: b})
        self.assertEqual(text, f"1:{b.hex},3:{a.hex}")
        self.assertEqual(parse_cursor(text), {1: b, 3: a})
        self.assertEqual(parse_cursor(f" 2:{a.hex.upper()} "), {2: a})

    def test_what_is_not_a_cursor(self) -> None:
        good = "1ee0c5a0a8e611ef8e3f0b5a7a1c2d3e"
        for text in ("", good, f"0:{good}", f"201:{good}", f"1:{good},1:{good}", "1:xyz", f"1:{good[:-1]}",
                     ",".join(f"{p}:{good}" for p in range(1, 202)), f"x:{good}", "4" + "0" * 36 + f":{good}"):
            with self.assertRaises(InvalidParameters) as raised:
                parse_cursor(text)
            self.assertEqual(list(raised.exception.errors), ["Last-Event-ID"], text)


class WantsEventsTests(unittest.TestCase):
    def test_accept_headers(self) -> None:
        for accept, wanted in [(b"text/event-stream", True), (b"application/json, Text/Event-Stream;q=0.5", True),
                               (b"text/event-stream;q=0", False), (b"*/*", False), (None, False),
                               (b"application/json", False)]:
            self.assertEqual(wants_events(b"GET", accept), wanted, accept)
        self.assertFalse(wants_events(b"HEAD", b"text/event-stream"))


class FollowerTests(unittest.TestCase):
    delays = {"weak": 0.0, "strong": 0.0, "very_strong": 2.0}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.memory = MemoryQueuey(Config(application_keys=DEFAULT_KEYS, delays=self.delays))
        self.addCleanup(self.memory.close)
        self.core = self.memory.core
        for name, consistency in (("q", "strong"), ("slow", "very_strong")):
            response = yield self.memory.treq.post(self.memory.url("/v1/queuey"), headers=self.memory.auth(), data={
                "queue_name": name, "partitions": "3", "consistency": consistency})
            self.assertEqual(response.code, 201)

    @defer.inlineCallbacks
    def post(self, messages: list[dict[str, Any]], queue: str = "q") -> Any:
        response = yield self.memory.treq.post(self.memory.url(f"/v1/queuey/{queue}"), json={"messages": messages},
                                               headers=self.memory.auth())
        self.assertEqual(response.code, 201)
        return [m["key"] for m in json.loads((yield response.content()))["messages"]]

    @defer.inlineCallbacks
    def follower(self, queue: str = "q", positions: dict[int, uuid.UUID] | None = None, **query: Any) -> Any:
        settings, checked = yield defer.ensureDeferred(self.core.followable(
            "queuey", "queuey", queue, ReadQuery(all_partitions=True, **query)))
        return Follower(self.core.reader, settings, checked, positions)

    @defer.inlineCallbacks
    def read(self, follower: Follower, budget: int = 1 << 20) -> Any:
        deliveries, more = yield defer.ensureDeferred(follower.read(budget))
        return [d.message.body.decode() for d in deliveries], more, [d.cursor for d in deliveries]

    @defer.inlineCallbacks
    def test_reads_in_time_order_across_partitions_and_moves_each_partition_on(self) -> Any:
        keys = yield self.post([{"body": f"m{i}", "partition": i % 3 + 1} for i in range(5)])
        follower = yield self.follower()
        bodies, more, cursors = yield self.read(follower)
        self.assertEqual((bodies, more), (["m0", "m1", "m2", "m3", "m4"], False))
        self.assertEqual(cursors[0], f"1:{keys[0]}")
        self.assertEqual(cursors[-1], f"1:{keys[3]},2:{keys[4]},3:{keys[2]}")
        self.assertEqual((yield self.read(follower))[:2], ([], False))
        yield self.post([{"body": "n", "partition": 3}])
        self.assertEqual((yield self.read(follower))[:2], (["n"], False))

    @defer.inlineCallbacks
    def test_a_cursor_resumes_its_partitions_and_the_query_starts_the_others(self) -> Any:
        keys = yield self.post([{"body": f"m{i}", "partition": i % 3 + 1} for i in range(6)])
        positions = {1: timeuuid.parse_message_id(keys[3])}  # m0 and m3 were delivered on partition 1
        follower = yield self.follower(positions=positions, after_id=timeuuid.parse_message_id(keys[1]))
        self.assertEqual((yield self.read(follower))[0], ["m2", "m4", "m5"])
        with self.assertRaises(InvalidParameters):
            yield self.follower(positions={4: positions[1]})

    @defer.inlineCallbacks
    def test_more_when_a_partition_gives_its_limit_or_the_budget_is_reached(self) -> Any:
        yield self.post([{"body": f"m{i}", "partition": 1} for i in range(5)])
        follower = yield self.follower(limit=2)
        self.assertEqual((yield self.read(follower))[:2], (["m0", "m1"], True))
        self.assertEqual((yield self.read(follower))[:2], (["m2", "m3"], True))
        self.assertEqual((yield self.read(follower))[:2], (["m4"], False))
        yield self.post([{"body": "x" * 200_000, "partition": 2}, {"body": "y" * 200_000, "partition": 2}])
        bodies, more, _ = yield self.read(follower, budget=1000)
        self.assertEqual((len(bodies), more), (1, True))  # one message always fits

    @defer.inlineCallbacks
    def test_waiting_wakes_on_a_post_and_times_out(self) -> Any:
        follower = yield self.follower()
        yield self.read(follower)
        waiting = follower.wait(10)
        self.memory.advance(9.9)
        self.assertNoResult(waiting)
        self.memory.advance(0.2)
        self.assertEqual(self.successResultOf(waiting), False)
        waiting = follower.wait(10)
        yield self.post([{"body": "hi", "partition": 2}])
        self.assertEqual(self.successResultOf(waiting), True)
        # Until it reads again, that post wakes every wait at once (as one made while it read would).
        self.assertEqual(self.successResultOf(follower.wait(10)), True)
        yield self.read(follower)
        waiting = follower.wait(10)
        waiting.cancel()
        self.failureResultOf(waiting, defer.CancelledError)
        self.assertEqual(self.core.reads_held, 0)

    @defer.inlineCallbacks
    def test_the_read_delay_and_delayed_messages(self) -> Any:
        follower = yield self.follower("slow")
        yield self.read(follower)
        waiting = follower.wait(30)
        yield self.post([{"body": "fresh", "partition": 1}, {"body": "later", "partition": 2, "delay": 5}], "slow")
        self.assertNoResult(waiting)  # woken at once, then it waits out the 2 s read delay
        self.memory.advance(2)
        self.assertEqual(self.successResultOf(waiting), True)
        self.assertEqual((yield self.read(follower))[0], ["fresh"])
        waiting = follower.wait(30)
        self.memory.advance(4.9)
        self.assertNoResult(waiting)
        self.memory.advance(0.2)  # "later" is visible: woken, then the read delay again
        self.assertNoResult(waiting)
        self.memory.advance(2)
        self.assertEqual(self.successResultOf(waiting), True)
        self.assertEqual((yield self.read(follower))[0], ["later"])


class FakeRequest:
    """What a ResponseWriter needs of a request: writes, and a producer to pause and resume."""

    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.producer: Any = None

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        self.producer = producer

    def unregisterProducer(self) -> None:
        self.producer = None


class FakeStreamRequest(FakeRequest):
    """What an EventStream needs of a request besides writes."""

    def __init__(self) -> None:
        super().__init__()
        self.code: int | None = None
        self.finished = False

    def setResponseCode(self, code: int) -> None:
        self.code = code

    def setHeader(self, name: bytes, value: bytes) -> None:
        pass

    def finish(self) -> None:
        self.finished = True


class BrokenFollower:
    """A follower whose read fails as no store error would: a fault in the server's own code."""

    class queue:
        queue_name = "q"

    def read(self, budget: int) -> defer.Deferred[Any]:
        return defer.fail(RuntimeError("a bug"))


class EventStreamTests(unittest.TestCase):
    def test_an_unexpected_error_ends_the_stream_and_is_logged(self) -> None:
        request = FakeStreamRequest()
        settings = StreamSettings(keepalive=15, buffer_bytes=1000, retry_ms=2000, page_bytes=1000)
        stream = EventStream(request, BrokenFollower(), settings, Metrics(), Clock())  # type: ignore[arg-type]
        self.successResultOf(defer.ensureDeferred(stream.run()))
        self.assertEqual((request.code, request.finished), (200, True))
        self.assertEqual(b"".join(request.written), b"retry: 2000\n\n")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class OutboxTests(unittest.TestCase):
    def setUp(self) -> None:
        self.request = FakeRequest()
        self.outbox = Outbox(ResponseWriter(self.request), bound=100)
        self.flushing = defer.ensureDeferred(self.outbox.flush())

    def test_writes_at_once_while_the_client_reads(self) -> None:
        self.outbox.put([b"a" * 150])  # one read larger than the bound is fine: nothing was waiting
        self.outbox.put([b"b" * 150])
        self.assertEqual(b"".join(self.request.written), b"a" * 150 + b"b" * 150)
        self.assertEqual(self.outbox.size, 0)
        self.successResultOf(self.outbox.drained())

    def test_keeps_what_a_paused_client_has_not_taken_then_overflows(self) -> None:
        self.request.producer.pauseProducing()
        self.outbox.put([b"a" * 10])  # handed to the connection, which is full now
        self.outbox.put([b"b" * 60])
        drained = self.outbox.drained()
        self.outbox.put([b"c" * 40])
        self.assertEqual(self.outbox.size, 100)
        self.assertRaises(Overflow, self.outbox.put, [b"d"])
        self.assertNoResult(drained)
        self.request.producer.resumeProducing()
        self.successResultOf(drained)
        self.assertEqual(b"".join(self.request.written), b"a" * 10 + b"b" * 60 + b"c" * 40 + b"d")

    def test_close_ends_the_flush_once_written(self) -> None:
        self.outbox.put([b"last"])
        self.outbox.close()
        self.successResultOf(self.flushing)
        self.assertEqual(self.request.written, [b"last"])
