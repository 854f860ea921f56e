"""Queuey's HTTP/1.1 connections: every limit that holds before a route runs.

- The request head (line and headers) must arrive within ``request_head_timeout``;
  a body gets that long again plus one second per ``body_min_rate`` bytes it sends.
- As soon as the head is in, :class:`queuey.admission.Gate` decides route, key
  and size.  A refused request is answered at once (JSON, ``Connection: close``)
  and keeps none of its body; ``Expect: 100-continue`` gets no ``100`` then.
- Body bytes are kept only for routes that use them, counted against one
  budget shared by all connections (``max_body_bytes_in_flight``).
- Past ``max_connections`` a new connection is answered 503 with Retry-After;
  while many such answers are in progress, the site stops accepting for a moment.
- Malformed requests get a JSON 400, and oversized heads 414 or 431, where
  Twisted's parser would close the connection without a word.

After an answer that closes the connection the channel stops sending, reads
and drops what the client still sends for a short while (so the client sees
the answer instead of a reset), then closes.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import http, server
from twisted.web.iweb import IAccessLogFormatter
from twisted.web.resource import IResource
from zope.interface import provider

from queuey.admission import UNROUTED, Admission, Gate, method_label
from queuey.budget import ByteBudget
from queuey.connections import ConnectionCap, Verdict
from queuey.errors import BodyTooLarge, QueueyError
from queuey.metrics import Metrics
from queuey.sending import WholeResponses, send_now
from queuey.responses import (HeaderFieldsTooLarge, MalformedRequest, RequestTimeout, ServerBusy,
                              URITooLong, raw_error_response, status_of)

#: After a closing answer: at most this long, and this many bytes, read and dropped.
LINGER_SECONDS = 2.0
LINGER_BYTES = 1024 * 1024
#: Idle keep-alive connections close after this long without a byte.
IDLE_TIMEOUT = 60
MAX_HEADERS = 100


class Phase(enum.Enum):
    IDLE = "idle"          # between requests
    HEAD = "head"          # reading a request line and headers
    BODY = "body"          # reading an admitted request's body
    HANDLING = "handling"  # a route is answering
    REFUSED = "refused"    # answered and closing


@dataclass(frozen=True)
class Pace:
    """How fast a client must send: the whole head in ``head_timeout`` seconds; a body in
    ``head_timeout`` seconds plus one second per ``body_min_rate`` bytes received."""

    head_timeout: float
    body_min_rate: int


class RequestBody:
    """A request body as it arrives: counted against its limit, kept only when the route uses
    it, and the bytes kept held in the site's budget until the request is done."""

    def __init__(self, channel: "QueueyChannel", admission: Admission | None, held: int = 0) -> None:
        self._channel = channel
        self._limit = 0 if admission is None else admission.body_limit
        self._keep = admission is not None and admission.keeps_body
        self._held = held
        self._chunks: list[bytes] = []
        self.size = 0

    def write(self, data: bytes) -> None:
        channel = self._channel
        if channel.refused:
            return
        self.size += len(data)
        if self.size > self._limit:
            channel.refuse(BodyTooLarge(f"This request may carry at most {self._limit} body bytes."))
            return
        channel.body_arrived(len(data))
        if not self._keep:
            return
        if self.size > self._held:  # a chunked body: hold its bytes as they come
            more = self.size - self._held
            if not channel.site.bodies.take(more):
                channel.refuse(ServerBusy("Too many request bodies are being received; try again shortly."))
                return
            self._held += more
        self._chunks.append(data)

    def read(self) -> bytes:
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def close(self) -> None:
        """Give the held bytes back (the request is done, refused or gone)."""
        if self._held:
            self._channel.site.bodies.give_back(self._held)
            self._held = 0
        self._chunks = []


class QueueyRequest(server.Request):
    """A request whose route was decided from its head (``admission``) and whose body is a
    :class:`RequestBody`.  Query strings and forms are left to the routes to decode."""

    admission: Admission | None = None
    #: Its whole answer was written before its route returned (a held read, see QueueyApp).
    answered_early = False

    def __init__(self, channel: Any, queued: Any = None) -> None:
        super().__init__(channel, queued)
        self.content: Any = None

    def gotLength(self, length: int | None) -> None:
        """The channel gave this request its body already, from the admission."""

    def body(self) -> bytes:
        return self.content.read() if self.content is not None else b""

    def write_whole(self, responses: WholeResponses) -> None:
        """Write the whole response, head and body, in one piece (made by ``responses``).

        What Twisted's first ``write`` does, for the one case Queuey's answers take (no
        chunks, cookies or validators), sent with :func:`queuey.sending.send_now`.
        """
        if self.startedWriting or self.finished or self._disconnected or self.method == b"HEAD":
            self.setHeader(b"Content-Type", responses.content_type)
            self.setHeader(b"Content-Length", b"%d" % len(responses.body))
            self.write(responses.body)
            return
        self.startedWriting = 1
        self.sentLength = len(responses.body)
        send_now(self.channel.transport, responses.whole(self.clientproto, self.code, self.code_message,
                                                         self.responseHeaders.getAllRawHeaders()))

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        """Like Twisted's, without parsing the query string or a form body into ``args``."""
        self.method, self.uri, self.clientproto = command, path, version
        self.path = path.split(b"?", 1)[0]
        self.args = {}
        self.process()


