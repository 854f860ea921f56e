"""Every endpoint of shared/API.md and its bad inputs, through the real app in memory."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import Config
from queuey.metrics import Metrics
from queuey.storage.sqlite import SQLiteStore
from queuey.testing import DEFAULT_KEYS, MemoryQueuey


class HTTPCase(unittest.TestCase):
    config = Config(application_keys=DEFAULT_KEYS)

    def setUp(self) -> None:
        self.memory = MemoryQueuey(self.config)
        self.addCleanup(self.memory.close)

    @defer.inlineCallbacks
    def call(self, method: str, path: str, app: str | None = "queuey", body: Any = None,
             headers: dict[str, str] | None = None, json_body: Any = None, **kwargs: Any) -> Any:
        """(status, parsed JSON, response) of one request."""
        all_headers = dict(self.memory.auth(app)) if app else {}
        all_headers.update(headers or {})
        if json_body is not None:
            body = json.dumps(json_body).encode()
            all_headers.setdefault("Content-Type", "application/json")
        response = yield self.memory.treq.request(method, self.memory.url(path), data=body,
                                                  headers=all_headers, **kwargs)
        content = yield response.content()
        self.assertEqual(response.headers.getRawHeaders("content-type"), [
            Metrics.content_type if path == "/metrics" else "application/json"])
        document = content.decode() if path == "/metrics" else json.loads(content)
        if response.code >= 500:
            self.assertNotIn("Traceback", content.decode())
        return response.code, document, response

    @defer.inlineCallbacks
    def make_queue(self, name: str = "q", **params: Any) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey", body={"queue_name": name, **params})
        self.assertEqual(code, 201, body)
        return body

    @defer.inlineCallbacks
    def post(self, body: bytes = b"hello", queue: str = "q", **headers: str) -> Any:
        code, document, _ = yield self.call("POST", f"/v1/queuey/{queue}", body=body,
                                            headers={"Content-Type": "text/plain", **headers})
        self.assertEqual(code, 201, document)
        return document["messages"][0]

    def assertError(self, result: Any, code: int, key: str) -> None:
        status, body, _ = result
        self.assertEqual(status, code, body)
        self.assertEqual(body["status"], "error")
        self.assertIn(key, body["error_msg"])
        self.assertIsInstance(body["error_msg"][key], str)


class QueueTests(HTTPCase):
    @defer.inlineCallbacks
    def test_create_defaults(self) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey")
        self.assertEqual(code, 201)
        self.assertEqual(len(body["queue_name"]), 32)
        self.assertEqual((body["status"], body["partitions"], body["type"], body["consistency"], body["principles"]),
                         ("ok", 1, "user", "strong", []))
        self.assertEqual(body["created"], "1700000000.0000000")

    @defer.inlineCallbacks
    def test_create_form_and_json(self) -> Any:
        form = yield self.make_queue("form", partitions="3", type="public", consistency="weak",
                                     principles="app:other,app:queuey")
        self.assertEqual((form["partitions"], form["type"], form["consistency"], form["principles"]),
                         (3, "public", "weak", ["app:other", "app:queuey"]))
        code, body, _ = yield self.call("POST", "/v1/queuey", json_body={
            "queue_name": "js", "partitions": 5, "principals": "app:other"})
        self.assertEqual(code, 201)
        self.assertEqual((body["partitions"], body["principles"]), (5, ["app:other"]))

    @defer.inlineCallbacks
    def test_create_duplicate_is_409(self) -> Any:
        yield self.make_queue("dup", partitions="2")
        result = yield self.call("POST", "/v1/queuey", body={"queue_name": "dup"})
        self.assertError(result, 409, "QueueExists")
        _, listing, _ = yield self.call("GET", "/v1/queuey?details=true")
        self.assertEqual(listing["queues"][0]["partitions"], 2)

    @defer.inlineCallbacks
    def test_create_bad_parameters(self) -> Any:
        cases = [({"partitions": "0"}, "partitions"), ({"partitions": "201"}, "partitions"),
                 ({"partitions": "x"}, "partitions"), ({"type": "private"}, "type"),
                 ({"consistency": "eventual"}, "consistency"), ({"principles": "user:bob"}, "principles"),
                 ({"principles": "app:"}, "principles"), ({"queue_name": "a" * 51}, "queue_name"),
                 ({"queue_name": "bad name"}, "queue_name"), ({"colour": "red"}, "colour")]
        for params, key in cases:
            result = yield self.call("POST", "/v1/queuey", body=params)
            self.assertError(result, 400, key)
        result = yield self.call("POST", "/v1/queuey", body=b"[1, 2]", headers={"Content-Type": "application/json"})
        self.assertError(result, 400, "body")
        result = yield self.call("POST", "/v1/queuey", body=b"{nope", headers={"Content-Type": "application/json"})
        self.assertError(result, 400, "body")

    @defer.inlineCallbacks
    def test_several_errors_at_once(self) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey", body={"partitions": "0", "type": "x"})
        self.assertEqual(code, 400)
        self.assertEqual(set(body["error_msg"]), {"partitions", "type"})

    @defer.inlineCallbacks
    def test_list_pages_and_details(self) -> Any:
        for name in ("c", "a", "b", "d"):
            yield self.make_queue(name)
        _, first, _ = yield self.call("GET", "/v1/queuey?limit=2")
        self.assertEqual(first, {"status": "ok", "queues": [{"queue_name": "a"}, {"queue_name": "b"}]})
        _, second, _ = yield self.call("GET", "/v1/queuey?limit=2&offset=b&details=true")
        self.assertEqual([q["queue_name"] for q in second["queues"]], ["c", "d"])
        self.assertEqual(set(second["queues"][0]), {"queue_name", "partitions", "type", "consistency",
                                                    "principles", "created"})
        _, empty, _ = yield self.call("GET", "/v1/queuey?offset=d")
        self.assertEqual(empty["queues"], [])

    @defer.inlineCallbacks
    def test_list_include_count(self) -> Any:
        yield self.make_queue("a", partitions="2")
        yield self.post(queue="a", **{"X-Partition": "1"})
        yield self.post(queue="a", **{"X-Partition": "2"})
        yield self.post(queue="a", **{"X-Partition": "2", "X-TTL": "5"})
        _, listing, _ = yield self.call("GET", "/v1/queuey?include_count=true")
        self.assertEqual(listing["queues"], [{"queue_name": "a", "count": 3}])

    @defer.inlineCallbacks
    def test_list_count_leaves_out_expired(self) -> Any:
        yield self.make_queue("a", partitions="2")
        yield self.post(queue="a", **{"X-Partition": "2"})
        yield self.post(queue="a", **{"X-Partition": "2", "X-TTL": "5"})
        self.memory.advance(6)
        _, listing, _ = yield self.call("GET", "/v1/queuey?include_count=true")
        self.assertEqual(listing["queues"][0]["count"], 1)

    @defer.inlineCallbacks
    def test_list_bad_parameters(self) -> Any:
        for query, key in [("limit=0", "limit"), ("limit=1001", "limit"), ("details=maybe", "details"),
                           ("include_count=2x", "include_count"), ("offset=" + "x" * 60, "offset")]:
            result = yield self.call("GET", f"/v1/queuey?{query}")
            self.assertError(result, 400, key)

    @defer.inlineCallbacks
    def test_update(self) -> Any:
        yield self.make_queue("u", partitions="2", principles="app:other")
        code, body, _ = yield self.call("PUT", "/v1/queuey/u", body={"partitions": "4", "type": "public"})
        self.assertEqual(code, 200)
        self.assertEqual((body["partitions"], body["type"], body["consistency"], body["principles"]),
                         (4, "public", "strong", ["app:other"]))
        code, body, _ = yield self.call("PUT", "/v1/queuey/u", json_body={"principles": ""})
        self.assertEqual((code, body["principles"]), (200, []))
        result = yield self.call("PUT", "/v1/queuey/u", body={"partitions": "3"})
        self.assertError(result, 400, "partitions")
        result = yield self.call("PUT", "/v1/queuey/u", body={"queue_name": "renamed"})
        self.assertError(result, 400, "queue_name")
        result = yield self.call("PUT", "/v1/queuey/missing", body={"type": "public"})
        self.assertError(result, 404, "NotFound")

    @defer.inlineCallbacks
    def test_delete(self) -> Any:
        yield self.make_queue("d")
        yield self.post(queue="d")
        code, body, _ = yield self.call("DELETE", "/v1/queuey/d")
        self.assertEqual((code, body), (200, {"status": "ok"}))
        result = yield self.call("GET", "/v1/queuey/d")
        self.assertError(result, 404, "NotFound")
        result = yield self.call("DELETE", "/v1/queuey/d")
        self.assertError(result, 404, "NotFound")
        yield self.make_queue("d")
        _, body, _ = yield self.call("GET", "/v1/queuey/d")
        self.assertEqual(body["messages"], [])


class AccessTests(HTTPCase):
    @defer.inlineCallbacks
    def test_missing_key(self) -> Any:
        for method, path in [("GET", "/v1/queuey"), ("POST", "/v1/queuey"), ("GET", "/v1/queuey/q")]:
            result = yield self.call(method, path, app=None)
            if path == "/v1/queuey/q":
                self.assertError(result, 404, "NotFound")  # no such queue comes first
            else:
                self.assertError(result, 401, "MissingApplicationKey")
        yield self.make_queue("q")
        result = yield self.call("GET", "/v1/queuey/q", app=None)
        self.assertError(result, 401, "MissingApplicationKey")

    @defer.inlineCallbacks
    def test_invalid_key_even_on_public(self) -> Any:
        yield self.make_queue("pub", type="public")
        for header in ("Application wrong", "Bearer queuey-key", "Application", "queuey-key"):
            result = yield self.call("GET", "/v1/queuey/pub", app=None, headers={"Authorization": header})
            self.assertError(result, 401, "InvalidApplicationKey")

    @defer.inlineCallbacks
    def test_other_application_forbidden(self) -> Any:
        yield self.make_queue("q")
        for method, path in [("GET", "/v1/queuey"), ("POST", "/v1/queuey"), ("PUT", "/v1/queuey/q"),
                             ("DELETE", "/v1/queuey/q"), ("POST", "/v1/queuey/q"), ("GET", "/v1/queuey/q")]:
            result = yield self.call(method, path, app="other", body=b"x")
            self.assertError(result, 403, "AccessDenied")
        # ... and none of it happened.
        _, listing, _ = yield self.call("GET", "/v1/queuey?details=true&include_count=true")
        self.assertEqual([(q["queue_name"], q["partitions"], q["type"], q["count"]) for q in listing["queues"]],
                         [("q", 1, "user", 0)])

    @defer.inlineCallbacks
    def test_rotated_keys(self) -> Any:
        for key in DEFAULT_KEYS["other"]:
            code, _, _ = yield self.call("GET", "/v1/other", app=None, headers={"Authorization": f"Application {key}"})
            self.assertEqual(code, 200)
        # Every key of an application speaks for it: what one key creates, the other sees.
        first, second = ({"Authorization": f"Application {key}"} for key in DEFAULT_KEYS["other"])
        code, _, _ = yield self.call("POST", "/v1/other", app=None, headers=first, body={"queue_name": "shared"})
        self.assertEqual(code, 201)
        _, listing, _ = yield self.call("GET", "/v1/other", app=None, headers=second)
        self.assertEqual(listing["queues"], [{"queue_name": "shared"}])

    @defer.inlineCallbacks
    def test_unknown_application(self) -> Any:
        result = yield self.call("GET", "/v1/nobody")
        self.assertError(result, 404, "NotFound")
        result = yield self.call("GET", "/v1/nobody/q", app=None)
        self.assertError(result, 404, "NotFound")

    @defer.inlineCallbacks
    def test_public_queue_read_without_key(self) -> Any:
        yield self.make_queue("pub", type="public")
        sent = yield self.post(queue="pub")
        code, body, _ = yield self.call("GET", "/v1/queuey/pub", app=None)
        self.assertEqual((code, [m["message_id"] for m in body["messages"]]), (200, [sent["key"]]))
        code, body, _ = yield self.call("GET", f"/v1/queuey/pub/{sent['key']}", app="other")
        self.assertEqual(len(body["messages"]), 1)
        # Public means readable, not writable or deletable by others.
        result = yield self.call("POST", "/v1/queuey/pub", app=None, body=b"x")
        self.assertError(result, 401, "MissingApplicationKey")
        result = yield self.call("DELETE", f"/v1/queuey/pub/{sent['key']}", app="other")
        self.assertError(result, 403, "AccessDenied")

    @defer.inlineCallbacks
    def test_principles(self) -> Any:
        yield self.make_queue("p", principles="app:other")
        sent = yield self.post(queue="p")  # the owner still posts
        result = yield self.call("GET", "/v1/queuey/p")  # but does not read
        self.assertError(result, 403, "AccessDenied")
        code, body, _ = yield self.call("GET", "/v1/queuey/p", app="other")
        self.assertEqual((code, len(body["messages"])), (200, 1))
        code, _, _ = yield self.call("DELETE", f"/v1/queuey/p/{sent['key']}", app="other")
        self.assertEqual(code, 200)
        code, _, _ = yield self.call("PUT", "/v1/queuey/p", body={"type": "public"})  # and manages
        self.assertEqual(code, 200)


class PostTests(HTTPCase):
    def setUp(self) -> Any:
        super().setUp()
        return self.make_queue("q", partitions="3")

    @defer.inlineCallbacks
    def test_single(self) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey/q", body=b"\x00binary\xff",
                                        headers={"Content-Type": "application/octet-stream", "X-Partition": "2",
                                                 "X-TTL": "60"})
        self.assertEqual(code, 201)
        [message] = body["messages"]
        self.assertEqual(message["partition"], 2)
        self.assertEqual(message["timestamp"], timeuuid.timestamp_of(timeuuid.parse_message_id(message["key"])))
        _, read, _ = yield self.call("GET", "/v1/queuey/q?partitions=2")
        [stored] = read["messages"]
        self.assertEqual((stored["content_type"], stored["body_encoding"], stored["body"]),
                         ("application/octet-stream", "base64", "AGJpbmFyef8="))

    @defer.inlineCallbacks
    def test_batch_in_order(self) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
            {"body": "one", "partition": 3}, {"body": "two", "ttl": 10, "partition": 3},
            {"body": "three", "partition": 1, "content_type": "application/json"}]})
        self.assertEqual(code, 201)
        self.assertEqual([m["partition"] for m in body["messages"]], [3, 3, 1])
        keys = [m["key"] for m in body["messages"]]
        self.assertEqual(len(set(keys)), 3)
        _, read, _ = yield self.call("GET", "/v1/queuey/q?partitions=3,1")
        self.assertEqual([(m["body"], m["partition"], m["content_type"]) for m in read["messages"]],
                         [("one", 3, "text/plain"), ("two", 3, "text/plain"), ("three", 1, "application/json")])

    @defer.inlineCallbacks
    def test_random_partitions(self) -> Any:
        code, body, _ = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "x"}] * 60})
        self.assertEqual(code, 201)
        self.assertEqual({m["partition"] for m in body["messages"]}, {1, 2, 3})

    @defer.inlineCallbacks
    def test_bad_batch_stores_nothing(self) -> Any:
        cases = [({"messages": [{"body": "ok"}, {"body": "x", "partition": 4}]}, "1.partition"),
                 ({"messages": [{"body": "ok"}, {"body": "x", "ttl": 0}]}, "1.ttl"),
                 ({"messages": [{"body": ""}]}, "0.body"), ({"messages": [{"ttl": 5}]}, "0.body"),
                 ({"messages": ["text"]}, "0"), ({"messages": []}, "messages"),
                 ({"messages": [{"body": "x"}] * 1001}, "messages"), ({"bodies": []}, "messages"),
                 ({"messages": [{"body": "x", "ttl": 2 ** 25 + 1}]}, "0.ttl"),
                 ({"messages": [{"body": "x", "colour": "red"}]}, "0.colour")]
        for document, key in cases:
            result = yield self.call("POST", "/v1/queuey/q", json_body=document)
            self.assertError(result, 400, key)
        result = yield self.call("POST", "/v1/queuey/q", body=b"{", headers={"Content-Type": "application/json"})
        self.assertError(result, 400, "body")
        _, listing, _ = yield self.call("GET", "/v1/queuey?include_count=true")
        self.assertEqual(listing["queues"][0]["count"], 0)

    @defer.inlineCallbacks
    def test_bad_single(self) -> Any:
        for headers, key in [({"X-TTL": "0"}, "ttl"), ({"X-TTL": str(2 ** 25 + 1)}, "ttl"), ({"X-TTL": "soon"}, "ttl"),
                             ({"X-Partition": "4"}, "partition"), ({"X-Partition": "0"}, "partition")]:
            result = yield self.call("POST", "/v1/queuey/q", body=b"x", headers=headers)
            self.assertError(result, 400, key)
        result = yield self.call("POST", "/v1/queuey/q", body=b"")
        self.assertError(result, 400, "body")
        result = yield self.call("POST", "/v1/queuey/missing", body=b"x")
        self.assertError(result, 404, "NotFound")
        result = yield self.call("POST", "/v1/queuey/" + "x" * 51, body=b"x")
        self.assertError(result, 404, "NotFound")

    @defer.inlineCallbacks
    def test_too_large(self) -> Any:
        limit = self.config.max_message_bytes
        yield self.post(b"x" * (limit - len("text/plain")))  # the limit covers body and content type
        result = yield self.call("POST", "/v1/queuey/q", body=b"x" * (limit + 1))
        self.assertError(result, 413, "body")
        result = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
            {"body": "ok"}, {"body": "x" * (limit + 1)}]})
        self.assertError(result, 413, "1.body")


class ReadTests(HTTPCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        yield self.make_queue("q", partitions="2")
        self.sent = []
        for i in range(5):
            self.sent.append((yield self.post(f"m{i}".encode(), **{"X-Partition": "1"})))
            self.memory.advance(1)

    @defer.inlineCallbacks
    def read(self, query: str = "", queue: str = "q") -> Any:
        code, body, _ = yield self.call("GET", f"/v1/queuey/{queue}?{query}")
        self.assertEqual(code, 200, body)
        return [m["body"] for m in body["messages"]]

    @defer.inlineCallbacks
    def test_shape(self) -> Any:
        _, body, _ = yield self.call("GET", "/v1/queuey/q?limit=1")
        self.assertEqual(body["messages"], [{
            "message_id": self.sent[0]["key"], "timestamp": self.sent[0]["timestamp"], "body": "m0",
            "partition": 1, "content_type": "text/plain"}])

    @defer.inlineCallbacks
    def test_since_after_limit_order(self) -> Any:
        self.assertEqual((yield self.read()), ["m0", "m1", "m2", "m3", "m4"])
        self.assertEqual((yield self.read(f"since={self.sent[2]['key']}")), ["m2", "m3", "m4"])
        self.assertEqual((yield self.read(f"since={self.sent[2]['timestamp']}")), ["m2", "m3", "m4"])
        self.assertEqual((yield self.read("since=1700000002.5")), ["m3", "m4"])
        self.assertEqual((yield self.read("since=1700000003")), ["m3", "m4"])
        self.assertEqual((yield self.read(f"after={self.sent[2]['key']}")), ["m3", "m4"])
        self.assertEqual((yield self.read(f"after={self.sent[4]['key']}")), [])
        self.assertEqual((yield self.read("limit=2")), ["m0", "m1"])
        self.assertEqual((yield self.read("order=descending&limit=2")), ["m4", "m3"])
        self.assertEqual((yield self.read(f"order=descending&since={self.sent[3]['key']}")), ["m4", "m3"])
        both = f"since={self.sent[1]['key']}&after={self.sent[3]['key']}"
        self.assertEqual((yield self.read(both)), ["m4"])

    @defer.inlineCallbacks
    def test_partitions(self) -> Any:
        yield self.post(b"p2", **{"X-Partition": "2"})
        self.assertEqual((yield self.read("partitions=2")), ["p2"])
        self.assertEqual((yield self.read("partitions=2,1&limit=1")), ["p2", "m0"])
        self.assertEqual((yield self.read("partitions=all&limit=1")), ["m0", "p2"])

    @defer.inlineCallbacks
    def test_bad_query(self) -> Any:
        for query, key in [("partitions=3", "partitions"), ("partitions=0", "partitions"),
                           ("partitions=1,x", "partitions"), ("since=yesterday", "since"),
                           ("since=-5", "since"), ("after=1234", "after"), ("after=" + "z" * 32, "after"),
                           ("after=" + "0" * 32, "after"), ("limit=0", "limit"), ("limit=1001", "limit"),
                           ("order=up", "order"), ("wait=61", "wait"), ("wait=-1", "wait")]:
            result = yield self.call("GET", f"/v1/queuey/q?{query}")
            self.assertError(result, 400, key)

    @defer.inlineCallbacks
    def test_expired_not_returned(self) -> Any:
        yield self.post(b"short", **{"X-TTL": "2", "X-Partition": "1"})
        self.assertEqual((yield self.read("order=descending&limit=1")), ["short"])
        self.memory.advance(3)
        self.assertEqual((yield self.read("order=descending&limit=1")), ["m4"])


class ReadDelayTests(HTTPCase):
    config = Config(application_keys=DEFAULT_KEYS, delays={"weak": 1.0, "strong": 5.0, "very_strong": 600.0})

    @defer.inlineCallbacks
    def test_messages_appear_after_the_delay(self) -> Any:
        yield self.make_queue("q")
        sent = yield self.post()
        _, body, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual(body["messages"], [])
        self.memory.advance(5)
        _, body, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual([m["message_id"] for m in body["messages"]], [sent["key"]])
        # Reads by id are not delayed.
        yield self.post(b"new")
        _, body, _ = yield self.call("GET", "/v1/queuey/q?order=descending&limit=1")
        self.assertEqual(body["messages"][0]["message_id"], sent["key"])

    @defer.inlineCallbacks
    def test_each_level_has_its_own_delay(self) -> Any:
        """weak 1 s, strong 5 s, very_strong 600 s: a range read returns a message once it is that old;
        a read by id returns it at once."""
        delays = self.config.delays
        sent = {}
        for level in delays:
            yield self.make_queue(level, consistency=level)
            sent[level] = (yield self.post(queue=level))["key"]
        for level in delays:
            _, body, _ = yield self.call("GET", f"/v1/queuey/{level}/{sent[level]}")
            self.assertEqual([m["message_id"] for m in body["messages"]], [sent[level]], level)
        posted = self.memory.clock.seconds()
        # (each id is a tick later than the one before: a message is delay + a few ticks old at d + 0.001)
        for now in sorted({d - 0.1 for d in delays.values()} | {d + 0.001 for d in delays.values()}):
            self.memory.advance(posted + now - self.memory.clock.seconds())
            for level, delay in delays.items():
                _, body, _ = yield self.call("GET", f"/v1/queuey/{level}")
                visible = [m["message_id"] for m in body["messages"]]
                self.assertEqual(visible, [sent[level]] if now >= delay else [], f"{level} after {now} s")


class ByIdTests(HTTPCase):
    @defer.inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        yield self.make_queue("q", partitions="2")
        self.one = yield self.post(b"one", **{"X-Partition": "1"})
        self.two = yield self.post(b"two", **{"X-Partition": "2"})

    @defer.inlineCallbacks
    def test_get(self) -> Any:
        ids = f"{self.one['key']},2%3A{self.two['key']},2:{self.one['key']},{'1' * 12}11e08{'2' * 15}"
        code, body, _ = yield self.call("GET", f"/v1/queuey/q/{ids}")
        self.assertEqual(code, 200)
        self.assertEqual([(m["body"], m["partition"]) for m in body["messages"]], [("one", 1), ("two", 2)])

    @defer.inlineCallbacks
    def test_put_replaces_and_creates(self) -> Any:
        new_id = timeuuid.make_uuid(17_000_000_000_000_000, 1, 2).hex
        code, body, _ = yield self.call("PUT", f"/v1/queuey/q/{self.one['key']},2:{new_id}", body=b"changed",
                                        headers={"Content-Type": "text/x-changed", "X-TTL": "100"})
        self.assertEqual((code, body), (200, {"status": "ok"}))
        _, body, _ = yield self.call("GET", f"/v1/queuey/q/{self.one['key']},2:{new_id}")
        self.assertEqual([(m["message_id"], m["timestamp"], m["body"], m["content_type"]) for m in body["messages"]],
                         [(self.one["key"], self.one["timestamp"], "changed", "text/x-changed"),
                          (new_id, "1700000000.0000000", "changed", "text/x-changed")])

    @defer.inlineCallbacks
    def test_put_ttl_counts_from_now(self) -> Any:
        self.memory.advance(50)
        code, _, _ = yield self.call("PUT", f"/v1/queuey/q/{self.one['key']}", body=b"changed",
                                     headers={"Content-Type": "text/plain", "X-TTL": "100"})
        self.assertEqual(code, 200)
        self.memory.advance(99)
        _, body, _ = yield self.call("GET", f"/v1/queuey/q/{self.one['key']}")
        self.assertEqual([m["body"] for m in body["messages"]], ["changed"])
        self.memory.advance(2)
        _, body, _ = yield self.call("GET", f"/v1/queuey/q/{self.one['key']}")
        self.assertEqual(body["messages"], [])

    @defer.inlineCallbacks
    def test_delete(self) -> Any:
        code, _, _ = yield self.call("DELETE", f"/v1/queuey/q/{self.one['key']},2:{self.two['key']}")
        self.assertEqual(code, 200)
        _, body, _ = yield self.call("GET", "/v1/queuey/q?partitions=all")
        self.assertEqual(body["messages"], [])

    @defer.inlineCallbacks
    def test_malformed_ids(self) -> Any:
        for ids in ("nothex", "x:" + self.one["key"], "3:" + self.one["key"], self.one["key"] + ",",
                    "0" * 32, self.one["key"][:-1]):
            for method in ("GET", "DELETE", "PUT"):
                result = yield self.call(method, f"/v1/queuey/q/{ids}", body=b"x")
                self.assertError(result, 400, "messages")

    @defer.inlineCallbacks
    def test_put_bad_ttl_and_empty(self) -> Any:
        result = yield self.call("PUT", f"/v1/queuey/q/{self.one['key']}", body=b"x", headers={"X-TTL": "0"})
        self.assertError(result, 400, "ttl")
        result = yield self.call("PUT", f"/v1/queuey/q/{self.one['key']}", body=b"")
        self.assertError(result, 400, "body")


class RoutingAndOperationsTests(HTTPCase):
    @defer.inlineCallbacks
    def test_unknown_route_is_json_404(self) -> Any:
        for path in ("/", "/v2/queuey", "/v1/queuey/q/ids/more", "/favicon.ico"):
            result = yield self.call("GET", path)
            self.assertError(result, 404, "NotFound")

    @defer.inlineCallbacks
    def test_wrong_method_is_json_405(self) -> Any:
        for method, path, allowed in [("DELETE", "/v1/queuey", "GET, POST"),
                                      ("PATCH", "/v1/queuey/q", "DELETE, GET, POST, PUT"),
                                      ("POST", "/v1/queuey/q/abc", "DELETE, GET, PUT"),
                                      ("POST", "/__heartbeat__", "GET")]:
            result = yield self.call(method, path)
            self.assertError(result, 405, "MethodNotAllowed")
            self.assertEqual(result[2].headers.getRawHeaders("allow"), [allowed])

    @defer.inlineCallbacks
    def test_operations(self) -> Any:
        code, body, _ = yield self.call("GET", "/__lbheartbeat__", app=None)
        self.assertEqual((code, body), (200, {"status": "ok"}))
        code, body, _ = yield self.call("GET", "/__heartbeat__", app=None)
        self.assertEqual((code, body), (200, {"status": "ok", "checks": {"storage": "ok"}}))
        code, body, _ = yield self.call("GET", "/__version__", app=None)
        self.assertEqual((code, body["name"], body["version"]), (200, "queuey", "1.0.0.dev0"))
        self.assertIn("source", body)

    @defer.inlineCallbacks
    def test_heartbeat_fails_with_storage(self) -> Any:
        """The store closed under the app: heartbeat and requests answer 503, counted in /metrics."""
        yield self.memory.opened
        yield self.memory.store.close()
        code, body, _ = yield self.call("GET", "/__heartbeat__", app=None)
        self.assertEqual(code, 503)
        self.assertIn(self.memory.store.name, body["checks"]["storage"].lower())
        result = yield self.call("GET", "/v1/queuey/q")
        self.assertError(result, 503, "StorageUnavailable")
        self.assertEqual(result[2].headers.getRawHeaders("retry-after"), ["5"])
        _, text, _ = yield self.call("GET", "/metrics", app=None)
        self.assertIn("queuey_storage_errors_total 2.0", text)

    @defer.inlineCallbacks
    def test_metrics(self) -> Any:
        yield self.make_queue("q")
        yield self.post()
        yield self.call("GET", "/v1/queuey/q")
        yield self.call("GET", "/v1/queuey/missing")
        code, text, _ = yield self.call("GET", "/metrics", app=None)
        self.assertEqual(code, 200)
        for line in ('queuey_requests_total{method="POST",route="application",status="201"} 1.0',
                     'queuey_requests_total{method="GET",route="queue",status="404"} 1.0',
                     "queuey_messages_posted_total 1.0", "queuey_messages_read_total 1.0",
                     "queuey_longpolls_held 0.0", 'queuey_request_duration_seconds_count{route="queue"} 3.0'):
            self.assertIn(line, text)


class DefaultsTests(HTTPCase):
    """What a request that leaves something out gets (docs/api.rst)."""

    @defer.inlineCallbacks
    def test_content_type(self) -> Any:
        """application/octet-stream for a single message sent without one; text/plain in a batch."""
        yield self.make_queue("q")
        code, _, _ = yield self.call("POST", "/v1/queuey/q", body=b"raw")
        self.assertEqual(code, 201)
        yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "batched"}]})
        _, read, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual([(m["body"], m["content_type"]) for m in read["messages"]],
                         [("raw", "application/octet-stream"), ("batched", "text/plain")])

    @defer.inlineCallbacks
    def test_ttl_is_three_days(self) -> Any:
        yield self.make_queue("q")
        yield self.post(b"single")
        yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "batched"}]})
        self.memory.advance(259200 - 0.5)
        _, read, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual([m["body"] for m in read["messages"]], ["single", "batched"])
        self.memory.advance(0.5)
        _, read, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual(read["messages"], [])

    @defer.inlineCallbacks
    def test_read_limit_is_100_per_partition(self) -> Any:
        yield self.make_queue("q", partitions="2")
        for partition in (1, 2):
            yield self.call("POST", "/v1/queuey/q", json_body={"messages": [
                {"body": f"{partition}-{i}", "partition": partition} for i in range(101)]})
        _, read, _ = yield self.call("GET", "/v1/queuey/q")
        self.assertEqual([m["body"] for m in read["messages"]], [f"1-{i}" for i in range(100)])
        _, read, _ = yield self.call("GET", "/v1/queuey/q?partitions=all")
        self.assertEqual([m["body"] for m in read["messages"]],
                         [f"{p}-{i}" for p in (1, 2) for i in range(100)])

    @defer.inlineCallbacks
    def test_list_limit_is_100(self) -> Any:
        names = [f"q{i:03d}" for i in range(101)]
        for name in names:
            yield self.make_queue(name)
        _, listing, _ = yield self.call("GET", "/v1/queuey")
        self.assertEqual([q["queue_name"] for q in listing["queues"]], names[:100])


class UpperCaseIdTests(HTTPCase):
    """Ids are accepted in upper case wherever one is given; answers give them in lower case."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        super().setUp()
        yield self.make_queue("q", partitions="2")
        self.first = yield self.post(b"first", **{"X-Partition": "2"})
        self.second = yield self.post(b"second", **{"X-Partition": "2"})
        self.upper = self.first["key"].upper()

    @defer.inlineCallbacks
    def test_by_id(self) -> Any:
        _, body, _ = yield self.call("GET", f"/v1/queuey/q/2:{self.upper}")
        self.assertEqual([(m["message_id"], m["body"]) for m in body["messages"]], [(self.first["key"], "first")])
        code, _, _ = yield self.call("PUT", f"/v1/queuey/q/2:{self.upper}", body=b"changed",
                                     headers={"Content-Type": "text/plain"})
        self.assertEqual(code, 200)
        _, body, _ = yield self.call("GET", f"/v1/queuey/q/2:{self.first['key']}")
        self.assertEqual([m["body"] for m in body["messages"]], ["changed"])
        code, _, _ = yield self.call("DELETE", f"/v1/queuey/q/2:{self.upper}")
        self.assertEqual(code, 200)
        _, body, _ = yield self.call("GET", "/v1/queuey/q?partitions=2")
        self.assertEqual([m["body"] for m in body["messages"]], ["second"])

    @defer.inlineCallbacks
    def test_since_and_after(self) -> Any:
        _, body, _ = yield self.call("GET", f"/v1/queuey/q?partitions=2&since={self.upper}")
        self.assertEqual([m["body"] for m in body["messages"]], ["first", "second"])
        _, body, _ = yield self.call("GET", f"/v1/queuey/q?partitions=2&after={self.upper}")
        self.assertEqual([m["body"] for m in body["messages"]], ["second"])


