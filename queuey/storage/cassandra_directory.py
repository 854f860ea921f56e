"""The Cassandra store's queue directory: queue settings in ``directory_shards`` partitions per application.

Table ``queue_directory`` is keyed ``((application, shard), queue_name)`` with
``shard = shard_of(queue_name, shards)`` (queuey.storage.directory): a
lookup, a creation, an update or a deletion touches the one partition of its
name, and an application's queues spread over ``shards`` partitions, so over
the whole ring, however many it has.  A listing merges the shards
(:func:`queuey.storage.directory.merged_page`).

The shard count is the keyspace's: the first store that opens a new keyspace
records it in ``settings`` (``directory_shards``), together with
``directory_ready``, and every later store uses the recorded count.  A
keyspace made before the directory existed keeps its queues in the one-
partition-per-application table ``queues``; a store refuses to open it until
``python -m queuey.storage.cassandra_migrate`` has copied them
(:class:`DirectoryNeedsMigration`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from twisted.internet import defer
from twisted.logger import Logger

from cassandra import ConsistencyLevel
from cassandra.cluster import Session

from queuey.errors import QueueExists, StorageUnavailable
from queuey.interfaces import QueueSettings
from queuey.storage.directory import ShardRead, gather, merged_page, shard_of

log = Logger()

#: What to run on a keyspace whose queues are still in the unsharded table.
MIGRATE_COMMAND = "python -m queuey.storage.cassandra_migrate --config <queuey.ini>"
#: The table of queue settings before the directory was sharded.
LEGACY_TABLE = "queues"
#: Shards a listing page reads at once.
LISTING_CONCURRENCY = 32

COLUMNS = "application, queue_name, partitions, type, consistency, principles, created"
_COLUMN_NAMES = tuple(c.strip() for c in COLUMNS.split(","))
KEY = "application = ? AND shard = ? AND queue_name = ?"
_SELECT = f"SELECT {COLUMNS} FROM queue_directory WHERE application = ? AND shard = ? AND queue_name > ?"


def directory_cql(keyspace: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {keyspace}.queue_directory (
            application text, shard int, queue_name text, partitions int, type text, consistency text,
            principles text, created bigint,
            PRIMARY KEY ((application, shard), queue_name)
        ) WITH CLUSTERING ORDER BY (queue_name ASC)"""


