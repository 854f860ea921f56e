"""A server-sent events client over a real socket, for tests: HTTP/1.1, chunked, event parsing.

It does what a browser's EventSource does with a stream (and lets a test stop
reading, to play a slow client), written small and strict so that a test sees
exactly the bytes the server framed.
"""

from __future__ import annotations

import json
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, endpoints, protocol, reactor


@dataclass
class Event:
    id: str | None
    data: str

    @property
    def message(self) -> Any:
        return json.loads(self.data)


@dataclass
class StreamHead:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)  # names lower-cased


class SSEClient(protocol.Protocol):
    """Sends one GET; parses the answer's head, its chunked body and the events in it."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self.head = StreamHead()
        self.body = b""          # the de-chunked body so far (an error's JSON, or the raw stream)
        self.events: list[Event] = []
        self.arrivals: list[float] = []  # time.perf_counter() as each event came
        self.comments: list[str] = []
        self.retry: int | None = None
        self.ended_cleanly = False  # the last chunk came
        self.closed: defer.Deferred[None] = defer.Deferred()
        self.done: defer.Deferred[None] = defer.Deferred()  # the whole answer is in (or the connection closed)
        self.answered: defer.Deferred[StreamHead] = defer.Deferred()
        self._raw = b""
        self._in_body = False
        self._chunked = False
        self._text = b""
        self._event_id: str | None = None
        self._data: list[str] = []
        self._last_id: str | None = None
        self._waiting: list[tuple[int, defer.Deferred[list[Event]]]] = []
        self._comment_waiting: list[tuple[int, defer.Deferred[None]]] = []

    @property
    def last_event_id(self) -> str | None:
        return self._last_id

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._raw += data
        if not self._in_body:
            head, separator, rest = self._raw.partition(b"\r\n\r\n")
            if not separator:
                return
            lines = head.split(b"\r\n")
            self.head.status = int(lines[0].split()[1])
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                self.head.headers[name.strip().lower()] = value.strip()
            self._chunked = self.head.headers.get(b"transfer-encoding", b"").lower() == b"chunked"
            self._in_body = True
            self._raw = rest
            self.answered.callback(self.head)
        if self._chunked:
            self._dechunk()
        else:
            self._body(self._raw)
            self._raw = b""

    def _dechunk(self) -> None:
        while True:
            size_line, separator, rest = self._raw.partition(b"\r\n")
            if not separator:
                return
            size = int(size_line.split(b";")[0], 16)
            if len(rest) < size + 2:
                return
            self._raw = rest[size + 2:]
            if size == 0:
                self.ended_cleanly = True
                self._done()
                return
            self._body(rest[:size])

    def _done(self) -> None:
        if not self.done.called:
            self.done.callback(None)

    def _body(self, data: bytes) -> None:
        self.body += data
        length = self.head.headers.get(b"content-length")
        if length is not None and len(self.body) >= int(length):
            self._done()
        if not self.head.headers.get(b"content-type", b"").startswith(b"text/event-stream"):
            return
        self._text += data
        while b"\n" in self._text:
            line, _, self._text = self._text.partition(b"\n")
            self._line(line.rstrip(b"\r").decode("utf-8"))

    def _line(self, line: str) -> None:
        if not line:  # the end of a block: dispatch its event, if it has data
            if self._event_id is not None:
                self._last_id = self._event_id
            if self._data:
                self.events.append(Event(self._event_id, "\n".join(self._data)))
                self.arrivals.append(time.perf_counter())
            self._event_id, self._data = None, []
            self._check()
            return
        if line.startswith(":"):
            self.comments.append(line[1:].strip())
            self._check()
            return
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._data.append(value)
        elif name == "id":
            self._event_id = value
        elif name == "retry":
            self.retry = int(value)

    def _check(self) -> None:
        still = []
        for count, waiting in self._waiting:
            if len(self.events) >= count:
                waiting.callback(self.events[:count])
            else:
                still.append((count, waiting))
        self._waiting = still
        comments = []
        for count, waiting in self._comment_waiting:
            if len(self.comments) >= count:
                waiting.callback(None)
            else:
                comments.append((count, waiting))
        self._comment_waiting = comments

    def wait_events(self, count: int) -> defer.Deferred[list[Event]]:
        """Fires with the first ``count`` events once they have come."""
        waiting: defer.Deferred[list[Event]] = defer.Deferred()
        self._waiting.append((count, waiting))
        self._check()
        return waiting

    def wait_comments(self, count: int) -> defer.Deferred[None]:
        waiting: defer.Deferred[None] = defer.Deferred()
        self._comment_waiting.append((count, waiting))
        self._check()
        return waiting

    def connectionLost(self, reason: Any = None) -> None:
        for _, waiting in self._waiting:
            waiting.errback(AssertionError(f"the stream closed after {len(self.events)} events"))
        self._waiting = []
        if not self.answered.called:
            self.answered.errback(AssertionError("closed before an answer"))
        self._done()
        if not self.closed.called:
            self.closed.callback(None)

    def close(self) -> defer.Deferred[None]:
        self.transport.abortConnection()
        return self.closed


def stream_request(path: str, host: str = "127.0.0.1", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Accept: text/event-stream", "Cache-Control: no-cache"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@defer.inlineCallbacks
def open_stream(port: int, path: str, headers: dict[str, str] | None = None,
                receive_buffer: int | None = None) -> Any:
    """An SSEClient connected to 127.0.0.1:``port``, its request sent; fires once the head is in.
    ``receive_buffer`` sets SO_RCVBUF first (a small one makes a slow reader quickly felt)."""
    client = SSEClient(stream_request(path, headers=headers))
    endpoint = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    yield endpoints.connectProtocol(endpoint, client)
    if receive_buffer is not None:
        client.transport.getHandle().setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    yield client.answered
    return client
