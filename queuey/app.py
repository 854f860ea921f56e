"""Queuey's HTTP face: thin Klein routes over :class:`queuey.core.Queuey`."""

from __future__ import annotations

import functools
import io
import time
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, unquote_to_bytes, urlsplit

import orjson
from klein import Klein
from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server
from twisted.web.iweb import IRequest
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed
from werkzeug.exceptions import NotFound as RoutingNotFound

import queuey
from queuey.core import Queuey
from queuey.errors import (BodyTooLarge, InvalidParameters, MethodNotAllowed, NotFound, QueueyError,
                           StorageUnavailable)

log = Logger()
JSON = b"application/json"
Handler = Callable[..., Awaitable[dict[str, Any]]]


def _header(request: IRequest, name: bytes) -> str | None:
    value = request.getHeader(name)
    return None if value is None else value.decode("latin-1")


def _decode_pairs(pairs: dict[bytes, list[bytes]] | dict[str, list[str]]) -> dict[str, str]:
    try:
        return {(k.decode("utf-8") if isinstance(k, bytes) else k):
                (v[0].decode("utf-8") if isinstance(v[0], bytes) else v[0]) for k, v in pairs.items()}
    except UnicodeDecodeError:
        raise InvalidParameters({"query": "Parameters must be UTF-8."}) from None


def query_params(request: IRequest) -> dict[str, str]:
    """The query string's parameters (first value of each)."""
    return _decode_pairs(parse_qs(urlsplit(request.uri).query, keep_blank_values=True))


def body_params(request: IRequest) -> dict[str, Any]:
    """POST/PUT parameters: a JSON object, or a form-encoded body."""
    body = read_body(request)
    content_type = (_header(request, b"content-type") or "").split(";")[0].strip().lower()
    if content_type == "application/json":
        try:
            document = orjson.loads(body) if body.strip() else {}
        except orjson.JSONDecodeError:
            raise InvalidParameters({"body": "Not valid JSON."}) from None
        if not isinstance(document, dict):
            raise InvalidParameters({"body": "Must be a JSON object of parameters."})
        return document
    return _decode_pairs(parse_qs(body, keep_blank_values=True))


def read_body(request: IRequest) -> bytes:
    content = request.content
    if getattr(content, "overflowed", False):
        raise BodyTooLarge("The request body is larger than this server accepts.")
    content.seek(0)
    return content.read()


def render_json(request: IRequest, status: int, document: dict[str, Any]) -> bytes:
    body = orjson.dumps(document)
    request.setResponseCode(status)
    request.setHeader(b"Content-Type", JSON)
    request.setHeader(b"Content-Length", b"%d" % len(body))
    return body


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


