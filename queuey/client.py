"""A client for the whole Queuey v1 HTTP API, on treq: every call returns a Deferred.

::

    client = QueueyClient("http://127.0.0.1:5000/v1/myapp", app_key="...", reactor=reactor)
    yield client.create_queue("jobs", partitions=8)
    yield client.post_messages("jobs", [{"body": "hello", "partition": 2}])
    messages = yield client.read_messages("jobs", partitions=[2], after=last_id, wait=20)

Several servers may be given (a list, or one string with comma- or
space-separated URLs). The client prefers a local one (loopback, or this host's
name) and otherwise keeps the order given; a server that refuses connections or
answers 503 is set aside for ``down_for`` seconds and the request goes to the
next. A request is retried on connection errors and 503 with exponential
back-off and jitter (honouring ``Retry-After``), ``retries`` times at most, then
fails with :class:`ServiceUnavailable` or :class:`ConnectionFailed`. A POST of
messages is only retried when it certainly did not reach a server (connection
refused, 503), never after a lost response, unless ``retry_posts`` is true.
A call the caller cancels (a long poll no longer wanted) fails at once with
``CancelledError``: it is not retried, and its server is not set aside.

Any other error answer becomes a typed exception, a subclass of
:class:`QueueyClientError` carrying ``status`` and the server's ``errors``
(its ``error_msg``): :class:`BadRequest` (400), :class:`Unauthorized` (401),
:class:`Forbidden` (403), :class:`NotFound` (404), :class:`MethodNotAllowed`
(405), :class:`Conflict` (409), :class:`PayloadTooLarge` (413),
:class:`ServerError` (other 5xx).
"""

from __future__ import annotations

import functools
import ipaddress
import random
import socket
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import orjson
import treq
from twisted.internet import defer, error as net_error, task
from twisted.logger import Logger
from twisted.web import client as web_client

log = Logger()
T = TypeVar("T")

DEFAULT_TIMEOUT = 30.0


class QueueyClientError(Exception):
    """An error answer of the server (or no answer at all)."""

    status: int | None = None

    def __init__(self, message: str, status: int | None = None, errors: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status
        self.errors: dict[str, str] = dict(errors or {})


class BadRequest(QueueyClientError):
    status = 400


class Unauthorized(QueueyClientError):
    status = 401


class Forbidden(QueueyClientError):
    status = 403


class NotFound(QueueyClientError):
    status = 404


class MethodNotAllowed(QueueyClientError):
    status = 405


class Conflict(QueueyClientError):
    status = 409


class PayloadTooLarge(QueueyClientError):
    status = 413


class ServerError(QueueyClientError):
    status = 500


class ServiceUnavailable(ServerError):
    """503 from every server tried, after the retries."""

    status = 503


class ConnectionFailed(QueueyClientError):
    """No server could be reached (after the retries)."""


_BY_STATUS: dict[int, type[QueueyClientError]] = {
    c.status: c for c in (BadRequest, Unauthorized, Forbidden, NotFound, MethodNotAllowed, Conflict,
                          PayloadTooLarge, ServiceUnavailable)}  # type: ignore[misc]


def error_for(status: int, document: Any) -> QueueyClientError:
    """The typed exception for an error answer."""
    errors = document.get("error_msg") if isinstance(document, dict) else None
    if not isinstance(errors, dict):
        errors = {"error": str(document)[:200]}
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else QueueyClientError)
    text = "; ".join(f"{k}: {v}" for k, v in errors.items())
    return kind(f"HTTP {status}: {text}", status, errors)


# Failures that mean the request never reached a server: safe to send elsewhere.
_NOT_SENT = (net_error.ConnectError, net_error.DNSLookupError, net_error.ConnectionRefusedError,
             net_error.TimeoutError, net_error.NoRouteError)
# Failures after which the server may or may not have acted.
_MAYBE_SENT = (web_client.ResponseFailed, web_client.ResponseNeverReceived, web_client.RequestTransmissionFailed,
               net_error.ConnectionLost, net_error.ConnectionDone, defer.TimeoutError)


