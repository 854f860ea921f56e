"""End to end on Cassandra: real ``twistd queuey`` processes with ``backend = cassandra`` (the
scenarios of tests/server_scenarios.py, which run on SQLite too, and what is Cassandra's own)."""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import defer
from twisted.trial import unittest

from tests.processes import LISTENING, free_port, spawn_queuey, write_config
from tests.server_scenarios import KEY, ServerScenarios
from tests.services import CASSANDRA, require

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


class CassandraProcessTests(ServerScenarios, unittest.TestCase):
    def setUp(self) -> None:
        self.config = write_config(self, CONFIG.format(key=KEY, hosts=require(CASSANDRA, "Cassandra")))
        self.queue = "q" + uuid.uuid4().hex[:12]

    @defer.inlineCallbacks
    def test_end_to_end(self) -> Any:
        """Every kind of request a client makes, answered by Cassandra through a real twistd."""
        server = yield self.start_server()
        q = f"/v1/e2e/{self.queue}"
        code, created = yield self.call(server, "POST", "/v1/e2e", data={"queue_name": self.queue,
                                                                           "partitions": "2"})
        self.assertEqual((code, created["partitions"]), (201, 2))
        code, document = yield self.call(server, "POST", "/v1/e2e", data={"queue_name": self.queue})
        self.assertEqual((code, list(document["error_msg"])), (409, ["QueueExists"]))

        code, single = yield self.call(server, "POST", q, data=b"one", headers={
            **self.headers, "Content-Type": "text/plain", "X-Partition": "1"})
        self.assertEqual(code, 201)
        code, batch = yield self.call(server, "POST", q, json={"messages": [
            {"body": "two"}, {"body": "three", "partition": 1}, {"body": "other", "partition": 2}]})
        self.assertEqual(code, 201)
        keys = [single["messages"][0]["key"]] + [m["key"] for m in batch["messages"]]
        self.assertIn(batch["messages"][0]["partition"], (1, 2))

        code, document = yield self.call(server, "GET", f"{q}?partitions=all&limit=100")
        self.assertEqual(code, 200)
        got = {m["message_id"]: m["body"] for m in document["messages"]}
        self.assertEqual(got, dict(zip(keys, ["one", "two", "three", "other"])))
        code, document = yield self.call(server, "GET", f"{q}?partitions=2")
        self.assertIn("other", [m["body"] for m in document["messages"]])
        code, document = yield self.call(server, "GET", f"{q}?partitions=1&after={keys[0]}")
        self.assertTrue(all(m["message_id"] != keys[0] for m in document["messages"]))
        self.assertIn("three", [m["body"] for m in document["messages"]])
        code, document = yield self.call(server, "GET", f"{q}?partitions=1&since={keys[0]}&limit=1")
        self.assertEqual([m["body"] for m in document["messages"]], ["one"])
        code, document = yield self.call(server, "GET", f"{q}/1:{keys[0]},2:{keys[3]}")
        self.assertEqual([m["body"] for m in document["messages"]], ["one", "other"])

        code, _ = yield self.call(server, "DELETE", f"{q}/2:{keys[3]}")
        self.assertEqual(code, 200)
        code, document = yield self.call(server, "GET", f"{q}/2:{keys[3]}")
        self.assertEqual((code, document["messages"]), (200, []))
        code, document = yield self.call(server, "GET", "/v1/e2e/no-such-queue")
        self.assertEqual((code, list(document["error_msg"])), (404, ["NotFound"]))

        code, document = yield self.call(server, "GET", "/__heartbeat__")
        self.assertEqual((code, document["checks"]), (200, {"storage": "ok"}))
        code, _ = yield self.call(server, "DELETE", q)
        self.assertEqual(code, 200)
        code, _ = yield self.call(server, "GET", q)
        self.assertEqual(code, 404)


class NoCassandraTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_start_without_a_node_answering_exits_with_one_line(self) -> Any:
        """No contact point answers: queuey says so in one line and exits, with a failure status."""
        config = write_config(self, CONFIG.format(key=KEY, hosts=f"127.0.0.1:{free_port()}").replace(
            "connect_timeout = 5", "connect_timeout = 1"))
        process = spawn_queuey(self, os.path.dirname(config), "--config", config,
                               "--port", f"tcp:{free_port()}:interface=127.0.0.1")
        process.listening.addErrback(lambda _: None)
        reason = yield process.ended
        output = process.output.decode()
        lines = [line for line in output.splitlines() if "Could not open the cassandra store" in line]
        self.assertEqual(len(lines), 1, output)
        self.assertIn("127.0.0.1", lines[0])
        self.assertNotIn("Traceback", output)
        self.assertNotIn(LISTENING.decode(), output)
        self.assertNotEqual(reason.exitCode, 0, output)