STATEMENTS = {
    "create_queue": (f"INSERT INTO queue_directory (shard, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                     "IF NOT EXISTS"),
    "get_queue": f"SELECT {COLUMNS} FROM queue_directory WHERE {KEY}",
    "update_queue": ("UPDATE queue_directory SET partitions = ?, type = ?, consistency = ?, principles = ? "
                     f"WHERE {KEY} IF created = ?"),
    "delete_queue": f"DELETE FROM queue_directory WHERE {KEY} IF created = ?",
    "list_shards": (f"SELECT shard, {COLUMNS} FROM queue_directory WHERE application = ? AND shard IN ? "
                    "AND queue_name > ? PER PARTITION LIMIT ?"),
    "list_shard": f"{_SELECT} ORDER BY queue_name LIMIT ?",
    "list_shard_upto": f"{_SELECT} AND queue_name <= ? ORDER BY queue_name LIMIT ?",
    # Plain writes, for the migration only (no queuey serves the keyspace meanwhile).
    "put_entry": f"INSERT INTO queue_directory (shard, {COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    "remove_entry": f"DELETE FROM queue_directory WHERE {KEY}",
    "directory_partitions": "SELECT DISTINCT application, shard FROM queue_directory",
    "mark_ready": "INSERT INTO settings (name, value) VALUES ('directory_ready', ?)",
}


class DirectoryState(enum.Enum):
    """Where a keyspace's queue settings live."""

    READY = "ready"    # in queue_directory, complete
    LEGACY = "legacy"  # in the unsharded table (and perhaps part-copied): migrate first


class DirectoryNeedsMigration(Exception):
    """The keyspace keeps its queues in the unsharded table: the store must not serve it."""

    def __init__(self, keyspace: str) -> None:
        super().__init__(
            f"keyspace {keyspace} keeps its queues in the unsharded table {LEGACY_TABLE} of an earlier "
            f"Queuey: stop every queuey using it, then run: {MIGRATE_COMMAND} (see docs/cassandra.rst)")


@dataclass(frozen=True)
class Layout:
    """The keyspace's directory as found at start-up."""

    state: DirectoryState
    shards: int
    legacy_table: bool


def settle_layout(session: Session, keyspace: str, configured_shards: int, level: int, serial: int,
                  migrating: bool = False) -> Layout:
    """Blocking (start-up, in a thread): read the keyspace's directory settings, recording them if new.

    A keyspace without the legacy table gets the configured shard count
    recorded and is READY at once.  One with it is LEGACY until the migration
    marks it ready: a store refuses it (DirectoryNeedsMigration, having
    written nothing), the migration (``migrating``) records the shard count.
    """
    def run(cql: str, values: tuple[Any, ...], level: int, serial: int | None = None) -> list[Any]:
        statement = session.prepare(cql).bind(values)
        statement.consistency_level = level
        if serial is not None:
            statement.serial_consistency_level = serial
        return list(session.execute(statement))

    def read(name: str) -> str | None:
        """At ONE (a start-up with nodes down works), and again at ``level`` before taking it as absent."""
        for read_level in (ConsistencyLevel.ONE, level):
            rows = run("SELECT value FROM settings WHERE name = ?", (name,), read_level)
            if rows:
                return rows[0][0]
        return None

    def claim(name: str, value: str) -> str:
        """Record ``value`` unless a value is recorded already; the value that holds."""
        rows = run("INSERT INTO settings (name, value) VALUES (?, ?) IF NOT EXISTS", (name, value), level, serial)
        return value if rows[0][0] else rows[0][2]  # not applied: [applied], name, value

    legacy = bool(run("SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
                      (keyspace, LEGACY_TABLE), ConsistencyLevel.ONE))
    ready = read("directory_ready") is not None
    if legacy and not ready and not migrating:
        raise DirectoryNeedsMigration(keyspace)
    recorded = read("directory_shards")
    shards = int(recorded if recorded is not None else claim("directory_shards", str(configured_shards)))
    if shards != configured_shards:
        log.warn("Keyspace {keyspace} was created with directory_shards = {shards}; using it, not the "
                 "configured {configured}", keyspace=keyspace, shards=shards, configured=configured_shards)
    if not ready and not legacy:
        claim("directory_ready", "created")
        ready = True
    return Layout(DirectoryState.READY if ready else DirectoryState.LEGACY, shards, legacy)


Query = Callable[..., "defer.Deferred[list[Any]]"]
Batch = Callable[[Sequence[tuple[str, Sequence[Any]]]], "defer.Deferred[Any]"]


class QueueDirectory:
    """Queue settings by name, in ``shards`` partitions per application.

    ``query(name, *values, consistency=None, serial=False, dict_rows=False)``
    runs one of :data:`STATEMENTS` (prepared by the store) and fires with its
    rows; ``batch([(name, values), ...])`` runs several as one unlogged
    batch; ``serial_level`` is the level of lightweight-transaction reads.
    """

    def __init__(self, query: Query, batch: Batch, shards: int, serial_level: int) -> None:
        self.shards = shards
        self._all_shards = list(range(shards))
        self._query = query
        self._batch = batch
        self._serial = serial_level

    def key(self, application: str, queue_name: str) -> tuple[str, int, str]:
        """The primary key of a queue's row."""
        return application, shard_of(queue_name, self.shards), queue_name

    async def create(self, settings: QueueSettings) -> QueueSettings:
        rows = await self._query("create_queue", *self._row(settings), serial=True, dict_rows=True)
        if not rows[0]["[applied]"]:
            raise QueueExists(f"Queue {settings.queue_name!r} exists already.")
        return settings

    async def get(self, application: str, queue_name: str, consistency: int | None = None) -> QueueSettings | None:
        rows = await self._query("get_queue", *self.key(application, queue_name), consistency=consistency)
        return settings_from_row(rows[0]) if rows else None

    async def update(self, settings: QueueSettings) -> QueueSettings | None:
        """Update the incarnation the caller read (same ``created``); None when it is gone."""
        rows = await self._query(
            "update_queue", settings.partitions, settings.type, settings.consistency,
            ",".join(settings.principles), *self.key(settings.application, settings.queue_name),
            settings.created, serial=True, dict_rows=True)
        return settings if rows[0]["[applied]"] else None

    async def delete(self, application: str, queue_name: str) -> QueueSettings | None:
        """Delete the row (a compare-and-set on ``created``); the settings it had, or None if none."""
        for _ in range(5):
            queue = await self.get(application, queue_name, consistency=self._serial)
            if queue is None:
                return None
            done = await self._query("delete_queue", *self.key(application, queue_name), queue.created,
                                     serial=True, dict_rows=True)
            if done[0]["[applied]"]:
                return queue
        raise StorageUnavailable("Cassandra: the queue kept changing while it was being deleted")

    async def list(self, application: str, after: str | None, limit: int) -> list[QueueSettings]:
        """One page of the application's queues in name order, merged from every shard.

        First one query over every shard partition (``shard IN``, ``PER
        PARTITION LIMIT``: the coordinator reads them concurrently), then one
        query for each of the few shards that may hold more of the page.
        """
        async def read_all(first_after: str, each: int) -> dict[int, list[Any]]:
            rows = await self._query("list_shards", application, self._all_shards, first_after, each)
            found: dict[int, list[Any]] = {}
            for row in rows:
                found.setdefault(row[0], []).append(row[1:])
            return found

        async def read(request: ShardRead) -> list[Any]:
            if request.upto is None:
                return await self._query("list_shard", application, request.shard, request.after, request.limit)
            return await self._query("list_shard_upto", application, request.shard, request.after, request.upto,
                                     request.limit)
        # Rows stay tuples until they make the page: most of the first round's do not.
        page = await merged_page(read_all, read, self.shards, after, limit, _row_name, LISTING_CONCURRENCY)
        return [settings_from_row(row) for row in page]

    # -- for the migration -----------------------------------------------------

    async def change(self, application: str, puts: Sequence[QueueSettings], removes: Sequence[str]) -> None:
        """Write ``puts`` as they are and delete the rows named ``removes``, without lightweight transactions:
        one single-partition batch per shard, all at once."""
        by_shard: dict[int, list[tuple[str, tuple[Any, ...]]]] = {}
        for queue in puts:
            row = self._row(queue)
            by_shard.setdefault(row[0], []).append(("put_entry", row))
        for name in removes:
            key = self.key(application, name)
            by_shard.setdefault(key[1], []).append(("remove_entry", key))
        await gather([self._batch(statements) for statements in by_shard.values()])

    async def applications(self) -> set[str]:
        """Every application with a row in the directory (a scan of partition keys)."""
        rows = await self._query("directory_partitions")
        return {row[0] for row in rows}

    async def mark_ready(self, note: str) -> None:
        await self._query("mark_ready", note)

    def _row(self, settings: QueueSettings) -> tuple[Any, ...]:
        return (shard_of(settings.queue_name, self.shards), *settings_row(settings))


def _row_name(row: Sequence[Any]) -> str:
    return row[1]  # COLUMNS: application, queue_name, ...


def settings_row(settings: QueueSettings) -> tuple[Any, ...]:
    """The values of :data:`COLUMNS` for a queue."""
    return (settings.application, settings.queue_name, settings.partitions, settings.type,
            settings.consistency, ",".join(settings.principles), settings.created)


def settings_from_row(row: Any) -> QueueSettings:
    """QueueSettings from a row of :data:`COLUMNS` (a tuple, or a dict from a transaction)."""
    if isinstance(row, dict):
        row = tuple(row[c] for c in _COLUMN_NAMES)
    application, queue_name, partitions, type_, consistency, principles, created = row
    return QueueSettings(application, queue_name, partitions, type_, consistency,
                         tuple(p for p in principles.split(",") if p) if principles else (), created)