class QueueyChannel(http.HTTPChannel):
    """An HTTPChannel that paces clients, asks the gate after each head, and answers in JSON."""

    maxHeaders = MAX_HEADERS
    site: "QueueySite"
    _phase = Phase.IDLE
    _verdict: Verdict | None = None
    _timer: Any = None
    _linger: Any = None
    _linger_left = 0
    _head_lines = 0
    _body_started = 0.0
    _body_allowance = 0.0

    @property
    def refused(self) -> bool:
        return self._phase is Phase.REFUSED

    # -- connection ---------------------------------------------------------

    def connectionMade(self) -> None:
        self._on_close: list[defer.Deferred[None]] = []
        self._verdict = self.site.connections.arrive()
        super().connectionMade()
        if self._verdict is Verdict.REFUSE:
            self.site.metrics.connections_refused.inc()
            self.refuse(ServerBusy("This server has as many connections as it serves; try again shortly."))

    def when_closed(self) -> defer.Deferred[None]:
        """Fires when this connection is closed."""
        closed: defer.Deferred[None] = defer.Deferred()
        self._on_close.append(closed)
        return closed

    def connectionLost(self, reason: Any) -> None:
        closing, self._on_close = self._on_close, []
        for closed in closing:
            closed.callback(None)
        if self._verdict is not None:
            self.site.connections.leave(self._verdict)
            self._verdict = None
        self._stop_timer()
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        for request in self.requests:
            if request.content is not None:
                request.content.close()
        super().connectionLost(reason)

    # -- pace ---------------------------------------------------------------

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _head_too_slow(self) -> None:
        self._timer = None
        self.refuse(RequestTimeout(f"The request head must arrive within {self.site.pace.head_timeout:g} s."))

    def _check_body_pace(self) -> None:
        self._timer = None
        pace = self.site.pace
        allowed = pace.head_timeout + self._body_allowance
        elapsed = self.site.reactor.seconds() - self._body_started
        if elapsed < allowed:
            self._timer = self.callLater(allowed - elapsed, self._check_body_pace)
        else:
            self.refuse(RequestTimeout(f"The request body must arrive at {pace.body_min_rate} bytes per "
                                       "second or faster."))

    def body_arrived(self, count: int) -> None:
        self._body_allowance += count / self.site.pace.body_min_rate

    # -- parsing --------------------------------------------------------------

    def dataReceived(self, data: bytes) -> None:
        if self._phase is Phase.IDLE:
            self._phase = Phase.HEAD
            self._head_lines = 0
            self._timer = self.callLater(self.site.pace.head_timeout, self._head_too_slow)
        super().dataReceived(data)

    def lineReceived(self, line: bytes) -> None:
        if self._phase is Phase.REFUSED:
            return
        self._head_lines += 1
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self.refuse(self._head_too_large(request_line=self._head_lines == 1))
            return
        super().lineReceived(line)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.refuse(self._head_too_large(request_line=self._head_lines == 0))

    def _head_too_large(self, request_line: bool) -> QueueyError:
        if request_line:
            return URITooLong(f"The request line may be at most {self.MAX_LENGTH} bytes.")
        return HeaderFieldsTooLarge(f"The request headers may be at most {self.totalHeadersSize} bytes.")

    def headerReceived(self, line: bytes) -> bool:
        if self._phase is Phase.REFUSED:
            return False
        if self._receivedHeaderCount >= self.maxHeaders:
            self.refuse(HeaderFieldsTooLarge(f"A request may have at most {self.maxHeaders} headers."))
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        """The head is in: ask the gate, then set up the body (or answer at once)."""
        self._stop_timer()
        request = self.requests[-1]
        admission = None
        try:
            admission = self.site.gate.admit(self._command, self._path, request.requestHeaders, self.length)
            held = 0
            if admission.keeps_body and self.length:
                if not self.site.bodies.take(self.length):
                    raise ServerBusy("Too many request bodies are being received; try again shortly.")
                held = self.length
        except QueueyError as error:
            request.admission = admission
            self.refuse(error)
            return
        request.admission = admission
        request.content = RequestBody(self, admission, held)
        if self.length != 0:
            self._phase = Phase.BODY
            self._body_started = self.site.reactor.seconds()
            self._body_allowance = 0.0
            self._timer = self.callLater(self.site.pace.head_timeout, self._check_body_pace)
        super().allHeadersReceived()

    def rawDataReceived(self, data: bytes) -> None:
        if self._phase is not Phase.REFUSED:
            super().rawDataReceived(data)

    def allContentReceived(self) -> None:
        if self._phase is Phase.REFUSED:
            return
        self._stop_timer()
        self._phase = Phase.HANDLING
        super().allContentReceived()

    def requestDone(self, request: Any) -> None:
        self._phase = Phase.IDLE
        super().requestDone(request)

    def _respondToBadRequestAndDisconnect(self) -> None:
        self.refuse(MalformedRequest("The request is not well-formed HTTP/1.1."))

    # -- refusing -------------------------------------------------------------

    def refuse(self, error: QueueyError) -> None:
        """Answer ``error`` now, keep no body, and close once the client has had time to read it."""
        if self._phase is Phase.REFUSED:
            return
        self._phase = Phase.REFUSED
        self._stop_timer()
        self.setTimeout(None)
        request = self.requests[-1] if self.requests else None
        if request is not None and request.content is not None:
            request.content.close()
        admission = getattr(request, "admission", None)
        spec = admission.spec if admission is not None else UNROUTED
        method = getattr(self, "_command", b"")
        self.site.metrics.requests.labels(spec.label, method_label(method) if method else "other",
                                          str(status_of(error))).inc()
        cors = self.site.gate.cors.answer_headers(request.requestHeaders) if request is not None else {}
        self.transport.write(raw_error_response(error, cors))
        self.dataReceived = self._drop  # type: ignore[method-assign]
        self._linger_left = LINGER_BYTES
        self._linger = self.callLater(LINGER_SECONDS, self.transport.abortConnection)
        close_writing = getattr(self.transport, "loseWriteConnection", None)
        if close_writing is None:
            self.transport.loseConnection()
            return
        self._networkProducer.unregisterProducer()
        resume_reading = getattr(self.transport, "resumeProducing", None)
        if resume_reading is not None:
            resume_reading()
        close_writing()

    def _drop(self, data: bytes) -> None:
        self._linger_left -= len(data)
        if self._linger_left <= 0:
            self.transport.abortConnection()


