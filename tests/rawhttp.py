"""Byte-level HTTP clients for tests that send what no well-behaved client would."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]  # names lower-cased
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(data: bytes) -> Answer | None:
    """The first whole response in ``data`` (Content-Length framed), or None if it is not all there."""
    answers = parse_answers(data, 1)
    return answers[0] if answers else None


def parse_answers(data: bytes, count: int) -> list[Answer]:
    """Up to ``count`` whole responses from the start of ``data``, one after the other."""
    answers: list[Answer] = []
    while len(answers) < count:
        head, separator, rest = data.partition(b"\r\n\r\n")
        if not separator:
            break
        lines = head.split(b"\r\n")
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get(b"content-length", b"0"))
        if len(rest) < length:
            break
        answers.append(Answer(int(lines[0].split()[1]), headers, rest[:length]))
        data = rest[length:]
    return answers


class RawConnection(protocol.Protocol):
    """Sends raw bytes; ``answer()`` fires with the first response, ``closed`` when the server closes."""

    def __init__(self) -> None:
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()
        self._waiting: list[defer.Deferred[Answer | None]] = []
        self._counting: list[tuple[int, defer.Deferred[list[Answer]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        parsed = parse_answer(self.received)
        if parsed is not None:
            waiting, self._waiting = self._waiting, []
            for d in waiting:
                d.callback(parsed)
        counting, self._counting = self._counting, []
        for count, d in counting:
            self._count(count, d)

    def answers(self, count: int) -> defer.Deferred[list[Answer]]:
        """The first ``count`` responses (fewer if the connection closed first)."""
        d: defer.Deferred[list[Answer]] = defer.Deferred()
        self._count(count, d)
        return d

    def _count(self, count: int, d: defer.Deferred[list[Answer]]) -> None:
        answers = parse_answers(self.received, count)
        if len(answers) == count or self.closed.called:
            d.callback(answers)
        else:
            self._counting.append((count, d))

    def connectionLost(self, reason: Any = None) -> None:
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(parse_answer(self.received))
        counting, self._counting = self._counting, []
        for count, counted in counting:
            counted.callback(parse_answers(self.received, count))
        if not self.closed.called:
            self.closed.callback(None)

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed.called:
            self.transport.write(data)

    def answer(self) -> defer.Deferred[Answer | None]:
        """The first response (None if the connection closed without a whole one)."""
        parsed = parse_answer(self.received)
        if parsed is not None or self.closed.called:
            return defer.succeed(parsed)
        d: defer.Deferred[Answer | None] = defer.Deferred()
        self._waiting.append(d)
        return d

    def close(self) -> None:
        if self.transport is not None:
            self.transport.abortConnection()


def connect(port: int, host: str = "127.0.0.1") -> defer.Deferred[RawConnection]:
    endpoint = endpoints.TCP4ClientEndpoint(reactor, host, port)
    return endpoints.connectProtocol(endpoint, RawConnection())


@defer.inlineCallbacks
def exchange(port: int, data: bytes) -> Any:
    """Send ``data`` on a new connection; fire with the answer (the connection is then closed)."""
    connection = yield connect(port)
    connection.send(data)
    answer = yield connection.answer()
    connection.close()
    return answer
