"""Deciding a request from its head alone: which route, whose key, how much body.

The channel (:mod:`queuey.channel`) asks the :class:`Gate` as soon as the
request line and headers are in, before any body byte is read.  A request the
gate refuses is answered at once and keeps none of its body; one it admits
carries its :class:`Admission` to the route that serves it.  The route table
is the Klein app's own, matched once, on the raw path, so an encoded slash
(``%2F``) stays inside its segment.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import unquote

from twisted.web.http_headers import Headers
from werkzeug.exceptions import MethodNotAllowed as RoutingMethodNotAllowed
from werkzeug.exceptions import NotFound as RoutingNotFound
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, RoutingException

from queuey.config import Config
from queuey.core import Queuey
from queuey.errors import BodyTooLarge, InvalidParameters, MethodNotAllowed, NotFound

#: Bodies of the calls that take parameters (and of those that take none, which are read
#: and dropped) may be this long; message bodies get ``[limits] max_request_bytes``.
PARAMETER_BODY_BYTES = 64 * 1024
#: Metric labels of methods come from this set; any other method counts as "other".
#: Distinct (method, path) pairs whose route is remembered; past it, the memory starts anew.
MATCH_CACHE_SIZE = 10_000
KNOWN_METHODS = frozenset(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"])


def method_label(method: bytes) -> str:
    text = method.decode("ascii", "replace")
    return text if text in KNOWN_METHODS else "other"


class Access(enum.Enum):
    """Who may call a route, as far as the head can tell."""

    ANYONE = "anyone"            # operations endpoints
    APPLICATION = "application"  # a known application; the queue decides the rest (reads, deletes)
    OWNER = "owner"              # the application's own key (managing queues, posting)


class BodyUse(enum.Enum):
    NONE = "none"              # read and dropped
    PARAMETERS = "parameters"  # a form or JSON object of a few parameters
    MESSAGES = "messages"      # message bodies, up to max_request_bytes


@dataclass(frozen=True)
class RouteSpec:
    """What a route needs from the head, and how it answers: ``label`` is its name in
    metrics, ``status`` its success code, ``pieces`` the list its answer is written by."""

    label: str
    access: Access
    body: BodyUse = BodyUse.NONE
    status: int = 200
    pieces: str | None = None


@dataclass(frozen=True)
class Admission:
    """An admitted request: the route's endpoint and spec, its decoded path values,
    the application its key speaks for, and how many body bytes it may send."""

    endpoint: str
    spec: RouteSpec
    values: dict[str, str]
    principal: str | None
    body_limit: int

    @property
    def keeps_body(self) -> bool:
        return self.spec.body is not BodyUse.NONE


UNROUTED = RouteSpec("unknown", Access.ANYONE, BodyUse.NONE)


class Gate:
    """Route, authorization and size of a request, from its method, target and headers."""

    def __init__(self, routes: Map, specs: Mapping[str, RouteSpec], core: Queuey, config: Config) -> None:
        self._routes = routes.bind("queuey")
        #: (method, path) -> what _match made of it: werkzeug's matcher costs more than
        #: the rest of the head's checks, and clients ask for the same paths again and again.
        self._matched: dict[tuple[bytes, bytes], tuple[str, dict[str, str]]] = {}
        self._specs = specs
        self._core = core
        self._message_limit = config.max_request_bytes

    def admit(self, method: bytes, target: bytes, headers: Headers, length: int | None) -> Admission:
        """The admission of this head, or the QueueyError to answer it with.

        ``length`` is the declared Content-Length (None for a chunked body).
        Checks go in the API's order: route (404, 405), key (401), application
        (404), right to act (401, 403), then size (413).
        """
        path = target.split(b"?", 1)[0]
        matched = self._matched.get((method, path))
        if matched is None:
            matched = self._match(method, path)
            if len(self._matched) >= MATCH_CACHE_SIZE:
                self._matched.clear()
            self._matched[(method, path)] = matched
        endpoint, values = matched
        spec = self._specs[endpoint]
        principal = None
        if spec.access is not Access.ANYONE:
            authorization = headers.getRawHeaders(b"authorization")
            principal = self._core.authenticate(None if authorization is None
                                                else authorization[0].decode("latin-1"))
            if spec.access is Access.OWNER:
                self._core.require_owner(principal, values["application"])
            else:
                self._core.check_application(values["application"])
        limit = self._message_limit if spec.body is BodyUse.MESSAGES else PARAMETER_BODY_BYTES
        if length is not None and length > limit:
            raise BodyTooLarge(f"This request may carry at most {limit} body bytes, not {length}.")
        return Admission(endpoint, spec, values, principal, limit)

    def _match(self, method: bytes, path: bytes) -> tuple[str, dict[str, str]]:
        """The route of ``path``, or the QueueyError its request is answered with (not cached)."""
        if not path.startswith(b"/") or b"//" in path:
            raise NotFound(f"No such resource: {path.decode('ascii', 'replace')[:200]}")
        raw_path = path.decode("ascii")  # the HTTP parser let only printable ASCII through
        try:
            endpoint, raw_values = self._routes.match(raw_path, method.decode("ascii"))
        except RoutingNotFound:
            raise NotFound(f"No such resource: {raw_path[:200]}") from None
        except RoutingMethodNotAllowed as e:
            raise MethodNotAllowed(sorted(m for m in (e.valid_methods or []) if m != "HEAD")) from None
        except (RoutingException, HTTPException):  # a redirect, which this API never makes
            raise NotFound(f"No such resource: {raw_path[:200]}") from None
        try:
            values = {name: unquote(value, errors="strict") for name, value in raw_values.items()}
        except UnicodeDecodeError:
            raise InvalidParameters({"url": "The URL must be UTF-8 once percent-decoded."}) from None
        return endpoint, values
