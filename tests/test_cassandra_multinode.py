"""Two queuey processes on a three-node Cassandra: one application served through both, and a node killed.

Run only by ``scripts/run-cluster-tests.sh multinode`` (part of ``make
test-cluster``), which starts a three-node cluster on 127.0.K.1-3 and sets
``QUEUEY_TEST_CASSANDRA_MULTINODE`` to its contact points and
``QUEUEY_CASSANDRA_DATA`` to its data directory.  Without them these tests
skip (also under CI: ``make test`` does not run them).
"""

from __future__ import annotations

import os
import uuid
from typing import Any

import treq
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.trial.unittest import SkipTest

from queuey.client import NotFound, QueueyClient, QueueyClientError
from tests.cassandra_nodes import CONFIG, metric, node, table_stats, until
from tests.processes import start_queuey

KEY = "multinode-key"


class QueueyPair(unittest.TestCase):
    """Starts queuey processes on one keyspace of the test cluster, each with a client of its own."""

    keyspace = "queuey_test_multinode"
    replication = "SimpleStrategy:3"
    timeout = 600

    def setUp(self) -> None:
        hosts = os.environ.get("QUEUEY_TEST_CASSANDRA_MULTINODE", "").strip()
        if not hosts:
            raise SkipTest("set QUEUEY_TEST_CASSANDRA_MULTINODE (scripts/run-cluster-tests.sh multinode does)")
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "queuey.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(key=KEY, hosts=hosts, keyspace=self.keyspace, replication=self.replication))
        self.prefix = "q" + uuid.uuid4().hex[:8]

    async def queuey(self, retries: int = 0) -> tuple[Any, QueueyClient]:
        """A twistd queuey on a port of its own, and a client of application ``c`` talking only to it."""
        process = await start_queuey(self, self.config)
        client = QueueyClient(process.base + "/v1/c", KEY, reactor=reactor, retries=retries, backoff=0.5,
                              timeout=30)
        self.addCleanup(client.close)
        return process, client

    async def held_longpolls(self, process: Any) -> float:
        response = await treq.get(process.base + "/metrics", persistent=False)
        return metric(await response.text(), "queuey_longpolls_held")


class TwoProcessTests(QueueyPair):

    @defer.inlineCallbacks
    def test_one_application_through_two_processes(self) -> Any:
        """Posts through one, long-polls and reads through the other; queues made anywhere are seen everywhere.

        The clients retry 503s: concurrent lightweight transactions on one
        directory partition may end "CAS operation result is unknown" on a
        busy cluster, which queuey answers with 503 (docs/cassandra.rst).
        """
        (_, a), (b_process, b) = yield defer.gatherResults([defer.ensureDeferred(self.queuey(retries=4)),
                                                            defer.ensureDeferred(self.queuey(retries=4))])
        queue = self.prefix
        yield a.create_queue(queue, partitions=2)
        [listed] = [q for q in (yield b.all_queues(details=True)) if q["queue_name"] == queue]
        self.assertEqual(listed["partitions"], 2)

        # A consumer long-polling through b wakes for each message posted through a, in order.
        cursor = None
        for i in range(5):
            held = b.read_messages(queue, partitions=1, after=cursor, wait=30)

            async def holding() -> bool:
                return (await self.held_longpolls(b_process)) >= 1
            yield defer.ensureDeferred(until("b holds the read", holding, seconds=30))
            self.assertFalse(held.called)
            posted = yield a.post_message(queue, f"wake {i}", partition=1)
            messages = yield held
            self.assertEqual([(m["message_id"], m["body"]) for m in messages], [(posted["key"], f"wake {i}")])
            cursor = posted["key"]

        # Posts through a, concurrently: b reads every one, each partition in id order.
        posts = [a.post_message(queue, f"m{i}", partition=1 + i % 2) for i in range(30)]
        posts.append(a.post_messages(queue, [{"body": f"b{i}", "partition": 2} for i in range(20)]))
        acknowledged: dict[int, set[str]] = {1: set(), 2: set()}
        for result in (yield defer.gatherResults(posts)):
            for message in result if isinstance(result, list) else [result]:
                acknowledged[message["partition"]].add(message["key"])
        for partition in (1, 2):
            read = yield b.read_messages(queue, partitions=partition, limit=1000)
            ids = [m["message_id"] for m in read]
            self.assertTrue(acknowledged[partition] <= set(ids))
            self.assertEqual([m["timestamp"] for m in read], sorted(m["timestamp"] for m in read))

        # Queues created through both: both list them all, in name order, in pages.
        names = [f"{self.prefix}-{i:03d}" for i in range(60)]
        yield defer.gatherResults([(a if i % 2 else b).ensure_queue(name) for i, name in enumerate(names)])
        for client in (a, b):
            listed = yield client.all_queues(details=False, page=7)
            mine = [q["queue_name"] for q in listed if q["queue_name"].startswith(self.prefix)]
            self.assertEqual(mine, sorted([queue] + names))

        # Deleted through b: gone for a.
        yield b.delete_queue(queue)
        with self.assertRaises(NotFound):
            yield a.read_messages(queue)


