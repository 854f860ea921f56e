"""Hostile and careless clients against a real ``twistd queuey`` over real sockets (issue 7's table).

Each test names the row of the table it covers.  The rows that touch storage
run on SQLite and again on Cassandra; the others are the HTTP layer's and run
once.  Time-based limits are set small in the server's configuration and the
tests wait for the server's answer, never for a time.
"""

from __future__ import annotations

import json
import os
import re
import time
import resource
import uuid
from typing import Any

import treq
from twisted.internet import defer, task
from twisted.trial import unittest

from queuey import timeuuid
from tests.processes import TwistdProcess, start_queuey
from tests.rawhttp import RawConnection, connect, exchange
from tests.services import CASSANDRA, require

KEY = "hostile-key"
AUTH = f"Authorization: Application {KEY}\r\n".encode()
LIMITS = """
[limits]
max_message_bytes = 16384
max_request_bytes = 1048576
max_response_bytes = 65536
max_body_bytes_in_flight = 2097152
request_head_timeout = 1
body_min_rate = 65536
max_connections = {max_connections}
"""
SQLITE = """
[storage]
backend = sqlite
path = {directory}/queuey.sqlite
"""
CASSANDRA_STORAGE = """
[storage]
backend = cassandra
hosts = {hosts}
keyspace = queuey_test_hostile
replication = SimpleStrategy:1
"""


def rss_bytes(process: TwistdProcess) -> int:
    with open(f"/proc/{process.transport.pid}/status") as status:
        return int(re.search(r"VmRSS:\s+(\d+) kB", status.read()).group(1)) * 1024


