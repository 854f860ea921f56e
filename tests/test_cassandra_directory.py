"""The sharded queue directory on a real Cassandra, and the upgrade of keyspaces made before it.

Needs the Cassandra of ``make test`` (QUEUEY_TEST_CASSANDRA); skips without it,
except under CI=true.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

from twisted.internet import defer, reactor, task, utils
from twisted.trial import unittest

from queuey import timeuuid
from queuey.errors import StorageUnavailable
from queuey.interfaces import MessageRange, NewMessage, QueueSettings
from queuey.storage.directory import shard_of
from tests.processes import spawn_queuey
from tests.services import CASSANDRA, require
from tests.test_cassandra_store import CassandraStoreMixin, cassandra_settings, real_ticks

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
APP = "dir"


def store_for(**storage: str) -> Any:
    from queuey.storage.cassandra import CassandraStore
    return CassandraStore(cassandra_settings(**storage), reactor)


@defer.inlineCallbacks
def drop_keyspace(keyspace: str) -> Any:
    """A fresh start for a test keyspace (through a store on the main test keyspace)."""
    store = store_for()
    yield store.open()
    try:
        yield store._execute(f"DROP KEYSPACE IF EXISTS {keyspace}")
    finally:
        yield store.close()


def varied_names(count: int, seed: int) -> list[str]:
    """Queue names of every allowed character and length, some sharing long prefixes."""
    rng = random.Random(seed)
    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-"
    names: set[str] = set()
    while len(names) < count:
        prefix = rng.choice(["", "user-", "user-00", "Z", "_"])
        names.add((prefix + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 12))))[:50])
    return sorted(names)


class DirectoryTests(CassandraStoreMixin, unittest.TestCase):
    """Lookups touch one partition; listings merge the shards exactly."""

    timeout = 120
    applications = (APP,)
    storage = {"keyspace": "queuey_test_dir"}

    def setUp(self) -> defer.Deferred[None]:
        return self.open_clean_store()

    def create_all(self, names: list[str]) -> defer.Deferred[Any]:
        """Create the queues, the shards at once but each shard's one by one: concurrent lightweight
        transactions on one partition may time out contending on a busy machine (a 503 to a client)."""
        by_shard: dict[int, list[str]] = {}
        for name in names:
            by_shard.setdefault(shard_of(name, self.store.layout.shards), []).append(name)

        async def create(shard_names: list[str]) -> None:
            for name in shard_names:
                await self.store.create_queue(QueueSettings(APP, name, created=real_ticks()))
        return defer.gatherResults([defer.ensureDeferred(create(group)) for group in by_shard.values()])

    def spy(self) -> list[tuple[str, tuple[Any, ...]]]:
        """The statements the store runs from now on, with their values."""
        ran: list[tuple[str, tuple[Any, ...]]] = []
        query = self.store.query

        def spying(name: str, *values: Any, **kwargs: Any) -> Any:
            ran.append((name, values))
            return query(name, *values, **kwargs)
        self.patch(self.store, "query", spying)
        self.patch(self.store.directory, "_query", spying)
        return ran

    @defer.inlineCallbacks
    def test_lookup_touches_one_partition(self) -> Any:
        shards = self.store.layout.shards
        self.assertEqual(shards, 64)
        yield self.create_all(["alpha", "beta"])
        ran = self.spy()
        queue = yield self.store.get_queue(APP, "alpha")
        self.assertEqual(queue.queue_name, "alpha")
        self.assertEqual(ran, [("get_queue", (APP, shard_of("alpha", shards), "alpha"))])
        # The row is in that partition and in no other.
        rows = yield self.store._execute(
            f"SELECT shard, queue_name FROM queue_directory WHERE application = '{APP}' AND shard IN "
            f"({', '.join(map(str, range(shards)))}) AND queue_name = 'alpha'")
        self.assertEqual([tuple(r) for r in rows], [(shard_of("alpha", shards), "alpha")])

    @defer.inlineCallbacks
    def test_changes_touch_one_partition(self) -> Any:
        yield self.create_all(["gamma"])
        ran = self.spy()
        queue = yield self.store.get_queue(APP, "gamma")
        yield self.store.update_queue(QueueSettings(APP, "gamma", 3, created=queue.created))
        yield self.store.delete_queue(APP, "gamma")
        key = (APP, shard_of("gamma", 64), "gamma")
        directory = [(name, values) for name, values in ran if name.endswith("_queue")]
        self.assertEqual(directory, [("get_queue", key), ("update_queue", (3, "user", "strong", "") + key
                                                          + (queue.created,)),
                                     ("get_queue", key), ("delete_queue", key + (queue.created,))])

    @defer.inlineCallbacks
    def test_listing_is_exact_in_every_page_size(self) -> Any:
        names = varied_names(400, seed=11)
        yield self.create_all(names)
        shards = {shard_of(name, 64) for name in names}
        self.assertGreater(len(shards), 60)  # spread over (nearly) every shard
        ran = self.spy()
        for limit in (1, 7, 100, 1000):
            seen: list[str] = []
            after = None
            while True:
                page = yield self.store.list_queues(APP, after, limit)
                self.assertLessEqual(len(page), limit)
                if not page:
                    break
                seen.extend(q.queue_name for q in page)
                after = page[-1].queue_name
            self.assertEqual(seen, names, f"pages of {limit}")
        self.assertEqual({name for name, _ in ran}, {"list_shards", "list_shard_upto"})  # both rounds ran

    @defer.inlineCallbacks
    def test_crowded_shard(self) -> Any:
        """Twelve names in one shard, three elsewhere: a page of 100 reads that shard to its end."""
        crowded = [n for n in (f"s{i}" for i in range(5000)) if shard_of(n, 64) == 5][:12]
        names = sorted(crowded + ["a", "m", "z"])
        yield self.create_all(names)
        ran = self.spy()
        page = yield self.store.list_queues(APP, None, 100)
        self.assertEqual([q.queue_name for q in page], names)
        self.assertEqual([name for name, _ in ran], ["list_shards", "list_shard"])

    @defer.inlineCallbacks
    def test_pages_after_any_offset(self) -> Any:
        """An offset need not be a queue's name; the page is the names after it, with bounded reads."""
        names = varied_names(200, seed=5)
        yield self.create_all(names)
        rng = random.Random(3)
        offsets = ["", "-", "zzzz", "user-", "user-00"] + rng.sample(names, 10)
        offsets += [n + "0" for n in rng.sample(names, 5)]
        for offset in offsets:
            ran = self.spy()
            page = yield self.store.list_queues(APP, offset or None, 25)
            self.assertEqual([q.queue_name for q in page], [n for n in names if n > offset][:25], offset)
            self.assertEqual(ran[0][0], "list_shards")
            self.assertLessEqual(len(ran), 1 + 64)

    @defer.inlineCallbacks
    def test_settings_round_trip(self) -> Any:
        queue = QueueSettings(APP, "full", 7, "public", "weak", ("app:a", "app:b"), real_ticks())
        yield self.store.create_queue(queue)
        self.assertEqual((yield self.store.get_queue(APP, "full")), queue)
        [listed] = yield self.store.list_queues(APP, None, 10)
        self.assertEqual(listed, queue)


