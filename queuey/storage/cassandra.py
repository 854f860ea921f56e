"""The scale-out store: Apache Cassandra through the DataStax/Apache cassandra-driver.

The driver runs its own I/O loop (libev) in its own threads.  Every query goes
out with ``Session.execute_async`` and its ``ResponseFuture`` is bridged to a
Deferred fired on the reactor thread with ``reactor.callFromThread``; the few
blocking driver calls (``Cluster.connect``, ``prepare``, ``shutdown``, schema
changes) run in the reactor's thread pool.  A DeferredSemaphore bounds the
queries in flight.  This module is imported only when ``[storage] backend =
cassandra``: importing ``cassandra.cluster`` imports Twisted's global reactor.

Schema (see docs/cassandra.rst for the reasons)::

    queue_directory ((application, shard), queue_name) queue settings, ``directory_shards`` partitions
                    per application (queuey.storage.cassandra_directory)
    messages        ((application, queue_name, incarnation, partition, bucket), id)
                    TTL on every row, time-window compaction, one time bucket per partition
    message_buckets ((application, queue_name, incarnation, partition), bucket, expires)
                    which time buckets of a queue partition may hold live messages
    settings        ((name))                            keyspace-wide settings (bucket width, shards)

``incarnation`` is the queue's ``created`` time: a queue deleted and created
again under the same name never sees the old messages, whatever became of
their deletion.
"""

from __future__ import annotations

import collections
import math
import uuid
from typing import Any, Awaitable, Callable, Iterable, Mapping, Sequence

from twisted.internet import defer, task, threads
from twisted.logger import Logger
from zope.interface import implementer

from cassandra import ConsistencyLevel, DriverException, InvalidRequest, RequestExecutionException
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
from queuey.errors import StorageUnavailable
from queuey.interfaces import (IMessageStore, Message, MessageRange, MessageRef, NewMessage,
                               QueueSettings)
from queuey.rendering import Rendered, parse_rendered, render
from queuey.storage import cassandra_directory
from queuey.storage.cassandra_directory import Layout, QueueDirectory, settle_layout
from queuey.storage.directory import gather

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
#: How long a start waits for every node to have the schema it created (or found being created).
SCHEMA_AGREEMENT_SECONDS = 60.0
#: Starts tried when another process is starting on the same new keyspace at once (see _raced).
START_ATTEMPTS = 5

MESSAGE_KEY = "application = ? AND queue_name = ? AND incarnation = ? AND partition = ?"


