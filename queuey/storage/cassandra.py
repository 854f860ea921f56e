"""The scale-out store: Apache Cassandra through the DataStax/Apache cassandra-driver.

The driver runs its own I/O loop (libev) in its own threads.  Every query goes
out with ``Session.execute_async`` and its ``ResponseFuture`` is bridged to a
Deferred fired on the reactor thread with ``reactor.callFromThread``; the few
blocking driver calls (``Cluster.connect``, ``prepare``, ``shutdown``, schema
changes) run in the reactor's thread pool.  A DeferredSemaphore bounds the
queries in flight.  This module is imported only when ``[storage] backend =
cassandra``: importing ``cassandra.cluster`` imports Twisted's global reactor.

Schema (see docs/cassandra.rst for the reasons)::

    queues          ((application), queue_name)        queue settings; listing pages by name
    messages        ((application, queue_name, incarnation, partition, bucket), id)
                    TTL on every row, time-window compaction, one time bucket per partition
    message_buckets ((application, queue_name, incarnation, partition), bucket, expires)
                    which time buckets of a queue partition may hold live messages
    settings        ((name))                            keyspace-wide settings (bucket width)

``incarnation`` is the queue's ``created`` time: a queue deleted and created
again under the same name never sees the old messages, whatever became of
their deletion.
"""

from __future__ import annotations

import math
import uuid
from typing import Any, Callable, Iterable, Mapping, Sequence

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from cassandra import ConsistencyLevel, DriverException, RequestExecutionException
from cassandra import OperationTimedOut
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import (EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile, NoHostAvailable,
                               ResponseFuture, Session)
from cassandra.connection import ConnectionBusy, ConnectionException
from cassandra.policies import (DCAwareRoundRobinPolicy, ExponentialReconnectionPolicy,
                                TokenAwarePolicy)
from cassandra.protocol import ErrorMessage, OverloadedErrorMessage, ServerError
from cassandra.query import BatchStatement, BatchType, PreparedStatement, dict_factory, tuple_factory

from queuey import timeuuid
from queuey.config import CassandraSettings
from queuey.errors import QueueExists, StorageUnavailable
from queuey.interfaces import (IMessageStore, Message, MessageRange, MessageRef, NewMessage,
                               QueueSettings)

try:
    from cassandra.io.libevreactor import LibevConnection as _Connection
    CONNECTION_CLASS: Any = _Connection
    CONNECTION_NOTE = "libev"
except ImportError as _libev_error:  # pragma: no cover - the wheels bundle libev
    from cassandra.io.asyncioreactor import AsyncioConnection
    CONNECTION_CLASS = AsyncioConnection
    CONNECTION_NOTE = f"asyncio (libev unavailable: {_libev_error})"

log = Logger()

#: Profile whose rows are dicts: lightweight transactions answer with named columns.
DICT_PROFILE = "queuey-dict"
LOWEST_ID = timeuuid.from_sort_key(bytes(16))
HIGHEST_ID = timeuuid.highest_uuid_at(timeuuid.MAX_TICKS)
MIN_BUCKET, MAX_BUCKET = -(2 ** 63), 2 ** 63 - 1
#: Bytes of message bodies per single-partition batch; keeps mutations well under
#: Cassandra's max_mutation_size (half the commit log segment, 16 MiB by default).
MAX_BATCH_BYTES = 4 * 1024 * 1024
#: A range read's page holds max_bytes / RANGE_PAGE_DIVISOR rows (64 to 1000), so
#: pages of large messages stay a few tens of MiB and pages of small ones stay few.
RANGE_PAGE_DIVISOR = 32 * 1024
#: Tries of a statement the driver could not send because the connection's socket
#: was full (ConnectionBusy: nothing was sent), and the first pause between them.
BUSY_TRIES = 12
BUSY_PAUSE = 0.005
#: gc_grace_seconds of the message tables: tombstones there only hide deleted
#: messages, which expire by TTL anyway; 3 h is the default hint window.
MESSAGE_GC_GRACE = 10800
#: Seconds a start-up waits for every node to agree on the schema it created: statements
#: prepared before then may reach a node that lacks a table (seen on a loaded 3-node cluster,
#: where the driver's default 10 s was not enough).
SCHEMA_AGREEMENT_WAIT = 120