class ShardCountTests(unittest.TestCase):
    """The shard count is the keyspace's, recorded by the first store that opens it."""

    timeout = 120

    @defer.inlineCallbacks
    def test_recorded_count_wins(self) -> Any:
        keyspace = "queuey_test_dir8"
        yield drop_keyspace(keyspace)
        first = store_for(keyspace=keyspace, directory_shards="8")
        yield first.open()
        self.addCleanup(first.close)
        self.assertEqual(first.layout.shards, 8)
        names = [f"q{i}" for i in range(40)]
        for name in names:
            yield first.create_queue(QueueSettings(APP, name, created=real_ticks()))
        second = store_for(keyspace=keyspace)  # configured with the default, 64
        yield second.open()
        self.addCleanup(second.close)
        self.assertEqual(second.layout.shards, 8)
        self.assertEqual((yield second.get_queue(APP, "q17")).queue_name, "q17")
        self.assertEqual([q.queue_name for q in (yield second.list_queues(APP, None, 100))], sorted(names))
        rows = yield second._execute("SELECT value FROM settings WHERE name = 'directory_shards'")
        self.assertEqual([r[0] for r in rows], ["8"])

    @defer.inlineCallbacks
    def test_new_keyspace_that_cannot_record_its_count_is_refused(self) -> Any:
        """Replication 2 on one node: no lightweight transaction, so no shard count, so no service."""
        yield drop_keyspace("queuey_test_dir_rf2")
        store = store_for(keyspace="queuey_test_dir_rf2", replication="SimpleStrategy:2")
        with self.assertRaises(StorageUnavailable) as raised:
            yield store.open()
        self.assertIn("Unavailable", str(raised.exception))