class AccessRuleTests(HTTPCase):
    """The order of the access checks, and what a listed principal may and may not do."""

    config = Config(application_keys={**DEFAULT_KEYS, "third": ("third-key",)})

    @defer.inlineCallbacks
    def test_invalid_key_comes_before_an_unknown_application(self) -> Any:
        for method, path in [("GET", "/v1/nobody"), ("POST", "/v1/nobody"), ("GET", "/v1/nobody/q"),
                             ("DELETE", "/v1/nobody/q/" + "a" * 32)]:
            result = yield self.call(method, path, app=None, headers={"Authorization": "Application wrong"})
            self.assertError(result, 401, "InvalidApplicationKey")

    @defer.inlineCallbacks
    def test_listed_principal_reads_but_does_not_post_or_manage(self) -> Any:
        yield self.make_queue("p", principles="app:other")
        sent = yield self.post(queue="p")
        code, body, _ = yield self.call("GET", f"/v1/queuey/p/{sent['key']}", app="other")
        self.assertEqual((code, [m["body"] for m in body["messages"]]), (200, ["hello"]))
        for method, path, body in [("POST", "/v1/queuey/p", b"more"), ("PUT", f"/v1/queuey/p/{sent['key']}", b"new"),
                                   ("PUT", "/v1/queuey/p", {"type": "public"}), ("DELETE", "/v1/queuey/p", None),
                                   ("GET", "/v1/queuey", None), ("POST", "/v1/queuey", {"queue_name": "mine"})]:
            result = yield self.call(method, path, app="other", body=body, headers={"Content-Type": "text/plain"}
                                     if isinstance(body, bytes) else None)
            self.assertError(result, 403, "AccessDenied")
        _, listing, _ = yield self.call("GET", "/v1/queuey?details=true")
        self.assertEqual([(q["queue_name"], q["type"]) for q in listing["queues"]], [("p", "user")])
        _, body, _ = yield self.call("GET", "/v1/queuey/p", app="other")
        self.assertEqual([m["body"] for m in body["messages"]], ["hello"])

    @defer.inlineCallbacks
    def test_third_application_is_refused(self) -> Any:
        """Neither the owner nor listed: no reading, no deleting, even of a message it names."""
        yield self.make_queue("p", principles="app:other")
        sent = yield self.post(queue="p")
        for method, path in [("GET", "/v1/queuey/p"), ("GET", f"/v1/queuey/p/{sent['key']}"),
                             ("DELETE", f"/v1/queuey/p/{sent['key']}")]:
            result = yield self.call(method, path, app="third")
            self.assertError(result, 403, "AccessDenied")
        _, body, _ = yield self.call("GET", "/v1/queuey/p", app="other")
        self.assertEqual([m["message_id"] for m in body["messages"]], [sent["key"]])