class KilledNodeTests(QueueyPair):

    @defer.inlineCallbacks
    def test_node_killed_under_two_processes_loses_nothing_acknowledged(self) -> Any:
        """kill -9 of a node while two processes take posts and creations; read back through the restarted node."""
        (_, a), (_, b) = yield defer.gatherResults([defer.ensureDeferred(self.queuey()),
                                                    defer.ensureDeferred(self.queuey())])
        queue = self.prefix
        yield a.create_queue(queue, partitions=4)
        messages: set[str] = set()
        queues: set[str] = set()
        refused: list[str] = []
        phase = {"killed": False, "at_kill": (0, 0), "stop": False}
        killing: list[defer.Deferred[Any]] = []

        def progress() -> None:
            """Kill node 2 after 60 acknowledged posts; stop after 60 more and 5 more queues."""
            if not phase["killed"] and len(messages) >= 60:
                phase["killed"], phase["at_kill"] = True, (len(messages), len(queues))
                killing.append(node("kill", 2))
            elif phase["killed"] and killing[0].called:
                posts_at, queues_at = phase["at_kill"]
                if len(messages) >= posts_at + 60 and len(queues) >= queues_at + 5:
                    phase["stop"] = True

        async def poster(client: QueueyClient, n: int) -> None:
            for i in range(1500):
                if phase["stop"]:
                    return
                try:
                    messages.add((await client.post_message(queue, f"p{n}-{i}"))["key"])
                except QueueyClientError as e:
                    refused.append(str(e))
                progress()
            raise AssertionError(f"poster {n} ran out of posts: {len(messages)} acknowledged, "
                                 f"refusals: {refused[-3:]}")

        async def creator(n: int) -> None:
            for i in range(1500):
                if phase["stop"]:
                    return
                name = f"{self.prefix}-c{n}-{i:04d}"
                try:
                    await (a if i % 2 else b).create_queue(name)
                    queues.add(name)
                except QueueyClientError as e:
                    refused.append(str(e))
                progress()
            raise AssertionError("the creator ran out of queues")

        work = [poster(a, 0), poster(a, 1), poster(b, 2), poster(b, 3), creator(0)]
        yield defer.gatherResults([defer.ensureDeferred(w) for w in work])
        yield killing[0]
        yield node("start", 2)
        # Read with node 3 down, so that every QUORUM read needs the restarted node 2.
        yield node("stop", 3)
        try:
            _, reader = yield defer.ensureDeferred(self.queuey(retries=8))
            read = yield reader.read_messages(queue, partitions="all", limit=1000)
            missing = messages - {m["message_id"] for m in read}
            self.assertEqual(missing, set(), f"{len(missing)} of {len(messages)} acknowledged posts are gone")
            listed = {q["queue_name"] for q in (yield reader.all_queues(details=False))}
            self.assertEqual(queues - listed, set())
        finally:
            yield node("start", 3)


class SpreadTests(QueueyPair):
    """Replication 1: each directory partition lives on one node, and every node holds some."""

    keyspace = "queuey_test_spread"
    replication = "SimpleStrategy:1"

    @defer.inlineCallbacks
    def test_one_applications_directory_spreads_over_every_node(self) -> Any:
        _, client = yield defer.ensureDeferred(self.queuey(retries=4))  # contended creations may get a 503
        names = [f"{self.prefix}-{i:03d}" for i in range(192)]
        for start in range(0, len(names), 32):
            yield defer.gatherResults([client.ensure_queue(name) for name in names[start:start + 32]])
        for name in names[::8]:
            yield client.read_messages(name)  # a lookup of the queue, then its (empty) partition
        counts = []
        for number in (1, 2, 3):
            stats = yield defer.ensureDeferred(table_stats(number, f"{self.keyspace}.queue_directory"))
            counts.append((int(stats["Local write count"]), int(stats["Local read count"])))
        self.assertTrue(all(writes > 0 and reads > 0 for writes, reads in counts), counts)
        self.assertGreaterEqual(sum(writes for writes, _ in counts), len(names))


class SimultaneousStartTests(unittest.TestCase):
    """Stores starting at the same moment on a new keyspace of the cluster all open.

    The one that finds the schema made by the other a moment ago must not read a node that has not
    heard of it yet, nor give up when the two record the keyspace's settings at once (this failed
    about one start in three before the store waited for schema agreement and tried again).
    """

    timeout = 600

    def setUp(self) -> None:
        self.hosts = os.environ.get("QUEUEY_TEST_CASSANDRA_MULTINODE", "").strip()
        if not self.hosts:
            raise SkipTest("set QUEUEY_TEST_CASSANDRA_MULTINODE (scripts/run-cluster-tests.sh multinode does)")

    def store(self, keyspace: str) -> Any:
        from queuey.config import parse_config
        from queuey.storage.cassandra import CassandraStore
        return CassandraStore(parse_config(CONFIG.format(key=KEY, hosts=self.hosts, keyspace=keyspace,
                                                         replication="SimpleStrategy:3")).storage, reactor)

    @defer.inlineCallbacks
    def test_two_stores_open_a_new_keyspace_at_once(self) -> Any:
        for _ in range(4):
            keyspace = "queuey_test_start_" + uuid.uuid4().hex[:8]
            stores = [self.store(keyspace), self.store(keyspace)]
            for store in stores:
                self.addCleanup(store.close)
            yield defer.gatherResults([store.open() for store in stores], consumeErrors=True)
            self.assertEqual({store.layout.shards for store in stores}, {64})
            # The keyspaces go with the cluster, which run-cluster-tests.sh wipes.
