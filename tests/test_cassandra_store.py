"""The Cassandra backend: the storage contract on a real Cassandra, plus its own duties.

Needs a running Cassandra (``make test`` starts one): QUEUEY_TEST_CASSANDRA is
its ``host:port``.  Without it these tests skip, except under CI=true.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from twisted.internet import defer, reactor, task, threads
from twisted.logger import LogLevel, formatEvent, globalLogPublisher
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import Config, ConfigError, parse_config
from queuey.errors import StorageUnavailable
from queuey.interfaces import MessageRange, MessageRef, NewMessage, QueueSettings
from queuey.responses import status_of
from queuey.storage import make_store
from tests.cassandra_support import cassandra_settings, purge, real_ticks, run_cql
from tests.services import CASSANDRA, require
from tests.storage_contract import APP, StoreContract


class CassandraStoreMixin:
    """Opens a store on the test keyspace and clears the applications the tests use."""

    applications = (APP, "elsewhere")
    storage: dict[str, str] = {}
    short_ttl = 5  # whole seconds: gone 4 s and a bit after the write, at the earliest
    put_after_delete_refused = False

    def make_store(self) -> Any:
        from queuey.storage.cassandra import CassandraStore
        return CassandraStore(cassandra_settings(**self.storage), reactor)

    def now_ticks(self) -> int:
        return real_ticks()

    def advance(self, seconds: float) -> defer.Deferred[None]:
        """Cassandra expires by its own clock: the only honest way past a TTL is to wait."""
        return task.deferLater(reactor, seconds, lambda: None)

    @defer.inlineCallbacks
    def open_clean_store(self) -> Any:
        """``self.store``, open (closed when the test ends), without queues of the test applications."""
        self.store = self.make_store()
        yield self.store.open()
        self.addCleanup(self.store.close)
        yield self.purge(self.store)

    def purge(self, store: Any) -> defer.Deferred[Any]:
        return purge(store, self.applications)


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
        yield self.store.create_queue(QueueSettings(APP, "q1", 3, created=old.created + 1))
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


class SmallBucketTests(CassandraStoreMixin, unittest.TestCase):
    """Reads, counts and deletes that cross many one-minute time buckets."""

    timeout = 60
    storage = {"keyspace": "queuey_test_b60", "bucket_seconds": "60"}

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        yield self.open_clean_store()
        self.queue = QueueSettings(APP, "spread", 2, created=real_ticks())
        yield self.store.create_queue(self.queue)
        now = real_ticks()
        # Twelve messages, two per minute over six minutes, oldest first; all in partition 1.
        self.ids = [timeuuid.make_uuid(now - (330 - 30 * i) * timeuuid.TICKS_PER_SECOND, 7, 0x1234 + i)
                    for i in range(12)]
        yield self.store.put_messages(self.queue, [
            NewMessage(i, 1, f"m{n}".encode(), "text/plain", 3600) for n, i in enumerate(reversed(self.ids))])

    @defer.inlineCallbacks
    def test_bucket_width_is_the_keyspaces(self) -> Any:
        """A store configured with another width uses the keyspace's recorded one, says so in a
        warning, and finds every message by id (a wrong width looks in the wrong bucket)."""
        from queuey.storage.cassandra import CassandraStore
        warnings: list[str] = []

        def observe(event: dict) -> None:
            if event.get("log_level") == LogLevel.warn:
                warnings.append(formatEvent(event))
        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        other = CassandraStore(cassandra_settings(**{**self.storage, "bucket_seconds": "120"}), reactor)
        yield other.open()
        self.addCleanup(other.close)
        self.assertEqual(other._bucket_ticks, 60 * timeuuid.TICKS_PER_SECOND)
        self.assertIn("Keyspace queuey_test_b60 was created with bucket_seconds = 60; using it, "
                      "not the configured 120", warnings)
        found = yield other.get_messages(self.queue, [MessageRef(1, i) for i in self.ids])
        self.assertEqual([m.id for m in found], self.ids)

    @defer.inlineCallbacks
    def test_messages_span_buckets(self) -> Any:
        buckets = yield self.store._buckets(self.queue, 1, None, None, False, self.store._meta_level)
        self.assertGreaterEqual(len(buckets), 6)
        self.assertEqual(buckets, sorted(buckets))

    @defer.inlineCallbacks
    def test_range_reads_cross_buckets(self) -> Any:
        read = yield self.store.read_messages(self.queue, 1, MessageRange(limit=100))
        self.assertEqual([m.id for m in read], self.ids)
        page = yield self.store.read_messages(self.queue, 1, MessageRange(lower=self.ids[2], limit=5))
        self.assertEqual([m.id for m in page], self.ids[2:7])
        after = yield self.store.read_messages(self.queue, 1, MessageRange(lower=self.ids[6],
                                                                           lower_inclusive=False, limit=100))
        self.assertEqual([m.id for m in after], self.ids[7:])
        upto = yield self.store.read_messages(self.queue, 1, MessageRange(lower=self.ids[1], upper=self.ids[8]))
        self.assertEqual([m.id for m in upto], self.ids[1:9])
        newest = yield self.store.read_messages(self.queue, 1, MessageRange(descending=True, limit=3))
        self.assertEqual([m.id for m in newest], self.ids[:-4:-1])
        down = yield self.store.read_messages(self.queue, 1, MessageRange(lower=self.ids[3], upper=self.ids[9],
                                                                          descending=True, limit=100))
        self.assertEqual([m.id for m in down], self.ids[9:2:-1])
        empty = yield self.store.read_messages(self.queue, 2, MessageRange())
        self.assertEqual(empty, [])

    @defer.inlineCallbacks
    def test_count_newest_get_over_buckets(self) -> Any:
        count = yield self.store.count_messages(self.queue)
        self.assertEqual(count, 12)
        newest = yield self.store.newest_message_ids(self.queue, [1, 2])
        self.assertEqual(newest, {1: self.ids[-1]})
        found = yield self.store.get_messages(self.queue, [MessageRef(1, self.ids[0]), MessageRef(1, self.ids[11])])
        self.assertEqual([m.id for m in found], [self.ids[0], self.ids[11]])
        yield self.store.delete_messages(self.queue, [MessageRef(1, self.ids[11])])
        newest = yield self.store.newest_message_ids(self.queue, [1])
        self.assertEqual(newest, {1: self.ids[10]})

    @defer.inlineCallbacks
    def test_newest_skips_emptied_bucket(self) -> Any:
        """The newest bucket emptied by deletes: the next older one answers."""
        last_bucket = [i for i in self.ids if self._bucket(i) == self._bucket(self.ids[-1])]
        yield self.store.delete_messages(self.queue, [MessageRef(1, i) for i in last_bucket])
        newest = yield self.store.newest_message_ids(self.queue, [1])
        self.assertEqual(newest, {1: self.ids[-1 - len(last_bucket)]})

    def _bucket(self, message_id: uuid.UUID) -> int:
        from queuey.storage.cassandra import bucket_of
        return bucket_of(message_id, self.store._bucket_ticks)

    @defer.inlineCallbacks
    def test_delete_queue_drops_every_bucket(self) -> Any:
        buckets = yield self.store._buckets(self.queue, 1, None, None, False, self.store._meta_level)
        self.assertTrue((yield self.store.delete_queue(APP, "spread")))
        for bucket in buckets:
            rows = yield self.store._execute(self.store._bound(
                "count_bucket", APP, "spread", self.queue.created, 1, bucket))
            self.assertEqual(rows[0][0], 0)
        left = yield self.store._buckets(self.queue, 1, None, None, False, self.store._meta_level)
        self.assertEqual(left, [])

    @defer.inlineCallbacks
    def test_index_written_once_per_bucket(self) -> Any:
        """A second message into a bucket this process indexed does not rewrite the index."""
        written = []
        original = self.store._bound

        def spy(name: str, *values: Any, **kwargs: Any) -> Any:
            written.append(name)
            return original(name, *values, **kwargs)
        self.patch(self.store, "_bound", spy)
        message_id = timeuuid.TimeUUIDGenerator(real_ticks).next()
        yield self.store.put_messages(self.queue, [NewMessage(message_id, 2, b"a", "text/plain", 60)])
        yield self.store.put_messages(self.queue, [NewMessage(timeuuid.make_uuid(
            timeuuid.ticks_from_uuid(message_id), 9, 1), 2, b"b", "text/plain", 60)])
        self.assertEqual(written.count("index_bucket"), 1)
        self.assertEqual(written.count("put_message"), 2)


class UpgradeTests(CassandraStoreMixin, unittest.TestCase):
    """A keyspace whose messages table predates rendered messages: columns added at open, nothing lost."""

    timeout = 120
    storage = {"keyspace": "queuey_test_upgrade"}

    def _old_keyspace(self, message_id: uuid.UUID, created: int) -> None:
        """Blocking (a thread): messages as the version before rendered messages wrote them, one
        message in it (its queue is made after the upgrade, with the rows' incarnation)."""
        from cassandra.cluster import Cluster
        host, _, port = require(CASSANDRA, "Cassandra").partition(":")
        cluster = Cluster([host], port=int(port or 9042), protocol_version=5)
        try:
            session = cluster.connect()
            keyspace = self.storage["keyspace"]
            session.execute(f"DROP KEYSPACE IF EXISTS {keyspace}", timeout=60)
            session.execute(f"CREATE KEYSPACE {keyspace} WITH replication = "
                            "{'class': 'SimpleStrategy', 'replication_factor': 1}", timeout=60)
            for statement in _schema_before_rendering(keyspace):
                session.execute(statement, timeout=60)
            session.execute(f"INSERT INTO {keyspace}.settings (name, value) VALUES ('bucket_seconds', '3600')")
            bucket = timeuuid.ticks_from_uuid(message_id) - timeuuid.ticks_from_uuid(message_id) % (
                3600 * timeuuid.TICKS_PER_SECOND)
            session.execute(f"INSERT INTO {keyspace}.messages (application, queue_name, incarnation, partition, "
                            "bucket, id, content_type, body) VALUES (%s, 'old', %s, 1, %s, %s, 'text/plain', "
                            "%s) USING TTL 3600", (APP, created, bucket, message_id, b"from before"))
            session.execute(f"INSERT INTO {keyspace}.message_buckets (application, queue_name, incarnation, "
                            "partition, bucket, expires) VALUES (%s, 'old', %s, 1, %s, 0) USING TTL 7200",
                            (APP, created, bucket))
        finally:
            cluster.shutdown()

    @defer.inlineCallbacks
    def test_old_rows_read_and_new_ones_rendered(self) -> Any:
        created, old_id = real_ticks(), timeuuid.make_uuid(real_ticks() - 10 * timeuuid.TICKS_PER_SECOND, 1, 2)
        yield threads.deferToThread(self._old_keyspace, old_id, created)
        store = self.make_store()
        yield store.open()
        self.addCleanup(store.close)
        queue = yield store.create_queue(QueueSettings(APP, "old", 1, created=created))  # the rows' incarnation
        new = NewMessage(timeuuid.make_uuid(real_ticks(), 1, 3), 1, b"from now", "text/plain", 3600)
        yield store.put_messages(queue, [new])
        read = yield store.read_messages(queue, 1, MessageRange())
        self.assertEqual([(m.id, m.body) for m in read], [(old_id, b"from before"), (new.id, b"from now")])
        rendered = yield store.read_rendered(queue, (1,), MessageRange())
        self.assertEqual([json.loads(r.json)["body"] for r in rendered[0]], ["from before", "from now"])
        got = yield store.get_messages(queue, [MessageRef(1, old_id), MessageRef(1, new.id)])
        self.assertEqual([m.body for m in got], [b"from before", b"from now"])


def _schema_before_rendering(keyspace: str) -> list[str]:
    """The tables as the version before rendered messages created them (messages without size, rendered)."""
    from queuey.storage.cassandra import schema_cql
    statements = schema_cql(keyspace, {"class": "SimpleStrategy", "replication_factor": 1})[1:]
    return [statement.replace(", size int, rendered blob", "") for statement in statements]


class UnavailableTests(unittest.TestCase):
    """Failures of Cassandra itself errback with StorageUnavailable (HTTP 503)."""

    timeout = 60

    @defer.inlineCallbacks
    def test_open_without_cassandra(self) -> Any:
        from queuey.storage.cassandra import CassandraSettings, CassandraStore
        store = CassandraStore(CassandraSettings(hosts=(("127.0.0.1", 1),), connect_timeout=1), reactor)
        with self.assertRaises(StorageUnavailable):
            yield store.open()
        yield store.close()
        with self.assertRaises(StorageUnavailable):
            yield store.check()

    @defer.inlineCallbacks
    def test_too_few_replicas(self) -> Any:
        """Replication 2 on one node: ONE works, QUORUM and ALL are Unavailable."""
        from queuey.storage.cassandra import CassandraStore
        # The keyspace's settings are recorded while it can be (replication 1), as on a
        # cluster that was healthy once; then it needs two replicas, one of which is missing.
        healthy = CassandraStore(cassandra_settings(), reactor)
        yield healthy.open()
        yield healthy._execute("DROP KEYSPACE IF EXISTS queuey_test_rf2")
        yield healthy.close()
        healthy = CassandraStore(cassandra_settings(keyspace="queuey_test_rf2"), reactor)
        yield healthy.open()
        yield healthy._execute("ALTER KEYSPACE queuey_test_rf2 WITH replication = "
                               "{'class': 'SimpleStrategy', 'replication_factor': 2}")
        yield healthy.close()
        store = CassandraStore(cassandra_settings(keyspace="queuey_test_rf2", replication="SimpleStrategy:2"),
                               reactor)
        yield store.open()
        self.addCleanup(store.close)
        yield store.check()
        ids = timeuuid.TimeUUIDGenerator(real_ticks)
        weak = QueueSettings(APP, "weak", consistency="weak", created=real_ticks())
        message = NewMessage(ids.next(), 1, b"x", "text/plain", 60)
        yield store.put_messages(weak, [message])
        read = yield store.read_messages(weak, 1, MessageRange())
        self.assertEqual([m.id for m in read], [message.id])
        for level in ("strong", "very_strong"):
            queue = QueueSettings(APP, level, consistency=level, created=real_ticks())
            with self.assertRaises(StorageUnavailable) as raised:
                yield store.put_messages(queue, [NewMessage(ids.next(), 1, b"x", "text/plain", 60)])
            self.assertIn("Unavailable", str(raised.exception))
            self.assertEqual(status_of(raised.exception), 503)
            with self.assertRaises(StorageUnavailable):
                yield store.read_messages(queue, 1, MessageRange())
        with self.assertRaises(StorageUnavailable):
            yield store.create_queue(QueueSettings(APP, "lwt", created=real_ticks()))


class SchemaTests(unittest.TestCase):
    """``create_schema = false``: Queuey creates nothing, and runs on a schema made beforehand."""

    timeout = 120
    keyspace = "queuey_test_no_schema"

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.settings = cassandra_settings(keyspace=self.keyspace, create_schema="false")
        yield run_cql(self.settings, [f"DROP KEYSPACE IF EXISTS {self.keyspace}"])

    @defer.inlineCallbacks
    def open_fails(self, missing: str) -> Any:
        from queuey.storage.cassandra import CassandraStore
        store = CassandraStore(self.settings, reactor)
        error = yield self.assertFailure(store.open(), Exception)
        self.assertIn(missing, str(error))
        yield store.close()

    @defer.inlineCallbacks
    def test_nothing_is_created(self) -> Any:
        from queuey.storage.cassandra import schema_cql
        yield self.open_fails(self.keyspace)
        self.assertEqual((yield run_cql(self.settings, [
            f"SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = '{self.keyspace}'"])), [])
        keyspace_only = schema_cql(self.keyspace, {"class": "SimpleStrategy", "replication_factor": 1})[:1]
        yield run_cql(self.settings, keyspace_only)
        yield self.open_fails("settings")  # the first table it prepares a statement for
        self.assertEqual((yield run_cql(self.settings, [
            f"SELECT table_name FROM system_schema.tables WHERE keyspace_name = '{self.keyspace}'"])), [])

    @defer.inlineCallbacks
    def test_runs_on_a_schema_made_beforehand(self) -> Any:
        """The schema made with schema_cql(), as docs/cassandra.rst says: the store opens and serves."""
        from queuey.storage.cassandra import CassandraStore, schema_cql
        yield run_cql(self.settings, schema_cql(self.keyspace, {"class": "SimpleStrategy", "replication_factor": 1}))
        store = CassandraStore(self.settings, reactor)
        yield store.open()
        self.addCleanup(store.close)
        queue = QueueSettings(APP, "q", created=real_ticks())
        yield store.create_queue(queue)
        message = NewMessage(timeuuid.TimeUUIDGenerator(real_ticks).next(), 1, b"x", "text/plain", 60)
        yield store.put_messages(queue, [message])
        self.assertEqual([m.id for m in (yield store.read_messages(queue, 1, MessageRange()))], [message.id])


class TranslateTests(unittest.TestCase):
    def test_driver_errors(self) -> None:
        from cassandra import (ConsistencyLevel, InvalidRequest, OperationTimedOut, ReadTimeout,
                               Unavailable, WriteTimeout, WriteType)
        from cassandra.cluster import NoHostAvailable
        from queuey.storage.cassandra import translate
        for error in (Unavailable("x", ConsistencyLevel.QUORUM, 2, 1), ReadTimeout("slow"), WriteTimeout("slow", write_type=WriteType.SIMPLE),
                      OperationTimedOut("late"), NoHostAvailable("none", {"127.0.0.1:9042": OSError("refused")})):
            translated = translate(error)
            self.assertIsInstance(translated, StorageUnavailable, error)
            self.assertIn(error.__class__.__name__, str(translated))
        self.assertIn("127.0.0.1:9042: refused", str(translate(NoHostAvailable("x", {"127.0.0.1:9042": "refused"}))))
        bug = InvalidRequest("no such column")
        self.assertIs(translate(bug), bug)


class ConfigTests(unittest.TestCase):
    def config(self, storage: str = "") -> Config:
        return parse_config(f"[application_keys]\na = k\n[storage]\nbackend = cassandra\n{storage}")

    def test_defaults(self) -> None:
        store = make_store(self.config(), reactor)
        s = store.settings
        self.assertEqual((s.hosts, s.keyspace, s.multi_dc, s.create_schema),
                         ((("127.0.0.1", 9042),), "queuey", False, True))
        self.assertEqual(dict(s.replication), {"class": "SimpleStrategy", "replication_factor": 1})
        self.assertEqual((s.bucket_seconds, s.directory_shards), (3600, 64))
        self.assertEqual(store.name, "cassandra")

    def test_full(self) -> None:
        store = make_store(self.config(
            "hosts = 10.0.0.1, 10.0.0.2:9043,[::1]:9044\nkeyspace = q_prod\n"
            "replication = NetworkTopologyStrategy:dc1=3,dc2=2\nmulti_dc = true\ncreate_schema = false\n"
            "username = queuey\npassword = secret\nlocal_dc = dc1\nconnect_timeout = 2.5\n"
            "request_timeout = 4\n"), reactor)
        s = store.settings
        self.assertEqual(s.hosts, (("10.0.0.1", 9042), ("10.0.0.2", 9043), ("::1", 9044)))
        self.assertEqual(dict(s.replication), {"class": "NetworkTopologyStrategy", "dc1": 3, "dc2": 2})
        self.assertEqual((s.multi_dc, s.create_schema, s.username, s.password, s.local_dc,
                          s.connect_timeout, s.request_timeout),
                         (True, False, "queuey", "secret", "dc1", 2.5, 4.0))
        from cassandra import ConsistencyLevel
        self.assertEqual(store._levels, {"weak": ConsistencyLevel.LOCAL_ONE,
                                         "strong": ConsistencyLevel.LOCAL_QUORUM,
                                         "very_strong": ConsistencyLevel.EACH_QUORUM})

    def test_single_dc_levels(self) -> None:
        from cassandra import ConsistencyLevel
        store = make_store(self.config(), reactor)
        self.assertEqual(store._levels, {"weak": ConsistencyLevel.ONE, "strong": ConsistencyLevel.QUORUM,
                                         "very_strong": ConsistencyLevel.ALL})
        self.assertEqual(store._serial, ConsistencyLevel.SERIAL)

    def test_bad_values_name_their_key(self) -> None:
        for line, key in [("hosts = a:b", "hosts"), ("hosts = ,", "hosts"), ("hosts = h:70000", "hosts"),
                          ("keyspace = 1bad", "keyspace"), ("keyspace = a-b", "keyspace"),
                          ("replication = SimpleStrategy", "replication"),
                          ("replication = SimpleStrategy:0", "replication"),
                          ("replication = Other:1", "replication"),
                          ("replication = NetworkTopologyStrategy:dc1", "replication"),
                          ("multi_dc = maybe", "multi_dc"), ("multi_dc = true", "replication"),
                          ("create_schema = 2", "create_schema"), ("username = u", "password"),
                          ("password = p", "username"), ("local_dc = a b", "local_dc"),
                          ("connect_timeout = soon", "connect_timeout"), ("request_timeout = 0", "request_timeout"),
                          ("request_timeout = nan", "request_timeout"),
                          ("max_in_flight = 0", "max_in_flight"), ("bucket_seconds = 5", "bucket_seconds"),
                          ("directory_shards = 0", "directory_shards"),
                          ("directory_shards = 4097", "directory_shards"),
                          ("directory_shards = many", "directory_shards")]:
            with self.subTest(line=line):
                error = self.assertRaises(ConfigError, self.config, line + "\n")
                self.assertIn(f"[storage] {key}:", str(error))

    def test_every_mistake_at_once(self) -> None:
        error = self.assertRaises(ConfigError, self.config, "hosts = a:b\nkeyspace = 1bad\nmulti_dc = maybe\n"
                                                            "username = u\nmax_in_flight = 0\n")
        self.assertEqual([problem.split(":")[0] for problem in error.problems],
                         ["[storage] hosts", "[storage] keyspace", "[storage] multi_dc", "[storage] max_in_flight",
                          "[storage] password"])

    def test_keys_of_the_other_backend_are_warned_about(self) -> None:
        config = self.config("path = x.sqlite\nhost = 10.0.0.1\n")
        self.assertEqual(config.warnings, ("[storage] path: unknown setting, ignored",
                                           "[storage] host: unknown setting, ignored"))

    def test_schema_cql(self) -> None:
        from queuey.storage.cassandra import schema_cql
        cql = "\n".join(schema_cql("ks", {"class": "NetworkTopologyStrategy", "dc1": 3}))
        self.assertIn("CREATE KEYSPACE IF NOT EXISTS ks WITH replication = "
                      "{'class': 'NetworkTopologyStrategy', 'dc1': 3}", cql)
        self.assertIn("TimeWindowCompactionStrategy", cql)
        self.assertIn("PRIMARY KEY ((application, queue_name, incarnation, partition, bucket), id)", cql)
        self.assertIn("PRIMARY KEY ((application, shard), queue_name)", cql)
        self.assertNotIn("ks.queues ", cql)  # the unsharded table of earlier versions is not made any more
