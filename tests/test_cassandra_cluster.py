"""Cassandra failures, for real: nodes stopped, killed and started again under a running queuey.

Slow, and they stop Cassandra nodes, so they run only from
``scripts/run-cluster-tests.sh``, which starts the clusters and sets:

* ``QUEUEY_TEST_CASSANDRA_OUTAGE`` (``host:port`` of a one-node Cassandra this
  module may stop and start) for :class:`OutageTests`;
* ``QUEUEY_TEST_CASSANDRA_CLUSTER`` (the contact points of a three-node
  cluster on 127.0.0.1-3) for :class:`ClusterTests`;
* ``QUEUEY_CASSANDRA_DATA``, the data directory scripts/cassandra-node.sh works on.

Without them these tests skip (also under CI: ``make test`` does not run them).
"""

from __future__ import annotations

import os
import uuid
from typing import Any, Callable

import treq
from twisted.internet import defer, utils
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from tests.cassandra_nodes import CONFIG
from tests.processes import start_queuey, wait_for, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "cluster-key"


class Tally:
    """Counts events; ``reach(n)`` fires once ``n`` have happened (progress, not time, paces a test)."""

    def __init__(self) -> None:
        self.count = 0
        self._waiting: list[tuple[int, defer.Deferred[None]]] = []

    def add(self) -> None:
        self.count += 1
        for entry in [w for w in self._waiting if w[0] <= self.count]:
            self._waiting.remove(entry)
            entry[1].callback(None)

    def reach(self, count: int) -> defer.Deferred[None]:
        if self.count >= count:
            return defer.succeed(None)
        reached: defer.Deferred[None] = defer.Deferred()
        self._waiting.append((count, reached))
        return reached


