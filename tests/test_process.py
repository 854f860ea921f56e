"""End to end on SQLite: real ``twistd queuey`` processes on real sockets (the scenarios of
tests/server_scenarios.py, which run on Cassandra too, and what is SQLite's or the process's own)."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import Any

import treq
from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.endpoints import TCP6ClientEndpoint, UNIXClientEndpoint
from twisted.internet.error import ConnectionRefusedError
from twisted.trial import unittest
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from tests.processes import (TwistdProcess, config_in_temp_dir, free_port, request, spawn_queuey, start_queuey,
                             wait_for)
from tests.server_scenarios import ServerScenarios

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


class ProcessTests(ServerScenarios, unittest.TestCase):
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
    def test_real_socket_limits_and_clean_shutdown(self) -> Any:
        server = yield self.start()
        yield self.request("POST", "/v1/e2e", data={"queue_name": "q"})
        code, document = yield self.request("POST", "/v1/e2e/q", data=b"x" * 5000)
        self.assertEqual((code, list(document["error_msg"])), (413, ["BodyTooLarge"]))
        code, document = yield self.request("POST", "/v1/e2e/q", data=b"x" * 1001)
        self.assertEqual((code, list(document["error_msg"])), (413, ["body"]))
        code, document = yield self.request("GET", "/v1/e2e/q%FF")
        self.assertEqual((code, list(document["error_msg"])), (400, ["url"]))
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

    @defer.inlineCallbacks
    def test_listens_on_a_unix_socket(self) -> Any:
        """``--port unix:PATH`` serves HTTP on that socket file."""
        short = tempfile.mkdtemp(prefix="queuey-test-")  # a socket path holds at most 107 bytes
        self.addCleanup(shutil.rmtree, short)
        path = os.path.join(short, "queuey.sock")
        process = self.spawn("--config", self.config, "--port", f"unix:{path}")
        yield process.listening
        yield self.assert_serves(UNIXClientEndpoint(reactor, path))

    @defer.inlineCallbacks
    def test_listens_on_tcp6(self) -> Any:
        """``--port tcp6:PORT:interface=\\:\\:1`` serves HTTP on IPv6 loopback, and not on IPv4."""
        try:
            port = free_port("::1")
        except OSError as e:
            raise unittest.SkipTest(f"this machine has no IPv6 loopback: {e}") from None
        process = self.spawn("--config", self.config, "--port", f"tcp6:{port}:interface=\\:\\:1")
        yield process.listening
        yield self.assert_serves(TCP6ClientEndpoint(reactor, "::1", port))
        yield self.assertFailure(request(f"http://127.0.0.1:{port}", "GET", "/__lbheartbeat__"),
                                 ConnectionRefusedError)

    @defer.inlineCallbacks
    def assert_serves(self, endpoint: Any) -> Any:
        """The queuey behind ``endpoint`` creates a queue and lists it."""
        http = HTTPClient(Agent.usingEndpointFactory(reactor, _OneEndpoint(endpoint), HTTPConnectionPool(reactor, False)))
        # twistd logs "starting on" a UNIX socket before it binds it: wait until it accepts.
        yield defer.ensureDeferred(wait_for(lambda: http.get("http://queuey/__lbheartbeat__").addCallback(
            lambda response: response.code == 200), 30, "queuey to accept connections"))
        response = yield http.post("http://queuey/v1/e2e", data={"queue_name": "q"}, headers=self.headers)
        self.assertEqual((response.code, (yield response.json())["queue_name"]), (201, "q"))
        response = yield http.get("http://queuey/v1/e2e", headers=self.headers)
        self.assertEqual((yield response.json())["queues"], [{"queue_name": "q"}])


@implementer(IAgentEndpointFactory)
class _OneEndpoint:
    """Every URL to one endpoint (a UNIX socket, an IPv6 address)."""

    def __init__(self, endpoint: Any) -> None:
        self.endpoint = endpoint

    def endpointForURI(self, uri: Any) -> Any:
        return self.endpoint
