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
        self._waiting: list[tuple[int, defer.Deferred[list[Answer]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self._settle(ended=False)

    def connectionLost(self, reason: Any = None) -> None:
        self._settle(ended=True)
        if not self.closed.called:
            self.closed.callback(None)

    def _settle(self, ended: bool) -> None:
        """Fire the waits that have their responses now (all of them once the connection ended)."""
        waiting, self._waiting = self._waiting, []
        for count, d in waiting:
            answers = parse_answers(self.received, count)
            if len(answers) == count or ended:
                d.callback(answers)
            else:
                self._waiting.append((count, d))

    def send(self, data: bytes) -> None:
        if self.transport is not None and not self.closed.called:
            self.transport.write(data)

    def answers(self, count: int) -> defer.Deferred[list[Answer]]:
        """The first ``count`` responses (fewer if the connection closed first)."""
        d: defer.Deferred[list[Answer]] = defer.Deferred()
        self._waiting.append((count, d))
        self._settle(ended=self.closed.called)
        return d

    def answer(self) -> defer.Deferred[Answer | None]:
        """The first response (None if the connection closed without a whole one)."""
        return self.answers(1).addCallback(lambda found: found[0] if found else None)

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
