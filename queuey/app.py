"""Queuey's HTTP face: thin Klein routes that decode a request, call :class:`queuey.core.Queuey`,
and answer in JSON.

Each route declares (``@spec``) who may call it and what body it takes; the
channel's gate (:mod:`queuey.admission`) applies that from the request head,
so by the time a route runs its request is routed, authorized and within its
size.  Routes are matched once, by the gate, on Klein's route table; the one
leaf resource here then runs the matched route.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

from klein import Klein
from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.web import resource, server

import queuey
from queuey import decoding
from queuey.admission import PREFLIGHT, Access, Admission, BodyUse, Gate, RouteSpec, method_label
from queuey.budget import ByteBudget
from queuey.channel import Pace, QueueyRequest, QueueySite
from queuey.connections import ConnectionCap
from queuey.core import Queuey, Result
from queuey.errors import QueueyError, StorageUnavailable
from queuey.following import Follower
from queuey.responses import JSON, WRITE_SIZE, ResponseWriter, json_pieces, render_error, render_json, status_of
from queuey.sending import WholeResponses
from queuey.streams import EventStream, Streams, StreamSettings, wants_events
from queuey.validation import ReadQuery

log = Logger()
F = TypeVar("F", bound=Callable[..., Any])
OPENAPI = Path(__file__).resolve().parent / "openapi.yaml"
SPECS: dict[str, RouteSpec] = {}


def spec(label: str, access: Access, body: BodyUse = BodyUse.NONE, status: int = 200,
         pieces: str | None = None, signable: bool = False) -> Callable[[F], F]:
    """Declare what the gate must check for this route, and how its answer is written."""
    def record(handler: F) -> F:
        SPECS[handler.__name__] = RouteSpec(label, access, body, status, pieces, signable)
        return handler
    return record


@dataclass(frozen=True)
class Raw:
    """An answer that is not JSON (metrics text, the OpenAPI document)."""

    content_type: bytes
    body: bytes


@dataclass(frozen=True)
class Reply:
    """A JSON answer whose status is not the route's usual one."""

    status: int
    document: Result


def _source() -> str:
    """The commit this code came from, when it runs from a git checkout."""
    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.exists():
                return ref_file.read_text().strip()
            for line in (git / "packed-refs").read_text().splitlines():
                if line.endswith(" " + ref):
                    return line.split()[0]
            return "unknown"
        return head
    except OSError:
        return "unknown"


def _principal(request: QueueyRequest) -> str | None:
    assert request.admission is not None
    return request.admission.principal


