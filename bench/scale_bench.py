#!/usr/bin/env python3
"""The queue directory at scale on one Cassandra node: a million queues, sharded and unsharded side by side.

One command runs everything (see bench/README.rst, "The queue directory at scale")::

    .venv/bin/python bench/scale_bench.py              # 1,000,000 queues a side: about 45 minutes
    .venv/bin/python bench/scale_bench.py --quick      # 20,000 queues a side: about 2 minutes

Two layouts of one application's queues, in two keyspaces of one node:

sharded
    this version's ``queue_directory`` (64 shards), through CassandraStore's
    own create_queue / get_queue / list_queues;
unsharded
    the one-partition-per-application ``queues`` table of earlier versions,
    through the same driver bridge with the statements those versions ran.

Figures, each measured on both sides in the same run, alternating which goes
first: the creation rate (lightweight transactions, ``--in-flight`` at once,
in chunks), lookup latency (p50/p99, one at a time) and rate (32 at once),
store-level listing pages (first, middle, last), then the sharded listing
over HTTP through a ``twistd queuey``, the largest partition of every table
from ``nodetool tablestats`` after a flush and a major compaction (through
scripts/cassandra-nodetool.sh), and the time the migration of the unsharded
keyspace takes.  Unless ``--hosts`` names a running Cassandra, the script
starts its own node in var/cassandra-scale and stops and wipes it at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import subprocess
import sys
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import cassandra_bench as cb  # noqa: E402  (a Cassandra of our own)
from queuey.storage.cassandra_directory import settings_from_row  # noqa: E402
import http_bench as hb  # noqa: E402  (servers, the listing check, medians)
from http_bench import LIST_APP, LIST_KEY, PAGE, median, queue_name  # noqa: E402

SCALE_DATA = ROOT / "var" / "cassandra-scale"
NODETOOL = ROOT / "scripts" / "cassandra-nodetool.sh"
LEGACY_STATEMENTS = {  # what earlier versions ran on their unsharded table
    "legacy_create": ("INSERT INTO queues (application, queue_name, partitions, type, consistency, principles, "
                      "created) VALUES (?, ?, ?, ?, ?, ?, ?) IF NOT EXISTS"),
    "legacy_insert": ("INSERT INTO queues (application, queue_name, partitions, type, consistency, principles, "
                      "created) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    "legacy_get": ("SELECT application, queue_name, partitions, type, consistency, principles, created "
                   "FROM queues WHERE application = ? AND queue_name = ?"),
}
SIDES = ("sharded", "unsharded")
#: --fast-fill: names per write: one batch per shard for the sharded side, one batch for the other.
FILL_SLICE = {"sharded": 1000, "unsharded": 50}


def say(line: str = "") -> None:
    print(line, flush=True)


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


@dataclass
class Sides:
    """One figure's samples per side, and the per-round ratios sharded / unsharded."""

    samples: dict[str, list[float]] = field(default_factory=lambda: {side: [] for side in SIDES})

    def add(self, side: str, value: float) -> None:
        self.samples[side].append(value)

    def ratio(self) -> float:
        pairs = zip(self.samples["sharded"], self.samples["unsharded"])
        return median([s / u for s, u in pairs if u])

    def line(self, label: str, unit: str) -> str:
        s, u = median(self.samples["sharded"]), median(self.samples["unsharded"])
        return f"{label:<34} {s:12.2f} {u:12.2f} {self.ratio():8.2f}  {unit}"


# -- the two layouts ---------------------------------------------------------------

