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
from queuey.cors import CorsPolicy
from queuey.decoding import query_params
from queuey.errors import AccessDenied, BodyTooLarge, InvalidParameters, MethodNotAllowed, NotFound

#: Bodies of the calls that take parameters (and of those that take none, which are read
#: and dropped) may be this long; message bodies get ``[limits] max_request_bytes``.
PARAMETER_BODY_BYTES = 64 * 1024
#: Metric labels of methods come from this set; any other method counts as "other".
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
    signable: bool = False  # a signed URL of the queue may grant it


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
#: A CORS preflight (queuey.cors): answered from its head, by no route of the app.
PREFLIGHT = "preflight"
PREFLIGHT_SPEC = RouteSpec("preflight", Access.ANYONE, BodyUse.NONE, status=204)


class Gate:
    """Route, authorization and size of a request, from its method, target and headers."""

    def __init__(self, routes: Map, specs: Mapping[str, RouteSpec], core: Queuey, config: Config) -> None:
        self._routes = routes.bind("queuey")
        self._specs = specs
        self._core = core
        self._message_limit = config.max_request_bytes
        self.cors = CorsPolicy(config.cors_allow_origins)

    def admit(self, method: bytes, target: bytes, headers: Headers, length: int | None) -> Admission:
        """The admission of this head, or the QueueyError to answer it with.

        ``length`` is the declared Content-Length (None for a chunked body).
        Checks go in the API's order: route (404, 405), key (401), application
        (404), right to act (401, 403), then size (413).
        """
        if self.cors.is_preflight(method, headers):
            return self._preflight(target, headers)
        endpoint, values = self._match(method, target)
        spec = self._specs[endpoint]
        principal = None
        signed = self._signed(target)
        if signed is not None:
            authorization = headers.getRawHeaders(b"authorization")
            if authorization is not None:  # a key sent along must still be valid
                self._core.authenticate(authorization[0].decode("latin-1"))
            if not spec.signable:
                raise AccessDenied("A signed URL grants only reading and posting the messages of its queue.")
            principal = self._core.check_signature(values["application"], values["queue"],
                                                   method.decode("ascii"), signed)
        elif spec.access is not Access.ANYONE:
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

    def _preflight(self, target: bytes, headers: Headers) -> Admission:
        """A preflight for a route that exists, from an allowed origin: what to answer it with."""
        self._match(self.cors.requested_method(headers), target)  # 404 or 405 as for the request itself
        path = target.split(b"?", 1)[0].decode("ascii")
        methods = sorted(m for m in self._routes.allowed_methods(path) if m not in ("HEAD", "OPTIONS"))
        answer = self.cors.preflight_headers(headers, methods)
        return Admission(PREFLIGHT, PREFLIGHT_SPEC, {name.decode(): value.decode() for name, value in answer.items()},
                         None, PARAMETER_BODY_BYTES)

    @staticmethod
    def _signed(target: bytes) -> dict[str, str] | None:
        """The query parameters of a signed URL (one with a ``signature``), else None."""
        if b"signature=" not in target:
            return None
        params = query_params(target)
        return params if "signature" in params else None

    def _match(self, method: bytes, target: bytes) -> tuple[str, dict[str, str]]:
        path = target.split(b"?", 1)[0]
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