_PLAIN = re.compile(rb"[\x20\x21\x23-\x26\x28-\x5b\x5d-\x7e]*")  # printable ASCII but " ' and \\


def _escaped(value: bytes | str) -> str:
    """Twisted's access-log escaping, without its repr() round trip for the usual plain value."""
    raw = value if isinstance(value, bytes) else value.encode("ascii")
    return raw.decode("ascii") if _PLAIN.fullmatch(raw) else http._escape(raw)


@provider(IAccessLogFormatter)
def access_log_line(timestamp: str, request: Any) -> str:
    """The line Twisted's ``combinedLogFormatter`` writes, made for less (it is made per request)."""
    address = request.getClientAddress()
    host = getattr(address, "host", None)
    return '"%s" - - %s "%s %s %s" %d %s "%s" "%s"' % (
        _escaped(host) if isinstance(host, str) else "-", timestamp, _escaped(request.method),
        _escaped(request.uri), _escaped(request.clientproto), request.code, request.sentLength or "-",
        _escaped(request.getHeader(b"referer") or b"-"), _escaped(request.getHeader(b"user-agent") or b"-"))


class BatchedAccessLog:
    """Access log lines, written to the log a batch at a time (at most ``delay`` seconds late).

    Twisted's default access log turns every line into a log event of its own,
    formatted and timestamped again: a tenth of the CPU time of a short
    request.  Batched, the lines of many requests make one event (one line
    each, the first after the event's prefix, the others indented).
    """

    def __init__(self, reactor: IReactorTime, delay: float = 0.25, max_lines: int = 1000) -> None:
        self._reactor = reactor
        self._delay = delay
        self._max_lines = max_lines
        self._lines: list[str] = []
        self._flush_call: Any = None
        self._log = Logger(namespace="queuey.access")

    def write(self, line: str) -> None:
        self._lines.append(line)
        if len(self._lines) >= self._max_lines:
            self.flush()
        elif self._flush_call is None:
            self._flush_call = self._reactor.callLater(self._delay, self.flush)

    def flush(self) -> None:
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        lines, self._lines = self._lines, []
        if lines:
            self._log.info("{access}", access="".join(lines).rstrip("\n"))

    def close(self) -> None:
        """The site stops: write what is left."""
        self.flush()


class QueueySite(server.Site):
    """The Site of :class:`QueueyChannel` connections, holding the limits they share."""

    protocol = QueueyChannel  # type: ignore[assignment]
    requestFactory = QueueyRequest
    displayTracebacks = False

    def __init__(self, resource: IResource, gate: Gate, metrics: Metrics, pace: Pace,
                 connections: ConnectionCap, bodies: ByteBudget, reactor: IReactorTime) -> None:
        super().__init__(resource, reactor=reactor, timeout=IDLE_TIMEOUT, logFormatter=access_log_line)
        self.gate = gate
        self.metrics = metrics
        self.pace = pace
        self.connections = connections
        self.bodies = bodies
        metrics.watch_connections(lambda: connections.open, lambda: bodies.held)

    def getResourceFor(self, request: Any) -> IResource:
        """One leaf resource serves every admitted request: routing happened at the head."""
        return self.resource

    def startFactory(self) -> None:
        super().startFactory()
        if not self.logPath and self._logFile is not None:  # the log itself: batch the lines
            self._logFile = BatchedAccessLog(self.reactor)

