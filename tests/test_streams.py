"""Event streams end to end: real ``twistd queuey`` processes, a Python SSE client over real sockets.

History then live messages in order, exact resume with Last-Event-ID,
delivery of messages posted through another process (a shared SQLite file,
or Cassandra), a slow reader paused then cut, 1,000 streams at once, errors
answered before a stream starts, keep-alive comments, and a server stop that
ends its streams cleanly.  The same tests run on Cassandra (the subclass at
the end).  The pieces are tested alone in tests/test_following.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.processes import start_queuey
from tests.services import CASSANDRA, require
from tests.sse import Event, SSEClient, open_stream

KEY = "stream-key"
OTHER_KEY = "stream-other-key"
CONFIG = """
[application_keys]
s = {key}
other = {other}

{storage}

[longpoll]
poll_interval = 0.2

[streams]
keepalive = {keepalive}
buffer_bytes = {buffer_bytes}

{extra}
"""


def bodies(events: list[Event]) -> list[str]:
    return [e.message["body"] for e in events]


class StreamCase(unittest.TestCase):
    """A twistd queuey (``self.server``) with queues ``q`` (3 partitions) and ``pub`` (public)."""

    timeout = 120
    keepalive = 15.0
    buffer_bytes = 1024 * 1024
    extra = ""

    def storage(self, directory: str) -> str:
        return f"[storage]\nbackend = sqlite\npath = {directory}/queuey.sqlite\n"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.config = os.path.join(self.directory, "queuey.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(key=KEY, other=OTHER_KEY, storage=self.storage(self.directory),
                                  keepalive=self.keepalive, buffer_bytes=self.buffer_bytes, extra=self.extra))
        self.server = yield start_queuey(self, self.config, backlog=2048)
        for name in ("q", "pub"):  # fresh, whatever an earlier run left in a shared store
            yield self.request("DELETE", f"/v1/s/{name}")
        for form in ({"queue_name": "q", "partitions": "3"}, {"queue_name": "pub", "type": "public"}):
            code, document = yield self.request("POST", "/v1/s", data=form)
            self.assertEqual(code, 201, document)
        self.streams: list[SSEClient] = []
        self.addCleanup(self.close_streams)

    def close_streams(self) -> defer.Deferred[Any]:
        return defer.gatherResults([s.close() for s in self.streams if not s.closed.called])

    @defer.inlineCallbacks
    def request(self, method: str, path: str, server: Any = None, key: str | None = KEY, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Application {key}"} if key else {}
        headers.update(kwargs.pop("headers", {}))
        response = yield treq.request(method, (server or self.server).base + path, headers=headers,
                                      persistent=False, **kwargs)
        content = yield response.content()
        return response.code, json.loads(content) if content.startswith(b"{") else content

    @defer.inlineCallbacks
    def post(self, messages: list[dict[str, Any]], queue: str = "q", server: Any = None) -> Any:
        code, document = yield self.request("POST", f"/v1/s/{queue}", server=server, json={"messages": messages})
        self.assertEqual(code, 201, document)
        return [m["key"] for m in document["messages"]]

    @defer.inlineCallbacks
    def stream(self, path: str, key: str | None = KEY, server: Any = None, **headers: str) -> Any:
        if key:
            headers["Authorization"] = f"Application {key}"
        client = yield open_stream((server or self.server).port, path, headers)
        self.streams.append(client)
        return client

    @defer.inlineCallbacks
    def metric(self, name: str) -> Any:
        code, text = yield self.request("GET", "/metrics", key=None)
        if code != 200:
            return None
        found = re.search(rb"^" + name.encode() + rb" ([0-9.e+]+)$", text, re.M)
        return float(found.group(1)) if found else None

    @defer.inlineCallbacks
    def until_metric(self, name: str, value: float) -> Any:
        """Asks /metrics (every 50 ms) until ``name`` is ``value``."""
        while (yield self.metric(name)) != value:
            yield task.deferLater(reactor, 0.05, lambda: None)


class StreamTests(StreamCase):
    @defer.inlineCallbacks
    def test_history_then_live_in_order_and_an_exact_resume(self) -> Any:
        yield self.post([{"body": f"h{i}", "partition": i % 3 + 1} for i in range(6)])
        client = yield self.stream("/v1/s/q?partitions=all")
        self.assertEqual(client.head.status, 200)
        self.assertEqual(client.head.headers[b"content-type"], b"text/event-stream; charset=utf-8")
        self.assertEqual(client.head.headers[b"cache-control"], b"no-cache")
        history = yield client.wait_events(6)
        self.assertEqual(bodies(history), [f"h{i}" for i in range(6)])  # time order across partitions
        self.assertEqual(client.retry, 2000)
        yield self.post([{"body": "live1", "partition": 2}])
        yield self.post([{"body": "live2", "partition": 3}])
        live = yield client.wait_events(8)
        self.assertEqual(bodies(live[6:]), ["live1", "live2"])
        cursor = live[-1].id
        self.assertEqual(sorted(int(item.split(":")[0]) for item in cursor.split(",")), [1, 2, 3])
        yield client.close()
        yield self.post([{"body": f"gap{i}", "partition": i % 3 + 1} for i in range(4)])
        again = yield self.stream("/v1/s/q?partitions=all", **{"Last-Event-ID": cursor})
        rest = yield again.wait_events(4)
        self.assertEqual(bodies(rest), ["gap0", "gap1", "gap2", "gap3"])  # nothing lost, nothing repeated
        yield self.post([{"body": "after", "partition": 1}])
        self.assertEqual(bodies((yield again.wait_events(5))[4:]), ["after"])
        self.assertEqual(len(again.events), 5)

    @defer.inlineCallbacks
    def test_a_stream_starts_where_its_query_says(self) -> Any:
        keys = yield self.post([{"body": f"m{i}", "partition": 1} for i in range(3)])
        client = yield self.stream(f"/v1/s/q?after={keys[0]}")
        self.assertEqual(bodies((yield client.wait_events(2))), ["m1", "m2"])
        public = yield self.stream("/v1/s/pub", key=None)  # a public queue needs no key
        yield self.post([{"body": "for all"}], queue="pub")
        self.assertEqual(bodies((yield public.wait_events(1))), ["for all"])

    @defer.inlineCallbacks
    def test_messages_posted_through_another_process_arrive(self) -> Any:
        other = yield start_queuey(self, self.config)
        client = yield self.stream("/v1/s/q?partitions=1,2")
        yield self.post([{"body": "elsewhere", "partition": 2}, {"body": "unseen", "partition": 3}], server=other)
        self.assertEqual(bodies((yield client.wait_events(1))), ["elsewhere"])
        yield self.post([{"body": "later", "partition": 1, "delay": 1}], server=other)
        self.assertEqual(bodies((yield client.wait_events(2))[1:]), ["later"])
        self.assertEqual(len(client.events), 2)

    @defer.inlineCallbacks
    def test_errors_before_a_stream_are_json(self) -> Any:
        for path, key, headers, status, field in [
            ("/v1/s/q", None, {}, 401, "MissingApplicationKey"),
            ("/v1/s/q", OTHER_KEY, {}, 403, "AccessDenied"),
            ("/v1/s/nope", KEY, {}, 404, "NotFound"),
            ("/v1/s/q?order=descending", KEY, {}, 400, "order"),
            ("/v1/s/q?wait=5", KEY, {}, 400, "wait"),
            ("/v1/s/q?partitions=4", KEY, {}, 400, "partitions"),
            ("/v1/s/q", KEY, {"Last-Event-ID": "nonsense"}, 400, "Last-Event-ID"),
            ("/v1/s/q", KEY, {"Last-Event-ID": "2:" + "0" * 32}, 400, "Last-Event-ID"),
        ]:
            client = yield self.stream(path, key=key, **headers)
            yield client.done
            self.assertEqual(client.head.status, status, (path, client.body))
            self.assertEqual(client.head.headers[b"content-type"], b"application/json")
            self.assertIn(field, json.loads(client.body)["error_msg"], path)

    @defer.inlineCallbacks
    def test_streams_count_in_metrics(self) -> Any:
        clients = yield defer.gatherResults([self.stream("/v1/s/q") for _ in range(3)])
        yield self.until_metric("queuey_streams_open", 3)
        yield self.post([{"body": "x", "partition": 1}])
        yield defer.gatherResults([c.wait_events(1) for c in clients])
        self.assertEqual((yield self.metric("queuey_stream_events_total")), 3)
        yield self.close_streams()
        yield self.until_metric("queuey_streams_open", 0)

    @defer.inlineCallbacks
    def test_a_stopping_server_ends_its_streams(self) -> Any:
        client = yield self.stream("/v1/s/q")
        yield self.until_metric("queuey_streams_open", 1)
        os.kill(self.server.transport.pid, signal.SIGTERM)
        yield client.closed
        self.assertTrue(client.ended_cleanly)  # the last chunk, not a reset
        yield self.server.ended


class KeepAliveTests(StreamCase):
    keepalive = 0.2

    @defer.inlineCallbacks
    def test_an_idle_stream_gets_comments(self) -> Any:
        client = yield self.stream("/v1/s/q")
        yield client.wait_comments(2)
        self.assertEqual(client.comments[:2], ["keep-alive", "keep-alive"])
        self.assertEqual(client.events, [])


class ConnectionCapTests(StreamCase):
    extra = "[limits]\nmax_connections = 3\n"

    @defer.inlineCallbacks
    def test_a_stream_is_a_connection_under_the_cap(self) -> Any:
        first = yield self.stream("/v1/s/q")
        yield self.stream("/v1/s/q")
        yield self.stream("/v1/s/pub", key=None)
        refused = yield self.stream("/v1/s/q")  # the fourth connection
        yield refused.done
        self.assertEqual((refused.head.status, list(json.loads(refused.body)["error_msg"])), (503, ["ServerBusy"]))
        yield first.close()
        yield self.until_metric("queuey_streams_open", 2)
        code, _ = yield self.request("GET", "/v1/s/q")
        self.assertEqual(code, 200)


class SlowReaderTests(StreamCase):
    buffer_bytes = 64 * 1024
    timeout = 240

    @defer.inlineCallbacks
    def test_a_client_that_stops_reading_is_cut_and_resumes_exactly(self) -> Any:
        client = yield self.stream("/v1/s/q")
        yield self.post([{"body": "first", "partition": 1}])
        yield client.wait_events(1)
        client.transport.pauseProducing()  # the client stops reading
        sent = ["first"]
        for batch in range(16):  # 16 MiB: more than the socket buffers and the stream's 64 KiB
            messages = [{"body": f"{batch}.{i}." + "x" * 8000, "partition": 1} for i in range(128)]
            yield self.post(messages)
            sent += [m["body"] for m in messages]
            if (yield self.metric("queuey_streams_cut_total")):
                break
        yield self.until_metric("queuey_streams_cut_total", 1)
        client.transport.resumeProducing()
        yield client.closed
        self.assertFalse(client.ended_cleanly)
        received = bodies(client.events)
        self.assertLess(len(received), len(sent))
        again = yield self.stream("/v1/s/q", **{"Last-Event-ID": client.last_event_id})
        try:
            rest = yield again.wait_events(len(sent) - len(received))
        except Exception:
            print(self.server.output.decode()[-3000:])
            raise
        self.assertEqual(received + bodies(rest), sent)  # nothing lost, nothing repeated


class ThousandStreamsTests(StreamCase):
    timeout = 300

    @defer.inlineCallbacks
    def test_a_thousand_streams_each_get_a_post(self) -> Any:
        clients: list[SSEClient] = []
        for _ in range(10):  # in waves, so that the listen backlog is never the test
            clients += (yield defer.gatherResults([self.stream("/v1/s/pub", key=None) for _ in range(100)]))
        yield self.until_metric("queuey_streams_open", 1000)
        yield self.post([{"body": "to all"}], queue="pub")
        received = yield defer.gatherResults([c.wait_events(1) for c in clients])
        self.assertEqual({bodies(events)[0] for events in received}, {"to all"})
        self.assertEqual((yield self.metric("queuey_connections_open")), 1001)  # and the one asking


CASSANDRA_STORAGE = """[storage]
backend = cassandra
hosts = {hosts}
keyspace = queuey_test_streams
replication = SimpleStrategy:1
"""


class CassandraStreamTests(StreamTests):
    timeout = 240

    def storage(self, directory: str) -> str:
        return CASSANDRA_STORAGE.format(hosts=require(CASSANDRA, "Cassandra"))


class CassandraSlowReaderTests(SlowReaderTests):
    timeout = 300

    def storage(self, directory: str) -> str:
        return CASSANDRA_STORAGE.format(hosts=require(CASSANDRA, "Cassandra"))
