"""The SQLite backend: the storage contract, inline and on real threads, plus its own duties."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial import unittest

from queuey import timeuuid
from queuey.config import ConfigError, SQLiteSettings, Synchronous, parse_config
from queuey.errors import StorageUnavailable
from queuey.interfaces import MessageRange
from queuey.storage import make_store
from queuey.storage.sqlite import COUNT_SQL, SCHEMA_VERSION, SWEEP_BATCH, SQLiteStore, ThreadedRunner, range_sql
from tests.storage_contract import StoreContract


class ClockMixin:
    def _clock(self) -> Clock:
        if not hasattr(self, "clock"):
            self.clock = Clock()
            self.clock.advance(1_700_000_000)
        return self.clock

    def now_ticks(self) -> int:
        return round(self._clock().seconds() * timeuuid.TICKS_PER_SECOND)

    def advance(self, seconds: float) -> None:
        self._clock().advance(seconds)


class InlineSQLiteContract(ClockMixin, StoreContract, unittest.TestCase):
    """The contract on the in-memory, inline store that MemoryQueuey uses."""

    def make_store(self) -> SQLiteStore:
        return SQLiteStore.in_memory(self._clock())


class ThreadedSQLiteContract(ClockMixin, StoreContract, unittest.TestCase):
    """The contract on a database file, with the writer and reader threads of production."""

    def make_store(self) -> SQLiteStore:
        self.path = self.mktemp() + ".sqlite"
        return SQLiteStore(ThreadedRunner(self.path, reactor), self._clock(), expiry_interval=0)

    @defer.inlineCallbacks
    def test_sweep_reclaims_expired_and_deleted(self) -> Any:
        queue = yield self.created("q1")
        doomed = yield self.created("q2")
        yield self.store.put_messages(queue, [self.message(ttl=1) for _ in range(SWEEP_BATCH + 10)])
        yield self.store.put_messages(queue, [self.message(ttl=3600)])
        yield self.store.put_messages(doomed, [self.message(ttl=3600) for _ in range(30)])
        yield self.store.delete_queue(doomed.application, doomed.queue_name)
        self.advance(2)
        removed = yield self.store.sweep()
        self.assertEqual(removed, SWEEP_BATCH + 10 + 30)
        conn = sqlite3.connect(self.path)
        self.addCleanup(conn.close)
        self.assertEqual(conn.execute("SELECT count(*) FROM messages").fetchone()[0], 1)
        self.assertEqual(conn.execute("SELECT count(*) FROM dropped_queues").fetchone()[0], 0)

    @defer.inlineCallbacks
    def test_failure_in_group_commit_is_isolated(self) -> Any:
        """One failing write in a group commit does not undo the others."""
        yield self.created("q1")
        results = yield defer.DeferredList([
            self.store.create_queue(self.queue("q2")),
            self.store.create_queue(self.queue("q1")),  # exists: fails alone
            self.store.create_queue(self.queue("q3")),
        ], consumeErrors=True)
        self.assertEqual([ok for ok, _ in results], [True, False, True])
        names = yield self.store.list_queues("contract", None, 10)
        self.assertEqual([q.queue_name for q in names], ["q1", "q2", "q3"])

    @defer.inlineCallbacks
    def test_wal_and_durable_settings(self) -> Any:
        def pragmas(conn: sqlite3.Connection) -> tuple[str, int]:
            return (conn.execute("PRAGMA journal_mode").fetchone()[0],
                    conn.execute("PRAGMA synchronous").fetchone()[0])
        mode, synchronous = yield self.store._runner.read(pragmas)
        self.assertEqual((mode, synchronous), ("wal", 2))  # 2 is FULL

    @defer.inlineCallbacks
    def test_data_survives_reopen(self) -> Any:
        queue = yield self.created("q1")
        message = self.message(body=b"kept")
        yield self.store.put_messages(queue, [message])
        yield self.store.close()
        self.store = SQLiteStore(ThreadedRunner(self.path, reactor), self._clock(), expiry_interval=0)
        yield self.store.open()
        self.addCleanup(self.store.close)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual([(m.id, m.body) for m in read], [(message.id, b"kept")])

    @defer.inlineCallbacks
    def test_unopenable_file_is_unavailable(self) -> Any:
        store = SQLiteStore(ThreadedRunner("/proc/no-such-dir/x.sqlite", reactor), self._clock())
        with self.assertRaises(StorageUnavailable):
            yield store.open()
        yield store.close()


class PeriodicSweepTests(ClockMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_sweeps_on_the_clock(self) -> Any:
        store = SQLiteStore(SQLiteStore.in_memory(self._clock())._runner, self._clock(), expiry_interval=60)
        yield store.open()
        self.addCleanup(store.close)
        contract = InlineSQLiteContract()
        contract.clock = self._clock()
        contract.store = store
        contract.generator = timeuuid.TimeUUIDGenerator(self.now_ticks)
        queue = yield contract.created("q1")
        yield store.put_messages(queue, [contract.message(ttl=10)])
        self.advance(60)
        count = yield store._runner.read(lambda c: c.execute("SELECT count(*) FROM messages").fetchone()[0])
        self.assertEqual(count, 0)


class FromConfigTests(unittest.TestCase):
    def config(self, storage: str) -> Any:
        return parse_config(f"[application_keys]\na = k\n[storage]\nbackend = sqlite\n{storage}")

    @defer.inlineCallbacks
    def test_builds_threaded_store(self) -> Any:
        """The store of the configuration: its file (folder created), its readers, FULL by default."""
        path = os.path.join(self.mktemp(), "sub", "q.sqlite")
        store = make_store(self.config(f"path = {path}\nreaders = 3\n"), reactor)
        self.assertIsInstance(store, SQLiteStore)
        yield store.open()
        self.addCleanup(store.close)
        self.assertTrue(os.path.exists(path))
        self.assertEqual(len(store._runner._readers), 3)  # threads started at open
        self.assertEqual((yield self.synchronous(store)), ("FULL", "FULL"))

    @defer.inlineCallbacks
    def test_synchronous_levels(self) -> Any:
        """[storage] synchronous (any case) is what the writer and the readers run with."""
        for configured, level in (("normal", "NORMAL"), ("FULL", "FULL"), ("Extra", "EXTRA")):
            path = self.mktemp() + ".sqlite"
            store = make_store(self.config(f"path = {path}\nsynchronous = {configured}\n"), reactor)
            yield store.open()
            try:
                self.assertEqual((yield self.synchronous(store)), (level, level), configured)
            finally:
                yield store.close()

    @staticmethod
    @defer.inlineCallbacks
    def synchronous(store: SQLiteStore) -> Any:
        """(writer's, a reader's) PRAGMA synchronous, by name."""
        names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}

        def level(conn: sqlite3.Connection) -> str:
            return names[conn.execute("PRAGMA synchronous").fetchone()[0]]
        writer = yield store._runner.write(level)
        reader = yield store._runner.read(level)
        return writer, reader

    def test_settings_are_typed_at_load(self) -> None:
        settings = self.config("path = x.sqlite\nsynchronous = normal\nreaders = 2\nexpiry_interval = 5\n").storage
        self.assertEqual(settings, SQLiteSettings("x.sqlite", Synchronous.NORMAL, 2, 5.0))

    def test_bad_synchronous_and_readers_both_said(self) -> None:
        error = self.assertRaises(ConfigError, self.config, "path = x\nsynchronous = maybe\nreaders = lots\n")
        self.assertEqual(error.problems, ("[storage] synchronous: 'maybe': use one of NORMAL, FULL, EXTRA",
                                          "[storage] readers: 'lots' is not a whole number"))

#: The schema of the databases Queuey wrote before messages were rendered at write time
#: (schema version 0), as a file written then holds it.
VERSION_0_SCHEMA = """
CREATE TABLE queues (
    qid INTEGER PRIMARY KEY AUTOINCREMENT, application TEXT NOT NULL, queue_name TEXT NOT NULL,
    partitions INTEGER NOT NULL, type TEXT NOT NULL, consistency TEXT NOT NULL, principles TEXT NOT NULL,
    created INTEGER NOT NULL, UNIQUE (application, queue_name));
