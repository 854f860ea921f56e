"""End to end: a real ``twistd queuey`` process on a real socket, killed with -9 and restarted."""

from __future__ import annotations

import signal
from typing import Any

import treq
from twisted.internet import defer
from twisted.trial import unittest

from tests.processes import TwistdProcess, config_in_temp_dir, free_port, spawn_queuey, start_queuey

KEY = "e2e-key"
CONFIG = f"""
[application_keys]
e2e = {KEY}

[storage]
backend = sqlite
path = {{path}}

[limits]
max_message_bytes = 1000
max_request_bytes = 4000
"""


class ProcessTests(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.dir, self.config = config_in_temp_dir(self, CONFIG.format(path="queuey.sqlite"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers = {"Authorization": f"Application {KEY}"}

    def spawn(self, *args: str) -> TwistdProcess:
        return spawn_queuey(self, self.dir, *args)

    def start(self) -> defer.Deferred[TwistdProcess]:
        return start_queuey(self, self.config, self.port)

    @defer.inlineCallbacks
    def request(self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
        response = yield treq.request(method, self.base + path, headers=headers or self.headers,
                                      persistent=False, **kwargs)
        document = yield response.json()
        return response.code, document

    @defer.inlineCallbacks
    def test_acknowledged_messages_survive_kill_9(self) -> Any:
        server = yield self.start()
        code, _ = yield self.request("POST", "/v1/e2e", data={"queue_name": "q", "partitions": "4"})
        self.assertEqual(code, 201)
        acknowledged = []
        posts = [self.request("POST", "/v1/e2e/q", data=f"message {i}".encode(),
                              headers={**self.headers, "Content-Type": "text/plain"}) for i in range(40)]
        posts.append(self.request("POST", "/v1/e2e/q", json={"messages": [{"body": f"b{i}"} for i in range(60)]}))
        for code, document in (yield defer.gatherResults(posts)):
            self.assertEqual(code, 201)
            acknowledged.extend(m["key"] for m in document["messages"])
        server.transport.signalProcess("KILL")
        yield server.ended
        yield self.start()
        code, document = yield self.request("GET", "/v1/e2e/q?partitions=all&limit=1000")
        self.assertEqual(code, 200)
        self.assertEqual(sorted(m["message_id"] for m in document["messages"]), sorted(acknowledged))

    @defer.inlineCallbacks
    def test_real_socket_limits_and_long_poll(self) -> Any:
        server = yield self.start()
        yield self.request("POST", "/v1/e2e", data={"queue_name": "q"})
        code, document = yield self.request("POST", "/v1/e2e/q", data=b"x" * 5000)
        self.assertEqual((code, list(document["error_msg"])), (413, ["BodyTooLarge"]))
        code, document = yield self.request("POST", "/v1/e2e/q", data=b"x" * 1001)
        self.assertEqual((code, list(document["error_msg"])), (413, ["body"]))
        code, document = yield self.request("GET", "/v1/e2e/q%FF")
        self.assertEqual((code, list(document["error_msg"])), (400, ["url"]))
        held = self.request("GET", "/v1/e2e/q?wait=30")
        code, _ = yield self.request("POST", "/v1/e2e/q", data=b"wake up")
        self.assertEqual(code, 201)
        code, document = yield held
        self.assertEqual([m["body"] for m in document["messages"]], ["wake up"])
        server.transport.signalProcess("TERM")
        yield server.ended  # twistd shuts down cleanly, then exits by the same signal
        self.assertIn(b"Server Shut Down.", server.output)
        self.assertNotIn(b"Traceback", server.output)

    @defer.inlineCallbacks
    def test_bad_configuration_is_one_clear_line(self) -> Any:
        with open(self.config, "a") as f:
            f.write("[delays]\nstrong = later\n")
        process = self.spawn("--config", self.config)
        process.listening.addErrback(lambda _: None)
        reason = yield process.ended
        self.assertNotEqual(reason.exitCode, 0)
        output = process.output.decode()
        self.assertIn("[delays] strong: 'later' is not a number", output)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_development_configuration_says_so(self) -> Any:
        process = self.spawn("--port", f"tcp:{self.port}:interface=127.0.0.1")
        yield process.listening
        self.assertIn(b"DEVELOPMENT configuration", process.output)
        response = yield treq.get(self.base + "/v1/queuey", headers={"Authorization": "Application queuey-dev-key"},
                                  persistent=False)
        self.assertEqual(response.code, 200)
        yield response.content()
        process.transport.signalProcess(signal.SIGTERM)
        yield process.ended