QUEUE_COLUMNS = "application, queue_name, partitions, type, consistency, principles, created"
MESSAGE_KEY = "application = ? AND queue_name = ? AND incarnation = ? AND partition = ?"


def schema_cql(keyspace: str, replication: Mapping[str, Any]) -> list[str]:
    """The CQL that creates Queuey's keyspace and tables (idempotent)."""
    options = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in replication.items())
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{options}}}",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.queues (
            application text, queue_name text, partitions int, type text, consistency text,
            principles text, created bigint,
            PRIMARY KEY ((application), queue_name)
        ) WITH CLUSTERING ORDER BY (queue_name ASC)""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.messages (
            application text, queue_name text, incarnation bigint, partition int, bucket bigint,
            id timeuuid, content_type text, body blob,
            PRIMARY KEY ((application, queue_name, incarnation, partition, bucket), id)
        ) WITH CLUSTERING ORDER BY (id ASC)
          AND compaction = {{'class': 'TimeWindowCompactionStrategy',
                             'compaction_window_unit': 'HOURS', 'compaction_window_size': 3}}
          AND default_time_to_live = 0
          AND gc_grace_seconds = {MESSAGE_GC_GRACE}""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.message_buckets (
            application text, queue_name text, incarnation bigint, partition int,
            bucket bigint, expires bigint,
            PRIMARY KEY ((application, queue_name, incarnation, partition), bucket, expires)
        ) WITH CLUSTERING ORDER BY (bucket ASC, expires ASC)
          AND gc_grace_seconds = {MESSAGE_GC_GRACE}""",
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.settings (
            name text PRIMARY KEY, value text)""",
    ]


# -- errors ----------------------------------------------------------------------

#: What the driver raises when Cassandra cannot answer (nodes down, timeouts,
#: too few replicas, overload): the request may work again later, so 503.
UNAVAILABLE_ERRORS = (RequestExecutionException, OperationTimedOut, NoHostAvailable,
                      ConnectionException, ConnectionBusy, OverloadedErrorMessage, ServerError)


class _NothingSent(Exception):
    """The driver gave up on a statement before sending any of it; sending it again is safe."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def nothing_sent(error: BaseException) -> bool:
    """True when every host refused ``error``'s statement with ConnectionBusy (a full socket)."""
    if isinstance(error, ConnectionBusy):
        return True
    return (isinstance(error, NoHostAvailable) and bool(error.errors)
            and all(isinstance(e, ConnectionBusy) for e in error.errors.values()))


def translate(error: BaseException) -> BaseException:
    """Driver errors that mean "not now" become StorageUnavailable; others stay as they are."""
    if isinstance(error, StorageUnavailable):
        return error
    if isinstance(error, UNAVAILABLE_ERRORS):
        detail = str(error) or error.__class__.__name__
        if isinstance(error, NoHostAvailable):
            detail = "no host available: " + "; ".join(f"{h}: {e}" for h, e in error.errors.items()) \
                if error.errors else "no host available"
        return StorageUnavailable(f"Cassandra: {error.__class__.__name__}: {detail}"[:500])
    if isinstance(error, ErrorMessage) and not isinstance(error, DriverException):
        return StorageUnavailable(f"Cassandra: {error}"[:500])
    return error


# -- the store -------------------------------------------------------------------

def bucket_of(message_id: uuid.UUID, width_ticks: int) -> int:
    """Start (in ticks) of the time bucket that holds ``message_id``."""
    ticks = timeuuid.ticks_from_uuid(message_id)
    return ticks - ticks % width_ticks