class ServerCase(unittest.TestCase):
    """A twistd queuey of its own per test, with small limits, and application ``h``."""

    timeout = 120
    max_connections = 4096
    limits = LIMITS

    def storage(self, directory: str) -> str:
        return SQLITE.format(directory=directory)

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "queuey.ini")
        with open(self.config, "w") as f:
            f.write(f"[application_keys]\nh = {KEY}\nother = other-key\n" + self.storage(self.dir)
                    + self.limits.format(max_connections=self.max_connections))
        self.server = yield self.start()
        self.port = int(self.server.base.rsplit(":", 1)[1])
        self.queue = "q" + uuid.uuid4().hex[:12]
        yield self.request("POST", "/v1/h", data={"queue_name": self.queue, "type": "public"})

    def start(self) -> defer.Deferred[TwistdProcess]:
        return start_queuey(self, self.config)

    @defer.inlineCallbacks
    def request(self, method: str, path: str, auth: bool = True, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Application {KEY}"} if auth else {}
        headers.update(kwargs.pop("headers", {}))
        response = yield treq.request(method, self.server.base + path, headers=headers, persistent=False,
                                      **kwargs)
        body = yield response.content()
        self.assertEqual(response.headers.getRawHeaders("content-type")[0].split(";")[0],
                         "text/plain" if path == "/metrics" else "application/json", body)
        return response.code, (body if path == "/metrics" else json.loads(body))

    def assertError(self, answer: Any, status: int, key: str) -> None:
        self.assertIsNotNone(answer, "the server closed without an answer")
        self.assertEqual(answer.headers[b"content-type"], b"application/json")
        document = answer.json()
        self.assertEqual((answer.status, document["status"]), (status, "error"), document)
        self.assertIn(key, document["error_msg"])


class StorageRows:
    """Rows whose answer depends on what the store holds: run on every backend."""

    @defer.inlineCallbacks
    def test_row1_non_ascii_parameters_are_decoded_then_checked(self) -> Any:
        answer = yield exchange(self.port, b"GET /v1/nosuchapp/q?x=%C3%A9 HTTP/1.1\r\n\r\n")
        self.assertError(answer, 404, "NotFound")
        answer = yield exchange(self.port, f"GET /v1/h/{self.queue}?partitions=%C3%BC HTTP/1.1\r\n\r\n".encode())
        self.assertError(answer, 400, "partitions")
        answer = yield exchange(self.port, f"GET /v1/h/{self.queue}?x=%FF HTTP/1.1\r\n\r\n".encode())
        self.assertError(answer, 400, "query")
        for body, key in [(b"queue_name=gr%C3%BC%C3%9Fe", "queue_name"), (b"queue_name=\xff", "body")]:
            answer = yield exchange(self.port, b"POST /v1/h HTTP/1.1\r\n" + AUTH +
                                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                                    b"Content-Length: %d\r\n\r\n" % len(body) + body)
            self.assertError(answer, 400, key)
        answer = yield exchange(self.port, b"POST /v1/h HTTP/1.1\r\nContent-Length: 3\r\n\r\na=\xff")
        self.assertError(answer, 401, "MissingApplicationKey")

    @defer.inlineCallbacks
    def test_row5_every_stored_field_is_bounded(self) -> Any:
        path = f"/v1/h/{self.queue}"
        code, document = yield self.request("POST", path, json={"messages": [
            {"body": "x", "content_type": "t/" + "y" * 300}]})
        self.assertEqual((code, list(document["error_msg"])), (400, ["0.content_type"]))
        code, document = yield self.request("POST", path, data=b"x", headers={"Content-Type": "t/" + "y" * 300})
        self.assertEqual((code, list(document["error_msg"])), (400, ["content_type"]))
        code, document = yield self.request("POST", path, data=b"x" * 16380, headers={"Content-Type": "text/plain"})
        self.assertEqual((code, list(document["error_msg"])), (413, ["body"]))
        code, _ = yield self.request("POST", path, data=b"x" * 16374, headers={"Content-Type": "text/plain"})
        self.assertEqual(code, 201)

    @defer.inlineCallbacks
    def test_row7_a_page_has_a_byte_budget_and_says_where_to_go_on(self) -> Any:
        path = f"/v1/h/{self.queue}"
        sent = []
        for i in range(10):
            code, document = yield self.request("POST", path, data=bytes([65 + i]) * 16000,
                                                headers={"Content-Type": "text/plain"})
            self.assertEqual(code, 201)
            sent.append(document["messages"][0]["key"])
        read: list[str] = []
        query = "limit=1000&partitions=all"
        for _ in range(10):
            code, page = yield self.request("GET", f"{path}?{query}", auth=False)
            self.assertEqual(code, 200)
            self.assertLessEqual(sum(len(m["body"]) for m in page["messages"]), 65536)
            read.extend(m["message_id"] for m in page["messages"])
            if not page.get("truncated"):
                break
            self.assertEqual(page["resume"], {"1": read[-1]})
            query = f"limit=1000&after={page['resume']['1']}"
        self.assertEqual(read, sent)

    @defer.inlineCallbacks
    def test_row13_principals_bounded_and_the_future_stays_unread(self) -> Any:
        many = ",".join(f"app:a{i}" for i in range(101))
        code, document = yield self.request("PUT", f"/v1/h/{self.queue}", data={"principles": many})
        self.assertEqual((code, list(document["error_msg"])), (400, ["principles"]))
        now = round(time.time() * timeuuid.TICKS_PER_SECOND)
        far = timeuuid.make_uuid(now + 30000 * 365 * 86400 * timeuuid.TICKS_PER_SECOND // 1000, 1, 2).hex
        code, document = yield self.request("PUT", f"/v1/h/{self.queue}/{far}", data=b"x")
        self.assertEqual((code, list(document["error_msg"])), (400, ["messages"]))
        soon = timeuuid.make_uuid(now + 600 * timeuuid.TICKS_PER_SECOND, 1, 2).hex
        code, _ = yield self.request("PUT", f"/v1/h/{self.queue}/{soon}", data=b"later")
        self.assertEqual(code, 200)
        code, posted = yield self.request("POST", f"/v1/h/{self.queue}", data=b"now",
                                          headers={"Content-Type": "text/plain"})
        code, page = yield self.request("GET", f"/v1/h/{self.queue}?limit=10")
        self.assertEqual([m["body"] for m in page["messages"]], ["now"])  # not the one dated later
        code, page = yield self.request("GET", f"/v1/h/{self.queue}/{soon}")
        self.assertEqual([m["body"] for m in page["messages"]], ["later"])  # by id, it is there


class SQLiteStorageRows(StorageRows, ServerCase):
    pass


class CassandraStorageRows(StorageRows, ServerCase):
    timeout = 180

    def storage(self, directory: str) -> str:
        return CASSANDRA_STORAGE.format(hosts=require(CASSANDRA, "Cassandra"))


class CassandraLargeBatch(ServerCase):
    """Row 15: one big batch to one Cassandra node is split into statements, all of them sent."""

    timeout = 300
    limits = "[limits]\nmax_connections = {max_connections}\n"  # the defaults: 256 KiB messages, 16 MiB requests

    def storage(self, directory: str) -> str:
        return CASSANDRA_STORAGE.format(hosts=require(CASSANDRA, "Cassandra"))

    @defer.inlineCallbacks
    def test_row15_a_9_mb_batch_is_stored_whole(self) -> Any:
        body = "x" * 262000
        for _ in range(3):
            code, document = yield self.request("POST", f"/v1/h/{self.queue}", json={
                "messages": [{"body": body} for _ in range(34)]})
            self.assertEqual(code, 201, document)
        code, listing = yield self.request("GET", "/v1/h?include_count=true")
        self.assertEqual([q["count"] for q in listing["queues"] if q["queue_name"] == self.queue], [102])


class HeadRows(ServerCase):
    """Rows the HTTP layer answers from the request head."""

    @defer.inlineCallbacks
    def test_rows2_3_refused_requests_keep_no_body(self) -> Any:
        before = rss_bytes(self.server)
        connections: list[RawConnection] = []
        for _ in range(20):
            connection = yield connect(self.port)
            connection.send(b"POST /v1/h HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                            b"Content-Length: 16777216\r\n\r\n")
            connections.append(connection)
        for connection in connections:
            answer = yield connection.answer()  # before a single body byte was sent
            self.assertError(answer, 401, "MissingApplicationKey")
        chunk = b"a&" * 32768
        for connection in connections:
            for _ in range(32):  # 2 MiB each; the server drops them and closes
                connection.send(chunk)
        yield defer.gatherResults([c.closed for c in connections])
        code, _ = yield self.request("GET", "/__heartbeat__", auth=False)
        self.assertEqual(code, 200)
        self.assertLess(rss_bytes(self.server) - before, 16 * 1024 * 1024)

    @defer.inlineCallbacks
    def test_row2_no_key_is_401_before_the_body(self) -> Any:
        connection = yield connect(self.port)
        connection.send(b"POST /v1/h HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                        b"Content-Length: 1000000\r\n\r\n")
        self.assertError((yield connection.answer()), 401, "MissingApplicationKey")
        connection.close()

    @defer.inlineCallbacks
    def test_row4_over_the_limit_is_413_right_after_the_head(self) -> Any:
        for extra in (b"", b"Expect: 100-continue\r\n"):
            connection = yield connect(self.port)
            connection.send(f"POST /v1/h/{self.queue} HTTP/1.1\r\n".encode() + AUTH + extra +
                            b"Content-Length: 104857600\r\n\r\n")
            self.assertError((yield connection.answer()), 413, "BodyTooLarge")
            self.assertNotIn(b"100 Continue", connection.received)
            self.assertIn(b"Connection: close", connection.received)
            yield connection.closed
        connection = yield connect(self.port)
        connection.send(f"POST /v1/h/{self.queue} HTTP/1.1\r\n".encode() + AUTH + b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(17):  # 17 x 64 KiB: just past max_request_bytes, and the body never ends
            connection.send(b"10000\r\n" + b"x" * 65536 + b"\r\n")
        self.assertError((yield connection.answer()), 413, "BodyTooLarge")
        yield connection.closed

    @defer.inlineCallbacks
    def test_row6_metric_labels_come_from_closed_sets(self) -> Any:
        _, before = yield self.request("GET", "/metrics", auth=False)
        for i in range(200):
            method = (f"M{i}" + "X" * 4000).encode()
            answer = yield exchange(self.port, method + b" /v1/h HTTP/1.1\r\n\r\n")
            self.assertError(answer, 405, "MethodNotAllowed")
        _, after = yield self.request("GET", "/metrics", auth=False)
        self.assertLess(len(after) - len(before), 2000)
        self.assertIn(b'method="other",route="unknown",status="405"} 200.0', after)

    @defer.inlineCallbacks
    def test_row8_a_trickled_head_is_cut_at_the_deadline(self) -> Any:
        connection = yield connect(self.port)
        trickle = task.LoopingCall(lambda: connection.send(b"X"))
        connection.send(b"GET /__lbheartbeat__ HTTP/1.1\r\nX-Slow: ")
        trickle.start(0.1)
        try:
            self.assertError((yield connection.answer()), 408, "RequestTimeout")
        finally:
            trickle.stop()
        yield connection.closed

    @defer.inlineCallbacks
    def test_rows10_11_no_redirects_and_encoded_slashes_stay_in_their_segment(self) -> Any:
        answer = yield exchange(self.port, b"GET /v1//h?limit=1 HTTP/1.1\r\nHost: evil.example\r\n" + AUTH + b"\r\n")
        self.assertError(answer, 404, "NotFound")
        self.assertNotIn(b"location", answer.headers)
        for path in (f"/v1/h%2F{self.queue}", f"/v1/h/{self.queue}%2Fx"):
            answer = yield exchange(self.port, f"GET {path} HTTP/1.1\r\n".encode() + AUTH + b"\r\n")
            self.assertError(answer, 404, "NotFound")

    @defer.inlineCallbacks
    def test_row12_malformed_requests_get_json(self) -> Any:
        cases = [(b"POST /v1/h/q HTTP/1.1\r\nTransfer-Encoding: chunked\r\n" + AUTH + b"\r\nzz\r\n", 400, "BadRequest"),
                 (b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "BadRequest"),
                 (b"GET / HTTP/1.1\r\nContent-Length: -5\r\n\r\n", 400, "BadRequest"),
                 (b"GET / HTTP/9.9\r\n\r\n", 400, "BadRequest"),
                 (b"GET / HTTP/1.1\r\nX-A: b\x00c\r\n\r\n", 400, "BadRequest"),
                 (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 10000 + b"\r\n", 431, "HeaderFieldsTooLarge"),
                 (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 1048576 + b"\r\n\r\n", 431, "HeaderFieldsTooLarge"),
                 (b"GET /" + b"a" * 1048576 + b" HTTP/1.1\r\n\r\n", 414, "URITooLong")]
        for data, status, key in cases:
            answer = yield exchange(self.port, data)
            self.assertError(answer, status, key)

    def test_row14_the_default_endpoint_has_a_server_backlog(self) -> None:
        from twisted.internet.testing import MemoryReactor

        from queuey.app import QueueyApp
        from queuey.config import Config
        from queuey.core import Queuey
        from queuey.storage.sqlite import SQLiteStore
        from queuey.tap import DEFAULT_PORT, ListeningService, Options
        options = Options()
        options.parseOptions([])
        self.assertEqual(options["port"], DEFAULT_PORT)
        memory = MemoryReactor()
        core = Queuey(Config(application_keys={"a": ("k",)}), SQLiteStore.in_memory(memory), memory)
        ListeningService(DEFAULT_PORT, QueueyApp(core).site(memory), memory).startService()
        [(port, _, backlog, interface)] = memory.tcpServers
        self.assertEqual((port, backlog, interface), (5000, 4096, "127.0.0.1"))


class CapRows(ServerCase):
    """Rows 8 and 9: a connection cap, and one that fits under a low open-file limit."""

    max_connections = 10

    @defer.inlineCallbacks
    def test_row8_past_the_cap_clients_get_503_and_retry_after(self) -> Any:
        idle = []
        for _ in range(10):
            idle.append((yield connect(self.port)))
        code = None
        answer = yield exchange(self.port, b"GET /__heartbeat__ HTTP/1.1\r\n\r\n")
        self.assertError(answer, 503, "ServerBusy")
        self.assertEqual(answer.headers[b"retry-after"], b"1")
        idle.pop().close()
        while code != 200:  # the slot frees as soon as the server sees the close
            code, _ = yield self.request("GET", "/__lbheartbeat__", auth=False)
        for connection in idle:
            connection.close()


class FileLimitRows(ServerCase):
    """Row 9: a burst of long-polls past what the open-file limit allows."""

    timeout = 180

    def start(self) -> defer.Deferred[TwistdProcess]:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))  # the child inherits it
        try:
            return start_queuey(self, self.config)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    @defer.inlineCallbacks
    def test_row9_a_burst_past_the_file_limit_gets_answers_not_silence(self) -> Any:
        self.assertIn(b"does not fit the open-file limit (400); serving at most 241", self.server.output)
        polls = []
        for _ in range(300):
            connection = yield connect(self.port)
            connection.send(f"GET /v1/h/{self.queue}?wait=10 HTTP/1.1\r\n\r\n".encode())
            polls.append(connection)
        answer = yield exchange(self.port, b"GET /__heartbeat__ HTTP/1.1\r\n\r\n")
        self.assertError(answer, 503, "ServerBusy")
        answers = yield defer.gatherResults([c.answer() for c in polls])  # served ones after their wait
        statuses = [a.status for a in answers if a is not None]
        self.assertEqual(len(statuses), 300, "every connection got an answer")
        self.assertEqual(set(statuses), {200, 503})
        self.assertGreaterEqual(statuses.count(200), 200)
        for connection in polls:
            connection.close()
        code = None
        while code != 200:
            code, _ = yield self.request("GET", "/__heartbeat__", auth=False)
