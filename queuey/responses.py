"""Answers in HTTP terms: each error's status code and headers, JSON bodies, and
writing a response in pieces no faster than the client reads them."""

from __future__ import annotations

from typing import Any

import orjson
from twisted.internet import defer
from twisted.internet.interfaces import IPushProducer
from twisted.web.http import RESPONSES
from twisted.web.iweb import IRequest
from zope.interface import implementer

from queuey.errors import (AccessDenied, BodyTooLarge, InvalidApplicationKey, InvalidParameters,
                           MethodNotAllowed, MissingApplicationKey, NotFound, QueueExists, QueueyError,
                           StorageUnavailable)

JSON = b"application/json"
#: Pieces of a response are joined up to this size before each write.
WRITE_SIZE = 64 * 1024


class MalformedRequest(QueueyError):
    """The request is not well-formed HTTP/1.1."""

    key = "BadRequest"


class RequestTimeout(QueueyError):
    """The request head or body came too slowly."""

    key = "RequestTimeout"


class URITooLong(QueueyError):
    """The request line is longer than this server reads."""

    key = "URITooLong"


class HeaderFieldsTooLarge(QueueyError):
    """The request headers are more or larger than this server reads."""

    key = "HeaderFieldsTooLarge"


class ServerBusy(QueueyError):
    """This server is at a configured limit (connections or request bodies held); try again shortly."""

    key = "ServerBusy"

    def __init__(self, message: str = "", retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


STATUS: dict[type[QueueyError], int] = {
    InvalidParameters: 400, MalformedRequest: 400, MissingApplicationKey: 401, InvalidApplicationKey: 401,
    AccessDenied: 403, NotFound: 404, MethodNotAllowed: 405, RequestTimeout: 408, QueueExists: 409,
    BodyTooLarge: 413, URITooLong: 414, HeaderFieldsTooLarge: 431, StorageUnavailable: 503, ServerBusy: 503,
}


def status_of(error: QueueyError) -> int:
    """The HTTP status of ``error``: its own class's, or its nearest base's; 500 for the rest."""
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def headers_of(error: QueueyError) -> dict[bytes, bytes]:
    """Headers an error answer carries besides Content-Type and Content-Length."""
    if isinstance(error, MethodNotAllowed):
        return {b"Allow": ", ".join(error.allowed).encode("ascii")}
    if isinstance(error, (StorageUnavailable, ServerBusy)):
        return {b"Retry-After": b"%d" % error.retry_after}
    return {}


def error_body(error: QueueyError) -> bytes:
    return orjson.dumps({"status": "error", "error_msg": error.errors})


def raw_error_response(error: QueueyError, extra: dict[bytes, bytes] | None = None) -> bytes:
    """A whole HTTP/1.1 response for ``error`` that closes the connection, for the channel
    to send where no request object answers (refused heads, malformed requests); ``extra``
    headers (CORS) go along."""
    status = status_of(error)
    body = error_body(error)
    lines = [b"HTTP/1.1 %d %s" % (status, RESPONSES.get(status, b"Error")),
             b"Content-Type: " + JSON, b"Content-Length: %d" % len(body), b"Connection: close"]
    lines.extend(name + b": " + value for name, value in headers_of(error).items())
    lines.extend(name + b": " + value for name, value in (extra or {}).items())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def render_json(request: IRequest, status: int, document: Any) -> bytes:
    body = orjson.dumps(document)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


def render_error(request: IRequest, error: QueueyError) -> bytes:
    for name, value in headers_of(error).items():
        request.setHeader(name, value)
    return render_json(request, status_of(error), {"status": "error", "error_msg": error.errors})


def json_pieces(document: dict[str, Any], listed: str) -> tuple[list[bytes], int]:
    """``document`` as JSON in pieces, one per entry of its list ``listed``, and their total length.

    Keys keep their order.  Encoding entry by entry lets a long answer be written
    (and let go of) piece by piece instead of as one more copy of the whole.
    """
    pieces: list[bytes] = []
    separator = b"{"
    for key, value in document.items():
        name = orjson.dumps(key)
        if key == listed:
            pieces.append(separator + name + b":[")
            pieces.extend(orjson.dumps(entry) if index == 0 else b"," + orjson.dumps(entry)
                          for index, entry in enumerate(value))
            pieces.append(b"]")
        else:
            pieces.append(separator + name + b":" + orjson.dumps(value))
        separator = b","
    pieces.append(b"}" if pieces else b"{}")
    return pieces, sum(len(p) for p in pieces)


@implementer(IPushProducer)
class ResponseWriter:
    """Writes a response body in pieces, waiting while the client's connection is full.

    Registered as the request's streaming producer: the transport pauses it when
    its buffer passes its high-water mark and resumes it when the buffer drains,
    so a client that does not read holds about one write's worth of the answer
    in this process, however long the answer is.  A long-lived stream can write
    through one of these for as long as it lasts.
    """

    def __init__(self, request: IRequest) -> None:
        self._request = request
        self._paused = False
        self._stopped = False
        self._waiting: defer.Deferred[None] | None = None
        request.registerProducer(self, True)

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        self._wake()

    def stopProducing(self) -> None:
        self._stopped = True
        self._wake()

    def _wake(self) -> None:
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting.callback(None)

    @property
    def stopped(self) -> bool:
        return self._stopped

    async def write(self, data: bytes) -> bool:
        """Write ``data``, then wait until the client may take more; False once it went away."""
        if self._stopped:
            return False
        self._request.write(data)
        while self._paused and not self._stopped:
            self._waiting = defer.Deferred()
            await self._waiting
        return not self._stopped

    async def write_all(self, pieces: list[bytes]) -> bool:
        """Write ``pieces``, joined into writes of about WRITE_SIZE bytes, letting go of each
        piece once it is written (the list is emptied)."""
        pieces.reverse()
        while pieces:
            batch = [pieces.pop()]
            size = len(batch[0])
            while pieces and size < WRITE_SIZE:
                batch.append(pieces.pop())
                size += len(batch[-1])
            if not await self.write(b"".join(batch)):
                return False
            del batch
        return not self._stopped

    def close(self) -> None:
        """Stop being the request's producer (before the request finishes)."""
        self._request.unregisterProducer()
