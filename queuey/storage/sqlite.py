"""The embedded store: one SQLite file in WAL mode, never touched on the reactor thread.

Writes go to one writer thread that commits whatever has queued up in one
transaction (group commit: one fsync for many concurrent requests, each
request in its own savepoint so one failure does not undo the others).  Reads
run in a small thread pool, each thread with its own connection; WAL lets them
read while the writer writes.

Messages are keyed by (queue id, partition, sort key), where the sort key is
the id's :func:`queuey.timeuuid.sort_key`, so a range read is one index scan.
Queue ids are never reused: deleting a queue removes its row at once and its
messages later, in small batches, together with expired messages.
"""

from __future__ import annotations

import functools
import operator
import os
import queue as queue_module
import sqlite3
import threading
from typing import Any, Callable, Sequence, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from queuey import timeuuid
from queuey.config import SQLiteSettings
from queuey.errors import QueueExists, QueueMissing, StorageUnavailable
from queuey.interfaces import (IMessageStore, Message, MessageRange, MessageRef,
                               NewMessage, QueueSettings)
from queuey.rendering import Rendered, parse_rendered, render

T = TypeVar("T")
log = Logger()

SCHEMA = """
CREATE TABLE IF NOT EXISTS queues (
    qid INTEGER PRIMARY KEY AUTOINCREMENT,
    application TEXT NOT NULL,
    queue_name TEXT NOT NULL,
    partitions INTEGER NOT NULL,
    type TEXT NOT NULL,
    consistency TEXT NOT NULL,
    principles TEXT NOT NULL,
    created INTEGER NOT NULL,
    UNIQUE (application, queue_name)
);
CREATE TABLE IF NOT EXISTS messages (
    qid INTEGER NOT NULL,
    partition INTEGER NOT NULL,
    key BLOB NOT NULL,
    expires_ms INTEGER NOT NULL,
    size INTEGER NOT NULL,
    rendered BLOB NOT NULL,
    PRIMARY KEY (qid, partition, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_ms);
CREATE TABLE IF NOT EXISTS dropped_queues (qid INTEGER PRIMARY KEY);
"""
#: ``PRAGMA user_version`` of the schema above.  Version 0 (no version set) kept each
#: message's content type and body in columns of a rowid table; it is migrated at open.
SCHEMA_VERSION = 2

QUEUE_COLUMNS = "application, queue_name, partitions, type, consistency, principles, created"
QID = "(SELECT qid FROM queues WHERE application = ? AND queue_name = ?)"
#: Rows removed per transaction by the sweeper, so a sweep never holds the writer long.
SWEEP_BATCH = 2000
GROUP_COMMIT_MAX = 512
#: Rows rendered per progress line while an old database is migrated.
MIGRATION_REPORT_ROWS = 100_000


#: Unexpired messages of a queue; ``+expires_ms`` as in range_sql (without it, ANALYZE's
#: statistics send this query through the expiry index, over every queue's messages).
COUNT_SQL = f"SELECT count(*) FROM messages WHERE qid = {QID} AND +expires_ms > ?"


@functools.lru_cache(maxsize=None)
def range_sql(descending: bool, lower: str, upper: bool) -> str:
    """The range read of one partition; ``lower`` is '', '>=' or '>'.

    ``+expires_ms`` (not ``expires_ms``) keeps the planner off the expiry index:
    a range read walks the primary key whatever ANALYZE has learnt of the data.
    """
    return ("SELECT size, rendered FROM messages WHERE qid = ? AND partition = ? AND +expires_ms > ?"
            + (f" AND key {lower} ?" if lower else "") + (" AND key <= ?" if upper else "")
            + f" ORDER BY key {'DESC' if descending else 'ASC'} LIMIT ?")


Operation = Callable[[sqlite3.Connection], T]