def deferred(method: Callable[..., Awaitable[T]]) -> Callable[..., "defer.Deferred[T]"]:
    """Make an ``async def`` method return a Deferred."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> "defer.Deferred[T]":
        return defer.ensureDeferred(method(*args, **kwargs))
    return wrapper


def parse_connection(connection: str) -> tuple[str, str | None]:
    """``http://host:port[/prefix]/v1/<app>`` -> (base URL up to /v1, application or None)."""
    parts = urlsplit(connection.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{connection!r} is not an http(s) URL")
    path = parts.path.rstrip("/")
    application = None
    head, sep, tail = path.rpartition("/v1")
    if sep and (tail == "" or tail.startswith("/")):
        path = head
        application = tail.strip("/") or None
        if application and "/" in application:
            raise ValueError(f"{connection!r}: expected .../v1/<application>")
    return f"{parts.scheme}://{parts.netloc}{path}", application


def split_connections(connection: str | Sequence[str]) -> list[str]:
    if isinstance(connection, str):
        return [c for c in connection.replace(",", " ").split() if c]
    return [c for c in connection if c]


def local_names() -> set[str]:
    names = {"localhost", "localhost.localdomain"}
    try:
        names.add(socket.gethostname().lower())
        names.add(socket.getfqdn().lower())
    except OSError:
        pass
    return names


def is_local(url: str, names: set[str] | None = None) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host in (local_names() if names is None else names)


@dataclass
class Server:
    base: str
    local: bool
    down_until: float = 0.0
    failures: int = 0


class QueueyClient:
    """Queuey's v1 API for one application (``application``), over one or more servers."""

    def __init__(self, connection: str | Sequence[str], app_key: str | None = None, *,
                 reactor: Any, application: str | None = None, http: Any = None,
                 timeout: float = DEFAULT_TIMEOUT, retries: int = 4, backoff: float = 0.25,
                 max_backoff: float = 10.0, down_for: float = 30.0, retry_posts: bool = False,
                 prefer_local: bool = True, rng: random.Random | None = None,
                 local_hosts: Iterable[str] | None = None) -> None:
        urls = split_connections(connection)
        if not urls:
            raise ValueError("no Queuey server URL given")
        names = set(local_hosts) if local_hosts is not None else None
        servers, apps = [], set()
        for url in urls:
            base, app = parse_connection(url)
            servers.append(Server(base, prefer_local and is_local(base, names)))
            if app:
                apps.add(app)
        if application is None:
            if len(apps) != 1:
                raise ValueError("name the application: in the URL (.../v1/<application>) or as application=")
            application = apps.pop()
        # Local servers first; otherwise the order given (a stable sort).
        self.servers = sorted(servers, key=lambda s: not s.local)
        self.application = application
        self.app_key = app_key
        self._reactor = reactor
        self._timeout = timeout
        self._retries = retries
        self._backoff = backoff
        self._max_backoff = max_backoff
        self._down_for = down_for
        self._retry_posts = retry_posts
        self._random = rng or random.Random()
        self._pool = None
        if http is None:
            self._pool = web_client.HTTPConnectionPool(reactor, persistent=True)
            self._pool.maxPersistentPerHost = 32
            self._pool.retryAutomatically = False  # we decide what is retried
            http = treq.client.HTTPClient(web_client.Agent(reactor, pool=self._pool))
        self._http = http

    # -- plumbing -----------------------------------------------------------

    def close(self) -> "defer.Deferred[None]":
        """Close pooled connections (for a clean shutdown, and trial's reactor checks)."""
        if self._pool is not None:
            return self._pool.closeCachedConnections()
        return defer.succeed(None)

    def _server(self) -> Server:
        now = self._reactor.seconds()
        for server in self.servers:
            if server.down_until <= now:
                return server
        return min(self.servers, key=lambda s: s.down_until)

    def _mark_down(self, server: Server, why: str) -> None:
        server.failures += 1
        server.down_until = self._reactor.seconds() + self._down_for
        if len(self.servers) > 1:
            log.warn("Queuey server {server} set aside for {seconds}s: {why}",
                     server=server.base, seconds=self._down_for, why=why)

    def _mark_up(self, server: Server) -> None:
        if server.failures:
            server.failures = 0
            server.down_until = 0.0

    def _headers(self, extra: Mapping[str, str] | None = None) -> dict[str, list[str]]:
        headers: dict[str, list[str]] = {"Accept": ["application/json"]}
        if self.app_key:
            headers["Authorization"] = [f"Application {self.app_key}"]
        for name, value in (extra or {}).items():
            headers[name] = [value]
        return headers

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential back-off with jitter, at most max_backoff, at least a 503's Retry-After (capped too)."""
        delay = min(self._max_backoff, self._backoff * (2 ** min(attempt, 64)) * (0.5 + self._random.random()))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self._max_backoff))
        return delay

    async def _once(self, server: Server, method: str, path: str, query: str, body: bytes | None,
                    headers: Mapping[str, str] | None, timeout: float) -> tuple[int, Any, Any]:
        url = server.base + path + (("?" + query) if query else "")
        d = self._http.request(method, url, headers=self._headers(headers), data=body)

        async def read() -> tuple[int, Any, Any]:
            try:
                response = await d
                content = await treq.content(response)
            except web_client.ResponseFailed as e:
                if any(reason.check(defer.CancelledError) for reason in e.reasons):
                    # Twisted's Agent reports a cancelled request as a failed response: say what it was,
                    # or it would be retried (and a timeout would not be told from it).
                    raise defer.CancelledError() from None
                raise
            return response.code, content, response.headers

        whole = defer.ensureDeferred(read())
        whole.addTimeout(timeout, self._reactor)
        return await whole

    async def request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None,
                      json: Any = None, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                      timeout: float | None = None, idempotent: bool | None = None) -> dict[str, Any]:
        """One API call: the decoded JSON answer, or a typed error. ``path`` starts at ``/v1``."""
        query = urlencode({k: v for k, v in (params or {}).items() if v is not None})
        headers = dict(headers or {})
        if json is not None:
            body = orjson.dumps(json)
            headers["Content-Type"] = "application/json"
        if idempotent is None:
            idempotent = method in ("GET", "PUT", "DELETE") or self._retry_posts
        timeout = self._timeout if timeout is None else timeout
        attempt = 0
        while True:
            server = self._server()
            retry_after = None
            try:
                status, content, response_headers = await self._once(
                    server, method, path, query, body, headers, timeout)
            except _NOT_SENT as e:
                failure: QueueyClientError = ConnectionFailed(f"{server.base}: {e}")
                self._mark_down(server, f"connection failed: {e}")
            except _MAYBE_SENT as e:
                failure = ConnectionFailed(f"{server.base}: {e.__class__.__name__}: {e}")
                self._mark_down(server, f"no answer: {e.__class__.__name__}")
                if not idempotent:
                    raise failure from None
            else:
                try:
                    document = orjson.loads(content) if content else {}
                except orjson.JSONDecodeError:
                    document = {"error_msg": {"body": content[:200].decode("utf-8", "replace")}}
                if status < 400:
                    self._mark_up(server)
                    return document
                failure = error_for(status, document)
                if status != 503:
                    raise failure
                self._mark_down(server, "503 (storage unavailable)")
                value = (response_headers.getRawHeaders(b"retry-after") or [b""])[0]
                try:
                    retry_after = float(value)
                except ValueError:
                    retry_after = None
            if attempt >= self._retries:
                raise failure
            delay = self._delay(attempt, retry_after)
            attempt += 1
            log.debug("Retrying {method} {path} in {delay:.2f}s: {failure}", method=method, path=path,
                      delay=delay, failure=failure)
            await task.deferLater(self._reactor, delay, lambda: None)

    def _queue_path(self, queue: str, ids: str | None = None) -> str:
        path = f"/v1/{quote(self.application, safe='')}/{quote(queue, safe='')}"
        return path + "/" + quote(ids, safe=",") if ids is not None else path

    # -- operations ---------------------------------------------------------

    @deferred
    async def heartbeat(self) -> dict[str, Any]:
        """``GET /__heartbeat__``: ok when the server's storage answers."""
        return await self.request("GET", "/__heartbeat__")

    @deferred
    async def version(self) -> dict[str, Any]:
        return await self.request("GET", "/__version__")

    # -- queues -------------------------------------------------------------

    @deferred
    async def list_queues(self, limit: int | None = None, offset: str | None = None, details: bool = False,
                          include_count: bool = False) -> list[dict[str, Any]]:
        """One page of the application's queues (dicts with ``queue_name``, and more with ``details``)."""
        answer = await self.request("GET", f"/v1/{quote(self.application, safe='')}", params={
            "limit": limit, "offset": offset, "details": "true" if details else None,
            "include_count": "true" if include_count else None})
        return answer["queues"]

    @deferred
    async def all_queues(self, details: bool = True, page: int = 1000) -> list[dict[str, Any]]:
        """Every queue of the application, paging through the list."""
        queues: list[dict[str, Any]] = []
        offset = None
        while True:
            batch = await self.list_queues(limit=page, offset=offset, details=details)
            queues.extend(batch)
            if len(batch) < page:
                return queues
            offset = batch[-1]["queue_name"]

    @deferred
    async def create_queue(self, queue_name: str | None = None, partitions: int | None = None,
                           type: str | None = None, consistency: str | None = None,
                           principles: Iterable[str] | None = None) -> dict[str, Any]:
        """Create a queue; returns its settings. :class:`Conflict` if it exists."""
        params = _queue_params(queue_name=queue_name, partitions=partitions, type=type,
                               consistency=consistency, principles=principles)
        return await self.request("POST", f"/v1/{quote(self.application, safe='')}", json=params,
                                  idempotent=False)

    @deferred
    async def ensure_queue(self, queue_name: str, partitions: int | None = None, **settings: Any) -> dict[str, Any]:
        """Create the queue unless it exists; returns ``{"queue_name": ..., "created": bool}``."""
        try:
            await self.create_queue(queue_name, partitions=partitions, **settings)
            return {"queue_name": queue_name, "created": True}
        except Conflict:
            return {"queue_name": queue_name, "created": False}

    @deferred
    async def update_queue(self, queue_name: str, partitions: int | None = None, type: str | None = None,
                           consistency: str | None = None, principles: Iterable[str] | None = None) -> dict[str, Any]:
        """Change a queue's settings (partitions may only grow); returns them all."""
        params = _queue_params(partitions=partitions, type=type, consistency=consistency, principles=principles)
        return await self.request("PUT", self._queue_path(queue_name), json=params)

    @deferred
    async def queue_info(self, queue_name: str) -> dict[str, Any]:
        """``queue_name``, ``partitions``, ``type`` and ``consistency`` of a queue this key may read
        (any public queue; one that lists this key's application as a principal)."""
        return await self.request("GET", self._queue_path(queue_name) + "/info")

    @deferred
    async def delete_queue(self, queue_name: str) -> dict[str, Any]:
        return await self.request("DELETE", self._queue_path(queue_name))

    # -- messages -----------------------------------------------------------

    @deferred
    async def post_message(self, queue_name: str, body: bytes | str, ttl: int | None = None,
                           partition: int | None = None, content_type: str = "text/plain") -> dict[str, Any]:
        """Post one message (any content type but JSON); returns ``{"key", "timestamp", "partition"}``."""
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {"Content-Type": content_type}
        if ttl is not None:
            headers["X-TTL"] = str(int(ttl))
        if partition is not None:
            headers["X-Partition"] = str(int(partition))
        answer = await self.request("POST", self._queue_path(queue_name), body=body, headers=headers)
        return answer["messages"][0]

    @deferred
    async def post_messages(self, queue_name: str, messages: Iterable[Mapping[str, Any] | str]) -> list[dict[str, Any]]:
        """Post a batch: each a body string or ``{"body", "ttl"?, "partition"?, "content_type"?}``."""
        batch = [{"body": m} if isinstance(m, str) else dict(m) for m in messages]
        answer = await self.request("POST", self._queue_path(queue_name), json={"messages": batch})
        return answer["messages"]

    @deferred
    async def read_messages(self, queue_name: str, partitions: Iterable[int] | str | int | None = None,
                            since: str | None = None, after: str | None = None, limit: int | None = None,
                            order: str | None = None, wait: float | None = None) -> list[dict[str, Any]]:
        """A range read: messages of the partitions (``"all"``, a number or numbers), oldest first."""
        answer = await self.read_page(queue_name, partitions, since, after, limit, order, wait)
        return answer["messages"]

    @deferred
    async def read_page(self, queue_name: str, partitions: Iterable[int] | str | int | None = None,
                        since: str | None = None, after: str | None = None, limit: int | None = None,
                        order: str | None = None, wait: float | None = None) -> dict[str, Any]:
        """A range read's whole answer: ``messages``, and ``truncated`` and ``resume`` when the page was cut."""
        wait_seconds = None if wait is None else int(wait)
        timeout = self._timeout + (wait_seconds or 0)
        return await self.request("GET", self._queue_path(queue_name), params={
            "partitions": _partitions(partitions), "since": since, "after": after, "limit": limit, "order": order,
            "wait": wait_seconds}, timeout=timeout)

    @deferred
    async def open_stream(self, queue_name: str, partitions: Iterable[int] | str | int | None = None,
                          since: str | None = None, after: str | None = None, limit: int | None = None,
                          last_event_id: str | None = None) -> Any:
        """The queue as server-sent events (docs/api.rst): the 200 response, its body not read yet
        (``treq.collect`` it, parse it with :class:`queuey.sse.EventParser`).  An error answer
        raises its typed error.  Never retried: reconnecting, with the last event id, is the caller's."""
        query = urlencode({k: v for k, v in {"partitions": _partitions(partitions), "since": since,
                                              "after": after, "limit": limit}.items() if v is not None})
        extra = {"Accept": "text/event-stream"}
        if last_event_id is not None:
            extra["Last-Event-ID"] = last_event_id
        server = self._server()
        url = server.base + self._queue_path(queue_name) + ("?" + query if query else "")
        opened = self._http.request("GET", url, headers=self._headers(extra), unbuffered=True)
        opened.addTimeout(self._timeout, self._reactor)
        try:
            response = await opened
        except _NOT_SENT + _MAYBE_SENT as e:
            self._mark_down(server, f"no stream: {e.__class__.__name__}")
            raise ConnectionFailed(f"{server.base}: {e.__class__.__name__}: {e}") from None
        kind = (response.headers.getRawHeaders(b"content-type") or [b""])[0]
        if response.code == 200 and kind.startswith(b"text/event-stream"):
            self._mark_up(server)
            return response
        content = await treq.content(response)
        try:
            document = orjson.loads(content) if content else {}
        except orjson.JSONDecodeError:
            document = {"error_msg": {"body": content[:200].decode("utf-8", "replace")}}
        if response.code < 400:
            raise QueueyClientError(f"HTTP {response.code}: the server answered {kind.decode('latin-1')!r}, "
                                    "not an event stream", response.code, {"stream": "not an event stream"})
        raise error_for(response.code, document)

    @deferred
    async def get_messages(self, queue_name: str, ids: Iterable[str] | str) -> list[dict[str, Any]]:
        """Messages by id (``hex`` or ``partition:hex``); missing ones are left out."""
        return (await self.request("GET", self._queue_path(queue_name, _ids(ids))))["messages"]

    @deferred
    async def replace_messages(self, queue_name: str, ids: Iterable[str] | str, body: bytes | str,
                               ttl: int | None = None, content_type: str = "text/plain") -> dict[str, Any]:
        if isinstance(body, str):
            body = body.encode("utf-8")
        headers = {"Content-Type": content_type}
        if ttl is not None:
            headers["X-TTL"] = str(int(ttl))
        return await self.request("PUT", self._queue_path(queue_name, _ids(ids)), body=body, headers=headers)

    @deferred
    async def delete_messages(self, queue_name: str, ids: Iterable[str] | str) -> dict[str, Any]:
        return await self.request("DELETE", self._queue_path(queue_name, _ids(ids)))


def _partitions(partitions: Iterable[int] | str | int | None) -> str | None:
    """``"all"``, a number or numbers as the ``partitions`` parameter."""
    if partitions is None or isinstance(partitions, str):
        return partitions
    return ",".join(str(p) for p in ([partitions] if isinstance(partitions, int) else partitions))


def _ids(ids: Iterable[str] | str) -> str:
    return ids if isinstance(ids, str) else ",".join(ids)


def _queue_params(**given: Any) -> dict[str, Any]:
    params = {k: v for k, v in given.items() if v is not None}
    if "principles" in params and not isinstance(params["principles"], str):
        params["principles"] = ",".join(params["principles"])
    return params
