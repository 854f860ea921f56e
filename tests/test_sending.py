"""Whole responses: made once for equal heads, and sent straight to a plain TCP socket, in order."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.trial import unittest
from twisted.web.http_headers import Headers

from queuey.sending import WholeResponses, send_now, sendable_now


class Collect(protocol.Protocol):
    def __init__(self, expected: int) -> None:
        self.data = b""
        self.expected = expected
        self.done: defer.Deferred[bytes] = defer.Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.done.called:
            self.done.callback(self.data)


class Accepted(protocol.Protocol):
    def __init__(self, connected: defer.Deferred[Any]) -> None:
        self.accepted = connected

    def connectionMade(self) -> None:
        self.accepted.callback(self.transport)


class SendNowTests(unittest.TestCase):
    @defer.inlineCallbacks
    def connection(self, expected: int) -> Any:
        """A real loopback TCP connection: (the server side's transport, the client's Collect)."""
        accepted: defer.Deferred[Any] = defer.Deferred()
        factory = protocol.Factory.forProtocol(lambda: Accepted(accepted))
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = Collect(expected)
        yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            protocol.Factory.forProtocol(lambda: client))
        transport = yield accepted
        self.addCleanup(client.transport.loseConnection)
        self.addCleanup(transport.loseConnection)
        return transport, client

    @defer.inlineCallbacks
    def test_sent_at_once_when_nothing_is_queued(self) -> Any:
        transport, client = yield self.connection(5)
        self.assertTrue(sendable_now(transport))  # fails if Twisted's transport changed shape
        send_now(transport, b"hello")
        self.assertTrue(sendable_now(transport))  # nothing left to the reactor: the kernel has it
        self.assertEqual((yield client.done), b"hello")

    @defer.inlineCallbacks
    def test_queued_behind_what_the_transport_holds(self) -> Any:
        transport, client = yield self.connection(12)
        transport.write(b"first ")
        self.assertFalse(sendable_now(transport))
        send_now(transport, b"second")
        self.assertEqual((yield client.done), b"first second")

    @defer.inlineCallbacks
    def test_what_the_socket_does_not_take_goes_through_the_transport(self) -> Any:
        big = bytes(range(256)) * (64 * 1024)  # 16 MiB: more than a socket buffer takes at once
        transport, client = yield self.connection(len(big) + 4)
        send_now(transport, big)
        self.assertFalse(sendable_now(transport))  # the rest waits in the transport
        send_now(transport, b"tail")
        self.assertEqual((yield client.done), big + b"tail")

    def test_other_transports_use_their_own_write(self) -> None:
        written: list[bytes] = []

        class Other:
            def write(self, data: bytes) -> None:
                written.append(data)
        self.assertFalse(sendable_now(Other()))
        send_now(Other(), b"data")
        self.assertEqual(written, [b"data"])


class WholeResponsesTests(unittest.TestCase):
    def headers(self, **fields: str) -> Headers:
        headers = Headers()
        for name, value in fields.items():
            headers.setRawHeaders(name.replace("_", "-"), [value])
        return headers

    def test_the_response_is_its_head_then_its_body(self) -> None:
        responses = WholeResponses(b'{"status":"ok"}', b"application/json")
        whole = responses.whole(b"HTTP/1.1", 200, b"OK", self.headers(Server="q", Date="today").getAllRawHeaders())
        self.assertEqual(whole, b"HTTP/1.1 200 OK\r\nServer: q\r\nDate: today\r\nContent-Type: application/json\r\n"
                                b"Content-Length: 15\r\n\r\n{\"status\":\"ok\"}")

    def test_equal_heads_share_one_response_and_others_get_their_own(self) -> None:
        responses = WholeResponses(b"body", b"text/plain")
        first = responses.whole(b"HTTP/1.1", 200, b"OK", self.headers(Date="today").getAllRawHeaders())
        again = responses.whole(b"HTTP/1.1", 200, b"OK", self.headers(Date="today").getAllRawHeaders())
        self.assertIs(first, again)
        closing = responses.whole(b"HTTP/1.1", 200, b"OK",
                                  self.headers(Date="today", Connection="close").getAllRawHeaders())
        self.assertIn(b"\r\nConnection: close\r\n", closing)
        older = responses.whole(b"HTTP/1.0", 200, b"OK", self.headers(Date="today").getAllRawHeaders())
        self.assertTrue(older.startswith(b"HTTP/1.0 200 OK\r\n"))
