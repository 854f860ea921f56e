"""Cross-origin requests from browser pages (CORS), for the origins of ``[cors] allow_origins``.

Every answer to a request from an allowed origin says so
(``Access-Control-Allow-Origin``), refusals and streams included, so the page
can read it.  A preflight (``OPTIONS`` with ``Access-Control-Request-Method``)
is answered from its head: 204 with the route's methods and the headers the
API reads, 403 for an origin not allowed, 404/405 as any request for a route
or method that does not exist.  Without ``allow_origins`` nothing changes.
"""

from __future__ import annotations

from twisted.web.http_headers import Headers

from queuey.errors import AccessDenied

#: Request headers a page may send: the key, the body's type, message options, a stream's cursor.
ALLOWED_HEADERS = b"Authorization, Content-Type, X-TTL, X-Partition, X-Delay, Last-Event-ID"
#: Answer headers a page may read besides the simple ones.
EXPOSED_HEADERS = b"Retry-After, Allow"
#: Seconds a browser may keep a preflight's answer.
MAX_AGE = b"600"


class CorsPolicy:
    """Which origins may call the API from a browser, and the headers that tell them so."""

    def __init__(self, origins: tuple[str, ...]) -> None:
        self.enabled = bool(origins)
        self._any = origins == ("*",)
        self._origins = frozenset(o.encode("ascii") for o in origins)

    def _origin(self, headers: Headers) -> bytes | None:
        origin = headers.getRawHeaders(b"origin")
        return origin[0] if origin else None

    def answer_headers(self, headers: Headers) -> dict[bytes, bytes]:
        """Headers for the answer to a request with these ``headers`` ({} unless its origin is allowed)."""
        origin = self._origin(headers)
        if origin is None or not self.enabled:
            return {}
        if self._any:
            return {b"Access-Control-Allow-Origin": b"*", b"Access-Control-Expose-Headers": EXPOSED_HEADERS}
        if origin not in self._origins:
            return {b"Vary": b"Origin"}
        return {b"Access-Control-Allow-Origin": origin, b"Vary": b"Origin",
                b"Access-Control-Expose-Headers": EXPOSED_HEADERS}

    def is_preflight(self, method: bytes, headers: Headers) -> bool:
        return (self.enabled and method == b"OPTIONS" and self._origin(headers) is not None
                and headers.hasHeader(b"access-control-request-method"))

    def requested_method(self, headers: Headers) -> bytes:
        return (headers.getRawHeaders(b"access-control-request-method") or [b""])[0].strip()

    def preflight_headers(self, headers: Headers, methods: list[str]) -> dict[bytes, bytes]:
        """The answer to an allowed preflight for a route with ``methods``; AccessDenied otherwise."""
        answer = self.answer_headers(headers)
        if b"Access-Control-Allow-Origin" not in answer:
            raise AccessDenied("This origin may not call this API ([cors] allow_origins).")
        answer.update({b"Access-Control-Allow-Methods": ", ".join(methods).encode("ascii"),
                       b"Access-Control-Allow-Headers": ALLOWED_HEADERS,
                       b"Access-Control-Max-Age": MAX_AGE})
        return answer