class PartitionGrowthTests(HTTPCase):
    @defer.inlineCallbacks
    def test_grown_partitions_take_and_give_messages(self) -> Any:
        yield self.make_queue("q", partitions="2")
        yield self.post(b"one", **{"X-Partition": "1"})
        result = yield self.call("POST", "/v1/queuey/q", body=b"x", headers={"X-Partition": "4"})
        self.assertError(result, 400, "partition")
        code, settings, _ = yield self.call("PUT", "/v1/queuey/q", body={"partitions": "4"})
        self.assertEqual((code, settings["partitions"]), (200, 4))
        four = yield self.post(b"four", **{"X-Partition": "4"})
        code, _, _ = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "three", "partition": 3}]})
        self.assertEqual(code, 201)
        _, read, _ = yield self.call("GET", "/v1/queuey/q?partitions=4,3")
        self.assertEqual([(m["body"], m["partition"]) for m in read["messages"]], [("four", 4), ("three", 3)])
        _, read, _ = yield self.call("GET", "/v1/queuey/q?partitions=all")
        self.assertEqual([m["body"] for m in read["messages"]], ["one", "three", "four"])
        _, read, _ = yield self.call("GET", f"/v1/queuey/q/4:{four['key']}")
        self.assertEqual([m["body"] for m in read["messages"]], ["four"])
        _, spread, _ = yield self.call("POST", "/v1/queuey/q", json_body={"messages": [{"body": "x"}] * 80})
        self.assertEqual({m["partition"] for m in spread["messages"]}, {1, 2, 3, 4})