def connect(path: str, synchronous: str = "FULL") -> sqlite3.Connection:
    """Open ``path`` the way every Queuey connection wants it."""
    if path != ":memory:" and os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                           cached_statements=256)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA cache_size = -32000")
    return conn


def _unavailable(error: sqlite3.Error) -> StorageUnavailable:
    return StorageUnavailable(f"SQLite: {error}")


class InlineRunner:
    """Runs operations at once on the calling thread.  For in-memory tests only."""

    def __init__(self, path: str = ":memory:", synchronous: str = "FULL") -> None:
        self._conn = connect(path, synchronous)

    def start(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def stop(self) -> defer.Deferred[None]:
        self._conn.close()
        return defer.succeed(None)

    def read(self, operation: Operation[T]) -> defer.Deferred[T]:
        try:
            return defer.succeed(operation(self._conn))
        except sqlite3.Error as e:
            return defer.fail(_unavailable(e))
        except Exception:
            return defer.fail()

    def write(self, operation: Operation[T]) -> defer.Deferred[T]:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                result = operation(self._conn)
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")
            return defer.succeed(result)
        except sqlite3.Error as e:
            return defer.fail(_unavailable(e))
        except Exception:
            return defer.fail()


class ThreadedRunner:
    """One group-committing writer thread plus a pool of reader threads."""

    def __init__(self, path: str, reactor: IReactorThreads, readers: int = 4,
                 synchronous: str = "FULL") -> None:
        self._path = path
        self._reactor = reactor
        self._synchronous = synchronous
        self._jobs: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._reads: queue_module.SimpleQueue[Any] = queue_module.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._reader_count = readers
        self._readers: list[threading.Thread] = []
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def start(self) -> defer.Deferred[None]:
        started: defer.Deferred[None] = defer.Deferred()
        self._writer = threading.Thread(target=self._write_loop, args=(started,),
                                        name="queuey-sqlite-write", daemon=True)
        self._writer.start()
        self._readers = [threading.Thread(target=self._read_loop, name=f"queuey-sqlite-read-{n}", daemon=True)
                         for n in range(self._reader_count)]
        for reader in self._readers:
            reader.start()
        return started

    def stop(self) -> defer.Deferred[None]:
        """Finish queued writes and reads, then close every connection (off the reactor thread)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return defer.succeed(None)
        readers, self._readers = self._readers, []

        def shut_down() -> None:
            self._jobs.put(None)
            writer.join()
            for _ in readers:
                self._reads.put(None)
            for reader in readers:
                reader.join()
            with self._lock:
                for conn in self._connections:
                    conn.close()
                self._connections.clear()

        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), shut_down)

    def _connection(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = connect(self._path, self._synchronous)
            with self._lock:
                self._connections.append(conn)
        return conn

    def read(self, operation: Operation[T]) -> defer.Deferred[T]:
        """Run ``operation`` on a reader thread (a plain queue: Twisted's thread pool costs more
        per job than a short read)."""
        result: defer.Deferred[T] = defer.Deferred()
        if self._writer is None:
            return defer.fail(StorageUnavailable("SQLite store is not open"))
        self._reads.put((operation, result))
        return result

    def _read_loop(self) -> None:
        call = self._reactor.callFromThread
        while (job := self._reads.get()) is not None:
            operation, result = job
            try:
                value = operation(self._connection())
            except sqlite3.Error as e:
                call(result.errback, _unavailable(e))
            except Exception:
                call(result.errback, Failure())
            else:
                call(result.callback, value)

    def write(self, operation: Operation[T]) -> defer.Deferred[T]:
        result: defer.Deferred[T] = defer.Deferred()
        if self._writer is None:
            return defer.fail(StorageUnavailable("SQLite store is not open"))
        self._jobs.put((operation, result))
        return result

    def _write_loop(self, started: defer.Deferred[None]) -> None:
        try:
            conn = self._connection()
        except (sqlite3.Error, OSError) as e:
            self._reactor.callFromThread(
                started.errback, StorageUnavailable(f"SQLite: cannot open {self._path}: {e}"))
            return
        self._reactor.callFromThread(started.callback, None)
        stopping = False
        while not stopping:
            job = self._jobs.get()
            if job is None:
                break
            batch = [job]
            while len(batch) < GROUP_COMMIT_MAX:
                try:
                    job = self._jobs.get_nowait()
                except queue_module.Empty:
                    break
                if job is None:
                    stopping = True
                    break
                batch.append(job)
            for deferred, outcome in self._commit(conn, batch):
                callback = deferred.errback if isinstance(outcome, (Failure, Exception)) else deferred.callback
                self._reactor.callFromThread(callback, outcome)

    @staticmethod
    def _commit(conn: sqlite3.Connection, batch: list[Any]) -> list[tuple[Any, Any]]:
        """Run every job of ``batch`` in one transaction, each in its own savepoint."""
        outcomes: list[tuple[Any, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for operation, deferred in batch:
                conn.execute("SAVEPOINT job")
                try:
                    value = operation(conn)
                except sqlite3.Error as e:
                    conn.execute("ROLLBACK TO job")
                    value = _unavailable(e)
                except Exception:
                    conn.execute("ROLLBACK TO job")
                    value = Failure()
                conn.execute("RELEASE job")
                outcomes.append((deferred, value))
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            error = _unavailable(e)
            return [(deferred, error) for _, deferred in batch]
        return outcomes


@implementer(IMessageStore)
class SQLiteStore:
    """Queues and messages in one SQLite database file."""

    name = "sqlite"
    rechecks_queue_on_write = True

    def __init__(self, runner: InlineRunner | ThreadedRunner, clock: IReactorTime,
                 expiry_interval: float = 60.0) -> None:
        self._runner = runner
        self._clock = clock
        self._expiry_interval = expiry_interval
        self._sweep_call: Any = None
        self._sweeping: defer.Deferred[int] | None = None

    @classmethod
    def from_settings(cls, settings: SQLiteSettings, reactor: Any) -> "SQLiteStore":
        return cls(ThreadedRunner(settings.path, reactor, settings.readers, settings.synchronous.value), reactor,
                   settings.expiry_interval)

    @classmethod
    def in_memory(cls, clock: IReactorTime) -> "SQLiteStore":
        """A private in-memory database run inline, for tests without threads."""
        return cls(InlineRunner(":memory:"), clock)

    # -- life cycle ---------------------------------------------------------

    @defer.inlineCallbacks
    def open(self) -> Any:
        yield self._runner.start()
        yield self._runner.write(migrate)
        if self._expiry_interval:
            self._sweep_call = self._clock.callLater(self._expiry_interval, self._periodic_sweep)

    @defer.inlineCallbacks
    def close(self) -> Any:
        if self._sweep_call is not None and self._sweep_call.active():
            self._sweep_call.cancel()
        self._sweep_call = None
        if self._sweeping is not None:
            yield self._sweeping
        yield self._runner.stop()

    def check(self) -> defer.Deferred[None]:
        return self._runner.read(lambda conn: conn.execute("SELECT 1").fetchone() and None)

    # -- expiry -------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self._clock.seconds() * 1000)

    def _periodic_sweep(self) -> None:
        self._sweep_call = None

        def reschedule(result: object) -> object:
            self._sweeping = None
            if isinstance(result, Failure):
                log.failure("Expiry sweep failed", result)
            if self._expiry_interval and self._sweep_call is None:
                self._sweep_call = self._clock.callLater(self._expiry_interval, self._periodic_sweep)
            return None

        self._sweeping = self.sweep()
        self._sweeping.addBoth(reschedule)

    @defer.inlineCallbacks
    def sweep(self) -> Any:
        """Delete expired messages and those of deleted queues, a batch per transaction.

        Each batch is its own writer job, so requests queue between batches
        instead of waiting for the whole sweep.  Fires with the rows removed.
        """
        removed = 0
        while True:
            now = self._now_ms()
            count = yield self._runner.write(lambda conn: conn.execute(
                "DELETE FROM messages WHERE (qid, partition, key) IN "
                "(SELECT qid, partition, key FROM messages WHERE expires_ms <= ? LIMIT ?)",
                (now, SWEEP_BATCH)).rowcount)
            removed += count
            if count < SWEEP_BATCH:
                break
        while True:
            count = yield self._runner.write(_drop_one_batch)
            removed += count
            if count == 0:
                break
        if removed:
            log.info("Expiry sweep removed {removed} messages", removed=removed)
        return removed

    # -- queues -------------------------------------------------------------

    def create_queue(self, settings: QueueSettings) -> defer.Deferred[QueueSettings]:
        def insert(conn: sqlite3.Connection) -> QueueSettings:
            try:
                conn.execute(f"INSERT INTO queues ({QUEUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             _queue_row(settings))
            except sqlite3.IntegrityError:
                raise QueueExists(f"Queue {settings.queue_name!r} exists already.") from None
            return settings
        return self._runner.write(insert)

    def get_queue(self, application: str, queue_name: str) -> defer.Deferred[QueueSettings | None]:
        def select(conn: sqlite3.Connection) -> QueueSettings | None:
            row = conn.execute(f"SELECT {QUEUE_COLUMNS} FROM queues WHERE application = ? AND queue_name = ?",
                               (application, queue_name)).fetchone()
            return None if row is None else _queue_settings(row)
        return self._runner.read(select)

    def update_queue(self, settings: QueueSettings) -> defer.Deferred[QueueSettings | None]:
        def update(conn: sqlite3.Connection) -> QueueSettings | None:
            changed = conn.execute(
                "UPDATE queues SET partitions = ?, type = ?, consistency = ?, principles = ? "
                "WHERE application = ? AND queue_name = ?",
                (settings.partitions, settings.type, settings.consistency, ",".join(settings.principles),
                 settings.application, settings.queue_name)).rowcount
            return settings if changed else None
        return self._runner.write(update)

    def delete_queue(self, application: str, queue_name: str) -> defer.Deferred[bool]:
        def delete(conn: sqlite3.Connection) -> bool:
            row = conn.execute("DELETE FROM queues WHERE application = ? AND queue_name = ? RETURNING qid",
                               (application, queue_name)).fetchone()
            if row is None:
                return False
            conn.execute("INSERT OR IGNORE INTO dropped_queues (qid) VALUES (?)", row)
            return True
        return self._runner.write(delete)

    def list_queues(self, application: str, after: str | None, limit: int) -> defer.Deferred[list[QueueSettings]]:
        def select(conn: sqlite3.Connection) -> list[QueueSettings]:
            rows = conn.execute(
                f"SELECT {QUEUE_COLUMNS} FROM queues WHERE application = ? AND queue_name > ? "
                "ORDER BY queue_name LIMIT ?", (application, after or "", limit))
            return [_queue_settings(row) for row in rows]
        return self._runner.read(select)

    def count_messages(self, queue: QueueSettings) -> defer.Deferred[int]:
        now = self._now_ms()
        return self._runner.read(lambda conn: conn.execute(
            COUNT_SQL,
            (queue.application, queue.queue_name, now)).fetchone()[0])

    # -- messages -----------------------------------------------------------

    def put_messages(self, queue: QueueSettings, messages: Sequence[NewMessage]) -> defer.Deferred[None]:
        now = self._clock.seconds()
        now_ms = int(now * 1000)
        rows = [(m.partition, timeuuid.sort_key(m.id), now_ms + int(m.lifetime(now) * 1000), len(m.body),
                 m.rendered or render(m.id, m.partition, m.body, m.content_type)) for m in messages]

        def upsert(conn: sqlite3.Connection) -> None:
            qid = _qid(conn, queue)
            if qid is None:  # deleted since the request looked it up
                raise QueueMissing(f"No queue {queue.queue_name!r} in application {queue.application!r}.")
            conn.executemany(
                "INSERT INTO messages (qid, partition, key, expires_ms, size, rendered) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (qid, partition, key) DO UPDATE SET "
                "expires_ms = excluded.expires_ms, size = excluded.size, rendered = excluded.rendered",
                [(qid, *row) for row in rows])
            return None
        return self._runner.write(upsert)

    def read_rendered(self, queue: QueueSettings, partitions: Sequence[int],
                      wanted: MessageRange) -> defer.Deferred[list[list[Rendered]]]:
        """Every partition in one reader job: the queue's id, then one primary-key range each."""
        bounds: list[Any] = []
        lower = ""
        if wanted.lower is not None:
            lower = ">=" if wanted.lower_inclusive else ">"
            bounds.append(timeuuid.sort_key(wanted.lower))
        if wanted.upper is not None:
            bounds.append(timeuuid.sort_key(wanted.upper))
        bounds.append(wanted.limit)
        sql = range_sql(wanted.descending, lower, wanted.upper is not None)
        now = self._now_ms()
        max_bytes = wanted.max_bytes

        def select(conn: sqlite3.Connection) -> list[list[Rendered]]:
            qid = _qid(conn, queue)
            groups: list[list[Rendered]] = []
            for partition in partitions:
                rows = [] if qid is None else _within(conn.execute(sql, (qid, partition, now, *bounds)), max_bytes)
                groups.append(rows)
            return groups
        return self._runner.read(select)

    def read_messages(self, queue: QueueSettings, partition: int,
                      wanted: MessageRange) -> defer.Deferred[list[Message]]:
        return self.read_rendered(queue, (partition,), wanted).addCallback(
            lambda groups: [parse_rendered(row[1]) for row in groups[0]])

    def get_messages(self, queue: QueueSettings, refs: Sequence[MessageRef]) -> defer.Deferred[list[Message]]:
        now = self._now_ms()

        def select(conn: sqlite3.Connection) -> list[Message]:
            qid = _qid(conn, queue)
            found = []
            for ref in refs if qid is not None else ():
                row = conn.execute(
                    "SELECT rendered FROM messages WHERE qid = ? AND partition = ? AND key = ? AND +expires_ms > ?",
                    (qid, ref.partition, timeuuid.sort_key(ref.id), now)).fetchone()
                if row is not None:
                    found.append(parse_rendered(row[0]))
            return found
        return self._runner.read(select)

    def delete_messages(self, queue: QueueSettings, refs: Sequence[MessageRef]) -> defer.Deferred[None]:
        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"DELETE FROM messages WHERE qid = {QID} AND partition = ? AND key = ?",
                [(queue.application, queue.queue_name, ref.partition, timeuuid.sort_key(ref.id))
                 for ref in refs])
        return self._runner.write(delete)

    def newest_message_ids(self, queue: QueueSettings, partitions: Sequence[int],
                           upto: Any = None) -> defer.Deferred[dict[int, Any]]:
        highest = b"\xff" * 16 if upto is None else timeuuid.sort_key(upto)

        def select(conn: sqlite3.Connection) -> dict[int, Any]:
            newest = {}
            for partition in partitions:
                key = conn.execute(f"SELECT max(key) FROM messages WHERE qid = {QID} AND partition = ? AND key <= ?",
                                   (queue.application, queue.queue_name, partition, highest)).fetchone()[0]
                if key is not None:
                    newest[partition] = timeuuid.from_sort_key(key)
            return newest
        return self._runner.read(select)


