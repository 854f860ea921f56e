"""queuey/openapi.yaml describes the API as served, and a fuzzer driven by it finds no fault.

Schemathesis makes requests from the description (valid ones and, as hostile
clients would, invalid ones) against a real ``twistd queuey`` over a socket;
every answer must be no 5xx, documented, of the documented content type and
schema (errors: ``{"status": "error", "error_msg": {...}}``).
"""

from __future__ import annotations

import os
import re
from typing import Any

import treq
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st
from twisted.internet import defer, threads
from twisted.trial import unittest

from queuey.app import OPENAPI, QueueyApp
from tests.processes import start_queuey
from tests.services import CASSANDRA, require

KEY = "fuzz-key"
OTHER_KEY = "other-key"
CONFIG = f"""
[application_keys]
fuzz = {KEY}
other = {OTHER_KEY}

{{storage}}
[limits]
request_head_timeout = 5

[signing]
secret = a-secret-for-the-fuzzer
"""
#: Examples per operation and generation mode; the whole run is a few thousand requests.
EXAMPLES = int(os.environ.get("QUEUEY_FUZZ_EXAMPLES", "40"))
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")


def served_routes() -> set[tuple[str, str]]:
    """(path template, method) of every route of the Klein app, in OpenAPI's spelling."""
    routes = set()
    for rule in QueueyApp.app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        routes.update((path, method.lower()) for method in rule.methods or () if method not in ("HEAD", "OPTIONS"))
    return routes


class DocumentTests(unittest.TestCase):
    def test_describes_every_route_and_no_other(self) -> None:
        document = yaml.safe_load(OPENAPI.read_text())
        described = {(path, method) for path, item in document["paths"].items()
                     for method in item if method in METHODS}
        self.assertEqual(described, served_routes())

    def test_is_openapi_3_1(self) -> None:
        import schemathesis
        schema = schemathesis.openapi.from_path(str(OPENAPI))
        operations = [result.ok() for result in schema.get_all_operations()]
        self.assertEqual(len(operations), len(served_routes()))


class FuzzTests(unittest.TestCase):
    """Schemathesis against a real twistd queuey (SQLite), each operation in both modes."""

    timeout = 900

    def storage(self, directory: str) -> str:
        return f"[storage]\nbackend = sqlite\npath = {directory}/queuey.sqlite\n"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        config = os.path.join(directory, "queuey.ini")
        with open(config, "w") as f:
            f.write(CONFIG.format(storage=self.storage(directory)))
        self.server = yield start_queuey(self, config)
        auth = {"Authorization": f"Application {KEY}"}
        for name in ("q", "pub"):  # fresh, whatever an earlier run left in the store
            response = yield treq.delete(f"{self.server.base}/v1/fuzz/{name}", headers=auth, persistent=False)
            yield response.content()
        for form in ({"queue_name": "q", "partitions": "3"}, {"queue_name": "pub", "type": "public"}):
            response = yield treq.post(self.server.base + "/v1/fuzz", data=form, headers=auth, persistent=False)
            self.assertEqual(response.code, 201, (yield response.text()))
        response = yield treq.post(self.server.base + "/v1/fuzz/q", json={"messages": [
            {"body": f"m{i}", "partition": i % 3 + 1} for i in range(9)]}, headers=auth, persistent=False)
        self.assertEqual(response.code, 201, (yield response.text()))

    @defer.inlineCallbacks
    def test_served_document_is_the_file(self) -> Any:
        response = yield treq.get(self.server.base + "/openapi.yaml", persistent=False)
        self.assertEqual((response.code, response.headers.getRawHeaders("content-type")),
                         (200, ["application/yaml"]))
        self.assertEqual((yield response.content()), OPENAPI.read_bytes())

    def test_fuzz_every_operation(self) -> defer.Deferred[None]:
        # In a thread: the reactor keeps reading the server's output meanwhile.
        return threads.deferToThread(self._fuzz)

    def _fuzz(self) -> None:
        import requests
        import schemathesis
        from schemathesis.checks import not_a_server_error
        from schemathesis.generation import GenerationMode
        from schemathesis.specs.openapi.checks import (content_type_conformance,
                                                       response_schema_conformance,
                                                       status_code_conformance)
        checks = [not_a_server_error, status_code_conformance, content_type_conformance,
                  response_schema_conformance]
        schema = schemathesis.openapi.from_path(str(OPENAPI))
        session = requests.Session()
        base = self.server.base
        keys = st.sampled_from([f"Application {KEY}", f"Application {OTHER_KEY}", "Application nope", None])
        for result in schema.get_all_operations():
            operation = result.ok()
            names = {p.name for p in operation.path_parameters}
            ours = {name: value for name, value in (("application", "fuzz"), ("queue", "q")) if name in names}
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategy = operation.as_strategy(mode)
                if ours and mode is GenerationMode.POSITIVE:
                    strategy = st.one_of(strategy, operation.as_strategy(mode, path_parameters=ours))

                @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                          suppress_health_check=list(HealthCheck))
                @given(case=strategy, authorization=keys)
                def exchange(case: Any, authorization: str | None) -> None:
                    if isinstance(case.query, dict) and "wait" in case.query:
                        case.query["wait"] = 0  # no long-polls: they would only make the run slow
                    headers = {"Authorization": authorization} if authorization else {}
                    # Event streams are left out: an answer that never ends cannot be checked
                    # here (tests/test_streams.py tests them).  Every answer is asked for as JSON.
                    headers["Accept"] = "application/json"
                    response = case.call(base_url=base, session=session, headers=headers, timeout=30)
                    case.validate_response(response, checks=checks, headers=headers)

                try:
                    exchange()
                except Unsatisfiable:
                    if mode is GenerationMode.POSITIVE:  # nothing to make invalid is fine
                        raise


class CassandraFuzzTests(FuzzTests):
    """The same fuzzing against a twistd queuey on Cassandra."""

    def storage(self, directory: str) -> str:
        hosts = require(CASSANDRA, "Cassandra")
        return (f"[storage]\nbackend = cassandra\nhosts = {hosts}\nkeyspace = queuey_test_fuzz\n"
                "replication = SimpleStrategy:1\n")
