"""What a real ``twistd queuey`` must do on any store: scenarios run on SQLite and on Cassandra.

A trial TestCase mixes in :class:`ServerScenarios` and sets ``config`` (the path of a
queuey.ini whose application ``e2e`` has the key ``KEY``) in its setUp.

Long-poll is proven, not assumed: a read is posted to only once the server's
``/metrics`` shows it held, and it counts as woken only when it answers before
its own ``wait`` could have run out (a read that timed out answers after it,
whatever the machine's load).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import treq
from twisted.internet import defer
from twisted.web.client import ResponseNeverReceived

from tests import rawhttp
from tests.processes import held_reads, request, start_queuey, wait_for_held

APPLICATION, KEY = "e2e", "e2e-key"
WAIT = 60  # the longest wait the API allows: a woken read answers long before it


class ServerScenarios:
    """Mix into a twisted.trial TestCase."""

    config: str
    headers = {"Authorization": f"Application {KEY}"}
    timeout = 2 * WAIT  # a read that is not woken fails by assert_woken, not by trial's timeout

    def start_server(self) -> defer.Deferred[Any]:
        return start_queuey(self, self.config)  # type: ignore[arg-type]

    def call(self, server: Any, method: str, path: str, headers: dict[str, str] | None = None,
             **kwargs: Any) -> defer.Deferred[Any]:
        """(status, JSON document) of one request to ``server``, with the application's key."""
        return request(server.base, method, path, headers or self.headers, **kwargs)

    def text(self, body: bytes) -> dict[str, Any]:
        return {"data": body, "headers": {**self.headers, "Content-Type": "text/plain"}}

    @defer.inlineCallbacks
    def new_queue(self, server: Any, **params: str) -> Any:
        """A queue of a name no earlier test used; its path."""
        name = "q" + uuid.uuid4().hex[:12]
        code, document = yield self.call(server, "POST", f"/v1/{APPLICATION}", data={"queue_name": name, **params})
        self.assertEqual(code, 201, document)
        return f"/v1/{APPLICATION}/{name}"

    @defer.inlineCallbacks
    def held_read(self, server: Any, path: str) -> Any:
        """(the answer's Deferred, when it was sent) of a long-poll read that ``server`` holds."""
        sent = time.monotonic()
        answer = self.call(server, "GET", f"{path}{'&' if '?' in path else '?'}wait={WAIT}")
        yield wait_for_held(server.base, 1)
        self.assertFalse(answer.called, "a held read answered while nothing was posted")
        return answer, sent

    def assert_woken(self, sent: float) -> None:
        self.assertLess(time.monotonic() - sent, WAIT, "the read answered when its wait ran out, not when woken")

    # -- the scenarios ------------------------------------------------------

    @defer.inlineCallbacks
    def test_acknowledged_messages_survive_kill_9(self) -> Any:
        """What queuey answered 201 for is stored: kill -9 of queuey loses none of it."""
        server = yield self.start_server()
        queue = yield self.new_queue(server, partitions="4")
        posts = [self.call(server, "POST", queue, **self.text(f"message {i}".encode())) for i in range(40)]
        posts.append(self.call(server, "POST", queue, json={"messages": [{"body": f"b{i}"} for i in range(60)]}))
        acknowledged = []
        for code, document in (yield defer.gatherResults(posts)):
            self.assertEqual(code, 201, document)
            acknowledged.extend(m["key"] for m in document["messages"])
        server.transport.signalProcess("KILL")
        yield server.ended
        again = yield self.start_server()
        code, document = yield self.call(again, "GET", f"{queue}?partitions=all&limit=1000")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(m["message_id"] for m in document["messages"]), sorted(acknowledged))

    @defer.inlineCallbacks
    def test_held_read_woken_by_a_post(self) -> Any:
        """A consumer's cursor past everything so far: its read is held, and a post wakes it."""
        server = yield self.start_server()
        queue = yield self.new_queue(server, partitions="2")
        code, document = yield self.call(server, "POST", queue, **self.text(b"old"))
        self.assertEqual(code, 201)
        cursor = document["messages"][0]
        answer, sent = yield self.held_read(server, f"{queue}?partitions={cursor['partition']}&after={cursor['key']}")
        code, _ = yield self.call(server, "POST", queue, data=b"other partition", headers={
            **self.headers, "Content-Type": "text/plain", "X-Partition": str(3 - cursor["partition"])})
        self.assertEqual(code, 201)
        self.assertEqual((yield held_reads(server.base)), 1)  # still held: not its partition
        code, _ = yield self.call(server, "POST", queue, data=b"wake", headers={
            **self.headers, "Content-Type": "text/plain", "X-Partition": str(cursor["partition"])})
        self.assertEqual(code, 201)
        code, document = yield answer
        self.assert_woken(sent)
        self.assertEqual((code, [m["body"] for m in document["messages"]]), (200, ["wake"]))

    @defer.inlineCallbacks
    def test_reads_one_post_wakes_are_answered_alike_and_their_connections_go_on(self) -> Any:
        """Held reads answered together (sent straight to their sockets) answer as a plain read
        does, and each connection then answers the request pipelined behind its held read."""
        server = yield self.start_server()
        queue = yield self.new_queue(server)
        port = int(server.base.rsplit(":", 1)[1])
        key = self.headers["Authorization"]
        connections = yield defer.gatherResults([rawhttp.connect(port) for _ in range(3)])
        for connection in connections:
            connection.send(f"GET {queue}?wait={WAIT} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n\r\n"
                            f"GET /__lbheartbeat__ HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        yield wait_for_held(server.base, 3)
        code, _ = yield self.call(server, "POST", queue, **self.text(b"wake"))
        self.assertEqual(code, 201)
        plain = yield rawhttp.exchange(port, f"GET {queue} HTTP/1.1\r\nHost: x\r\nAuthorization: {key}\r\n\r\n"
                                             .encode())
        for connection in connections:
            held, heartbeat = yield connection.answers(2)
            connection.close()
            self.assertEqual((held.status, held.body), (200, plain.body))
            self.assertEqual(sorted(held.headers), sorted(plain.headers))
            self.assertEqual(held.headers[b"content-length"], b"%d" % len(held.body))
            self.assertEqual((heartbeat.status, heartbeat.json()), (200, {"status": "ok"}))
        self.assertEqual([m["body"] for m in plain.json()["messages"]], ["wake"])

    @defer.inlineCallbacks
    def test_held_read_woken_through_another_process(self) -> Any:
        """A read held by one server wakes when another server, on the same store, stores a message."""
        first, second = yield defer.gatherResults([self.start_server(), self.start_server()])
        queue = yield self.new_queue(first)
        answer, sent = yield self.held_read(first, queue)
        code, _ = yield self.call(second, "POST", queue, **self.text(b"from the other one"))
        self.assertEqual(code, 201)
        code, document = yield answer
        self.assert_woken(sent)
        self.assertEqual((code, [m["body"] for m in document["messages"]]), (200, ["from the other one"]))

    @defer.inlineCallbacks
    def test_dropped_client_releases_its_held_read(self) -> Any:
        """A client that closes its connection frees its held read at once, not when the wait runs out."""
        server = yield self.start_server()
        queue = yield self.new_queue(server)
        sent = time.monotonic()
        answer = treq.get(f"{server.base}{queue}?wait={WAIT}", headers=self.headers, persistent=False)
        yield wait_for_held(server.base, 1)
        answer.cancel()  # treq aborts the TCP connection
        yield self.assertFailure(answer, ResponseNeverReceived)
        yield wait_for_held(server.base, 0, timeout=WAIT / 2)
        self.assert_woken(sent)
        code, _ = yield self.call(server, "POST", queue, **self.text(b"nobody waits"))
        self.assertEqual(code, 201)
        self.assertNotIn(b"Traceback", server.output)

    @defer.inlineCallbacks
    def test_two_servers_racing_to_create_a_queue(self) -> Any:
        """The same name created through two servers at once: one 201, one 409, and the winner's settings."""
        first, second = yield defer.gatherResults([self.start_server(), self.start_server()])
        for _ in range(10):
            name = "race" + uuid.uuid4().hex[:12]
            answers = yield defer.gatherResults([
                self.call(server, "POST", f"/v1/{APPLICATION}", data={"queue_name": name, "partitions": str(n)})
                for n, server in ((2, first), (3, second))])
            codes = [code for code, _ in answers]
            self.assertEqual(sorted(codes), [201, 409], answers)
            winner = answers[codes.index(201)][1]
            self.assertEqual(answers[codes.index(409)][1]["error_msg"].keys(), {"QueueExists"})
            for server in (first, second):
                code, listing = yield self.call(server, "GET", f"/v1/{APPLICATION}?details=true&offset="
                                                                  f"{name[:-1]}&limit=1")
                self.assertEqual(code, 200)
                self.assertEqual(listing["queues"][0]["queue_name"], name)
                self.assertEqual(listing["queues"][0]["partitions"], winner["partitions"])