# -- upgrading keyspaces made before the directory ---------------------------------------

LEGACY_KEYSPACE = "queuey_test_legacy"
LEGACY_WRITES = {
    "legacy_insert": ("INSERT INTO queues (application, queue_name, partitions, type, consistency, principles, "
                      "created) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    "legacy_delete": "DELETE FROM queues WHERE application = ? AND queue_name = ?",
}
MIGRATE = [sys.executable, "-m", "queuey.storage.cassandra_migrate"]


@defer.inlineCallbacks
def make_legacy_keyspace(queues: list[QueueSettings], messages: dict[str, list[NewMessage]]) -> Any:
    """A keyspace as an earlier Queuey left it: queues in the unsharded table, messages under their incarnations.

    The messages are stored by today's store (their tables did not change); the
    queue rows then move to the legacy table and the directory's settings go.
    """
    from queuey.storage.cassandra_directory import settings_row
    from queuey.storage.cassandra_migrate import LEGACY_CQL
    yield drop_keyspace(LEGACY_KEYSPACE)
    store = store_for(keyspace=LEGACY_KEYSPACE)
    yield store.open()
    try:
        for queue in queues:
            if queue.queue_name in messages:
                yield store.put_messages(queue, messages[queue.queue_name])
        yield store._execute(LEGACY_CQL.format(keyspace=LEGACY_KEYSPACE))
        yield store.prepare(LEGACY_WRITES)
        for queue in queues:
            yield store.query("legacy_insert", *settings_row(queue))
        yield store._execute("TRUNCATE queue_directory")
        yield store._execute("DELETE FROM settings WHERE name IN ('directory_shards', 'directory_ready')")
    finally:
        yield store.close()


class SteppingClock(task.Clock):
    """A clock that is ``step`` seconds later each time it is read."""

    def __init__(self, step: float) -> None:
        super().__init__()
        self.step = step

    def seconds(self) -> float:
        self.advance(self.step)
        return super().seconds()


class UpgradeTests(unittest.TestCase):
    """A keyspace of an earlier Queuey: refused until migrated, then served with every queue and message."""

    timeout = 180

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.hosts = require(CASSANDRA, "Cassandra")
        ids = timeuuid.TimeUUIDGenerator(real_ticks)
        now = real_ticks()
        self.queues = [QueueSettings(APP, name, 1 + i % 3, "user", "strong", (), now + i)
                       for i, name in enumerate(varied_names(45, seed=2))]
        self.queues += [QueueSettings("other", "shared", 2, "public", "weak", ("app:dir",), now),
                        QueueSettings("other", "solo", 1, "user", "very_strong", (), now + 1)]
        self.with_messages = self.queues[4]
        self.messages = [NewMessage(ids.next(), 1, f"m{i}".encode(), "text/plain", 3600) for i in range(5)]
        yield make_legacy_keyspace(self.queues, {self.with_messages.queue_name: self.messages})
        self.dir = os.path.abspath(self.mktemp())
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "queuey.ini")
        with open(self.config, "w") as f:
            f.write(f"[application_keys]\ndir = key\n[storage]\nbackend = cassandra\nhosts = {self.hosts}\n"
                    f"keyspace = {LEGACY_KEYSPACE}\n")

    @defer.inlineCallbacks
    def migrating_store(self) -> Any:
        store = store_for(keyspace=LEGACY_KEYSPACE)
        yield store.open(migrating=True)
        self.addCleanup(store.close)
        return store

    @defer.inlineCallbacks
    def assert_served_as_before(self) -> Any:
        """A store opens the keyspace; every queue, listing and message is as the earlier version had it."""
        store = store_for(keyspace=LEGACY_KEYSPACE)
        yield store.open()
        try:
            for queue in self.queues:
                self.assertEqual((yield store.get_queue(queue.application, queue.queue_name)), queue)
            for application in (APP, "other"):
                listed = yield store.list_queues(application, None, 1000)
                self.assertEqual(listed, sorted((q for q in self.queues if q.application == application),
                                                key=lambda q: q.queue_name))
            read = yield store.read_messages(self.with_messages, 1, MessageRange())
            self.assertEqual([m.id for m in read], [m.id for m in self.messages])
        finally:
            yield store.close()

    @defer.inlineCallbacks
    def test_store_refuses_until_migrated(self) -> Any:
        from queuey.storage.cassandra_directory import DirectoryNeedsMigration
        store = store_for(keyspace=LEGACY_KEYSPACE)
        with self.assertRaises(DirectoryNeedsMigration) as raised:
            yield store.open()
        message = str(raised.exception)
        self.assertNotIn("\n", message)
        self.assertIn(f"keyspace {LEGACY_KEYSPACE} keeps its queues in the unsharded table queues", message)
        self.assertIn("python -m queuey.storage.cassandra_migrate --config", message)
        # Refusing wrote nothing: the shard count is still unrecorded.
        probe = store_for()
        yield probe.open()
        self.addCleanup(probe.close)
        rows = yield probe._execute(f"SELECT name FROM {LEGACY_KEYSPACE}.settings")
        self.assertEqual([r[0] for r in rows], ["bucket_seconds"])

    @defer.inlineCallbacks
    def test_twistd_refuses_with_one_line(self) -> Any:
        process = spawn_queuey(self, self.dir, "--config", self.config, "--port", "tcp:0:interface=127.0.0.1")
        process.listening.addErrback(lambda _: None)
        yield process.ended
        output = process.output.decode()
        [line] = [line for line in output.splitlines() if "Could not open the cassandra store" in line]
        self.assertIn("then run: python -m queuey.storage.cassandra_migrate --config <queuey.ini>", line)
        self.assertNotIn("Traceback", output)

    @defer.inlineCallbacks
    def test_migrate_keeps_every_queue_and_message(self) -> Any:
        from queuey.storage import cassandra_migrate
        self.patch(cassandra_migrate, "PAGE", 7)  # many pages on both sides
        store = yield self.migrating_store()
        said: list[str] = []
        counts = yield defer.ensureDeferred(cassandra_migrate.migrate(store, reactor, said.append))
        self.assertEqual((counts.applications, counts.queues, counts.written, counts.removed),
                         (2, len(self.queues), len(self.queues), 0))
        self.assertIn(f"keyspace {LEGACY_KEYSPACE} migrated: {len(self.queues)} queues of 2 applications", said[-1])
        yield store.close()
        yield self.assert_served_as_before()
        again = yield self.migrating_store()
        said.clear()
        counts = yield defer.ensureDeferred(cassandra_migrate.migrate(again, reactor, said.append))
        self.assertEqual(counts.changes, 0)
        self.assertIn("is migrated already", said[-1])

    @defer.inlineCallbacks
    def test_rerun_after_interruption_converges(self) -> Any:
        """A walk makes the directory hold exactly the legacy table, whatever it held before."""
        from queuey.storage import cassandra_migrate
        store = yield self.migrating_store()
        yield store.prepare(cassandra_migrate.LEGACY_STATEMENTS)
        yield store.prepare(LEGACY_WRITES)
        first = yield defer.ensureDeferred(cassandra_migrate.walk(store, store.directory, reactor, print, "copy"))
        self.assertEqual(first.written, len(self.queues))
        # Meanwhile, in the legacy table: one queue created, one deleted, one changed.
        added = QueueSettings(APP, "added-late", 1, created=real_ticks())
        gone, changed = self.queues[0], self.queues[1]
        from queuey.storage.cassandra_directory import settings_row
        yield store.query("legacy_insert", *settings_row(added))
        yield store.query("legacy_delete", gone.application, gone.queue_name)
        changed = QueueSettings(changed.application, changed.queue_name, 9, created=changed.created)
        yield store.query("legacy_insert", *settings_row(changed))
        second = yield defer.ensureDeferred(cassandra_migrate.walk(store, store.directory, reactor, print, "check"))
        self.assertEqual((second.written, second.removed), (2, 1))
        third = yield defer.ensureDeferred(cassandra_migrate.walk(store, store.directory, reactor, print, "check"))
        self.assertEqual(third.changes, 0)
        self.assertIsNone((yield store.directory.get(gone.application, gone.queue_name)))
        self.assertEqual((yield store.directory.get(APP, changed.queue_name)), changed)
        self.assertEqual((yield store.directory.get(APP, "added-late")), added)

    @defer.inlineCallbacks
    def test_progress_lines_on_the_clock(self) -> Any:
        """A line every PROGRESS_SECONDS of the injected clock: here each reading of it is that much later."""
        from queuey.storage import cassandra_migrate
        store = yield self.migrating_store()
        yield store.prepare(cassandra_migrate.LEGACY_STATEMENTS)
        said: list[str] = []
        clock = SteppingClock(cassandra_migrate.PROGRESS_SECONDS)
        counts = yield defer.ensureDeferred(cassandra_migrate.walk(store, store.directory, clock, said.append, "copy"))
        self.assertEqual(len(said), counts.queues)  # one line per queue walked
        self.assertEqual(said[0], f"copy: application {APP}: 1 queues so far, 0 written, 0 removed")
        self.assertEqual(said[-1], f"copy: application other: {len(self.queues)} queues so far, "
                                   f"{len(self.queues) - 2} written, 0 removed")
        quiet: list[str] = []
        yield defer.ensureDeferred(cassandra_migrate.walk(store, store.directory, task.Clock(), quiet.append, "check"))
        self.assertEqual(quiet, [])  # no time passed: no line

    @defer.inlineCallbacks
    def test_a_writer_during_the_migration_stops_it(self) -> Any:
        """Rows that change in the legacy table between the copy and the check: no mark, exit 1's error."""
        from queuey.storage import cassandra_migrate
        from queuey.storage.cassandra_directory import settings_row
        store = yield self.migrating_store()
        yield store.prepare(LEGACY_WRITES)
        query = store.query
        walks = []

        def writer_between_walks(name: str, *values: Any, **kwargs: Any) -> Any:
            if name == "legacy_applications":
                walks.append(name)
                if len(walks) == 2:  # the check walk starts: an earlier queuey creates a queue
                    return query("legacy_insert", *settings_row(QueueSettings(APP, "sneaky", created=1))).addCallback(
                        lambda _: query(name, *values, **kwargs))
            return query(name, *values, **kwargs)
        self.patch(store, "query", writer_between_walks)
        with self.assertRaises(cassandra_migrate.MigrationFailed) as raised:
            yield defer.ensureDeferred(cassandra_migrate.migrate(store, reactor, lambda line: None))
        self.assertIn("1 queues changed in table queues while they were copied", str(raised.exception))
        yield store.close()
        with self.assertRaises(Exception):
            yield store_for(keyspace=LEGACY_KEYSPACE).open()

    @defer.inlineCallbacks
    def test_command(self) -> Any:
        """The entry point: migrates, says so, exits 0; again: nothing to do; a bad file: one line, 2."""
        env = dict(os.environ)
        out, err, code = yield utils.getProcessOutputAndValue(MIGRATE[0], MIGRATE[1:] + ["--config", self.config],
                                                              env=env, path=ROOT)
        self.assertEqual(code, 0, err.decode())
        lines = out.decode().splitlines()
        self.assertIn("copying the queues of table queues into queue_directory (64 shards)", lines[0])
        self.assertIn(f"keyspace {LEGACY_KEYSPACE} migrated: {len(self.queues)} queues", lines[-1])
        yield self.assert_served_as_before()
        out, err, code = yield utils.getProcessOutputAndValue(MIGRATE[0], MIGRATE[1:] + ["--config", self.config],
                                                              env=env, path=ROOT)
        self.assertEqual((code, out.decode().strip()),
                         (0, f"keyspace {LEGACY_KEYSPACE} is migrated already (its directory has 64 shards)"))
        missing = os.path.join(self.dir, "missing.ini")
        out, err, code = yield utils.getProcessOutputAndValue(MIGRATE[0], MIGRATE[1:] + ["--config", missing],
                                                              env=env, path=ROOT)
        self.assertEqual(code, 2)
        self.assertEqual(err.decode().strip().count("\n"), 0)
        self.assertIn("bad configuration: cannot read configuration file", err.decode())


class WritesTests(unittest.SynchronousTestCase):
    """The migration's bounded writes (no Cassandra needed)."""

    def test_bounded_and_first_failure_raised(self) -> None:
        from queuey.storage.cassandra_migrate import Writes
        writes = Writes(2)
        gates = [defer.Deferred() for _ in range(4)]
        started: list[int] = []

        async def write(n: int) -> None:
            started.append(n)
            await gates[n]

        async def feed() -> None:
            for n in range(4):
                await writes.add(write(n))
            await writes.drain()
        fed = defer.ensureDeferred(feed())
        self.assertEqual(started, [0, 1])  # two in flight, the third waits for a slot
        gates[1].errback(RuntimeError("refused"))
        self.assertEqual(started, [0, 1, 2])
        gates[0].callback(None)
        self.assertEqual(started, [0, 1, 2])  # the failure stops the feed at its next add
        self.assertEqual(str(self.failureResultOf(fed, RuntimeError).value), "refused")
        gates[2].callback(None)
