"""The HTTP channel's limits, one connection at a time, on a string transport and a fake clock."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.testing import StringTransport
from twisted.trial import unittest

from queuey.connections import RESERVED_FILES, ConnectionCap, Verdict, connection_cap, refusing_cap_for
from queuey.config import Config
from queuey.responses import ResponseWriter
from queuey.testing import DEFAULT_KEYS, MemoryQueuey

AUTH = b"Authorization: Application queuey-key\r\n"


class Transport(StringTransport):
    """A StringTransport that also half-closes and aborts, as TCP does."""

    def __init__(self) -> None:
        super().__init__(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        self.write_closed = False
        self.aborted = False

    def loseWriteConnection(self) -> None:
        self.write_closed = True

    def abortConnection(self) -> None:
        self.aborted = True
        self.disconnecting = True


def answer(raw: bytes) -> tuple[int, dict[bytes, bytes], Any]:
    """Status, headers and JSON body of the (first) response in ``raw``."""
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    headers = dict(line.split(b": ", 1) for line in lines[1:])
    length = int(headers.get(b"Content-Length", len(body)))
    return int(lines[0].split()[1]), headers, json.loads(body[:length])


class ChannelCase(unittest.TestCase):
    config = Config(application_keys=DEFAULT_KEYS, max_request_bytes=1000, max_message_bytes=500,
                    max_body_bytes_in_flight=1500, request_head_timeout=10, body_min_rate=100)

    def setUp(self) -> None:
        self.memory = MemoryQueuey(self.config)
        self.addCleanup(self.memory.close)
        self.site = self.memory.site

    def connect(self) -> tuple[Any, Transport]:
        channel = self.site.buildProtocol(None)
        transport = Transport()
        channel.makeConnection(transport)
        self.addCleanup(lambda: channel.connectionLost(None) if not transport.aborted else None)
        return channel, transport

    def assertRefused(self, transport: Transport, status: int, key: str) -> dict[bytes, bytes]:
        code, headers, body = answer(transport.value())
        self.assertEqual((code, list(body["error_msg"])), (status, [key]), body)
        self.assertEqual((headers[b"Content-Type"], headers[b"Connection"]), (b"application/json", b"close"))
        self.assertTrue(transport.write_closed)
        return headers


class HeadTests(ChannelCase):
    def test_refused_from_the_head_before_any_body_byte(self) -> None:
        cases = [(b"POST /v1/queuey HTTP/1.1\r\nContent-Length: 900\r\n\r\n", 401, "MissingApplicationKey"),
                 (b"POST /v1/nobody HTTP/1.1\r\n" + AUTH + b"Content-Length: 5\r\n\r\n", 404, "NotFound"),
                 (b"POST /v1/other HTTP/1.1\r\n" + AUTH + b"Content-Length: 5\r\n\r\n", 403, "AccessDenied"),
                 (b"PATCH /v1/queuey HTTP/1.1\r\n" + AUTH + b"Content-Length: 5\r\n\r\n", 405, "MethodNotAllowed"),
                 (b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Content-Length: 1001\r\n\r\n", 413, "BodyTooLarge"),
                 (b"POST /v1/queuey HTTP/1.1\r\n" + AUTH + b"Content-Length: 70000\r\n\r\n", 413, "BodyTooLarge"),
                 (b"GET /v1//queuey HTTP/1.1\r\nHost: evil.example\r\n\r\n", 404, "NotFound"),
                 (b"GET /v1/queuey%2Fq HTTP/1.1\r\n" + AUTH + b"\r\n", 404, "NotFound")]
        for head, status, key in cases:
            channel, transport = self.connect()
            channel.dataReceived(head)
            self.assertRefused(transport, status, key)
            self.assertEqual(channel.requests[-1].content, None)  # no body was ever set up
            channel.dataReceived(b"x" * 500)  # what follows is dropped, not parsed
            self.assertEqual(answer(transport.value())[0], status)
            self.assertEqual(self.site.bodies.held, 0)

    def test_expect_continue_over_the_limit_gets_413_and_no_100(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH +
                             b"Expect: 100-continue\r\nContent-Length: 104857600\r\n\r\n")
        self.assertNotIn(b"100 Continue", transport.value())
        self.assertRefused(transport, 413, "BodyTooLarge")

    def test_chunked_body_refused_as_soon_as_it_passes_the_limit(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n")
        channel.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(self.site.bodies.held, 600)
        channel.dataReceived(b"258\r\n" + b"x" * 600 + b"\r\n")
        self.assertRefused(transport, 413, "BodyTooLarge")
        self.assertEqual(self.site.bodies.held, 0)

    def test_malformed_and_oversized_heads_get_json(self) -> None:
        cases = [(b"GET / HTTP/9.9\r\n\r\n", 400, "BadRequest"),
                 (b"GET /v1/queuey HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400, "BadRequest"),
                 (b"GET /v1/queuey HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400, "BadRequest"),
                 (b"GET /v1/queuey HTTP/1.1\r\nX-Bad: a\x00b\r\n\r\n", 400, "BadRequest"),
                 (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\n\r\n", 414, "URITooLong"),
                 (b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n", 431, "HeaderFieldsTooLarge"),
                 (b"GET / HTTP/1.1\r\n" + b"X-A: b\r\n" * 101 + b"\r\n", 431, "HeaderFieldsTooLarge"),
                 (b"GET / HTTP/1.1\r\n" + b"X-Some-Header: " + b"b" * 100 + b"\r\n" * 1 +
                  (b"X-C: " + b"d" * 300 + b"\r\n") * 60 + b"\r\n", 431, "HeaderFieldsTooLarge")]
        for head, status, key in cases:
            channel, transport = self.connect()
            channel.dataReceived(head)
            self.assertRefused(transport, status, key)

    def test_bad_chunk_size_gets_json_400(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Transfer-Encoding: chunked\r\n\r\n"
                             b"zz\r\n")
        self.assertRefused(transport, 400, "BadRequest")


class PaceTests(ChannelCase):
    def test_head_must_arrive_within_the_deadline_however_it_trickles(self) -> None:
        channel, transport = self.connect()
        started = self.memory.clock.seconds()
        for byte in b"GET /__lbheartbeat__ HTTP/1.1\r\nX-Slow: 1\r\n":
            channel.dataReceived(bytes([byte]))
            self.memory.clock.advance(0.25)
            if transport.value():
                break
        self.assertEqual(self.memory.clock.seconds() - started, 10)  # every byte reset no timer
        self.assertRefused(transport, 408, "RequestTimeout")

    def test_idle_connection_is_not_timed_by_the_head_deadline(self) -> None:
        channel, transport = self.connect()
        self.memory.clock.advance(30)
        self.assertEqual(transport.value(), b"")
        channel.dataReceived(b"GET /__lbheartbeat__ HTTP/1.1\r\n\r\n")
        self.assertEqual(answer(transport.value())[0], 200)

    def test_body_must_keep_the_minimum_rate(self) -> None:
        channel, transport = self.connect()
        channel.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Content-Length: 900\r\n\r\n")
        self.assertEqual(self.site.bodies.held, 900)
        self.memory.clock.advance(9)
        channel.dataReceived(b"x" * 300)  # earns 3 more seconds at 100 bytes/s
        self.memory.clock.advance(3.5)
        self.assertEqual(transport.value(), b"")
        self.memory.clock.advance(1)
        self.assertRefused(transport, 408, "RequestTimeout")
        self.assertEqual(self.site.bodies.held, 0)


class BudgetTests(ChannelCase):
    def test_bodies_in_flight_are_bounded(self) -> None:
        first, first_transport = self.connect()
        first.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Content-Length: 1000\r\n\r\nxx")
        second, transport = self.connect()
        second.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Content-Length: 600\r\n\r\n")
        headers = self.assertRefused(transport, 503, "ServerBusy")
        self.assertEqual(headers[b"Retry-After"], b"1")
        first.connectionLost(None)
        self.assertEqual(self.site.bodies.held, 0)
        third, third_transport = self.connect()
        third.dataReceived(b"POST /v1/queuey/q HTTP/1.1\r\n" + AUTH + b"Content-Length: 600\r\n\r\n")
        self.assertEqual(third_transport.value(), b"")
        self.assertEqual(self.site.bodies.held, 600)


class ConnectionCapTests(unittest.TestCase):
    def test_cap_fits_under_the_file_limit(self) -> None:
        self.assertEqual(connection_cap(4096, 20000), 4096)
        for files in range(100, 5000, 7):
            cap = connection_cap(100_000, files)
            self.assertLessEqual(cap + refusing_cap_for(cap) + RESERVED_FILES, max(files, 128 + 17), files)
            self.assertGreater(cap + refusing_cap_for(cap) + RESERVED_FILES, files - 10, files)
        self.assertEqual(connection_cap(10, 30), 1)

    def test_past_the_cap_answers_and_pauses_accepting(self) -> None:
        class Port:
            reading = True

            def stopReading(self) -> None:
                self.reading = False

            def startReading(self) -> None:
                self.reading = True

        cap = ConnectionCap(2)
        port = Port()
        cap.watch(port)
        self.assertEqual([cap.arrive() for _ in range(2)], [Verdict.SERVE] * 2)
        refused = [cap.arrive() for _ in range(cap.refusing_cap)]
        self.assertEqual(set(refused), {Verdict.REFUSE})
        self.assertFalse(port.reading)
        for verdict in refused[:cap.refusing_cap // 2]:
            cap.leave(verdict)
        self.assertTrue(port.reading)
        cap.leave(Verdict.SERVE)
        self.assertEqual(cap.arrive(), Verdict.SERVE)

    def test_channel_past_the_cap_answers_503_with_retry_after(self) -> None:
        memory = MemoryQueuey(Config(application_keys=DEFAULT_KEYS, max_connections=1))
        self.addCleanup(memory.close)
        served = memory.site.buildProtocol(None)
        served.makeConnection(Transport())
        refused = memory.site.buildProtocol(None)
        transport = Transport()
        refused.makeConnection(transport)
        code, headers, body = answer(transport.value())
        self.assertEqual((code, headers[b"Retry-After"], list(body["error_msg"])), (503, b"1", ["ServerBusy"]))
        refused.connectionLost(None)
        served.connectionLost(None)
        self.assertEqual((memory.site.connections.open, memory.site.connections.refusing), (0, 0))


class WriterTests(unittest.TestCase):
    def test_writes_wait_while_the_client_is_full(self) -> None:
        written: list[bytes] = []

        class Request:
            producer: Any = None

            def registerProducer(self, producer: Any, streaming: bool) -> None:
                self.producer = producer

            def unregisterProducer(self) -> None:
                self.producer = None

            def write(self, data: bytes) -> None:
                written.append(data)
                self.producer.pauseProducing()  # the transport's buffer is full after every write

        from twisted.internet import defer
        request = Request()
        writer = ResponseWriter(request)
        done = defer.ensureDeferred(writer.write_all([b"a" * 40000, b"b" * 40000, b"c" * 10]))
        self.assertEqual(len(written), 1)
        writer.resumeProducing()
        self.assertEqual(len(written), 2)
        writer.resumeProducing()
        self.assertEqual(self.successResultOf(done), True)
        self.assertEqual(b"".join(written), b"a" * 40000 + b"b" * 40000 + b"c" * 10)
        writer.close()
        self.assertIsNone(request.producer)

    def test_stops_when_the_client_goes(self) -> None:
        class Request:
            def registerProducer(self, producer: Any, streaming: bool) -> None:
                self.producer = producer

            def write(self, data: bytes) -> None:
                self.producer.pauseProducing()

        from twisted.internet import defer
        writer = ResponseWriter(Request())
        done = defer.ensureDeferred(writer.write_all([b"a" * 70000, b"b" * 70000]))
        writer.stopProducing()
        self.assertEqual(self.successResultOf(done), False)