#: Rows fetched at a time by a range read: the byte budget is checked per chunk (in C), so a
#: page passes its budget by at most this many rows before it is cut.
FETCH_ROWS = 32
_size = operator.itemgetter(0)


def _within(rows: sqlite3.Cursor, max_bytes: int | None) -> list[Rendered]:
    """The (size, rendered) rows of a range read, up to and including the row whose body
    reaches ``max_bytes`` (then the cursor is left: no more rows are read)."""
    if max_bytes is None:
        return rows.fetchall()
    found: list[Rendered] = []
    body_bytes = 0
    while chunk := rows.fetchmany(FETCH_ROWS):
        chunk_bytes = sum(map(_size, chunk))
        if body_bytes + chunk_bytes < max_bytes:
            found.extend(chunk)
            body_bytes += chunk_bytes
            continue
        for row in chunk:  # the budget ends in this chunk
            found.append(row)
            body_bytes += row[0]
            if body_bytes >= max_bytes:
                return found
    return found


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _qid(conn: sqlite3.Connection, queue: QueueSettings) -> int | None:
    row = conn.execute("SELECT qid FROM queues WHERE application = ? AND queue_name = ?",
                       (queue.application, queue.queue_name)).fetchone()
    return None if row is None else row[0]


def migrate(conn: sqlite3.Connection) -> None:
    """Bring the database to SCHEMA_VERSION (in the open's write transaction: all or nothing).

    Version 0 kept content type and body in columns of a rowid table; each of
    its messages is rendered into the new table, keeping key and expiry.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    columns = {row[1] for row in conn.execute("PRAGMA table_info(messages)")}
    if version >= SCHEMA_VERSION or "body" not in columns:
        _create_schema(conn)
        return
    total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    log.info("SQLite: migrating {total} messages to schema version {version} (each rendered once, "
             "in one transaction)", total=total, version=SCHEMA_VERSION)
    conn.execute("ALTER TABLE messages RENAME TO messages_v0")
    conn.execute("DROP INDEX IF EXISTS messages_by_expiry")
    _create_schema(conn)
    done = 0
    rows = conn.execute("SELECT qid, partition, key, expires_ms, content_type, body FROM messages_v0")
    while batch := rows.fetchmany(10_000):
        conn.executemany(
            "INSERT INTO messages (qid, partition, key, expires_ms, size, rendered) VALUES (?, ?, ?, ?, ?, ?)",
            [(qid, partition, key, expires, len(body),
              render(timeuuid.from_sort_key(key), partition, body, content_type))
             for qid, partition, key, expires, content_type, body in batch])
        done += len(batch)
        if done // MIGRATION_REPORT_ROWS != (done - len(batch)) // MIGRATION_REPORT_ROWS:
            log.info("SQLite: migrated {done} of {total} messages", done=done, total=total)
    conn.execute("DROP TABLE messages_v0")
    log.info("SQLite: migration to schema version {version} done: {done} messages",
             version=SCHEMA_VERSION, done=done)


def _drop_one_batch(conn: sqlite3.Connection) -> int:
    """Remove up to SWEEP_BATCH messages of one deleted queue; forget it when empty."""
    row = conn.execute("SELECT qid FROM dropped_queues LIMIT 1").fetchone()
    if row is None:
        return 0
    count = conn.execute("DELETE FROM messages WHERE qid = ? AND (partition, key) IN "
                         "(SELECT partition, key FROM messages WHERE qid = ? LIMIT ?)",
                         (row[0], row[0], SWEEP_BATCH)).rowcount
    if count < SWEEP_BATCH:
        conn.execute("DELETE FROM dropped_queues WHERE qid = ?", row)
    return max(count, 1)


def _queue_row(settings: QueueSettings) -> tuple[Any, ...]:
    return (settings.application, settings.queue_name, settings.partitions, settings.type,
            settings.consistency, ",".join(settings.principles), settings.created)


def _queue_settings(row: Sequence[Any]) -> QueueSettings:
    application, queue_name, partitions, type_, consistency, principles, created = row
    return QueueSettings(application, queue_name, partitions, type_, consistency,
                         tuple(p for p in principles.split(",") if p), created)
