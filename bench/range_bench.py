#!/usr/bin/env python3
"""Range reads as a queue grows: SQLite from 10^3 to 10^7 messages, Cassandra over many hour buckets.

    .venv/bin/python bench/range_bench.py                       # SQLite, 10^3 .. 10^7 (several minutes)
    .venv/bin/python bench/range_bench.py --max-exponent 5      # SQLite, 10^3 .. 10^5
    .venv/bin/python bench/range_bench.py --cassandra 127.0.0.1:9042 --skip-sqlite

SQLite: one queue's partition grows by powers of ten, its messages written
straight into the database file (keys of consecutive ids, one rendered
message of ~180 bytes shared by all rows, so that writing 10^7 rows takes a
minute, not an hour), then ``ANALYZE`` runs, as an operator might.  At each
size a ``twistd queuey`` serves it and the script times ``GET
?after=<id>&limit=100`` at the start, the middle and the end of the queue,
interleaved, over one keep-alive connection, and prints the query plan of the
range read (it must stay on the primary key).

Cassandra: one partition whose messages lie in 1, 24, 168 and 720 hour
buckets (ten per bucket, written with PUT at past ids), then ``GET
?since=<time>&limit=100`` timed from the oldest, middle and newest bucket.

Times are client-side medians (ms); the ratio to the smallest size says
whether reads stay flat.  The script owns what it starts (a temporary
directory, the server, stopped by pid); every wait is bounded.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import http_bench  # noqa: E402
from http_bench import Server, fail  # noqa: E402

from queuey import timeuuid  # noqa: E402

APP, KEY = "range", "range-key"
AUTH = {"Authorization": f"Application {KEY}"}
START = 1_790_000_000 * timeuuid.TICKS_PER_SECOND  # ids of the SQLite queue: START + n ticks
SEQ, NODE = 0x123, 0x1_0000_0000_42
PAGE = 100


def message_id(n: int) -> uuid.UUID:
    return timeuuid.make_uuid(START + n, SEQ, NODE)


def config(directory: Path, storage: str) -> Path:
    path = directory / "range.ini"
    path.write_text(f"[application_keys]\n{APP} = {KEY}\n\n[storage]\n{storage}\n")
    return path


def timed_reads(port: int, paths: dict[str, str], samples: int, expect: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {name: [] for name in paths}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for sample in range(-3, samples):  # three unmeasured rounds, then the measured ones, interleaved
            for name, path in paths.items():
                started = time.perf_counter()
                conn.request("GET", path, headers=AUTH)
                response = conn.getresponse()
                data = response.read()
                elapsed = (time.perf_counter() - started) * 1000
                if response.status != 200:
                    fail(f"GET {path}: {response.status} {data[:300]!r}")
                count = len(json.loads(data)["messages"])
                if count != expect:
                    fail(f"GET {path}: {count} messages, expected {expect}")
                if sample >= 0:
                    timings[name].append(elapsed)
    finally:
        conn.close()
    return timings


# -- SQLite ------------------------------------------------------------------------------

def grow(db: Path, upto: int, have: int) -> float:
    """Add messages ``have`` .. ``upto`` - 1 to queue ``big`` (qid 1, partition 1); the seconds it took."""
    from queuey.rendering import render
    from queuey.storage.sqlite import connect, migrate
    started = time.monotonic()
    conn = connect(str(db), synchronous="OFF")
    try:
        conn.execute("PRAGMA cache_size = -400000")
        if have == 0:
            conn.execute("BEGIN")
            migrate(conn)
            conn.execute("INSERT INTO queues (qid, application, queue_name, partitions, type, consistency, principles, "
                         "created) VALUES (1, ?, 'big', 1, 'user', 'strong', '', 1)", (APP,))
            conn.execute("COMMIT")
        body = b"a range-read benchmark message " * 3
        rendered = render(message_id(0), 1, body, "text/plain")  # one row's JSON, shared: the reads do not parse it
        expires = int(time.time() * 1000) + 30 * 86400 * 1000
        flip = 0x8080808080808080
        tail = ((0x8000 | SEQ) << 48 | NODE) ^ flip
        conn.execute("BEGIN")
        for low in range(have, upto, 100_000):
            conn.executemany(
                "INSERT INTO messages (qid, partition, key, expires_ms, size, rendered) VALUES (1, 1, ?, ?, ?, ?)",
                (((START + n + timeuuid.UUID_EPOCH_OFFSET).to_bytes(8, "big") + tail.to_bytes(8, "big"),
                  expires, len(body), rendered) for n in range(low, min(upto, low + 100_000))))
        conn.execute("COMMIT")
        conn.execute("ANALYZE")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.monotonic() - started


def plan(db: Path) -> str:
    import sqlite3
    from queuey.storage.sqlite import range_sql
    conn = sqlite3.connect(str(db))
    try:
        rows = conn.execute("EXPLAIN QUERY PLAN " + range_sql(False, ">", True),
                            (1, 1, 0, b"\0" * 16, b"\xff" * 16, PAGE)).fetchall()
    finally:
        conn.close()
    return "; ".join(row[3] for row in rows)


def sqlite_sizes(args: argparse.Namespace, workdir: Path) -> list[tuple[int, dict[str, float], str]]:
    db = workdir / "range.sqlite"
    ini = config(workdir, f"backend = sqlite\npath = {db}")
    results = []
    have = 0
    for exponent in range(3, args.max_exponent + 1):
        size = 10 ** exponent
        seconds = grow(db, size, have)
        have = size
        query_plan = plan(db)
        print(f"sqlite: {size:>12,} messages (written in {seconds:.0f} s, ANALYZE run); plan: {query_plan}",
              flush=True)
        server = Server("queuey", ["queuey", "--config", str(ini), "--port", "tcp:{port}:interface=127.0.0.1"],
                        workdir, cpu=None)
        server.start()
        try:
            paths = {where: f"/v1/{APP}/big?limit={PAGE}&after={message_id(after).hex}"
                     for where, after in (("first", 0), ("middle", size // 2), ("last", size - PAGE - 1))}
            timings = timed_reads(server.port, paths, args.samples, PAGE)
        finally:
            server.stop()
        medians = {where: statistics.median(values) for where, values in timings.items()}
        print("        " + "  ".join(f"{where} {ms:.2f} ms" for where, ms in medians.items()), flush=True)
        results.append((size, medians, query_plan))
    return results


# -- Cassandra ------------------------------------------------------------------------------

def cassandra_buckets(args: argparse.Namespace, workdir: Path) -> list[tuple[int, dict[str, float]]]:
    keyspace = "bench_range_" + uuid.uuid4().hex[:8]
    ini = config(workdir, f"backend = cassandra\nhosts = {args.cassandra}\nkeyspace = {keyspace}\n"
                          "replication = SimpleStrategy:1")
    server = Server("queuey-cassandra", ["queuey", "--config", str(ini), "--port", "tcp:{port}:interface=127.0.0.1"],
                    workdir, cpu=None)
    server.start()
    results = []
    try:
        now = round(time.time() * timeuuid.TICKS_PER_SECOND)
        hour = 3600 * timeuuid.TICKS_PER_SECOND
        for buckets in (1, 24, 168, 720):
            queue = f"b{buckets}"
            http_bench.expect(server.port, 201, "POST", f"/v1/{APP}", f"queue_name={queue}".encode(),
                              {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
            ids = [timeuuid.make_uuid(now - (b + 1) * hour + n * 60 * timeuuid.TICKS_PER_SECOND, SEQ, NODE)
                   for b in range(buckets) for n in range(10)]
            for low in range(0, len(ids), 200):
                http_bench.expect(server.port, 200, "PUT", f"/v1/{APP}/{queue}/" + ",".join(
                    i.hex for i in ids[low:low + 200]), b"old", {**AUTH, "Content-Type": "text/plain"})
            oldest = min(ids, key=timeuuid.sort_key)
            middle = sorted(ids, key=timeuuid.sort_key)[len(ids) // 2]
            expect = min(PAGE, len(ids))
            paths = {"oldest": f"/v1/{APP}/{queue}?limit={PAGE}&since={timeuuid.timestamp_of(oldest)}",
                     "middle": f"/v1/{APP}/{queue}?limit={PAGE}&since={timeuuid.timestamp_of(middle)}",
                     "newest": f"/v1/{APP}/{queue}?limit={PAGE}&order=descending"}
            timings = timed_reads(server.port, {k: v for k, v in paths.items() if k != "middle" or buckets > 10},
                                  args.samples, expect)
            medians = {where: statistics.median(values) for where, values in timings.items()}
            print(f"cassandra: {buckets:4d} hour buckets ({len(ids)} messages)  "
                  + "  ".join(f"{where} {ms:.2f} ms" for where, ms in medians.items()), flush=True)
            results.append((buckets, medians))
    finally:
        server.stop()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-exponent", type=int, default=7, help="largest SQLite queue: 10^N messages")
    parser.add_argument("--samples", type=int, default=30, help="timed reads per position and size")
    parser.add_argument("--cassandra", metavar="HOST:PORT", help="also measure Cassandra's hour buckets there")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args(argv)
    http_bench.TWISTD = http_bench.find_twistd()
    print(f"Queuey range reads, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}")
    with tempfile.TemporaryDirectory(prefix="queuey-range-") as directory:
        workdir = Path(directory)
        if not args.skip_sqlite:
            results = sqlite_sizes(args, workdir)
            base = statistics.median(results[0][1].values())
            print(f"\nSQLite: GET ?after=<id>&limit={PAGE}, median ms of {args.samples} reads per position")
            print(f"{'messages':>12} {'first':>8} {'middle':>8} {'last':>8} {'vs 10^3':>8}")
            for size, medians, _ in results:
                print(f"{size:>12,} {medians['first']:8.2f} {medians['middle']:8.2f} {medians['last']:8.2f} "
                      f"{statistics.median(medians.values()) / base:8.2f}")
        if args.cassandra:
            results_c = cassandra_buckets(args, workdir)
            base = statistics.median(results_c[0][1].values())
            print(f"\nCassandra: GET ?since=<time>&limit={PAGE} (ten messages per hour bucket), median ms")
            print(f"{'buckets':>8} {'oldest':>8} {'middle':>8} {'newest':>8} {'vs 1':>6}")
            for buckets, medians in results_c:
                print(f"{buckets:>8} {medians['oldest']:8.2f} {medians.get('middle', float('nan')):8.2f} "
                      f"{medians['newest']:8.2f} {statistics.median(medians.values()) / base:6.2f}")
    return 0


if __name__ == "__main__":
    http_bench.run_main(main)
