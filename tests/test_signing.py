"""Signed URLs: the owner asks for one; it grants what it names, on that queue, until it expires."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode

from twisted.internet import defer

from queuey.config import Config
from queuey.signing import UrlSigner
from queuey.testing import DEFAULT_KEYS, MemoryQueuey
from tests.test_http import HTTPCase

SECRET = b"a-secret-of-at-least-16-bytes"
OLD_SECRET = b"the-secret-before-the-rotation"


class SigningTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS, signing_secrets=(SECRET, OLD_SECRET), signing_max_expiry=86400)

    @defer.inlineCallbacks
    def signed(self, queue: str = "q", **params: Any) -> Any:
        code, document, _ = yield self.call("POST", f"/v1/queuey/{queue}/signed", body=params or None)
        self.assertEqual(code, 200, document)
        return document

    @defer.inlineCallbacks
    def anonymous(self, method: str, url: str, body: bytes | None = None, **headers: str) -> Any:
        response = yield self.memory.treq.request(method, self.memory.url(url), data=body, headers=headers)
        return response.code, json.loads((yield response.content()))

    @staticmethod
    def altered(url: str, **changes: str) -> str:
        path, _, query = url.partition("?")
        params = dict(parse_qsl(query))
        params.update(changes)
        return f"{path}?{urlencode(params)}"

    @defer.inlineCallbacks
    def test_the_owner_gets_a_url_that_reads_a_private_queue(self) -> Any:
        yield self.make_queue()
        yield self.post(b"secret")
        code, _ = yield self.anonymous("GET", "/v1/queuey/q")
        self.assertEqual(code, 401)
        document = yield self.signed(methods="GET", expires_in="600")
        self.assertEqual(document["methods"], ["GET"])
        self.assertEqual(document["expires"], int(self.memory.clock.seconds()) + 600)
        self.assertTrue(document["url"].startswith("/v1/queuey/q?"))
        code, page = yield self.anonymous("GET", document["url"] + "&limit=5")
        self.assertEqual((code, [m["body"] for m in page["messages"]]), (200, ["secret"]))
        key = page["messages"][0]["message_id"]
        path, _, query = document["url"].partition("?")
        code, page = yield self.anonymous("GET", f"{path}/{key}?{query}")  # by id, under the same queue
        self.assertEqual((code, len(page["messages"])), (200, 1))

    @defer.inlineCallbacks
    def test_it_grants_only_what_it_names(self) -> Any:
        yield self.make_queue()
        yield self.make_queue("other")
        url = (yield self.signed(methods="GET"))["url"]
        code, document = yield self.anonymous("POST", url, b"m", **{"Content-Type": "text/plain"})
        self.assertEqual((code, list(document["error_msg"])), (403, ["AccessDenied"]))
        widened = self.altered(url, methods="GET,POST")
        code, _ = yield self.anonymous("POST", widened, b"m", **{"Content-Type": "text/plain"})
        self.assertEqual(code, 403)
        code, _ = yield self.anonymous("GET", url.replace("/v1/queuey/q?", "/v1/queuey/other?"))
        self.assertEqual(code, 403)
        code, _ = yield self.anonymous("GET", url.replace("/v1/queuey/q?", "/v1/other/q?"))
        self.assertIn(code, (403, 404))
        code, _ = yield self.anonymous("DELETE", url)  # deleting the queue is never granted
        self.assertEqual(code, 403)
        code, _ = yield self.anonymous("GET", url, Authorization="Application wrong")
        self.assertEqual(code, 401)
        posting = (yield self.signed(methods="GET,POST"))["url"]
        code, document = yield self.anonymous("POST", posting, b"via url", **{"Content-Type": "text/plain"})
        self.assertEqual(code, 201, document)

    @defer.inlineCallbacks
    def test_expired_forged_or_extended_is_403(self) -> Any:
        yield self.make_queue()
        url = (yield self.signed(expires_in="60"))["url"]
        path, _, query = url.partition("?")
        params = dict(parse_qsl(query))
        for changed in (self.altered(url, expires=str(int(params["expires"]) + 3600)),
                        self.altered(url, signature=params["signature"][:-2] + "AA"),
                        self.altered(url, signature=""),
                        f"{path}?methods=GET&expires={params['expires']}&signature=" + "A" * 43):
            code, document = yield self.anonymous("GET", changed)
            self.assertEqual((code, list(document["error_msg"])), (403, ["AccessDenied"]), changed)
        self.memory.advance(59)
        self.assertEqual((yield self.anonymous("GET", url))[0], 200)
        self.memory.advance(2)
        code, document = yield self.anonymous("GET", url)
        self.assertEqual(code, 403)
        self.assertIn("expired", document["error_msg"]["AccessDenied"])

    @defer.inlineCallbacks
    def test_a_url_signed_before_a_rotation_still_holds(self) -> Any:
        yield self.make_queue()
        expires = int(self.memory.clock.seconds()) + 60
        url = UrlSigner([OLD_SECRET]).sign("queuey", "q", ["GET"], expires).url
        self.assertEqual((yield self.anonymous("GET", url))[0], 200)
        url = UrlSigner([b"never-configured-here-at-all"]).sign("queuey", "q", ["GET"], expires).url
        self.assertEqual((yield self.anonymous("GET", url))[0], 403)

    @defer.inlineCallbacks
    def test_asking_is_the_owners_right_and_checked(self) -> Any:
        yield self.make_queue()
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed", app="other")), 403, "AccessDenied")
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed", app=None)), 401, "MissingApplicationKey")
        self.assertError((yield self.call("POST", "/v1/queuey/nope/signed")), 404, "NotFound")
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed", body={"methods": "DELETE"})), 400,
                         "methods")
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed", body={"expires_in": "86401"})), 400,
                         "expires_in")
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed", json_body={"methods": ["GET"],
                                                                                   "for": "me"})), 400, "for")
        document = yield self.signed()  # defaults: GET, an hour
        self.assertEqual((document["methods"], document["expires"] - int(self.memory.clock.seconds())),
                         (["GET"], 3600))


class UnsignedServerTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS)

    @defer.inlineCallbacks
    def test_without_a_secret_there_are_no_signed_urls(self) -> Any:
        yield self.make_queue()
        self.assertError((yield self.call("POST", "/v1/queuey/q/signed")), 404, "NotFound")
        memory = MemoryQueuey(SigningTests.config, clock=self.memory.clock, store=self.memory.store)
        response = yield memory.treq.post(memory.url("/v1/queuey/q/signed"), headers=memory.auth())
        url = json.loads((yield response.content()))["url"]
        code, document, _ = yield self.call("GET", url, app=None)
        self.assertEqual((code, list(document["error_msg"])), (403, ["AccessDenied"]))
