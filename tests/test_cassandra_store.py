"""The Cassandra backend: the storage contract on a real Cassandra, plus its own duties.

Needs a running Cassandra (``make test`` starts one): QUEUEY_TEST_CASSANDRA is
its ``host:port``.  Without it these tests skip, except under CI=true.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import Config, ConfigError, parse_config
from queuey.errors import StorageUnavailable
from queuey.interfaces import MessageRange, MessageRef, NewMessage, QueueSettings
from queuey.storage import make_store
from tests.services import CASSANDRA, require
from tests.storage_contract import APP, StoreContract

KEYSPACE = "queuey_test"


def cassandra_settings(**storage: str) -> Any:
    """CassandraSettings for the test Cassandra (skips, or fails under CI, without one)."""
    from queuey.storage.cassandra import CassandraSettings
    return CassandraSettings.parse({"hosts": require(CASSANDRA, "Cassandra"), "keyspace": KEYSPACE,
                                    "connect_timeout": "5", "request_timeout": "10", **storage})


def real_ticks() -> int:
    return round(time.time() * timeuuid.TICKS_PER_SECOND)


class CassandraStoreMixin:
    """Opens a store on the test keyspace and clears the applications the tests use."""

    applications = (APP, "elsewhere")
    storage: dict[str, str] = {}

    def make_store(self) -> Any:
        from queuey.storage.cassandra import CassandraStore
        return CassandraStore(cassandra_settings(**self.storage), reactor)

    def now_ticks(self) -> int:
        return real_ticks()

    def advance(self, seconds: float) -> defer.Deferred[None]:
        """Cassandra expires by its own clock: the only honest way past a TTL is to wait."""
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def purge(self, store: Any) -> Any:
        for application in self.applications:
            while True:
                queues = yield store.list_queues(application, None, 100)
                if not queues:
                    break
                for queue in queues:
                    yield store.delete_queue(application, queue.queue_name)


class CassandraContract(CassandraStoreMixin, StoreContract, unittest.TestCase):
    """The shared storage contract on a real Cassandra node."""

    timeout = 60

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        yield super().setUp()
        yield self.purge(self.store)

    @defer.inlineCallbacks
    def test_delete_queue_drops_message_partitions(self) -> Any:
        """Deleting a queue leaves no message partition behind (one partition tombstone each)."""
        queue = yield self.created("q1", partitions=2)
        yield self.store.put_messages(queue, [self.message(1), self.message(2)])
        yield self.store.delete_queue(APP, "q1")
        for partition in (1, 2):
            buckets = yield self.store._buckets(queue, partition, None, None, False, self.store._meta_level)
            self.assertEqual(buckets, [])
        rows = yield self.store._execute(self.store._bound(
            "count_bucket", APP, "q1", queue.created, 1,
            timeuuid.ticks_from_uuid(self.generator.next()) // self.store._bucket_ticks * self.store._bucket_ticks))
        self.assertEqual(rows[0][0], 0)

    @defer.inlineCallbacks
    def test_update_of_a_recreated_queue_is_refused(self) -> Any:
        """An update names the incarnation it read: a queue recreated meanwhile is not overwritten."""
        old = yield self.created("q1")
        yield self.store.delete_queue(APP, "q1")
        yield task.deferLater(reactor, 0.001, lambda: None)
        new = yield self.created("q1", partitions=3)
        self.assertNotEqual(old.created, new.created)
        result = yield self.store.update_queue(QueueSettings(APP, "q1", 7, created=old.created))
        self.assertIsNone(result)
        kept = yield self.store.get_queue(APP, "q1")
        self.assertEqual(kept.partitions, 3)

    @defer.inlineCallbacks
    def test_large_batch_is_stored_whole(self) -> Any:
        """A batch bigger than one Cassandra batch is split, and every message is stored."""
        from queuey.storage.cassandra import MAX_BATCH_BYTES
        queue = yield self.created()
        body = b"x" * (256 * 1024)
        sent = [self.message(body=body) for _ in range(MAX_BATCH_BYTES // len(body) * 2 + 3)]
        yield self.store.put_messages(queue, sent)
        read = yield self.store.read_messages(queue, 1, MessageRange(limit=1000))
        self.assertEqual([m.id for m in read], [m.id for m in sent])
        self.assertTrue(all(m.body == body for m in read))

    @defer.inlineCallbacks
    def test_reads_follow_pages(self) -> Any:
        """A result longer than one driver page is followed to its end."""
        queue = yield self.created()
        sent = [self.message() for _ in range(30)]
        yield self.store.put_messages(queue, sent)
        [bucket] = {self.store_bucket(m.id) for m in sent} or [None]
        statement = self.store._bound("range", APP, "q", queue.created, 1, bucket,
                                      sent[0].id, sent[-1].id, 1000)
        statement.fetch_size = 7
        rows = yield self.store._execute(statement)
        self.assertEqual([row[0] for row in rows], [m.id for m in sent])

    def store_bucket(self, message_id: uuid.UUID) -> int:
        from queuey.storage.cassandra import bucket_of
        return bucket_of(message_id, self.store._bucket_ticks)
