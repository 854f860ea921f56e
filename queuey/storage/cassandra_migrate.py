"""Moves a keyspace's queues from the unsharded ``queues`` table of earlier Queuey into the sharded directory.

Run it once per keyspace, with every queuey process using the keyspace
stopped (they refuse to start on it until it is done)::

    python -m queuey.storage.cassandra_migrate --config /etc/queuey.ini

It walks each application's queues in name order in both tables, page by
page, and writes into ``queue_directory`` what is missing or different there
and deletes what is there but no longer in ``queues`` (so an interrupted run
is simply run again).  A second walk must then find nothing to change: if it
does, something still writes to ``queues`` (a queuey of the earlier version),
and the command stops without marking the keyspace migrated.  Otherwise it
records ``directory_ready`` in the keyspace's settings, and queuey starts on
it.  Queues keep their ``created`` time, which is the incarnation their
messages are stored under, so every message stays where it was.  The old
table is left as it was; drop it once no earlier version will run again.

:func:`migrate` is the whole job, for a command-line tool to call.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Coroutine

from twisted.internet import defer, task
from twisted.python.failure import Failure

from queuey.config import CassandraSettings, ConfigError, describe_problems, load_config
from queuey.errors import StorageUnavailable
from queuey.interfaces import QueueSettings
from queuey.storage.cassandra_directory import (COLUMNS, LEGACY_TABLE, DirectoryState, QueueDirectory,
                                                settings_from_row)

#: The unsharded table of earlier versions, as they created it.
LEGACY_CQL = f"""CREATE TABLE IF NOT EXISTS {{keyspace}}.{LEGACY_TABLE} (
    application text, queue_name text, partitions int, type text, consistency text,
    principles text, created bigint,
    PRIMARY KEY ((application), queue_name)
) WITH CLUSTERING ORDER BY (queue_name ASC)"""
LEGACY_STATEMENTS = {
    "legacy_applications": f"SELECT DISTINCT application FROM {LEGACY_TABLE}",
    "legacy_page": (f"SELECT {COLUMNS} FROM {LEGACY_TABLE} WHERE application = ? AND queue_name > ? "
                    "ORDER BY queue_name LIMIT ?"),
}
PAGE = 1000
PROGRAM = "queuey migration"
#: Pages of directory changes in flight at once (each one batch per shard it touches).
FLUSHES_IN_FLIGHT = 4
PROGRESS_SECONDS = 10.0


class MigrationFailed(Exception):
    """The migration could not finish; the keyspace is left unmarked, so queuey still refuses it."""


@dataclass
class Counts:
    """What one walk over the applications saw and did."""

    applications: int = 0
    queues: int = 0
    written: int = 0
    removed: int = 0

    @property
    def changes(self) -> int:
        return self.written + self.removed


Progress = Callable[[str], None]


async def migrate(store: Any, reactor: Any, progress: Progress) -> Counts:
    """Copy, check, mark ready; ``store`` is a CassandraStore opened with ``migrating=True``.

    Fires with the counts of the copying walk; raises MigrationFailed when the
    checking walk still finds differences.
    """
    layout = store.layout
    keyspace = store.settings.keyspace
    if not layout.legacy_table:
        progress(f"keyspace {keyspace} has no table {LEGACY_TABLE}: nothing to migrate")
        return Counts()
    if layout.state is DirectoryState.READY:
        progress(f"keyspace {keyspace} is migrated already (its directory has {layout.shards} shards)")
        return Counts()
    await store.prepare(LEGACY_STATEMENTS)
    directory: QueueDirectory = store.directory
    progress(f"keyspace {keyspace}: copying the queues of table {LEGACY_TABLE} into queue_directory "
             f"({layout.shards} shards)")
    copied = await walk(store, directory, reactor, progress, "copy")
    progress(f"copied: {copied.queues} queues of {copied.applications} applications "
             f"({copied.written} written, {copied.removed} removed); checking")
    checked = await walk(store, directory, reactor, progress, "check")
    if checked.changes:
        raise MigrationFailed(
            f"{checked.changes} queues changed in table {LEGACY_TABLE} while they were copied: a queuey of an "
            f"earlier version still serves keyspace {keyspace}; stop it and run this command again")
    await directory.mark_ready(f"migrated {checked.queues} queues")
    progress(f"keyspace {keyspace} migrated: {checked.queues} queues of {checked.applications} applications "
             f"in queue_directory; queuey starts on it now. Table {LEGACY_TABLE} is left as it was "
             f"(DROP TABLE {keyspace}.{LEGACY_TABLE} once no earlier Queuey will run again)")
    return copied


async def walk(store: Any, directory: QueueDirectory, reactor: Any, progress: Progress, what: str) -> Counts:
    """One pass over every application: make the directory hold exactly what the legacy table holds."""
    legacy_apps = {row[0] for row in await store.query("legacy_applications")}
    applications = sorted(legacy_apps | await directory.applications())
    counts = Counts(applications=len(legacy_apps))
    writes = Writes(FLUSHES_IN_FLIGHT)
    reported = reactor.seconds()
    for application in applications:
        puts: list[QueueSettings] = []
        removes: list[str] = []
        async for old, new in pairs(legacy_pages(store, application), directory_pages(directory, application)):
            if old is not None:
                counts.queues += 1
            if new is None or (old is not None and old != new):
                puts.append(old)
            elif old is None:
                removes.append(new.queue_name)
            if len(puts) + len(removes) >= PAGE:
                counts.written, counts.removed = counts.written + len(puts), counts.removed + len(removes)
                await writes.add(directory.change(application, puts, removes))
                puts, removes = [], []
            if reactor.seconds() - reported >= PROGRESS_SECONDS:
                reported = reactor.seconds()
                progress(f"{what}: application {application}: {counts.queues} queues so far, "
                         f"{counts.written} written, {counts.removed} removed")
        counts.written, counts.removed = counts.written + len(puts), counts.removed + len(removes)
        await writes.add(directory.change(application, puts, removes))
    await writes.drain()
    return counts


class Writes:
    """Writes in flight, at most ``limit``; the first failure is raised by the next add or by drain."""


    def __init__(self, limit: int) -> None:
        self._slots = defer.DeferredSemaphore(limit)
        self._pending: set[defer.Deferred[None]] = set()
        self._failure: BaseException | None = None

    async def add(self, write: Coroutine[Any, Any, None]) -> None:
        """Start ``write`` once a slot is free."""
        await self._slots.acquire()
        if self._failure is not None:
            self._slots.release()
            write.close()  # never started
            self._raise()
        started = defer.ensureDeferred(write)
        self._pending.add(started)

        def done(result: Any) -> None:
            self._pending.discard(started)
            self._slots.release()
            if isinstance(result, Failure) and self._failure is None:
                self._failure = result.value
        started.addBoth(done)

    async def drain(self) -> None:
        await defer.DeferredList(list(self._pending))
        self._raise()

    def _raise(self) -> None:
        if self._failure is not None:
            raise self._failure


async def legacy_pages(store: Any, application: str) -> AsyncIterator[QueueSettings]:
    after = ""
    while True:
        rows = await store.query("legacy_page", application, after, PAGE)
        for row in rows:
            yield settings_from_row(row)
        if len(rows) < PAGE:
            return
        after = rows[-1][1]


async def directory_pages(directory: QueueDirectory, application: str) -> AsyncIterator[QueueSettings]:
    after: str | None = None
    while True:
        page = await directory.list(application, after, PAGE)
        for queue in page:
            yield queue
        if len(page) < PAGE:
            return
        after = page[-1].queue_name


async def pairs(left: AsyncIterator[QueueSettings],
                right: AsyncIterator[QueueSettings]) -> AsyncIterator[tuple[QueueSettings | None,
                                                                           QueueSettings | None]]:
    """Two name-ordered streams side by side: (a, b) for a name in both, (a, None) or (None, b) otherwise."""
    a = await anext(left, None)
    b = await anext(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a.queue_name < b.queue_name):
            yield a, None
            a = await anext(left, None)
        elif a is None or b.queue_name < a.queue_name:
            yield None, b
            b = await anext(right, None)
        else:
            yield a, b
            a, b = await anext(left, None), await anext(right, None)


# -- the command ---------------------------------------------------------------------

async def run(reactor: Any, config_path: str, out: Progress, err: Progress) -> int:
    """The command: 0 done (or nothing to do), 1 failed, 2 bad configuration."""
    try:
        config = load_config(config_path)
    except ConfigError as e:
        for line in describe_problems(PROGRAM, e).splitlines():
            err(line)
        return 2
    settings = config.storage
    if not isinstance(settings, CassandraSettings):
        err(f"{PROGRAM}: bad configuration: [storage] backend: {settings.backend}, not cassandra: nothing to migrate")
        return 2
    for warning in config.warnings:
        err(f"{PROGRAM}: warning: {warning}")
    from queuey.storage.cassandra import CassandraStore
    store = CassandraStore(settings, reactor)
    try:
        await store.open(migrating=True)
        await migrate(store, reactor, out)
    except (MigrationFailed, StorageUnavailable) as e:
        err(f"{PROGRAM}: {e}")
        return 1
    finally:
        await store.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m queuey.storage.cassandra_migrate",
        description="Move a keyspace's queues into the sharded queue directory (stop every queuey first).")
    parser.add_argument("--config", required=True, help="the ini file queuey runs with ([storage] backend = "
                                                        "cassandra)")
    args = parser.parse_args(argv)

    def say(stream: Any) -> Progress:
        return lambda line: print(line, file=stream, flush=True)

    def go(reactor: Any) -> defer.Deferred[None]:
        async def command() -> None:
            code = await run(reactor, args.config, say(sys.stdout), say(sys.stderr))
            if code:
                raise SystemExit(code)
        return defer.ensureDeferred(command())
    task.react(go)


if __name__ == "__main__":
    main()