class QueueyApp:
    """The Klein routes; each turns a request into one call on :class:`Queuey`."""

    app = Klein()

    def __init__(self, core: Queuey) -> None:
        self.core = core
        self.metrics = core.metrics
        self.version = {"name": "queuey", "version": queuey.__version__, "source": _source()}

    def resource(self) -> Any:
        return self.app.resource()

    # -- plumbing ---------------------------------------------------------

    def _answer(self, request: IRequest, route: str, started: float, status: int,
                document: dict[str, Any], headers: dict[str, str] | None = None) -> bytes:
        for name, value in (headers or {}).items():
            request.setHeader(name.encode(), value.encode())
        self.metrics.requests.labels(route, request.method.decode("ascii", "replace"), str(status)).inc()
        self.metrics.latency.labels(route).observe(time.perf_counter() - started)
        return render_json(request, status, document)

    def _error(self, request: IRequest, route: str, started: float, error: QueueyError) -> bytes:
        if isinstance(error, StorageUnavailable):
            self.metrics.storage_errors.inc()
            log.warn("Storage unavailable on {route}: {error}", route=route, error=str(error))
        return self._answer(request, route, started, error.status,
                            {"status": "error", "error_msg": error.errors}, error.headers)

    @staticmethod
    def endpoint(route: str, status: int = 200) -> Callable[[Handler], Callable[..., Any]]:
        """Wrap a handler: JSON out, QueueyErrors as their status, metrics, no tracebacks."""
        def decorate(handler: Handler) -> Callable[..., Any]:
            @functools.wraps(handler)
            async def wrapper(self: "QueueyApp", request: IRequest, **kwargs: Any) -> bytes:
                started = time.perf_counter()
                try:
                    principal = self.core.authenticate(_header(request, b"authorization"))
                    document = await handler(self, request, principal, **kwargs)
                except QueueyError as e:
                    return self._error(request, route, started, e)
                except defer.CancelledError:
                    raise  # the client went away: nothing to answer
                except Exception:
                    log.failure("Unexpected error answering {route}", route=route)
                    return self._answer(request, route, started, 500, {
                        "status": "error", "error_msg": {"ServerError": "Unexpected server error; it was logged."}})
                return self._answer(request, route, started, status, document)
            return wrapper
        return decorate

    # -- errors of routing ------------------------------------------------

    @app.handle_errors(RoutingNotFound)
    def not_found(self, request: IRequest, failure: Any) -> bytes:
        error = NotFound(f"No such resource: {request.path.decode('utf-8', 'replace')}")
        return self._error(request, "unknown", time.perf_counter(), error)

    @app.handle_errors(RoutingMethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Any) -> bytes:
        allowed = sorted(m for m in (failure.value.valid_methods or []) if m != "HEAD")
        return self._error(request, "unknown", time.perf_counter(), MethodNotAllowed(allowed))

    # -- operations -------------------------------------------------------

    @app.route("/__lbheartbeat__", methods=["GET"])
    def lbheartbeat(self, request: IRequest) -> bytes:
        return render_json(request, 200, {"status": "ok"})

    @app.route("/__heartbeat__", methods=["GET"])
    async def heartbeat(self, request: IRequest) -> bytes:
        try:
            await self.core.store.check()
        except Exception as e:
            self.metrics.storage_errors.inc()
            return render_json(request, 503, {"status": "error", "checks": {"storage": str(e)}})
        return render_json(request, 200, {"status": "ok", "checks": {"storage": "ok"}})

    @app.route("/__version__", methods=["GET"])
    def version_info(self, request: IRequest) -> bytes:
        return render_json(request, 200, self.version)

    @app.route("/metrics", methods=["GET"])
    def metrics_text(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", self.metrics.content_type.encode())
        return self.metrics.render()

    # -- queues -----------------------------------------------------------

    @app.route("/v1/<application>", methods=["GET"])
    @endpoint("application")
    async def list_queues(self, request: IRequest, principal: str | None, application: str) -> dict[str, Any]:
        return await self.core.list_queues(principal, application, query_params(request))

    @app.route("/v1/<application>", methods=["POST"])
    @endpoint("application", status=201)
    async def create_queue(self, request: IRequest, principal: str | None, application: str) -> dict[str, Any]:
        return await self.core.create_queue(principal, application, body_params(request))

    @app.route("/v1/<application>/<queue>", methods=["PUT"])
    @endpoint("queue")
    async def update_queue(self, request: IRequest, principal: str | None, application: str,
                           queue: str) -> dict[str, Any]:
        return await self.core.update_queue(principal, application, queue, body_params(request))

    @app.route("/v1/<application>/<queue>", methods=["DELETE"])
    @endpoint("queue")
    async def delete_queue(self, request: IRequest, principal: str | None, application: str,
                           queue: str) -> dict[str, Any]:
        return await self.core.delete_queue(principal, application, queue)

    # -- messages ---------------------------------------------------------

    @app.route("/v1/<application>/<queue>", methods=["POST"])
    @endpoint("queue", status=201)
    async def post_messages(self, request: IRequest, principal: str | None, application: str,
                            queue: str) -> dict[str, Any]:
        return await self.core.post_messages(
            principal, application, queue, _header(request, b"content-type"), read_body(request),
            _header(request, b"x-ttl"), _header(request, b"x-partition"))

    @app.route("/v1/<application>/<queue>", methods=["GET"])
    @endpoint("queue")
    async def read_messages(self, request: IRequest, principal: str | None, application: str,
                            queue: str) -> dict[str, Any]:
        return await self.core.read_messages(principal, application, queue, query_params(request))

    @app.route("/v1/<application>/<queue>/<ids>", methods=["GET"])
    @endpoint("messages")
    async def get_messages(self, request: IRequest, principal: str | None, application: str,
                           queue: str, ids: str) -> dict[str, Any]:
        return await self.core.get_messages(principal, application, queue, ids)

    @app.route("/v1/<application>/<queue>/<ids>", methods=["PUT"])
    @endpoint("messages")
    async def replace_messages(self, request: IRequest, principal: str | None, application: str,
                               queue: str, ids: str) -> dict[str, Any]:
        return await self.core.replace_messages(
            principal, application, queue, ids, _header(request, b"content-type"), read_body(request),
            _header(request, b"x-ttl"))

    @app.route("/v1/<application>/<queue>/<ids>", methods=["DELETE"])
    @endpoint("messages")
    async def delete_messages(self, request: IRequest, principal: str | None, application: str,
                              queue: str, ids: str) -> dict[str, Any]:
        return await self.core.delete_messages(principal, application, queue, ids)


class _BoundedBody(io.BytesIO):
    """A request body that stops keeping bytes past ``limit`` and says so."""

    def __init__(self, limit: int, declared: int | None) -> None:
        super().__init__()
        self.limit = limit
        self.overflowed = declared is not None and declared > limit

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if not self.overflowed and self.tell() + len(data) > self.limit:
            self.overflowed = True
            self.seek(0)
            self.truncate()
        if self.overflowed:
            return len(data)
        return super().write(data)


class QueueySite(server.Site):
    """A Site that keeps request bodies in memory up to ``max_request_bytes`` and no further."""

    def __init__(self, resource: Any, max_request_bytes: int, **kwargs: Any) -> None:
        super().__init__(resource, **kwargs)
        self.max_request_bytes = max_request_bytes

    def getContentFile(self, length: int | None) -> _BoundedBody:
        return _BoundedBody(self.max_request_bytes, length)

    def getResourceFor(self, request: IRequest) -> Any:
        """Answer a URL that is not UTF-8 with a JSON 400 (Klein's own answer is plain text)."""
        try:
            unquote_to_bytes(request.uri).decode("utf-8")
        except UnicodeDecodeError:
            return _JSONErrorResource(InvalidParameters({"url": "The URL must be UTF-8 once percent-decoded."}))
        return super().getResourceFor(request)


class _JSONErrorResource(resource.Resource):
    isLeaf = True

    def __init__(self, error: QueueyError) -> None:
        super().__init__()
        self.error = error

    def render(self, request: IRequest) -> bytes:
        return render_json(request, self.error.status, {"status": "error", "error_msg": self.error.errors})