class QueueyOnCassandra(unittest.TestCase):
    """Runs one twistd queuey against the Cassandra named by ``variable``."""

    variable = ""
    keyspace = ""
    replication = "SimpleStrategy:1"
    timeout = 600

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        hosts = os.environ.get(self.variable, "").strip()
        if not hosts:
            raise SkipTest(f"set {self.variable} (scripts/run-cluster-tests.sh does)")
        self.config = write_config(self, CONFIG.format(key=KEY, hosts=hosts, keyspace=self.keyspace,
                                                       replication=self.replication))
        self.headers = {"Authorization": f"Application {KEY}"}
        self.queue_prefix = "q" + uuid.uuid4().hex[:8]
        # Whatever an earlier test left behind: every node up, and every node knowing it.
        yield self.node("start", "all")

    @defer.inlineCallbacks
    def start_queuey(self) -> Any:
        process = yield start_queuey(self, self.config)
        self.base = process.base
        return process

    @defer.inlineCallbacks
    def node(self, action: str, *nodes: int | str) -> Any:
        """scripts/cassandra-node.sh ACTION [N] (stop, kill, start, pause, resume, settle) on the test cluster."""
        out, err, code = yield utils.getProcessOutputAndValue(
            os.path.join(ROOT, "scripts", "cassandra-node.sh"), [action, *map(str, nodes)], env=dict(os.environ),
            path=ROOT)
        if code != 0:
            self.fail(f"cassandra-node.sh {action} {' '.join(map(str, nodes))} failed ({code}):\n{err.decode()}")

    @defer.inlineCallbacks
    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """(status, JSON document, headers); connection errors fail the test."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        response = yield treq.request(method, self.base + path, headers=headers, persistent=False,
                                      timeout=30, **kwargs)
        document = yield response.json()
        return response.code, document, response.headers

    @defer.inlineCallbacks
    def create(self, name: str, **params: str) -> Any:
        code, document, _ = yield self.request("POST", "/v1/c", data={"queue_name": name, **params})
        self.assertEqual(code, 201, document)

    @defer.inlineCallbacks
    def post(self, queue: str, body: str) -> Any:
        """(status, message id or None)."""
        code, document, headers = yield self.request("POST", f"/v1/c/{queue}", data=body.encode(),
                                                     headers={"Content-Type": "text/plain"})
        return code, (document["messages"][0]["key"] if code == 201 else None), document, headers

    @defer.inlineCallbacks
    def read_all(self, queue: str) -> Any:
        code, document, _ = yield self.request("GET", f"/v1/c/{queue}?partitions=all&limit=1000")
        self.assertEqual(code, 200, document)
        return {m["message_id"] for m in document["messages"]}

    def eventually(self, what: str, check: Callable[[], Any], seconds: float = 90) -> defer.Deferred[Any]:
        """Poll ``check()`` (a Deferred of a bool) until it is true, for at most ``seconds``."""
        return defer.ensureDeferred(wait_for(check, seconds, what, interval=0.5))

    def assert_unavailable(self, code: int, document: Any, headers: Any) -> None:
        self.assertEqual(code, 503, document)
        self.assertEqual(document["status"], "error")
        self.assertIn("StorageUnavailable", document["error_msg"])
        self.assertEqual(headers.getRawHeaders("retry-after"), ["5"])


class OutageTests(QueueyOnCassandra):
    """One node, stopped and started again: 503s meanwhile, then service without a restart."""

    variable = "QUEUEY_TEST_CASSANDRA_OUTAGE"
    keyspace = "queuey_test_outage"

    @defer.inlineCallbacks
    def test_stop_and_start_cassandra(self) -> Any:
        queuey = yield self.start_queuey()
        queue = self.queue_prefix
        yield self.create(queue)
        code, before, _, _ = yield self.post(queue, "before")
        self.assertEqual(code, 201)

        yield self.node("stop", 1)
        code, message_id, document, headers = yield self.post(queue, "during")
        self.assert_unavailable(code, document, headers)
        self.assert_unavailable(*(yield self.request("GET", f"/v1/c/{queue}")))
        code, document, _ = yield self.request("GET", "/__heartbeat__")
        self.assertEqual(code, 503)
        self.assertIn("cassandra", document["checks"]["storage"].lower())
        code, text, _ = yield self._metrics()
        self.assertGreaterEqual(self._storage_errors(text), 3)

        yield self.node("start", 1)

        @defer.inlineCallbacks
        def healthy() -> Any:
            code, _, _ = yield self.request("GET", "/__heartbeat__")
            return code == 200
        yield self.eventually("heartbeat answers 200 again", healthy)

        @defer.inlineCallbacks
        def posts() -> Any:
            code, _, _, _ = yield self.post(queue, "after")
            return code == 201
        yield self.eventually("a POST is stored again", posts)
        self.assertIn(before, (yield self.read_all(queue)))
        self.assertFalse(queuey.ended.called, "queuey exited instead of waiting for Cassandra")

    @defer.inlineCallbacks
    def _metrics(self) -> Any:
        response = yield treq.get(self.base + "/metrics", persistent=False)
        text = yield response.text()
        return response.code, text, response.headers

    @staticmethod
    def _storage_errors(text: str) -> float:
        for line in text.splitlines():
            if line.startswith("queuey_storage_errors_total "):
                return float(line.split()[1])
        return 0.0


class ClusterTests(QueueyOnCassandra):
    """Three nodes, replication 3."""

    variable = "QUEUEY_TEST_CASSANDRA_CLUSTER"
    keyspace = "queuey_test_cluster"
    replication = "SimpleStrategy:3"

    @defer.inlineCallbacks
    def test_one_node_down(self) -> Any:
        """strong (QUORUM) works with one of three nodes stopped; very_strong (ALL) answers 503."""
        yield self.start_queuey()
        strong, very = self.queue_prefix + "s", self.queue_prefix + "v"
        yield self.create(strong, consistency="strong")
        yield self.create(very, consistency="very_strong")
        code, kept, _, _ = yield self.post(very, "stored while all were up")
        self.assertEqual(code, 201)

        yield self.node("stop", 3)
        try:
            written = []
            for i in range(20):
                code, message_id, document, _ = yield self.post(strong, f"s{i}")
                self.assertEqual(code, 201, document)
                written.append(message_id)
            self.assertEqual((yield self.read_all(strong)), set(written))
            code, document, _ = yield self.request("GET", f"/v1/c/{strong}/{written[0]}")
            self.assertEqual([m["body"] for m in document["messages"]], ["s0"])

            code, _, document, headers = yield self.post(very, "needs every replica")
            self.assert_unavailable(code, document, headers)
            self.assert_unavailable(*(yield self.request("GET", f"/v1/c/{very}")))
            code, _, _ = yield self.request("GET", "/__heartbeat__")
            self.assertEqual(code, 200)  # the store answers; one queue's level cannot be met
        finally:
            yield self.node("start", 3)

        @defer.inlineCallbacks
        def very_strong_again() -> Any:
            code, _, _, _ = yield self.post(very, "all up again")
            return code == 201
        yield self.eventually("very_strong POST works with all nodes up", very_strong_again)
        self.assertIn(kept, (yield self.read_all(very)))

    @defer.inlineCallbacks
    def test_killed_node_loses_no_acknowledged_message(self) -> Any:
        """kill -9 of a node while messages flow, restart it, then read through it: nothing lost."""
        yield self.start_queuey()
        queue = self.queue_prefix
        yield self.create(queue, partitions="4")
        acknowledged: set[str] = set()
        attempts, stored = Tally(), Tally()
        stop_writing = False

        @defer.inlineCallbacks
        def writer(n: int) -> Any:
            i = 0
            while not stop_writing:
                try:
                    code, message_id, _, _ = yield self.post(queue, f"w{n}-{i}")
                except Exception:
                    code, message_id = 0, None
                if code == 201:
                    acknowledged.add(message_id)
                    stored.add()
                attempts.add()
                i += 1

        writers = [writer(n) for n in range(4)]
        try:
            yield stored.reach(40)
            # Returns once nodes 1 and 3 have marked node 2 down; the writers write meanwhile.
            yield self.node("kill", 2)
            during = stored.count
            yield attempts.reach(attempts.count + 40)
        finally:
            stop_writing = True
            yield defer.gatherResults(writers)
        self.assertGreater(stored.count, during, "no strong write was acknowledged with node 2 killed")
        yield self.node("start", 2)
        # Read with node 3 down, so every QUORUM read needs the restarted node 2.
        yield self.node("stop", 3)

        @defer.inlineCallbacks
        def all_there() -> Any:
            return acknowledged <= (yield self.read_all(queue))
        yield self.eventually("every acknowledged message is read back", all_there, seconds=60)
        self.assertTrue(acknowledged <= (yield self.read_all(queue)))

    @defer.inlineCallbacks
    def test_lightweight_transaction_timeout_answers_503(self) -> Any:
        """Creating a queue while two of three replicas hang: the lightweight transaction times out
        (the peers still think them up), the answer is 503, and once they are back a retry of the
        create answers 201, or 409 when the timed-out one was applied after all."""
        yield self.start_queuey()
        name = self.queue_prefix + "lwt"
        yield self.node("pause", 2)
        yield self.node("pause", 3)
        try:
            code, document, headers = yield self.request("POST", "/v1/c", data={"queue_name": name})
        finally:
            yield self.node("resume", 2)
            yield self.node("resume", 3)
        self.assert_unavailable(code, document, headers)
        self.assertRegex(document["error_msg"]["StorageUnavailable"], "Timeout|TimedOut")
        yield self.node("settle")

        @defer.inlineCallbacks
        def created() -> Any:
            code, _, _ = yield self.request("POST", "/v1/c", data={"queue_name": name})
            return code in (201, 409)
        yield self.eventually("the create is answered again", created)
        code, listing, _ = yield self.request("GET", "/v1/c")
        self.assertIn({"queue_name": name}, listing["queues"])