class ServerErrorTests(unittest.TestCase):
    """An error nobody foresaw: a 500 that says only that, logged with its traceback."""

    @defer.inlineCallbacks
    def test_unexpected_error_is_a_logged_500(self) -> Any:
        memory = MemoryQueuey(store=_FailingReads(SQLiteStore.in_memory(Clock())))
        self.addCleanup(memory.close)
        response = yield memory.treq.post(memory.url("/v1/queuey"), data={"queue_name": "q"}, headers=memory.auth())
        self.assertEqual(response.code, 201)
        response = yield memory.treq.get(memory.url("/v1/queuey/q"), headers=memory.auth())
        body = yield response.content()
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")), (500, ["application/json"]))
        self.assertEqual(json.loads(body), {"status": "error",
                                            "error_msg": {"ServerError": "Unexpected server error; it was logged."}})
        self.assertNotIn(b"secret detail", body)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        response = yield memory.treq.get(memory.url("/metrics"))
        self.assertIn(b'queuey_requests_total{method="GET",route="queue",status="500"} 1.0', (yield response.content()))


class _FailingReads:
    """A store whose range reads fail in a way nobody foresaw."""

    def __init__(self, store: Any) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    def read_rendered(self, *args: Any) -> defer.Deferred[Any]:  # what a range read calls
        return defer.fail(RuntimeError("secret detail"))