def schema_cql(keyspace: str, replication: Mapping[str, Any]) -> list[str]:
    """The CQL that creates Queuey's keyspace and tables (idempotent)."""
    options = ", ".join(f"'{k}': {v!r}" if isinstance(v, str) else f"'{k}': {v}" for k, v in replication.items())
    return [
        f"CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {{{options}}}",
        cassandra_directory.directory_cql(keyspace),
        f"""CREATE TABLE IF NOT EXISTS {keyspace}.messages (
            application text, queue_name text, incarnation bigint, partition int, bucket bigint,
            id timeuuid, content_type text, body blob, size int, rendered blob,
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
    rechecks_queue_on_write = False

    def __init__(self, settings: CassandraSettings, reactor: Any) -> None:
        self.settings = settings
        self._reactor = reactor
        self._cluster: Cluster | None = None
        self._session: Session | None = None
        self._in_flight = 0
        self._queued: collections.deque[defer.Deferred[None]] = collections.deque()
        self._statements: dict[str, PreparedStatement] = {}
        self._layout: Layout | None = None
        self._directory: QueueDirectory | None = None
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
    def open(self, migrating: bool = False) -> Any:
        """Connect (off the reactor thread, once it runs), create the schema, prepare statements.

        Errbacks with DirectoryNeedsMigration on a keyspace whose queues are
        still in the unsharded table, unless ``migrating`` (the migration).
        """
        running: defer.Deferred[None] = defer.Deferred()
        self._reactor.callWhenRunning(running.callback, None)
        yield running
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                yield threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._connect,
                                                migrating)
                break
            except Exception as e:
                yield self.close()
                if attempt == START_ATTEMPTS or not self._raced(e):
                    raise translate(e) from None
                log.warn("Opening keyspace {keyspace} met another process opening it at the same time "
                         "({error}); trying again ({attempt} of {attempts})", keyspace=self.settings.keyspace,
                         error=str(e)[:200], attempt=attempt + 1, attempts=START_ATTEMPTS)
                yield task.deferLater(self._reactor, float(attempt), lambda: None)
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

    def _raced(self, error: BaseException) -> bool:
        """Whether a failed start met another process starting on the same new keyspace at once: a node
        that had not yet heard of a keyspace or table just made (``... does not exist``), or the two processes'
        lightweight transactions recording the keyspace's settings colliding (``CAS operation ...``)."""
        text = str(error)
        return (self.settings.create_schema and isinstance(error, InvalidRequest)
                and ("does not exist" in text or "doesn't exist" in text)) \
            or "CAS operation" in text

    def _connect(self, migrating: bool) -> None:
        """Blocking: connect, create the schema, settle the directory, prepare everything.  Runs in a thread."""
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
            protocol_version=5, application_name="queuey", monitor_reporting_enabled=False,
            max_schema_agreement_wait=SCHEMA_AGREEMENT_SECONDS)
        self._cluster = cluster
        session = cluster.connect()
        if s.create_schema:
            for statement in schema_cql(s.keyspace, s.replication):
                session.execute(statement, timeout=max(s.request_timeout, 30.0))
            # A CREATE ... IF NOT EXISTS that found the table (another process made it a moment ago) is
            # not waited for by the driver: without this, a node that has not yet heard of the table
            # answers "table settings does not exist" (two processes starting on a new keyspace).
            if not cluster.control_connection.wait_for_schema_agreement(wait_time=SCHEMA_AGREEMENT_SECONDS):
                raise StorageUnavailable(f"Cassandra: the nodes did not agree on keyspace {s.keyspace}'s schema "
                                         f"within {SCHEMA_AGREEMENT_SECONDS:g} s")
            self._add_rendered_columns(session)
        session.set_keyspace(s.keyspace)
        layout = settle_layout(session, s.keyspace, s.directory_shards, self._meta_level, self._serial, migrating)
        statements = {**_STATEMENTS, **cassandra_directory.STATEMENTS}
        self._statements = {name: session.prepare(cql) for name, cql in statements.items()}
        self._layout = layout
        self._directory = QueueDirectory(self.query, self.batch, layout.shards, self._serial)
        self._session = session

    def _add_rendered_columns(self, session: Session) -> None:
        """Blocking: give a messages table made before rendered messages their two columns.

        Additive: rows written before keep ``content_type`` and ``body`` and are
        rendered when read; rows written since carry ``size`` and ``rendered`` only.
        """
        cluster = self._cluster
        assert cluster is not None
        cluster.refresh_table_metadata(self.settings.keyspace, "messages")
        columns = cluster.metadata.keyspaces[self.settings.keyspace].tables["messages"].columns
        if "rendered" not in columns:
            log.info("Cassandra: adding the size and rendered columns to {keyspace}.messages",
                     keyspace=self.settings.keyspace)
            session.execute(f"ALTER TABLE {self.settings.keyspace}.messages ADD (size int, rendered blob)",
                            timeout=max(self.settings.request_timeout, 30.0))

    @property
    def layout(self) -> Layout | None:
        """The keyspace's queue directory as found by :meth:`open`."""
        return self._layout

    @property
    def directory(self) -> QueueDirectory:
        if self._directory is None or self._session is None:
            raise StorageUnavailable("Cassandra store is not open")
        return self._directory

    def prepare(self, statements: Mapping[str, str]) -> defer.Deferred[None]:
        """Prepare more named statements (off the reactor thread), for :meth:`query`."""
        session = self._session
        if session is None:
            return defer.fail(StorageUnavailable("Cassandra store is not open"))

        def prepare_all() -> dict[str, PreparedStatement]:
            return {name: session.prepare(cql) for name, cql in statements.items()}
        return threads.deferToThreadPool(self._reactor, self._reactor.getThreadPool(), prepare_all).addCallbacks(
            self._statements.update, lambda failure: defer.fail(translate(failure.value)))

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

    def query(self, name: str, *values: Any, consistency: int | None = None, serial: bool = False,
              dict_rows: bool = False) -> defer.Deferred[list[Any]]:
        """Run the prepared statement ``name`` with ``values``; fires with all its rows."""
        return defer.maybeDeferred(self._bound, name, *values, consistency=consistency, serial=serial).addCallback(
            self._execute, DICT_PROFILE if dict_rows else EXEC_PROFILE_DEFAULT)

    def batch(self, statements: Sequence[tuple[str, Sequence[Any]]],
              consistency: int | None = None) -> defer.Deferred[list[Any]]:
        """Run prepared statements, (name, values) each, as one unlogged batch (best within one partition)."""
        def build() -> BatchStatement:
            batch = BatchStatement(BatchType.UNLOGGED,
                                   consistency_level=self._meta_level if consistency is None else consistency)
            for name, values in statements:
                batch.add(self._bound(name, *values))
            return batch
        return defer.maybeDeferred(build).addCallback(self._execute)

    def _execute(self, statement: Any, profile: Any = EXEC_PROFILE_DEFAULT,
                 until: Callable[[list[Any]], bool] | None = None) -> defer.Deferred[list[Any]]:
        """Run one statement (its pages, until ``until(rows)`` says enough), bounded by the in-flight limit.

        (A counter and a queue rather than a DeferredSemaphore: this is on every query's path.)
        """
        if self._in_flight >= self.settings.max_in_flight:
            turn: defer.Deferred[None] = defer.Deferred()
            self._queued.append(turn)
            return turn.addCallback(lambda _: self._execute(statement, profile, until))
        self._in_flight += 1
        return self._send(statement, profile, until, 0).addBoth(self._release)

    def _release(self, result: Any) -> Any:
        self._in_flight -= 1
        while self._queued:
            turn = self._queued.popleft()
            if not turn.called:  # not cancelled while it waited
                turn.callback(None)
                break
        return result

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
        return gather(list(deferreds))

    def _level(self, queue: QueueSettings) -> int:
        return self._levels.get(queue.consistency, self._levels["strong"])

    # -- queues -------------------------------------------------------------

    async def _in_directory(self, call: Callable[[QueueDirectory], Awaitable[Any]]) -> Any:
        return await call(self.directory)

    def create_queue(self, settings: QueueSettings) -> defer.Deferred[QueueSettings]:
        return defer.ensureDeferred(self._in_directory(lambda directory: directory.create(settings)))

    def get_queue(self, application: str, queue_name: str) -> defer.Deferred[QueueSettings | None]:
        return defer.ensureDeferred(self._in_directory(lambda directory: directory.get(application, queue_name)))

    def update_queue(self, settings: QueueSettings) -> defer.Deferred[QueueSettings | None]:
        """Update the incarnation the caller read (same ``created``); None when it is gone."""
        return defer.ensureDeferred(self._in_directory(lambda directory: directory.update(settings)))

    @defer.inlineCallbacks
    def delete_queue(self, application: str, queue_name: str) -> Any:
        """Delete the directory row (a compare-and-set on ``created``), then the message partitions."""
        queue = yield defer.ensureDeferred(self._in_directory(lambda d: d.delete(application, queue_name)))
        if queue is None:
            return False
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

    def list_queues(self, application: str, after: str | None, limit: int) -> defer.Deferred[list[QueueSettings]]:
        """A page merged from the directory's shards: one query over all, then one for each of a few."""
        return defer.ensureDeferred(self._in_directory(lambda directory: directory.list(application, after, limit)))

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
                statements = [self._bound("put_message", *key, m.id, len(m.body),
                                          m.rendered or render(m.id, m.partition, m.body, m.content_type),
                                          lifetimes[m.id],
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

    def read_messages(self, queue: QueueSettings, partition: int, wanted: MessageRange) -> Any:
        return self.read_rendered(queue, (partition,), wanted).addCallback(
            lambda groups: [parse_rendered(row[1]) for row in groups[0]])

    def read_rendered(self, queue: QueueSettings, partitions: Sequence[int],
                      wanted: MessageRange) -> defer.Deferred[list[list[Rendered]]]:
        if len(partitions) == 1:
            return self._read_partition(queue, partitions[0], wanted).addCallback(lambda group: [group])
        return self._gather([self._read_partition(queue, p, wanted) for p in partitions])

    @defer.inlineCallbacks
    def _read_partition(self, queue: QueueSettings, partition: int, wanted: MessageRange) -> Any:
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
        found: list[Rendered] = []
        body_bytes = 0
        window = 1
        while buckets and len(found) < wanted.limit and not wanted.full(body_bytes):
            now, buckets = buckets[:window], buckets[window:]
            window = min(window * 2, 8)
            remaining = wanted.limit - len(found)
            statements = [self._range_statement(name, queue, partition, bucket, lower, upper, remaining, wanted,
                                                level) for bucket in now]
            if len(statements) == 1:
                groups = [(yield self._execute(statements[0], until=_bodies_reach(wanted)))]
            else:
                groups = yield self._gather([self._execute(statement, until=_bodies_reach(wanted))
                                             for statement in statements])
            for rows in groups:
                for row in rows:
                    if len(found) == wanted.limit or wanted.full(body_bytes):
                        break
                    rendered = _rendered(row, partition)
                    found.append(rendered)
                    body_bytes += rendered[0]
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
        return [parse_rendered(rows[0][2]) if rows[0][2] is not None
                else Message(ref.id, ref.partition, rows[0][1], rows[0][0]) for ref, rows in zip(refs, results) if rows]

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


def _rendered(row: Any, partition: int) -> Rendered:
    """A range row (id, size, rendered, content_type, body) as Rendered: as stored, or, for a row
    written before messages were rendered at write time, rendered now."""
    if row[2] is not None:
        return Rendered(row[1], row[2])
    return Rendered(len(row[4]), render(row[0], partition, row[4], row[3]))


def _bodies_reach(wanted: MessageRange) -> Callable[[list[Any]], bool]:
    """For _execute: stop fetching pages of range rows once the bodies fill ``wanted``."""
    def full(rows: list[Any]) -> bool:
        return wanted.full(sum(row[1] if row[2] is not None else len(row[4]) for row in rows))
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


_RANGE = (f"SELECT id, size, rendered, content_type, body FROM messages WHERE {MESSAGE_KEY} AND bucket = ? "
          "AND id {op} ? AND id <= ? ORDER BY id {order} LIMIT ?")

_STATEMENTS = {
    "check": "SELECT release_version FROM system.local",
    "bucket_seconds": "SELECT value FROM settings WHERE name = 'bucket_seconds'",
    "claim_bucket_seconds": "INSERT INTO settings (name, value) VALUES ('bucket_seconds', ?) IF NOT EXISTS",
    "put_message": ("INSERT INTO messages (application, queue_name, incarnation, partition, bucket, id, "
                    "size, rendered) VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?"),
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
    "get_message": (f"SELECT content_type, body, rendered FROM messages WHERE {MESSAGE_KEY} AND bucket = ? "
                    "AND id = ?"),
    "delete_message": f"DELETE FROM messages WHERE {MESSAGE_KEY} AND bucket = ? AND id = ?",
    "count_bucket": f"SELECT count(*) FROM messages WHERE {MESSAGE_KEY} AND bucket = ?",
    "newest": f"SELECT id FROM messages WHERE {MESSAGE_KEY} AND bucket = ? AND id <= ? ORDER BY id DESC LIMIT 1",
    "drop_bucket": f"DELETE FROM messages WHERE {MESSAGE_KEY} AND bucket = ?",
    "drop_bucket_index": f"DELETE FROM message_buckets WHERE {MESSAGE_KEY}",
}