class Layouts:
    """A store on each keyspace; the operations each side is measured with."""

    def __init__(self, sharded: Any, unsharded: Any) -> None:
        self.stores = {"sharded": sharded, "unsharded": unsharded}
        self.retries = {side: 0 for side in SIDES}

    async def create(self, side: str, name: str, created: int) -> None:
        """Create a queue as a client would: a 503 (e.g. a contended lightweight transaction) is retried,
        and after one, "exists already" means the earlier attempt was applied."""
        from queuey.errors import QueueExists, StorageUnavailable
        from queuey.interfaces import QueueSettings
        for attempt in range(10):
            try:
                if side == "sharded":
                    await self.stores[side].create_queue(QueueSettings(LIST_APP, name, created=created))
                    return
                rows = await self.stores[side].query("legacy_create", LIST_APP, name, 1, "user", "strong", "",
                                                     created, serial=True, dict_rows=True)
                if rows[0]["[applied]"] or attempt:
                    return
                raise QueueExists(name)
            except QueueExists:
                if not attempt:
                    raise hb.BenchError(f"{side}: queue {name} exists already") from None
                return
            except StorageUnavailable:
                self.retries[side] += 1
        raise hb.BenchError(f"{side}: creating queue {name} failed 10 times")

    async def fill(self, side: str, names: list[str], created: int) -> None:
        """Write queues' rows with plain INSERTs in single-partition batches: fast, but not how queuey
        creates queues."""
        from queuey.interfaces import QueueSettings
        if side == "sharded":
            await self.stores[side].directory.change(
                LIST_APP, [QueueSettings(LIST_APP, name, created=created) for name in names], [])
        else:
            await self.stores[side].batch([("legacy_insert", (LIST_APP, name, 1, "user", "strong", "", created))
                                           for name in names])

    async def lookup(self, side: str, name: str) -> None:
        if side == "sharded":
            found = await self.stores[side].get_queue(LIST_APP, name)
        else:  # the same conversion the store does
            rows = await self.stores[side].query("legacy_get", LIST_APP, name)
            found = settings_from_row(rows[0]) if rows else None
        if not found:
            raise hb.BenchError(f"{side}: queue {name} not found")

    async def page(self, side: str, after: str | None) -> list[str]:
        if side == "sharded":
            return [q.queue_name for q in await self.stores[side].list_queues(LIST_APP, after, PAGE)]
        rows = await self.stores[side].query("legacy_page", LIST_APP, after or "", PAGE)
        return [settings_from_row(row).queue_name for row in rows]  # the same conversion the store does