@implementer(IMessageStore)
class CassandraStore:
    """Queues and messages in a Cassandra keyspace; every call answers on the reactor thread."""

    name = "cassandra"

    def __init__(self, settings: CassandraSettings, reactor: Any) -> None:
        self.settings = settings
        self._reactor = reactor
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._limit = defer.DeferredSemaphore(settings.max_in_flight)
        self._statements: dict[str, PreparedStatement] = {}
        self._bucket_ticks = settings.bucket_seconds * timeuuid.TICKS_PER_SECOND
        #: (application, queue, incarnation, partition, bucket) -> expiry (s) of the
        #: bucket index row this process wrote; saves rewriting it for every message.
        self._indexed: dict[tuple[str, str, int, int, int], int] = {}
        multi = settings.multi_dc
        self._levels = {
            "weak": ConsistencyLevel.LOCAL_ONE if multi else ConsistencyLevel.ONE,
            "strong": ConsistencyLevel.LOCAL_QUORUM if multi else ConsistencyLevel.QUORUM,
            "very_strong": ConsistencyLevel.EACH_QUORUM if multi else ConsistencyLevel.ALL,
        }
        self._meta_level = self._levels["strong"]
        self._serial = ConsistencyLevel.LOCAL_SERIAL if multi else ConsistencyLevel.SERIAL

    # -- life cycle ---------------------------------------------------------

    @defer.inlineCallbacks
    def open(self) -> Any:
        """Connect (off the reactor thread, once it runs), create the schema, prepare statements."""
        running: defer.Deferred[None] = defer.Deferred()
        self._reactor.callWhenRunning(running.callback, None)
        yield running
        try:
            yield threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._connect)
        except Exception as e:
            yield self.close()
            raise translate(e) from None
        # The bucket width is the keyspace's, fixed by the first store that opened it.
        stored = yield self._execute(self._bound("bucket_seconds", consistency=ConsistencyLevel.ONE),
                                     profile=DICT_PROFILE)
        if not stored:
            try:
                stored = yield self._execute(self._bound(
                    "claim_bucket_seconds", str(self.settings.bucket_seconds), serial=True), profile=DICT_PROFILE)
            except StorageUnavailable as e:  # a new keyspace on a degraded cluster: claim it next time
                log.warn("Could not record bucket_seconds in keyspace {keyspace} ({error}); using the "
                         "configured {width}", keyspace=self.settings.keyspace, error=str(e),
                         width=self.settings.bucket_seconds)
                stored = []
        if stored and not stored[0].get("[applied]", False):
            width = int(stored[0]["value"])
            if width != self.settings.bucket_seconds:
                log.warn("Keyspace {keyspace} was created with bucket_seconds = {width}; using it, "
                         "not the configured {configured}", keyspace=self.settings.keyspace,
                         width=width, configured=self.settings.bucket_seconds)
            self._bucket_ticks = width * timeuuid.TICKS_PER_SECOND
        log.info("Cassandra store ready: keyspace {keyspace} on {hosts} ({io} I/O)",
                 keyspace=self.settings.keyspace,
                 hosts=",".join(f"{h}:{p}" for h, p in self.settings.hosts), io=CONNECTION_NOTE)

    def _connect(self) -> None:
        """Blocking: connect, create the schema, prepare everything.  Runs in a thread."""
        s = self.settings
        policy = TokenAwarePolicy(DCAwareRoundRobinPolicy(local_dc=s.local_dc))
        profiles = {
            EXEC_PROFILE_DEFAULT: ExecutionProfile(load_balancing_policy=policy, row_factory=tuple_factory,
                                                   request_timeout=s.request_timeout),
            DICT_PROFILE: ExecutionProfile(load_balancing_policy=policy, row_factory=dict_factory,
                                           request_timeout=s.request_timeout),
        }
        auth = PlainTextAuthProvider(s.username, s.password) if s.username else None
        cluster = Cluster(
            contact_points=list(s.hosts), execution_profiles=profiles, auth_provider=auth,
            connection_class=CONNECTION_CLASS, connect_timeout=s.connect_timeout,
            control_connection_timeout=s.connect_timeout,
            # Come back within seconds when Cassandra does, not after the default 10 min cap.
            reconnection_policy=ExponentialReconnectionPolicy(base_delay=0.5, max_delay=5.0),
            max_schema_agreement_wait=SCHEMA_AGREEMENT_WAIT,
            protocol_version=5, application_name="queuey", monitor_reporting_enabled=False)
        self._cluster = cluster
        session = cluster.connect()
        if s.create_schema:
            for statement in schema_cql(s.keyspace, s.replication):
                result = session.execute(statement, timeout=max(s.request_timeout, 30.0))
                if not result.response_future.is_schema_agreed:
                    raise StorageUnavailable(f"Cassandra: the nodes did not agree on the schema within "
                                             f"{SCHEMA_AGREEMENT_WAIT} s")
        session.set_keyspace(s.keyspace)
        self._statements = {name: session.prepare(cql) for name, cql in _STATEMENTS.items()}
        self._session = session

    @defer.inlineCallbacks
    def close(self) -> Any:
        cluster, self._cluster, self._session = self._cluster, None, None
        if cluster is not None:
            yield threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), cluster.shutdown)

    def check(self) -> defer.Deferred[None]:
        """One local query at ONE: answers while any node reachable answers."""
        return defer.maybeDeferred(self._bound, "check", consistency=ConsistencyLevel.ONE).addCallback(
            self._execute).addCallback(lambda _: None)

    # -- driver bridge ------------------------------------------------------

    def _bound(self, name: str, *values: Any, consistency: int | None = None, serial: bool = False) -> Any:
        statement = self._statements.get(name)
        if statement is None:
            raise StorageUnavailable("Cassandra store is not open")
        bound = statement.bind(values)
        bound.consistency_level = self._meta_level if consistency is None else consistency
        if serial:
            bound.serial_consistency_level = self._serial
        return bound

    def _execute(self, statement: Any, profile: Any = EXEC_PROFILE_DEFAULT,
                 until: Callable[[list[Any]], bool] | None = None) -> defer.Deferred[list[Any]]:
        """Run one statement (its pages, until ``until(rows)`` says enough), bounded by the in-flight limit."""
        return self._limit.run(self._send, statement, profile, until, 0)

    def _send(self, statement: Any, profile: Any, until: Any, attempt: int) -> defer.Deferred[list[Any]]:
        return self._start(statement, profile, until).addErrback(
            self._resend_if_busy, statement, profile, until, attempt)

    def _resend_if_busy(self, failure: Any, statement: Any, profile: Any, until: Any, attempt: int) -> Any:
        """A statement the driver never sent (its connection's socket was full) goes again, after a pause."""
        failure.trap(_NothingSent)
        if attempt + 1 >= BUSY_TRIES:
            raise translate(failure.value.error)
        return task.deferLater(self._reactor, BUSY_PAUSE * 2 ** attempt,
                               self._send, statement, profile, until, attempt + 1)

    def _start(self, statement: Any, profile: Any, until: Any = None) -> defer.Deferred[list[Any]]:
        session = self._session
        if session is None:
            return defer.fail(StorageUnavailable("Cassandra store is not open"))
        result: defer.Deferred[list[Any]] = defer.Deferred()
        try:
            future: ResponseFuture = session.execute_async(statement, execution_profile=profile)
        except Exception as e:  # raised before anything was sent (e.g. the session is shut down)
            return defer.fail(translate(e))
        rows: list[Any] = []
        call = self._reactor.callFromThread

        def page(page_rows: Iterable[Any] | None) -> None:  # on a driver thread
            try:
                if page_rows:
                    rows.extend(page_rows)
                if future.has_more_pages and not (until is not None and until(rows)):
                    future.start_fetching_next_page()
                    return
            except Exception as e:  # never leave the Deferred hanging
                call(result.errback, translate(e))
                return
            call(result.callback, rows)

        def failed(error: BaseException) -> None:  # on a driver thread
            call(result.errback, _NothingSent(error) if nothing_sent(error) else translate(error))

        future.add_callbacks(page, failed)
        return result

    def _gather(self, deferreds: Iterable[defer.Deferred[Any]]) -> defer.Deferred[list[Any]]:
        """All results in order, or the first failure itself."""
        return defer.gatherResults(list(deferreds), consumeErrors=True).addErrback(
            lambda failure: failure.value.subFailure if failure.check(defer.FirstError) else failure)

    def _level(self, queue: QueueSettings) -> int:
        return self._levels.get(queue.consistency, self._levels["strong"])

    # -- queues -------------------------------------------------------------

    @defer.inlineCallbacks
    def create_queue(self, settings: QueueSettings) -> Any:
        rows = yield self._execute(self._bound("create_queue", *_queue_row(settings), serial=True),
                                   profile=DICT_PROFILE)
        if not rows[0]["[applied]"]:
            raise QueueExists(f"Queue {settings.queue_name!r} exists already.")
        return settings

    @defer.inlineCallbacks
    def get_queue(self, application: str, queue_name: str) -> Any:
        rows = yield self._execute(self._bound("get_queue", application, queue_name))
        return _queue_settings(rows[0]) if rows else None

    @defer.inlineCallbacks
    def update_queue(self, settings: QueueSettings) -> Any:
        """Update the incarnation the caller read (same ``created``); None when it is gone."""
        rows = yield self._execute(self._bound(
            "update_queue", settings.partitions, settings.type, settings.consistency,
            ",".join(settings.principles), settings.application, settings.queue_name, settings.created,
            serial=True), profile=DICT_PROFILE)
        return settings if rows[0]["[applied]"] else None

    @defer.inlineCallbacks
    def delete_queue(self, application: str, queue_name: str) -> Any:
        """Delete the settings row (a compare-and-set on ``created``), then the message partitions."""
        for _ in range(5):
            rows = yield self._execute(self._bound("get_queue", application, queue_name,
                                                   consistency=self._serial))
            if not rows:
                return False
            queue = _queue_settings(rows[0])
            done = yield self._execute(self._bound("delete_queue", application, queue_name, queue.created,
                                                   serial=True), profile=DICT_PROFILE)
            if done[0]["[applied]"]:
                break
        else:
            raise StorageUnavailable("Cassandra: the queue kept changing while it was being deleted")
        try:
            yield self._purge(queue)
        except Exception as e:  # the messages stay invisible (new incarnation) and expire by TTL
            log.warn("Deleted queue {app}/{queue}, but not yet its messages: {error}",
                     app=application, queue=queue_name, error=str(e))
        return True

    @defer.inlineCallbacks
    def _purge(self, queue: QueueSettings) -> Any:
        """One partition tombstone per message partition and per bucket index partition."""
        level = self._level(queue)
        for partition in range(1, queue.partitions + 1):
            buckets = yield self._buckets(queue, partition, None, None, False, level)
            key = (queue.application, queue.queue_name, queue.created, partition)
            yield self._gather([self._execute(self._bound("drop_bucket", *key, bucket, consistency=level))
                                for bucket in buckets])
            yield self._execute(self._bound("drop_bucket_index", *key, consistency=level))
            for bucket in buckets:
                self._indexed.pop((*key, bucket), None)

    @defer.inlineCallbacks
    def list_queues(self, application: str, after: str | None, limit: int) -> Any:
        rows = yield self._execute(self._bound("list_queues", application, after or "", limit))
        return [_queue_settings(row) for row in rows]

    @defer.inlineCallbacks
    def count_messages(self, queue: QueueSettings) -> Any:
        """Cassandra counts each live time bucket server-side; only the numbers travel."""
        level = self._level(queue)

        @defer.inlineCallbacks
        def count_partition(partition: int) -> Any:
            buckets = yield self._buckets(queue, partition, None, None, False, level)
            counts = yield self._gather([self._execute(self._bound(
                "count_bucket", queue.application, queue.queue_name, queue.created, partition, bucket,
                consistency=level)) for bucket in buckets])
            return sum(rows[0][0] for rows in counts)

        totals = yield self._gather([count_partition(p) for p in range(1, queue.partitions + 1)])
        return sum(totals)

    # -- messages -----------------------------------------------------------

    @defer.inlineCallbacks
    def put_messages(self, queue: QueueSettings, messages: Sequence[NewMessage]) -> Any:
        """One single-partition batch per (partition, bucket), plus the bucket index rows.

        The index row of a bucket is written (with a TTL reaching past the
        bucket's messages) before a message in it is acknowledged; this process
        remembers it, so a busy bucket costs one index write per bucket width.
        """
        level = self._level(queue)
        clock = self._reactor.seconds()
        now = int(clock)
        step = self._bucket_ticks // timeuuid.TICKS_PER_SECOND
        lifetimes = {m.id: math.ceil(m.lifetime(clock)) for m in messages}  # delay + TTL, in seconds
        groups: dict[tuple[int, int], list[NewMessage]] = {}
        for message in messages:
            groups.setdefault((message.partition, bucket_of(message.id, self._bucket_ticks)), []).append(message)
        writes = []
        index_marks = []
        for (partition, bucket), group in groups.items():
            key = (queue.application, queue.queue_name, queue.created, partition, bucket)
            expires = -(-(now + max(lifetimes[m.id] for m in group)) // step) * step + step
            if self._indexed.get(key, -1) < expires:
                writes.append(self._execute(self._bound("index_bucket", *key, expires, expires - now,
                                                        consistency=level)))
                index_marks.append((key, expires))
            for chunk in _chunks(group):
                statements = [self._bound("put_message", *key, m.id, m.content_type, m.body, lifetimes[m.id],
                                          consistency=level) for m in chunk]
                if len(statements) == 1:
                    writes.append(self._execute(statements[0]))
                else:
                    batch = BatchStatement(BatchType.UNLOGGED, consistency_level=level)
                    for statement in statements:
                        batch.add(statement)
                    writes.append(self._execute(batch))
        yield self._gather(writes)
        if len(self._indexed) > 100_000:
            self._indexed.clear()
        for key, expires in index_marks:
            self._indexed[key] = max(expires, self._indexed.get(key, -1))
        return None

    @defer.inlineCallbacks
    def _buckets(self, queue: QueueSettings, partition: int, low: int | None, high: int | None,
                 descending: bool, level: int) -> Any:
        """The buckets of a partition that may hold live messages, in the order asked."""
        rows = yield self._execute(self._bound(
            "buckets_desc" if descending else "buckets", queue.application, queue.queue_name, queue.created,
            partition, MIN_BUCKET if low is None else low, MAX_BUCKET if high is None else high,
            consistency=level))
        buckets: list[int] = []
        for (bucket,) in rows:
            if not buckets or buckets[-1] != bucket:
                buckets.append(bucket)
        return buckets

    @defer.inlineCallbacks
    def read_messages(self, queue: QueueSettings, partition: int, wanted: MessageRange) -> Any:
        """Walk the buckets in the range in order, a growing window of them at a time."""
        level = self._level(queue)
        lower = LOWEST_ID if wanted.lower is None else wanted.lower
        upper = HIGHEST_ID if wanted.upper is None else wanted.upper
        if timeuuid.sort_key(upper) < timeuuid.sort_key(lower):
            return []
        buckets = yield self._buckets(
            queue, partition, None if wanted.lower is None else bucket_of(wanted.lower, self._bucket_ticks),
            None if wanted.upper is None else bucket_of(wanted.upper, self._bucket_ticks),
            wanted.descending, level)
        name = ("range_desc" if wanted.descending else "range") + ("" if wanted.lower_inclusive else "_after")
        found: list[Message] = []
        body_bytes = 0
        window = 1
        while buckets and len(found) < wanted.limit and not wanted.full(body_bytes):
            now, buckets = buckets[:window], buckets[window:]
            window = min(window * 2, 8)
            remaining = wanted.limit - len(found)
            groups = yield self._gather([self._execute(
                self._range_statement(name, queue, partition, bucket, lower, upper, remaining, wanted, level),
                until=_bodies_reach(wanted)) for bucket in now])
            for rows in groups:
                for row in rows:
                    if len(found) == wanted.limit or wanted.full(body_bytes):
                        break
                    found.append(Message(row[0], partition, row[2], row[1]))
                    body_bytes += len(row[2])
        return found

    def _range_statement(self, name: str, queue: QueueSettings, partition: int, bucket: int, lower: Any,
                         upper: Any, limit: int, wanted: MessageRange, level: int) -> Any:
        """A range query of one bucket whose pages hold a bounded number of rows."""
        statement = self._bound(name, queue.application, queue.queue_name, queue.created, partition, bucket,
                                lower, upper, limit, consistency=level)
        if wanted.max_bytes is not None:
            statement.fetch_size = min(1000, max(64, wanted.max_bytes // RANGE_PAGE_DIVISOR))
        return statement

    @defer.inlineCallbacks
    def get_messages(self, queue: QueueSettings, refs: Sequence[MessageRef]) -> Any:
        level = self._level(queue)
        results = yield self._gather([self._execute(self._bound(
            "get_message", queue.application, queue.queue_name, queue.created, ref.partition,
            bucket_of(ref.id, self._bucket_ticks), ref.id, consistency=level)) for ref in refs])
        return [Message(ref.id, ref.partition, rows[0][1], rows[0][0])
                for ref, rows in zip(refs, results) if rows]

    @defer.inlineCallbacks
    def delete_messages(self, queue: QueueSettings, refs: Sequence[MessageRef]) -> Any:
        level = self._level(queue)
        yield self._gather([self._execute(self._bound(
            "delete_message", queue.application, queue.queue_name, queue.created, ref.partition,
            bucket_of(ref.id, self._bucket_ticks), ref.id, consistency=level)) for ref in refs])
        return None

    @defer.inlineCallbacks
    def newest_message_ids(self, queue: QueueSettings, partitions: Sequence[int], upto: Any = None) -> Any:
        level = self._level(queue)
        highest = HIGHEST_ID if upto is None else upto

        @defer.inlineCallbacks
        def newest(partition: int) -> Any:
            buckets = yield self._buckets(queue, partition, None, bucket_of(highest, self._bucket_ticks), True, level)
            for bucket in buckets:
                rows = yield self._execute(self._bound(
                    "newest", queue.application, queue.queue_name, queue.created, partition, bucket, highest,
                    consistency=level))
                if rows:
                    return rows[0][0]
            return None

        ids = yield self._gather([newest(p) for p in partitions])
        return {p: i for p, i in zip(partitions, ids) if i is not None}


def _bodies_reach(wanted: MessageRange) -> Callable[[list[Any]], bool]:
    """For _execute: stop fetching pages of (id, content_type, body) rows once the bodies fill ``wanted``."""
    def full(rows: list[Any]) -> bool:
        return wanted.full(sum(len(row[2]) for row in rows))
    return full


def _chunks(group: list[NewMessage]) -> Iterable[list[NewMessage]]:
    """Split a bucket's messages into batches of at most MAX_BATCH_BYTES of bodies."""
    chunk: list[NewMessage] = []
    size = 0
    for message in group:
        if chunk and size + len(message.body) > MAX_BATCH_BYTES:
            yield chunk
            chunk, size = [], 0
        chunk.append(message)
        size += len(message.body)
    if chunk:
        yield chunk


_RANGE = (f"SELECT id, content_type, body FROM messages WHERE {MESSAGE_KEY} AND bucket = ? "
          "AND id {op} ? AND id <= ? ORDER BY id {order} LIMIT ?")

_STATEMENTS = {
    "check": "SELECT release_version FROM system.local",
    "bucket_seconds": "SELECT value FROM settings WHERE name = 'bucket_seconds'",
    "claim_bucket_seconds": "INSERT INTO settings (name, value) VALUES ('bucket_seconds', ?) IF NOT EXISTS",
    "create_queue": f"INSERT INTO queues ({QUEUE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS",
    "get_queue": f"SELECT {QUEUE_COLUMNS} FROM queues WHERE application = ? AND queue_name = ?",
    "update_queue": ("UPDATE queues SET partitions = ?, type = ?, consistency = ?, principles = ? "
                     "WHERE application = ? AND queue_name = ? IF created = ?"),
    "delete_queue": "DELETE FROM queues WHERE application = ? AND queue_name = ? IF created = ?",
    "list_queues": (f"SELECT {QUEUE_COLUMNS} FROM queues WHERE application = ? AND queue_name > ? "
                    "ORDER BY queue_name LIMIT ?"),
    "put_message": ("INSERT INTO messages (application, queue_name, incarnation, partition, bucket, id, "
                    "content_type, body) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"),
    "index_bucket": ("INSERT INTO message_buckets (application, queue_name, incarnation, partition, bucket, "
                     "expires) VALUES (?, ?, ?, ?, ?, ?) USING TTL ?"),
    "buckets": (f"SELECT bucket FROM message_buckets WHERE {MESSAGE_KEY} AND bucket >= ? AND bucket <= ? "
                "ORDER BY bucket ASC"),
    "buckets_desc": (f"SELECT bucket FROM message_buckets WHERE {MESSAGE_KEY} AND bucket >= ? "
                     "AND bucket <= ? ORDER BY bucket DESC"),
    "range": _RANGE.format(op=">=", order="ASC"),
    "range_after": _RANGE.format(op=">", order="ASC"),
    "range_desc": _RANGE.format(op=">=", order="DESC"),
    "range_desc_after": _RANGE.format(op=">", order="DESC"),
    "get_message": f"SELECT content_type, body FROM messages WHERE {MESSAGE_KEY} AND bucket = ? AND id = ?",
    "delete_message": f"DELETE FROM messages WHERE {MESSAGE_KEY} AND bucket = ? AND id = ?",
    "count_bucket": f"SELECT count(*) FROM messages WHERE {MESSAGE_KEY} AND bucket = ?",
    "newest": f"SELECT id FROM messages WHERE {MESSAGE_KEY} AND bucket = ? AND id <= ? ORDER BY id DESC LIMIT 1",
    "drop_bucket": f"DELETE FROM messages WHERE {MESSAGE_KEY} AND bucket = ?",
    "drop_bucket_index": f"DELETE FROM message_buckets WHERE {MESSAGE_KEY}",
}


def _queue_row(settings: QueueSettings) -> tuple[Any, ...]:
    return (settings.application, settings.queue_name, settings.partitions, settings.type,
            settings.consistency, ",".join(settings.principles), settings.created)


def _queue_settings(row: Any) -> QueueSettings:
    if isinstance(row, dict):
        row = tuple(row[c.strip()] for c in QUEUE_COLUMNS.split(","))
    application, queue_name, partitions, type_, consistency, principles, created = row
    return QueueSettings(application, queue_name, partitions, type_, consistency,
                         tuple(p for p in (principles or "").split(",") if p), created)
