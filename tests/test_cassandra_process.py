"""End to end on Cassandra: real ``twistd queuey`` processes with ``backend = cassandra``."""

from __future__ import annotations

import time
import uuid
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from tests.services import CASSANDRA, require
from tests.processes import config_in_temp_dir, start_queuey

KEY = "e2e-key"
CONFIG = """
[application_keys]
e2e = {key}

[storage]
backend = cassandra
hosts = {hosts}
keyspace = queuey_test_process
replication = SimpleStrategy:1
connect_timeout = 5
request_timeout = 5

[longpoll]
poll_interval = 0.2
"""


class CassandraProcessTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        hosts = require(CASSANDRA, "Cassandra")
        self.dir, self.config = config_in_temp_dir(self, CONFIG.format(key=KEY, hosts=hosts))
        self.headers = {"Authorization": f"Application {KEY}"}
        self.queue = "q" + uuid.uuid4().hex[:12]

    def start(self, port: int | None = None) -> defer.Deferred[Any]:
        """A twistd queuey on its own port; killed at the end of the test if still running."""
        return start_queuey(self, self.config, port)

    @defer.inlineCallbacks
    def request(self, server: Any, method: str, path: str, headers: dict[str, str] | None = None,
                **kwargs: Any) -> Any:
        response = yield treq.request(method, server.base + path, headers=headers or self.headers,
                                      persistent=False, **kwargs)
        document = yield response.json()
        return response.code, document

    def text(self, body: bytes) -> dict[str, Any]:
        return {"data": body, "headers": {**self.headers, "Content-Type": "text/plain"}}

    @defer.inlineCallbacks
    def test_end_to_end(self) -> Any:
        """Every kind of request a client makes, answered by Cassandra through a real twistd."""
        server = yield self.start()
        q = f"/v1/e2e/{self.queue}"
        code, created = yield self.request(server, "POST", "/v1/e2e", data={"queue_name": self.queue,
                                                                           "partitions": "2"})
        self.assertEqual((code, created["partitions"]), (201, 2))
        code, document = yield self.request(server, "POST", "/v1/e2e", data={"queue_name": self.queue})
        self.assertEqual((code, list(document["error_msg"])), (409, ["QueueExists"]))

        code, single = yield self.request(server, "POST", q, data=b"one", headers={
            **self.headers, "Content-Type": "text/plain", "X-Partition": "1"})
        self.assertEqual(code, 201)
        code, batch = yield self.request(server, "POST", q, json={"messages": [
            {"body": "two"}, {"body": "three", "partition": 1}, {"body": "other", "partition": 2}]})
        self.assertEqual(code, 201)
        keys = [single["messages"][0]["key"]] + [m["key"] for m in batch["messages"]]
        self.assertIn(batch["messages"][0]["partition"], (1, 2))

        code, document = yield self.request(server, "GET", f"{q}?partitions=all&limit=100")
        self.assertEqual(code, 200)
        got = {m["message_id"]: m["body"] for m in document["messages"]}
        self.assertEqual(got, dict(zip(keys, ["one", "two", "three", "other"])))
        code, document = yield self.request(server, "GET", f"{q}?partitions=2")
        self.assertIn("other", [m["body"] for m in document["messages"]])
        code, document = yield self.request(server, "GET", f"{q}?partitions=1&after={keys[0]}")
        self.assertTrue(all(m["message_id"] != keys[0] for m in document["messages"]))
        self.assertIn("three", [m["body"] for m in document["messages"]])
        code, document = yield self.request(server, "GET", f"{q}?partitions=1&since={keys[0]}&limit=1")
        self.assertEqual([m["body"] for m in document["messages"]], ["one"])
        code, document = yield self.request(server, "GET", f"{q}/1:{keys[0]},2:{keys[3]}")
        self.assertEqual([m["body"] for m in document["messages"]], ["one", "other"])

        code, _ = yield self.request(server, "DELETE", f"{q}/2:{keys[3]}")
        self.assertEqual(code, 200)
        code, document = yield self.request(server, "GET", f"{q}/2:{keys[3]}")
        self.assertEqual((code, document["messages"]), (200, []))
        code, document = yield self.request(server, "GET", "/v1/e2e/no-such-queue")
        self.assertEqual((code, list(document["error_msg"])), (404, ["NotFound"]))

        # Long-poll: a held read (a consumer's cursor past everything so far) wakes on a post.
        held = self.request(server, "GET", f"{q}?partitions=2&after={keys[3]}&wait=30")
        yield task.deferLater(reactor, 0.3, lambda: None)
        self.assertFalse(held.called)
        started = time.monotonic()
        code, _ = yield self.request(server, "POST", q, data=b"wake",
                                     headers={**self.headers, "Content-Type": "text/plain", "X-Partition": "2"})
        self.assertEqual(code, 201)
        code, document = yield held
        self.assertEqual((code, [m["body"] for m in document["messages"]]), (200, ["wake"]))
        self.assertLess(time.monotonic() - started, 5)

        code, document = yield self.request(server, "GET", "/__heartbeat__")
        self.assertEqual((code, document["checks"]), (200, {"storage": "ok"}))
        code, _ = yield self.request(server, "DELETE", q)
        self.assertEqual(code, 200)
        code, _ = yield self.request(server, "GET", q)
        self.assertEqual(code, 404)

    @defer.inlineCallbacks
    def test_acknowledged_messages_survive_kill_9(self) -> Any:
        """What queuey answered 201 for is in Cassandra: kill -9 of queuey loses none of it."""
        server = yield self.start()
        code, _ = yield self.request(server, "POST", "/v1/e2e", data={"queue_name": self.queue, "partitions": "4"})
        self.assertEqual(code, 201)
        q = f"/v1/e2e/{self.queue}"
        posts = [self.request(server, "POST", q, **self.text(f"message {i}".encode())) for i in range(40)]
        posts.append(self.request(server, "POST", q, json={"messages": [{"body": f"b{i}"} for i in range(60)]}))
        acknowledged = []
        for code, document in (yield defer.gatherResults(posts)):
            self.assertEqual(code, 201)
            acknowledged.extend(m["key"] for m in document["messages"])
        server.transport.signalProcess("KILL")
        yield server.ended
        again = yield self.start()
        code, document = yield self.request(again, "GET", f"{q}?partitions=all&limit=1000")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(m["message_id"] for m in document["messages"]), sorted(acknowledged))

    @defer.inlineCallbacks
    def test_long_poll_woken_through_another_process(self) -> Any:
        """A read held by one server wakes when another server stores a message (store poll)."""
        first, second = yield defer.gatherResults([self.start(), self.start()])
        code, _ = yield self.request(first, "POST", "/v1/e2e", data={"queue_name": self.queue})
        self.assertEqual(code, 201)
        q = f"/v1/e2e/{self.queue}"
        held = self.request(first, "GET", f"{q}?wait=30")
        yield task.deferLater(reactor, 0.5, lambda: None)
        self.assertFalse(held.called)
        started = time.monotonic()
        code, _ = yield self.request(second, "POST", q, **self.text(b"from the other one"))
        self.assertEqual(code, 201)
        code, document = yield held
        self.assertEqual((code, [m["body"] for m in document["messages"]]), (200, ["from the other one"]))
        self.assertLess(time.monotonic() - started, 5)
