"""CORS: answers to allowed origins say so (refusals too); preflights are answered from the head."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from queuey.config import Config
from queuey.testing import DEFAULT_KEYS
from tests.test_http import HTTPCase

PAGE = "http://page.example:8000"


class CorsTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS, cors_allow_origins=(PAGE, "https://other.example"))

    @defer.inlineCallbacks
    def raw(self, method: str, path: str, **headers: str) -> Any:
        response = yield self.memory.treq.request(method, self.memory.url(path), headers=headers)
        yield response.content()
        return response.code, {name.lower(): values[0] for name, values in response.headers.getAllRawHeaders()}

    @defer.inlineCallbacks
    def test_a_preflight_from_an_allowed_origin(self) -> Any:
        code, headers = yield self.raw("OPTIONS", "/v1/queuey/q", Origin=PAGE, **{
            "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, x-delay"})
        self.assertEqual(code, 204)
        self.assertEqual(headers[b"access-control-allow-origin"], PAGE.encode())
        self.assertEqual(headers[b"access-control-allow-methods"], b"DELETE, GET, POST, PUT")
        allowed = {h.strip().lower() for h in headers[b"access-control-allow-headers"].split(b",")}
        self.assertLessEqual({b"authorization", b"content-type", b"x-ttl", b"x-partition", b"x-delay",
                              b"last-event-id"}, allowed)
        self.assertEqual(headers[b"access-control-max-age"], b"600")
        self.assertEqual(headers[b"vary"], b"Origin")
        code, headers = yield self.raw("OPTIONS", "/v1/queuey/q/signed", Origin=PAGE,
                                       **{"Access-Control-Request-Method": "POST"})
        self.assertEqual(code, 204)
        self.assertIn(b"POST", headers[b"access-control-allow-methods"])

    @defer.inlineCallbacks
    def test_preflights_that_fail(self) -> Any:
        code, headers = yield self.raw("OPTIONS", "/v1/queuey/q", Origin="http://evil.example",
                                       **{"Access-Control-Request-Method": "GET"})
        self.assertEqual(code, 403)
        self.assertNotIn(b"access-control-allow-origin", headers)
        code, _ = yield self.raw("OPTIONS", "/v1/queuey/q/x/y", Origin=PAGE, **{"Access-Control-Request-Method": "GET"})
        self.assertEqual(code, 404)
        code, headers = yield self.raw("OPTIONS", "/v1/queuey", Origin=PAGE,
                                       **{"Access-Control-Request-Method": "DELETE"})
        self.assertEqual((code, headers[b"allow"]), (405, b"GET, POST"))
        self.assertEqual(headers[b"access-control-allow-origin"], PAGE.encode())  # the page may read why

    @defer.inlineCallbacks
    def test_answers_and_refusals_carry_the_origin(self) -> Any:
        yield self.make_queue()
        code, headers = yield self.raw("GET", "/v1/queuey/q", Origin=PAGE, **self.memory.auth())
        self.assertEqual((code, headers[b"access-control-allow-origin"]), (200, PAGE.encode()))
        self.assertIn(b"Retry-After", headers[b"access-control-expose-headers"])
        code, headers = yield self.raw("GET", "/v1/queuey/q", Origin=PAGE)  # no key: refused by the core
        self.assertEqual((code, headers[b"access-control-allow-origin"]), (401, PAGE.encode()))
        code, headers = yield self.raw("POST", "/v1/queuey/q", Origin=PAGE, Authorization="Application bad")
        self.assertEqual((code, headers[b"access-control-allow-origin"]), (401, PAGE.encode()))  # from the head
        code, headers = yield self.raw("GET", "/v1/queuey/q", Origin="http://evil.example", **self.memory.auth())
        self.assertEqual(code, 200)
        self.assertNotIn(b"access-control-allow-origin", headers)
        code, headers = yield self.raw("GET", "/v1/queuey/q", **self.memory.auth())  # no Origin: no CORS
        self.assertNotIn(b"access-control-allow-origin", headers)


class AnyOriginTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS, cors_allow_origins=("*",))

    @defer.inlineCallbacks
    def test_any_origin(self) -> Any:
        response = yield self.memory.treq.request("OPTIONS", self.memory.url("/v1/queuey"), headers={
            "Origin": "http://anywhere.example", "Access-Control-Request-Method": "GET"})
        self.assertEqual(response.code, 204)
        self.assertEqual(response.headers.getRawHeaders("access-control-allow-origin"), ["*"])


class NoCorsTests(HTTPCase):
    @defer.inlineCallbacks
    def test_without_allow_origins_nothing_changes(self) -> Any:
        response = yield self.memory.treq.request("OPTIONS", self.memory.url("/v1/queuey"), headers={
            "Origin": PAGE, "Access-Control-Request-Method": "GET"})
        yield response.content()
        self.assertEqual(response.code, 405)
        self.assertIsNone(response.headers.getRawHeaders("access-control-allow-origin"))