class QueueyApp:
    """The routes; each turns a request into one call on :class:`Queuey`."""

    app = Klein()
    # One route table, matched on raw paths: no merged slashes, no redirects of any kind.
    app.url_map.merge_slashes = False
    app.url_map.strict_slashes = False
    app.url_map.redirect_defaults = False

    def __init__(self, core: Queuey, worker: int = 0) -> None:
        self.core = core
        self.metrics = core.metrics
        self.version = {"name": "queuey", "version": queuey.__version__, "source": _source(), "worker": worker}
        self.gate = Gate(self.app.url_map, SPECS, core, core.config)
        #: Endpoint -> this instance's handler, called directly: Klein's own dispatch makes a
        #: bound copy of the app and a Deferred around each coroutine, per request.
        self._handlers: dict[str, Callable[..., Any]] = {name: getattr(self, name) for name in SPECS}
        self._openapi: bytes | None = None
        config = core.config
        self.streams = Streams(self.metrics)
        self.stream_settings = StreamSettings(
            config.stream_keepalive, config.stream_buffer_bytes, config.stream_retry_ms,
            page_bytes=min(config.max_response_bytes, max(config.stream_buffer_bytes, config.max_message_bytes)))

    def resource(self) -> resource.Resource:
        return _Routes(self)

    def site(self, reactor: IReactorTime, max_connections: int | None = None) -> QueueySite:
        """An HTTP site serving these routes under the configured ``[limits]``."""
        config = self.core.config
        cap = max_connections or config.max_connections
        return QueueySite(self.resource(), self.gate, self.metrics,
                          Pace(config.request_head_timeout, config.body_min_rate),
                          ConnectionCap(cap),
                          ByteBudget(config.max_body_bytes_in_flight), reactor)

    # -- answering ----------------------------------------------------------

    async def respond(self, request: QueueyRequest) -> None:
        """Run the admitted route and write its answer; QueueyErrors become their status."""
        admission = request.admission
        assert admission is not None
        started = time.perf_counter()
        if admission.endpoint == PREFLIGHT:  # headers decided by the gate
            for name, value in admission.values.items():
                request.setHeader(name.encode(), value.encode())
            request.setResponseCode(204)
            self._count(request, admission, started, 204)
            request.finish()
            return
        try:
            answer = self._handlers[admission.endpoint](request, **admission.values)
            if inspect.isawaitable(answer):
                answer = await answer
        except QueueyError as e:
            if isinstance(e, StorageUnavailable):
                self.metrics.storage_errors.inc()
                log.warn("Storage unavailable on {route}: {error}", route=admission.spec.label, error=str(e))
            self._count(request, admission, started, status_of(e))
            request.write(render_error(request, e))
            request.finish()
            return
        except defer.CancelledError:
            raise  # the client went away: nothing to answer
        except Exception:
            log.failure("Unexpected error answering {route}", route=admission.spec.label)
            self._count(request, admission, started, 500)
            request.write(render_json(request, 500, {"status": "error", "error_msg": {
                "ServerError": "Unexpected server error; it was logged."}}))
            request.finish()
            return
        self._count(request, admission, started, answer.status if isinstance(answer, Reply) else admission.spec.status)
        if request.answered_early:
            request.finish()
            return
        if isinstance(answer, EventStream):
            await self.streams.serve(answer)  # it finishes the request itself
            return
        pieces = self._encode(request, admission, answer)
        del answer  # from here on only the encoded pieces are held, and each only until written
        if len(pieces) == 1:
            request.write(pieces[0])
        else:
            writer = ResponseWriter(request)
            try:
                if not await writer.write_all(pieces):
                    return  # the client went away
            finally:
                writer.close()
        request.finish()

    @staticmethod
    def _encode(request: QueueyRequest, admission: Admission, answer: Any) -> list[bytes]:
        """Set the answer's status and headers; its body as one piece, or as many when it is long."""
        if isinstance(answer, Raw):
            request.setHeader(b"Content-Type", answer.content_type)
            request.setHeader(b"Content-Length", b"%d" % len(answer.body))
            return [answer.body]
        if isinstance(answer, Reply):
            return [render_json(request, answer.status, answer.document)]
        if admission.spec.pieces is None:
            return [render_json(request, admission.spec.status, answer)]
        pieces, length = json_pieces(answer, admission.spec.pieces)
        request.setResponseCode(admission.spec.status)
        request.setHeader(b"Content-Type", b"application/json")
        request.setHeader(b"Content-Length", b"%d" % length)
        return [b"".join(pieces)] if length <= WRITE_SIZE else pieces

    def _count(self, request: QueueyRequest, admission: Admission, started: float, status: int) -> None:
        self.metrics.answered(admission.spec.label, method_label(request.method), status,
                              time.perf_counter() - started)

    # -- operations -------------------------------------------------------

    @app.route("/__lbheartbeat__", methods=["GET"])
    @spec("operations", Access.ANYONE)
    def lbheartbeat(self, request: QueueyRequest) -> Result:
        return {"status": "ok"}

    @app.route("/__heartbeat__", methods=["GET"])
    @spec("operations", Access.ANYONE)
    async def heartbeat(self, request: QueueyRequest) -> Result | Reply:
        try:
            await self.core.store.check()
        except Exception as e:
            self.metrics.storage_errors.inc()
            failed = {"storage": str(e)}
            return Reply(503, {"status": "error", "error_msg": failed, "checks": failed})
        return {"status": "ok", "checks": {"storage": "ok"}}

    @app.route("/__version__", methods=["GET"])
    @spec("operations", Access.ANYONE)
    def version_info(self, request: QueueyRequest) -> Result:
        return self.version

    @app.route("/metrics", methods=["GET"])
    @spec("operations", Access.ANYONE)
    def metrics_text(self, request: QueueyRequest) -> Raw:
        return Raw(self.metrics.content_type.encode(), self.metrics.render())

    @app.route("/openapi.yaml", methods=["GET"])
    @spec("operations", Access.ANYONE)
    def openapi(self, request: QueueyRequest) -> Raw:
        if self._openapi is None:
            self._openapi = OPENAPI.read_bytes()
        return Raw(b"application/yaml", self._openapi)

    # -- queues -----------------------------------------------------------

    @app.route("/v1/<application>", methods=["GET"])
    @spec("application", Access.OWNER)
    async def list_queues(self, request: QueueyRequest, application: str) -> Result:
        return await self.core.list_queues(_principal(request), application, decoding.list_query(request.uri))

    @app.route("/v1/<application>", methods=["POST"])
    @spec("application", Access.OWNER, BodyUse.PARAMETERS, status=201)
    async def create_queue(self, request: QueueyRequest, application: str) -> Result:
        wanted = decoding.queue_parameters(request.getHeader(b"content-type"), request.body(), creating=True)
        return await self.core.create_queue(_principal(request), application, wanted)

    @app.route("/v1/<application>/<queue>", methods=["PUT"])
    @spec("queue", Access.OWNER, BodyUse.PARAMETERS)
    async def update_queue(self, request: QueueyRequest, application: str, queue: str) -> Result:
        wanted = decoding.queue_parameters(request.getHeader(b"content-type"), request.body(), creating=False)
        return await self.core.update_queue(_principal(request), application, queue, wanted)

    @app.route("/v1/<application>/<queue>", methods=["DELETE"])
    @spec("queue", Access.OWNER)
    async def delete_queue(self, request: QueueyRequest, application: str, queue: str) -> Result:
        return await self.core.delete_queue(_principal(request), application, queue)

    @app.route("/v1/<application>/<queue>/info", methods=["GET"])
    @spec("queue", Access.APPLICATION)
    async def queue_info(self, request: QueueyRequest, application: str, queue: str) -> Result:
        return await self.core.queue_info(_principal(request), application, queue)

    # -- messages ---------------------------------------------------------

    @app.route("/v1/<application>/<queue>/signed", methods=["POST"])
    @spec("signed", Access.OWNER, BodyUse.PARAMETERS)
    async def sign_url(self, request: QueueyRequest, application: str, queue: str) -> Result:
        wanted = decoding.signing_request(request.getHeader(b"content-type"), request.body(),
                                          self.core.config.signing_max_expiry)
        return await self.core.sign_url(_principal(request), application, queue, wanted)

    @app.route("/v1/<application>/<queue>", methods=["POST"])
    @spec("queue", Access.OWNER, BodyUse.MESSAGES, status=201, signable=True)
    def post_messages(self, request: QueueyRequest, application: str, queue: str) -> Awaitable[Result]:
        posted = decoding.posted_messages(request.getHeader(b"content-type"), request.body(),
                                          request.getHeader(b"x-ttl"), request.getHeader(b"x-partition"),
                                          request.getHeader(b"x-delay"))
        return self.core.post_messages(_principal(request), application, queue, posted)

    @app.route("/v1/<application>/<queue>", methods=["GET"])
    @spec("queue", Access.APPLICATION, pieces="messages", signable=True)
    def read_messages(self, request: QueueyRequest, application: str,
                      queue: str) -> Awaitable[Result | EventStream]:
        query = decoding.read_query(request.uri)
        if wants_events(request.method, request.getHeader(b"accept")):
            return self._open_stream(request, application, queue, query)
        return self.core.read_messages(_principal(request), application, queue, query, self._answer_early, request)

    @staticmethod
    def _answer_early(result: Result, requests: list[QueueyRequest]) -> None:
        """The answer of held reads a wake-up ended, written at once (``respond`` finishes them).

        They share their page: its body is encoded once, and the requests with equal
        heads share one whole response, each sent in one piece.  Long answers are left to
        ``respond``, which writes them no faster than they are read.
        """
        pieces, length = json_pieces(result, "messages")
        if length > WRITE_SIZE:
            return
        responses = WholeResponses(b"".join(pieces), JSON)
        for request in requests:
            if not request.finished:
                request.write_whole(responses)
                request.answered_early = True

    async def _open_stream(self, request: QueueyRequest, application: str, queue: str,
                           query: ReadQuery) -> EventStream:
        positions = decoding.stream_cursor(request.getHeader(b"last-event-id"))
        settings, query = await self.core.followable(_principal(request), application, queue, query)
        return EventStream(request, Follower(self.core.reader, settings, query, positions), self.stream_settings,
                           self.metrics, self.core.clock)

    @app.route("/v1/<application>/<queue>/<ids>", methods=["GET"])
    @spec("messages", Access.APPLICATION, pieces="messages", signable=True)
    def get_messages(self, request: QueueyRequest, application: str, queue: str, ids: str) -> Awaitable[Result]:
        return self.core.get_messages(_principal(request), application, queue, decoding.message_refs(ids))

    @app.route("/v1/<application>/<queue>/<ids>", methods=["PUT"])
    @spec("messages", Access.OWNER, BodyUse.MESSAGES)
    async def replace_messages(self, request: QueueyRequest, application: str, queue: str, ids: str) -> Result:
        refs = decoding.message_refs(ids)
        message = decoding.single_message(request.getHeader(b"content-type"), request.body(),
                                          request.getHeader(b"x-ttl"))
        return await self.core.replace_messages(_principal(request), application, queue, refs, message)

    @app.route("/v1/<application>/<queue>/<ids>", methods=["DELETE"])
    @spec("messages", Access.APPLICATION)
    async def delete_messages(self, request: QueueyRequest, application: str, queue: str, ids: str) -> Result:
        return await self.core.delete_messages(_principal(request), application, queue, decoding.message_refs(ids))


class _Routes(resource.Resource):
    """The one resource: runs the route the gate admitted; cancels it when the client leaves."""

    isLeaf = True

    def __init__(self, app: QueueyApp) -> None:
        super().__init__()
        self._app = app

    def render(self, request: QueueyRequest) -> Any:
        for name, value in self._app.gate.cors.answer_headers(request.requestHeaders).items():
            request.setHeader(name, value)
        answering = defer.ensureDeferred(self._app.respond(request))
        answering.addErrback(lambda failure: failure.trap(defer.CancelledError) and None)
        request.notifyFinish().addErrback(lambda _: answering.cancel())
        return server.NOT_DONE_YET