class QueueInfoTests(HTTPCase):
    """GET /v1/{application}/{queue}/info: a reader's view of a queue, refused exactly as reading is."""

    @defer.inlineCallbacks
    def test_answer(self) -> Any:
        yield self.make_queue("jobs", partitions="4", consistency="weak", principles="app:other")
        code, body, _ = yield self.call("GET", "/v1/queuey/jobs/info", app="other")
        self.assertEqual((code, body), (200, {"status": "ok", "queue_name": "jobs", "partitions": 4,
                                              "type": "user", "consistency": "weak"}))

    @defer.inlineCallbacks
    def test_refused_exactly_as_reading(self) -> Any:
        yield self.make_queue("mine")
        yield self.make_queue("pub", type="public")
        yield self.make_queue("listed", principles="app:other")
        callers = {"owner": {}, "other": {}, "no key": {}, "bad key": {"Authorization": "Application nope"}}
        seen = set()
        for queue in ("mine", "pub", "listed", "missing", "x" * 51):
            for application in ("queuey", "nobody"):
                for caller, headers in callers.items():
                    app = {"owner": "queuey", "other": "other"}.get(caller)
                    read = yield self.call("GET", f"/v1/{application}/{queue}", app=app, headers=headers)
                    info = yield self.call("GET", f"/v1/{application}/{queue}/info", app=app, headers=headers)
                    outcome = (read[0], sorted(read[1].get("error_msg", {})))
                    self.assertEqual((info[0], sorted(info[1].get("error_msg", {}))), outcome,
                                     f"{caller} on /v1/{application}/{queue}")
                    seen.add(outcome[0])
        self.assertEqual(seen, {200, 401, 403, 404})

    @defer.inlineCallbacks
    def test_other_methods_meet_the_message_routes(self) -> Any:
        """``info`` is no message id: PUT and DELETE are refused as for any malformed id, POST as on any ids."""
        yield self.make_queue("q")
        for method in ("PUT", "DELETE"):
            result = yield self.call(method, "/v1/queuey/q/info", body=b"x", headers={"Content-Type": "text/plain"})
            self.assertError(result, 400, "messages")
        result = yield self.call("POST", "/v1/queuey/q/info", body=b"x")
        self.assertError(result, 405, "MethodNotAllowed")
