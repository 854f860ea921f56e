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

import os
import queue as queue_module
import sqlite3
import threading
from typing import Any, Callable, Sequence, TypeVar

from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from queuey import timeuuid
from queuey.config import SQLiteSettings
from queuey.errors import QueueExists, QueueMissing, StorageUnavailable
from queuey.interfaces import (IMessageStore, Message, MessageRange, MessageRef,
                               NewMessage, QueueSettings)

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
    content_type TEXT NOT NULL,
    body BLOB NOT NULL,
    UNIQUE (qid, partition, key)
);
CREATE INDEX IF NOT EXISTS messages_by_expiry ON messages (expires_ms);
CREATE TABLE IF NOT EXISTS dropped_queues (qid INTEGER PRIMARY KEY);
"""

QUEUE_COLUMNS = "application, queue_name, partitions, type, consistency, principles, created"
QID = "(SELECT qid FROM queues WHERE application = ? AND queue_name = ?)"
#: Rows removed per transaction by the sweeper, so a sweep never holds the writer long.
SWEEP_BATCH = 2000
GROUP_COMMIT_MAX = 512

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
        self._writer: threading.Thread | None = None
        self._readers = ThreadPool(minthreads=1, maxthreads=readers, name="queuey-sqlite-read")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def start(self) -> defer.Deferred[None]:
        started: defer.Deferred[None] = defer.Deferred()
        self._writer = threading.Thread(target=self._write_loop, args=(started,),
                                        name="queuey-sqlite-write", daemon=True)
        self._writer.start()
        self._readers.start()
        return started

    def stop(self) -> defer.Deferred[None]:
        """Finish queued writes, then close every connection (off the reactor thread)."""
        writer, self._writer = self._writer, None
        if writer is None:
            return defer.succeed(None)

        def shut_down() -> None:
            self._jobs.put(None)
            writer.join()
            self._readers.stop()
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
        result: defer.Deferred[T] = defer.Deferred()
        if self._writer is None:  # a stopped thread pool would never run it
            return defer.fail(StorageUnavailable("SQLite store is not open"))

        def run() -> None:
            try:
                value = operation(self._connection())
            except sqlite3.Error as e:
                self._reactor.callFromThread(result.errback, _unavailable(e))
            except Exception:
                self._reactor.callFromThread(result.errback, Failure())
            else:
                self._reactor.callFromThread(result.callback, value)

        self._readers.callInThread(run)
        return result

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
        yield self._runner.write(_create_schema)
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
                "DELETE FROM messages WHERE rowid IN "
                "(SELECT rowid FROM messages WHERE expires_ms <= ? LIMIT ?)",
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
            f"SELECT count(*) FROM messages WHERE qid = {QID} AND expires_ms > ?",
            (queue.application, queue.queue_name, now)).fetchone()[0])

    # -- messages -----------------------------------------------------------

    def put_messages(self, queue: QueueSettings, messages: Sequence[NewMessage]) -> defer.Deferred[None]:
        now = self._clock.seconds()
        now_ms = int(now * 1000)

        def upsert(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT qid FROM queues WHERE application = ? AND queue_name = ?",
                               (queue.application, queue.queue_name)).fetchone()
            if row is None:  # deleted since the request looked it up
                raise QueueMissing(f"No queue {queue.queue_name!r} in application {queue.application!r}.")
            qid = row[0]
            conn.executemany(
                "INSERT INTO messages (qid, partition, key, expires_ms, content_type, body) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (qid, partition, key) DO UPDATE SET "
                "expires_ms = excluded.expires_ms, content_type = excluded.content_type, "
                "body = excluded.body",
                [(qid, m.partition, timeuuid.sort_key(m.id), now_ms + int(m.lifetime(now) * 1000), m.content_type,
                  m.body) for m in messages])
            return None
        return self._runner.write(upsert)

    def read_messages(self, queue: QueueSettings, partition: int,
                      wanted: MessageRange) -> defer.Deferred[list[Message]]:
        clauses = [f"qid = {QID}", "partition = ?", "expires_ms > ?"]
        params: list[Any] = [queue.application, queue.queue_name, partition, self._now_ms()]
        if wanted.lower is not None:
            clauses.append("key >= ?" if wanted.lower_inclusive else "key > ?")
            params.append(timeuuid.sort_key(wanted.lower))
        if wanted.upper is not None:
            clauses.append("key <= ?")
            params.append(timeuuid.sort_key(wanted.upper))
        params.append(wanted.limit)
        sql = (f"SELECT key, content_type, body FROM messages WHERE {' AND '.join(clauses)} "
               f"ORDER BY key {'DESC' if wanted.descending else 'ASC'} LIMIT ?")

        def select(conn: sqlite3.Connection) -> list[Message]:
            found = []
            body_bytes = 0
            for key, content_type, body in conn.execute(sql, params):  # rows step one by one
                found.append(Message(timeuuid.from_sort_key(key), partition, body, content_type))
                body_bytes += len(body)
                if wanted.full(body_bytes):
                    break
            return found
        return self._runner.read(select)

    def get_messages(self, queue: QueueSettings, refs: Sequence[MessageRef]) -> defer.Deferred[list[Message]]:
        now = self._now_ms()

        def select(conn: sqlite3.Connection) -> list[Message]:
            found = []
            for ref in refs:
                row = conn.execute(
                    f"SELECT content_type, body FROM messages WHERE qid = {QID} AND partition = ? "
                    "AND key = ? AND expires_ms > ?",
                    (queue.application, queue.queue_name, ref.partition, timeuuid.sort_key(ref.id), now)
                ).fetchone()
                if row is not None:
                    found.append(Message(ref.id, ref.partition, row[1], row[0]))
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


def _create_schema(conn: sqlite3.Connection) -> None:
    for statement in SCHEMA.split(";"):
        if statement.strip():
            conn.execute(statement)


def _drop_one_batch(conn: sqlite3.Connection) -> int:
    """Remove up to SWEEP_BATCH messages of one deleted queue; forget it when empty."""
    row = conn.execute("SELECT qid FROM dropped_queues LIMIT 1").fetchone()
    if row is None:
        return 0
    count = conn.execute("DELETE FROM messages WHERE rowid IN "
                         "(SELECT rowid FROM messages WHERE qid = ? LIMIT ?)", (row[0], SWEEP_BATCH)).rowcount
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