async def in_flight(count: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> float:
    """Run ``one(i)`` for i in range(count), ``concurrency`` at once; the seconds it took."""
    from twisted.internet import defer
    numbers = iter(range(count))

    async def worker() -> None:
        for i in numbers:
            await one(i)
    started = time.perf_counter()
    await defer.gatherResults([defer.ensureDeferred(worker()) for _ in range(concurrency)], consumeErrors=True)
    return time.perf_counter() - started


async def create_all(layouts: Layouts, args: argparse.Namespace) -> Sides:
    """Both sides in alternating chunks; the rate of every chunk."""
    rates = Sides()
    created = int(time.time() * 10_000_000)
    for number, start in enumerate(range(0, args.queues, args.chunk)):
        size = min(args.chunk, args.queues - start)
        order = SIDES if number % 2 == 0 else SIDES[::-1]
        for side in order:
            if args.fast_fill:  # slices of FILL_SLICE names: one batch, or one per shard
                seconds = await in_flight(-(-size // FILL_SLICE[side]), 8, lambda i, side=side: layouts.fill(
                    side, [queue_name(n) for n in range(start + i * FILL_SLICE[side],
                                                        min(start + size, start + (i + 1) * FILL_SLICE[side]))],
                    created))
            else:
                seconds = await in_flight(size, args.in_flight,
                                          lambda i, side=side: layouts.create(side, queue_name(start + i), created))
            rates.add(side, size / seconds)
        say(f"  created {start + size:>9,} a side: sharded {rates.samples['sharded'][-1]:7.0f}/s, unsharded "
            f"{rates.samples['unsharded'][-1]:7.0f}/s; retried after a 503 so far: sharded "
            f"{layouts.retries['sharded']}, unsharded {layouts.retries['unsharded']}  (load {load()})")
    return rates


async def lookups(layouts: Layouts, args: argparse.Namespace) -> tuple[Sides, Sides, Sides]:
    p50, p99, rate = Sides(), Sides(), Sides()
    rng = random.Random(7)
    for round_no in range(args.rounds):
        for side in (SIDES if round_no % 2 == 0 else SIDES[::-1]):
            names = [queue_name(rng.randrange(args.queues)) for _ in range(args.lookups)]
            times = []
            for name in names:
                began = time.perf_counter()
                await layouts.lookup(side, name)
                times.append((time.perf_counter() - began) * 1000)
            p50.add(side, percentile(times, 0.5))
            p99.add(side, percentile(times, 0.99))
            seconds = await in_flight(len(names), 32, lambda i, side=side: layouts.lookup(side, names[i]))
            rate.add(side, len(names) / seconds)
        say(f"  lookups round {round_no + 1}: p50 sharded {p50.samples['sharded'][-1]:.2f} ms, unsharded "
            f"{p50.samples['unsharded'][-1]:.2f} ms  (load {load()})")
    return p50, p99, rate


def listing_pages(count: int) -> dict[str, tuple[str | None, str, str]]:
    """(offset, first name, last name) of the first, middle and last page, as http_bench checks them."""
    return {"first": (None, queue_name(0), queue_name(PAGE - 1)),
            "middle": (queue_name(count // 2 - 1), queue_name(count // 2), queue_name(count // 2 + PAGE - 1)),
            "last": (queue_name(count - PAGE - 1), queue_name(count - PAGE), queue_name(count - 1))}


async def listings(layouts: Layouts, args: argparse.Namespace) -> dict[str, Sides]:
    timings = {page: Sides() for page in ("first", "middle", "last")}
    pages = listing_pages(args.queues)
    for sample in range(-3, args.list_samples):  # three unmeasured rounds first
        for side in (SIDES if sample % 2 == 0 else SIDES[::-1]):
            for page, (after, first, last) in pages.items():
                began = time.perf_counter()
                names = await layouts.page(side, after)
                elapsed = (time.perf_counter() - began) * 1000
                if len(names) != PAGE or names[0] != first or names[-1] != last:
                    raise hb.BenchError(f"{side} {page} page: expected {first}..{last}, got {len(names)} names "
                                        f"{names[:1]}..{names[-1:]}")
                if sample >= 0:
                    timings[page].add(side, elapsed)
    return timings


# -- Cassandra's own figures ---------------------------------------------------------

def nodetool(args: argparse.Namespace, *words: str) -> str:
    done = subprocess.run([str(NODETOOL), "--data", str(args.data), *words], capture_output=True, timeout=1800)
    if done.returncode != 0:
        raise hb.BenchError(f"nodetool {' '.join(words)} failed: {done.stderr.decode(errors='replace')[-2000:]}")
    return done.stdout.decode()


def table_stats(text: str) -> list[dict[str, str]]:
    """Per table of ``nodetool tablestats`` output: its "key: value" lines."""
    tables: list[dict[str, str]] = []
    keyspace = ""
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if key == "Keyspace":
            keyspace = value
        elif key == "Table":
            tables.append({"table": f"{keyspace}.{value}"})
        elif tables and value:
            tables[-1][key] = value
    return tables


def partition_report(args: argparse.Namespace, keyspaces: list[str]) -> dict[str, dict[str, str]]:
    for keyspace in keyspaces:
        nodetool(args, "flush", keyspace)
        nodetool(args, "compact", keyspace)
    stats = {t["table"]: t for t in table_stats(nodetool(args, "tablestats", *keyspaces))}
    say(f"\n{'table':<40} {'partitions':>11} {'largest partition':>18} {'mean partition':>15} {'live bytes':>12}")
    for name, t in sorted(stats.items()):
        say(f"{name:<40} {t.get('Number of partitions (estimate)', '?'):>11} "
            f"{mb(t.get('Compacted partition maximum bytes')):>18} {mb(t.get('Compacted partition mean bytes')):>15} "
            f"{mb(t.get('Space used (live)')):>12}")
    say("(nodetool tablestats after nodetool flush and compact: 'Compacted partition maximum/mean bytes' are "
        "Cassandra's estimates from its SSTable histograms, bucketed, so roughly +-20 %)")
    return stats


def mb(raw: str | None) -> str:
    if raw is None or not re.fullmatch(r"\d+", raw.strip()):
        return raw or "?"
    value = int(raw)
    return f"{value / 1e6:.2f} MB" if value >= 100_000 else f"{value:,} B"


def statement_for_ten_million(stats: dict[str, dict[str, str]], sharded: str, unsharded: str, count: int,
                              shards: int, create_rate: float | None) -> None:
    factor = 10_000_000 / count
    s_max = int(stats[f"{sharded}.queue_directory"].get("Compacted partition maximum bytes", "0"))
    u_max = int(stats[f"{unsharded}.queues"].get("Compacted partition maximum bytes", "0"))
    say(f"\n10,000,000 queues in one application, extrapolated (not measured) from the partitions above: a "
        f"partition's size grows with its rows, so x{factor:g}:")
    say(f"  sharded:   {shards} partitions of at most about {mb(str(round(s_max * factor)))} each "
        f"(measured {mb(str(s_max))} at {count:,})")
    say(f"  unsharded: one partition of about {mb(str(round(u_max * factor)))} (measured {mb(str(u_max))})")
    say(f"  rows in a sharded partition: about {10_000_000 // shards:,}; the lookups and listing slices above were "
        f"measured in partitions of {count // shards:,} rows (sharded) and {count:,} rows (unsharded)")
    if create_rate:
        say(f"  creating them at the measured {create_rate:.0f}/s from one client: "
            f"{10_000_000 / create_rate / 3600:.1f} h")


# -- the run ------------------------------------------------------------------------

async def open_stores(reactor: Any, args: argparse.Namespace, keyspace: str) -> Layouts:
    from queuey.config import parse_config
    from queuey.storage.cassandra import CassandraStore
    from queuey.storage.cassandra_migrate import LEGACY_CQL, LEGACY_STATEMENTS as MIGRATION_STATEMENTS

    def settings(name: str) -> Any:
        return parse_config(f"[application_keys]\n{LIST_APP} = {LIST_KEY}\n[storage]\nbackend = cassandra\n"
                            f"hosts = {args.hosts}\nkeyspace = {name}\nrequest_timeout = 60\n"
                            f"max_in_flight = {max(256, args.in_flight)}\n").storage
    sharded = CassandraStore(settings(keyspace), reactor)
    await sharded.open()
    legacy = keyspace + "_unsharded"
    await sharded._execute(f"CREATE KEYSPACE {legacy} WITH replication = "
                           "{'class': 'SimpleStrategy', 'replication_factor': 1}")
    await sharded._execute(LEGACY_CQL.format(keyspace=legacy))
    unsharded = CassandraStore(settings(legacy), reactor)
    await unsharded.open(migrating=True)  # the migration's view: the old table, served by hand here
    await unsharded.prepare({**LEGACY_STATEMENTS, **MIGRATION_STATEMENTS})
    return Layouts(sharded, unsharded)


def write_config(path: Path, hosts: str, keyspace: str) -> None:
    path.write_text(f"[application_keys]\n{LIST_APP} = {LIST_KEY}\n\n[storage]\nbackend = cassandra\n"
                    f"hosts = {hosts}\nkeyspace = {keyspace}\nreplication = SimpleStrategy:1\n")


async def run(reactor: Any, args: argparse.Namespace, workdir: Path) -> None:
    from twisted.internet import threads
    from queuey.storage.cassandra_migrate import migrate
    keyspace = "scale_" + uuid.uuid4().hex[:8]
    layouts = await open_stores(reactor, args, keyspace)
    shards = layouts.stores["sharded"].layout.shards
    try:
        say(f"keyspaces {keyspace} (sharded, {shards} shards) and {keyspace}_unsharded; "
            f"application {LIST_APP}, queues q0000000.. ; " + ("filled with batches" if args.fast_fill else
                                                               f"{args.in_flight} creations in flight"))
        began = time.monotonic()
        created = await create_all(layouts, args)
        say(f"created {args.queues:,} queues a side in {time.monotonic() - began:.0f} s")
        p50, p99, rate = await lookups(layouts, args)
        pages = await listings(layouts, args)

        say(f"\nOne node, {args.queues:,} queues in one application; medians; ratio = median of the per-round "
            f"ratios sharded/unsharded (load average now {load()})")
        say(f"{'':<34} {'sharded':>12} {'unsharded':>12} {'ratio':>8}")
        how = "fill (batches, 8 in flight)" if args.fast_fill else f"create (LWT), {args.in_flight} in flight"
        say(created.line(how, f"queues/s, per chunk of {args.chunk:,}"))
        say(p50.line("lookup p50 (one at a time)", "ms"))
        say(p99.line("lookup p99 (one at a time)", "ms"))
        say(rate.line("lookups, 32 in flight", "lookups/s"))
        for page, sides in pages.items():
            say(sides.line(f"list page of {PAGE}: {page}", "ms"))
        for side in SIDES:
            first = median(pages["first"].samples[side])
            say(f"{side}: last/first page {median(pages['last'].samples[side]) / first:.2f}, middle/first "
                f"{median(pages['middle'].samples[side]) / first:.2f}")
        rates = created.samples["sharded"]
        if not args.fast_fill:
            say(f"sharded creation, first chunk {rates[0]:.0f}/s, last chunk {rates[-1]:.0f}/s; creations retried "
                f"after a 503 (contended lightweight transaction): sharded {layouts.retries['sharded']}, "
                f"unsharded {layouts.retries['unsharded']}")

        if not args.skip_http:
            config = workdir / "scale.ini"
            write_config(config, args.hosts, keyspace)
            server = hb.Server("queuey", ["queuey", "--config", str(config), "--port",
                                          "tcp:{port}:interface=127.0.0.1"], workdir, None)
            try:
                await threads.deferToThread(server.start)
                timings, problems = await threads.deferToThread(hb.measure_listing, server, args.queues,
                                                                args.list_samples)
                if problems:
                    raise hb.BenchError("; ".join(problems))
                say("\nOver HTTP, sharded, through twistd queuey:")
                hb.report_listing(timings, args.queues, 0.0, args.list_samples)
            finally:
                server.stop()

        stats = await threads.deferToThread(partition_report, args, [keyspace, keyspace + "_unsharded"])
        statement_for_ten_million(stats, keyspace, keyspace + "_unsharded", args.queues, shards,
                                  None if args.fast_fill else median(created.samples["sharded"]))

        if not args.skip_migrate:
            say(f"\nmigrating {keyspace}_unsharded ({args.queues:,} queues) with queuey.storage.cassandra_migrate:")
            began = time.monotonic()
            await migrate(layouts.stores["unsharded"], reactor, lambda line: say("  " + line))
            seconds = time.monotonic() - began
            say(f"migration: {seconds:.0f} s for {args.queues:,} queues, {args.queues / seconds:.0f} queues/s "
                f"(a copying walk and a checking walk; load {load()}); 10,000,000 at this rate: "
                f"{10_000_000 / (args.queues / seconds) / 60:.0f} min")
    finally:
        for store in layouts.stores.values():
            await store.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hosts", help="host:port of a running Cassandra to use (default: start one)")
    parser.add_argument("--data", type=Path, default=SCALE_DATA,
                        help="data dir of that Cassandra (scripts/cassandra-start.sh --data), for nodetool")
    parser.add_argument("--queues", type=int, default=1_000_000, help="queues a side")
    parser.add_argument("--chunk", type=int, default=50_000, help="queues a side per creation chunk")
    parser.add_argument("--in-flight", type=int, default=64, help="creations in flight")
    parser.add_argument("--lookups", type=int, default=2000, help="lookups a side per round")
    parser.add_argument("--rounds", type=int, default=3, help="lookup rounds")
    parser.add_argument("--list-samples", type=int, default=20, help="timed requests per listing page")
    parser.add_argument("--fast-fill", action="store_true",
                        help="write the queues' rows with plain INSERTs (much faster; no creation rate)")
    parser.add_argument("--skip-http", action="store_true", help="no listing over HTTP")
    parser.add_argument("--skip-migrate", action="store_true", help="do not time the migration")
    parser.add_argument("--keep", action="store_true", help="keep the node, its data and the logs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 20,000 queues, chunks of 5,000")
    args = parser.parse_args(argv)
    if args.quick:
        args.queues, args.chunk, args.lookups, args.rounds, args.list_samples = 20_000, 5_000, 500, 2, 5
    if args.queues < 2 * PAGE + 2:
        parser.error(f"--queues must be at least {2 * PAGE + 2}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    slot = os.environ.get("QUEUEY_SERVICES_SLOT", "0")
    own_host = None if args.hosts else f"127.0.{slot}.1"
    args.hosts = args.hosts or f"{own_host}:9042"
    hb.TWISTD = hb.find_twistd()
    say(f"Queuey scale benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs, "
        f"load average {load()}")

    def body(workdir: Path) -> None:
        from twisted.internet import defer, task
        failed: list[str] = []

        async def guarded(reactor: Any) -> None:
            try:
                await run(reactor, args, workdir)
            except hb.BenchError as e:
                failed.append(str(e))
            except Exception:
                traceback.print_exc()
                failed.append("the run failed (traceback above)")
        try:
            task.react(lambda reactor: defer.ensureDeferred(guarded(reactor)))
        except SystemExit:
            pass
        if failed:
            raise hb.BenchError("; ".join(failed))
    return cb.on_cassandra(args.data, 1, own_host, body, keep_logs=args.keep, keep_cassandra=args.keep)


if __name__ == "__main__":
    sys.exit(main())