CREATE TABLE messages (
    qid INTEGER NOT NULL, partition INTEGER NOT NULL, key BLOB NOT NULL, expires_ms INTEGER NOT NULL,
    content_type TEXT NOT NULL, body BLOB NOT NULL, UNIQUE (qid, partition, key));
CREATE INDEX messages_by_expiry ON messages (expires_ms);
CREATE TABLE dropped_queues (qid INTEGER PRIMARY KEY);
"""


class UpgradeTests(ClockMixin, unittest.TestCase):
    @defer.inlineCallbacks
    def test_a_version_0_database_is_migrated_at_open_and_loses_nothing(self) -> Any:
        path = self.mktemp() + ".sqlite"
        ids = [timeuuid.make_uuid(1_700_000_000 * timeuuid.TICKS_PER_SECOND + n, 5, 9) for n in range(3)]
        bodies = [b"plain", "\u00e9t\u00e9 \"quoted\"".encode(), b"\xff\xfe binary"]
        conn = sqlite3.connect(path)
        conn.executescript(VERSION_0_SCHEMA)
        conn.execute("INSERT INTO queues (application, queue_name, partitions, type, consistency, principles, "
                     "created) VALUES ('a', 'q', 2, 'user', 'strong', '', 1)")
        expires = int((self._clock().seconds() + 3600) * 1000)
        conn.executemany("INSERT INTO messages VALUES (1, ?, ?, ?, ?, ?)",
                         [(1 + n % 2, timeuuid.sort_key(i), expires, "text/plain", body)
                          for n, (i, body) in enumerate(zip(ids, bodies))])
        conn.commit()
        conn.close()
        store = SQLiteStore(ThreadedRunner(path, reactor), self._clock(), expiry_interval=0)
        yield store.open()
        self.addCleanup(store.close)
        queue = yield store.get_queue("a", "q")
        first = yield store.read_messages(queue, 1, MessageRange())
        second = yield store.read_messages(queue, 2, MessageRange())
        self.assertEqual([(m.id, m.body, m.content_type) for m in first + second],
                         [(ids[0], bodies[0], "text/plain"), (ids[2], bodies[2], "text/plain"),
                          (ids[1], bodies[1], "text/plain")])
        version = yield store._runner.read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        self.assertEqual(version, SCHEMA_VERSION)
        tables = yield store._runner.read(lambda c: [r[0] for r in c.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")])
        self.assertNotIn("messages_v0", tables)


class QueryPlanTests(ClockMixin, unittest.TestCase):
    """Range reads walk the primary key, whatever ANALYZE learns: flat however long a queue grows."""

    @defer.inlineCallbacks
    def test_range_reads_stay_on_the_primary_key_after_analyze(self) -> Any:
        store = SQLiteStore.in_memory(self._clock())
        yield store.open()
        self.addCleanup(store.close)

        def plans(conn: sqlite3.Connection) -> list[str]:
            # Statistics that make the expiry index look far more selective than the key.
            conn.execute("ANALYZE")
            conn.execute("DELETE FROM sqlite_stat1")
            conn.execute("INSERT INTO sqlite_stat1 VALUES ('messages', 'messages_by_expiry', '10000000 1')")
            conn.execute("INSERT INTO sqlite_stat1 VALUES ('messages', 'messages', '10000000 10000000 "
                         "10000000 1')")
            conn.execute("ANALYZE sqlite_schema")  # reload the statistics
            found = []
            for descending in (False, True):
                for lower in ("", ">=", ">"):
                    for upper in (False, True):
                        sql = range_sql(descending, lower, upper)
                        values = [1, 1, 0] + [b"k"] * (bool(lower) + upper) + [100]
                        found.append(" ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, values)))
            found.append(" ".join(row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + COUNT_SQL, ["a", "q", 0])))
            return found
        found = yield store._runner.read(plans)
        for plan in found:
            self.assertIn("USING PRIMARY KEY", plan)
            self.assertNotIn("messages_by_expiry", plan)
            self.assertNotIn("TEMP B-TREE", plan)  # rows come in key order: no sort
        self.assertEqual(len(found), 13)
