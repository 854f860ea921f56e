#!/usr/bin/env python3
"""Queuey on one Cassandra node over HTTP, against the bare driver doing the same queries.

One command runs everything (see bench/README.rst)::

    .venv/bin/python bench/cassandra_bench.py            # full run, a few minutes
    .venv/bin/python bench/cassandra_bench.py --quick    # smoke run, about a minute

Three shapes, the same as bench/http_bench.py (a one-message POST, a
100-message batch POST, a 100-message GET), each measured two ways in the same
run, rounds alternating which goes first:

queuey
    ``twistd queuey`` with ``backend = cassandra``, driven by wrk with the
    shared scripts of bench/lua/ and ``--connections`` connections.
raw
    a Python process with the bare cassandra-driver (libev, prepared
    statements, ``execute_async``) keeping the same number of operations in
    flight, each operation the same CQL statements Queuey sends for that
    request: the queue lookup (in its directory shard), then the insert,
    the single-partition batch, or the bucket lookup and the range select.

ceiling
    the bare twisted.web server of bench/ceiling.tac, answering the same
    requests with Queuey's own responses and doing nothing else (no
    storage), on the same CPU.

The ratio queuey/raw is what HTTP, routing, validation, JSON and the Twisted
bridge cost on top of the queries themselves.  ``bound`` is the CPU ratio a
server would reach if it cost the raw driver's work plus the ceiling's and
nothing more: raw / (raw + ceiling), CPU per request.  Unless ``--hosts`` names a
running Cassandra, the script starts its own node in var/cassandra-bench and
stops and wipes it at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import http_bench as hb  # noqa: E402  (the shared helpers: servers, wrk, shapes)
from http_bench import APP, BATCH_SIZE, BODY_BYTES, KEY, READ_LIMIT, SHAPES, BenchError, Shape  # noqa: E402

SINGLE_TEXT = hb.message_text("single message body for the queuey benchmark ", BODY_BYTES).encode()
BATCH_TEXT = hb.message_text("batched message body for the queuey benchmark ", BODY_BYTES).encode()
RAW_QUEUES = {"post_single": "raw-single", "post_batch": "raw-batch", "get_messages": "q-read"}
TTL = 259200
BENCH_DATA = ROOT / "var" / "cassandra-bench"


# -- the raw driver worker (a process of its own) ----------------------------------

def raw_worker(spec: dict[str, Any]) -> None:
    """Keep ``concurrency`` operations of one shape in flight for ``duration`` s; print the result."""
    from cassandra import ConsistencyLevel
    from cassandra.cluster import EXEC_PROFILE_DEFAULT, Cluster, ExecutionProfile
    from cassandra.io.libevreactor import LibevConnection
    from cassandra.policies import DCAwareRoundRobinPolicy, TokenAwarePolicy
    from cassandra.query import BatchStatement, BatchType, tuple_factory

    from queuey import timeuuid
    from queuey.rendering import render
    from queuey.storage.cassandra import _STATEMENTS, HIGHEST_ID, LOWEST_ID, MAX_BUCKET, MIN_BUCKET, bucket_of
    from queuey.storage.cassandra_directory import STATEMENTS as DIRECTORY_STATEMENTS
    from queuey.storage.directory import shard_of

    host, port = spec["host"], spec["port"]
    profile = ExecutionProfile(load_balancing_policy=TokenAwarePolicy(DCAwareRoundRobinPolicy()),
                               row_factory=tuple_factory, request_timeout=10)
    cluster = Cluster([(host, port)], connection_class=LibevConnection, protocol_version=5,
                      execution_profiles={EXEC_PROFILE_DEFAULT: profile}, monitor_reporting_enabled=False,
                      connect_timeout=30, control_connection_timeout=30)  # a loaded machine is slow to answer
    session = cluster.connect(spec["keyspace"])
    statements = {**_STATEMENTS, **DIRECTORY_STATEMENTS}
    prepared = {name: session.prepare(statements[name]) for name in
                ("get_queue", "put_message", "buckets", "range", "bucket_seconds")}
    width = int(session.execute(prepared["bucket_seconds"]).one()[0]) * timeuuid.TICKS_PER_SECOND
    shards = int(session.execute("SELECT value FROM settings WHERE name = 'directory_shards'").one()[0])
    ids = timeuuid.TimeUUIDGenerator(lambda: round(time.time() * timeuuid.TICKS_PER_SECOND))
    # Queuey renders each message's JSON when it stores it; the raw side sends a blob of that size.
    rendered = {"post_single": render(ids.next(), 1, SINGLE_TEXT, "text/plain"),
                "post_batch": render(ids.next(), 1, BATCH_TEXT, "text/plain")}
    level = ConsistencyLevel.QUORUM
    shape, queue = spec["shape"], RAW_QUEUES[spec["shape"]]

    def bound(name: str, *values: Any) -> Any:
        statement = prepared[name].bind(values)
        statement.consistency_level = level
        return statement

    created = session.execute(bound("get_queue", APP, shard_of(queue, shards), queue)).one()[6]

    def steps(done: Any, failed: Any) -> None:
        """One operation: the shape's statements, as Queuey sends them: a read finds its queue in
        Queuey's queue cache, so it sends the bucket lookup and the range; a post looks its queue up."""
        def run(statement: Any, then: Any) -> None:
            session.execute_async(statement).add_callbacks(then, failed)

        if shape == "get_messages":
            run(bound("buckets", APP, queue, created, 1, MIN_BUCKET, MAX_BUCKET),
                lambda buckets: run(bound("range", APP, queue, created, 1, buckets[0][0], LOWEST_ID,
                                          HIGHEST_ID, READ_LIMIT), done))
            return

        def with_queue(rows: Any) -> None:
            found = rows[0][6]
            count, body = (1, SINGLE_TEXT) if shape == "post_single" else (BATCH_SIZE, BATCH_TEXT)
            statements = []
            for _ in range(count):
                message_id = ids.next()
                statements.append(bound("put_message", APP, queue, found, 1, bucket_of(message_id, width),
                                        message_id, len(body), rendered[shape], TTL))
            if count == 1:
                run(statements[0], done)
            else:
                batch = BatchStatement(BatchType.UNLOGGED, consistency_level=level)
                for statement in statements:
                    batch.add(statement)
                run(batch, done)
        run(bound("get_queue", APP, shard_of(queue, shards), queue), with_queue)

    def measure(seconds: float) -> dict[str, Any]:
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        finished = threading.Event()
        in_flight = [0]
        deadline = time.perf_counter() + seconds

        def start() -> None:
            began = time.perf_counter()

            def done(_: Any) -> None:
                end = time.perf_counter()
                with lock:
                    latencies.append(end - began)
                next_or_stop(end)

            def failed(error: Any) -> None:
                with lock:
                    errors.append(repr(error)[:200])
                next_or_stop(time.perf_counter())
            steps(done, failed)

        def next_or_stop(now: float) -> None:
            if now < deadline:
                start()
                return
            with lock:
                in_flight[0] -= 1
                if in_flight[0] == 0:
                    finished.set()

        cpu_before, began = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        in_flight[0] = spec["concurrency"]
        for _ in range(spec["concurrency"]):
            start()
        finished.wait(seconds + 60)
        wall = time.perf_counter() - began
        cpu_after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (cpu_after.ru_utime + cpu_after.ru_stime - cpu_before.ru_utime - cpu_before.ru_stime) / wall
        latencies.sort()

        def percentile(p: float) -> float:
            return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
        return {"requests": len(latencies), "seconds": wall, "p50_ms": percentile(0.50),
                "p99_ms": percentile(0.99), "errors": len(errors), "first_error": errors[:1], "cpu": cpu}

    if spec["warmup"]:
        measure(spec["warmup"])
    print("BENCH_RESULT " + json.dumps(measure(spec["duration"])), flush=True)
    cluster.shutdown()


# -- the driver script --------------------------------------------------------------

@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu: float
    errors: int
    cpu_us: float  # CPU time per request (or raw operation), all threads of the process


@dataclass
class ShapeRuns:
    queuey: list[Run] = field(default_factory=list)
    raw: list[Run] = field(default_factory=list)
    ceiling: list[Run] = field(default_factory=list)
    baseline: list[Run] = field(default_factory=list)


def run_raw(args: argparse.Namespace, keyspace: str, shape: Shape, duration: int, warmup: int) -> Run:
    spec = {"host": args.host, "port": args.port, "keyspace": keyspace, "shape": shape.name,
            "duration": duration, "warmup": warmup, "concurrency": args.connections}
    pin = ["taskset", "-c", str(args.server_cpu)] if args.server_cpu is not None else []
    done = subprocess.run(pin + [sys.executable, __file__, "--raw-worker", json.dumps(spec)], cwd=ROOT,
                          capture_output=True, timeout=duration + warmup + 120)
    out = done.stdout.decode(errors="replace")
    line = next((line for line in out.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        hb.fail(f"raw worker failed (exit {done.returncode}):\n{out}\n{done.stderr.decode(errors='replace')[-3000:]}")
    data = json.loads(line.split(" ", 1)[1])
    if data["errors"]:
        hb.fail(f"raw worker: {data['errors']} failed operations, e.g. {data['first_error']}")
    return Run(data["requests"] / data["seconds"], data["p50_ms"], data["p99_ms"], data["cpu"], data["errors"],
               data["cpu"] * data["seconds"] / data["requests"] * 1e6 if data["requests"] else float("nan"))


def write_config(path: Path, host: str, port: int, keyspace: str) -> None:
    path.write_text(f"""[application_keys]
{APP} = {KEY}

[storage]
backend = cassandra
hosts = {host}:{port}
keyspace = {keyspace}
replication = SimpleStrategy:1

[delays]
weak = 0
strong = 0
very_strong = 0
""")


def prepare(server: hb.Server, canned: Path) -> None:
    """The queues of both sides; the read queue pre-filled with 200 messages; one real response
    per shape kept in ``canned`` for the ceiling."""
    for name in ("q-single", "q-batch", "q-read", "raw-single", "raw-batch"):
        hb.expect(server.port, 201, "POST", f"/v1/{APP}", f"queue_name={name}&partitions=1".encode(),
                  hb.auth(**{"Content-Type": "application/x-www-form-urlencoded"}))
    for _ in range(2):
        hb.expect(server.port, 201, "POST", f"/v1/{APP}/q-read", hb.BATCH_BODY,
                  hb.auth(**{"Content-Type": "application/json"}))
    canned.mkdir()
    for shape in hb.ALL_SHAPES:
        data = hb.expect(server.port, shape.status, shape.method, shape.path, shape.body, shape.headers)
        if len(json.loads(data).get("messages", ())) != shape.messages_per_request:
            hb.fail(f"{shape.method} {shape.path}: expected {shape.messages_per_request} messages")
        (canned / f"{shape.name}.json").write_bytes(data)


def measure(servers: dict[str, hb.Server], keyspace: str, args: argparse.Namespace) -> dict[str, ShapeRuns]:
    """Every shape on queuey, the raw worker and the ceiling, round after round, the order turning."""
    runs = {shape.name: ShapeRuns() for shape in SHAPES}
    if args.warmup:
        print(f"warm-up: {args.warmup} s per shape and server", flush=True)
        for shape in SHAPES:
            for name, server in servers.items():
                warm = hb.run_wrk(server, shape, args.warmup, args.connections, args.client_cpu)
                if warm.error_count:
                    hb.fail(f"{name} {shape.name} warm-up: {warm.errors}\n{hb.diagnose(server, shape)}")
    sides = ["queuey", "raw", "ceiling", *(["baseline"] if "baseline" in servers else [])]
    for round_no in range(args.rounds):
        order = sides[round_no % len(sides):] + sides[:round_no % len(sides)]
        for shape in SHAPES:
            for who in order:
                if who in servers:
                    result = hb.run_wrk(servers[who], shape, args.duration, args.connections, args.client_cpu)
                    if result.error_count:
                        hb.fail(f"{who} {shape.name}: {result.errors}\n{hb.diagnose(servers[who], shape)}")
                    run = Run(result.rps, result.p50_ms, result.p99_ms, result.server_cpu, 0,
                              result.cpu_us_per_request)
                else:
                    run = run_raw(args, keyspace, shape, args.duration, args.warmup if round_no == 0 else 0)
                getattr(runs[shape.name], who).append(run)
                print(f"round {round_no + 1}/{args.rounds}  {shape.name:<13} {who:<7} {run.rps:9.1f} req/s  "
                      f"p50 {run.p50_ms:8.2f} ms  p99 {run.p99_ms:8.2f} ms  cpu {run.cpu:4.0%}  "
                      f"cpu/req {run.cpu_us:6.0f} us", flush=True)
    return runs


def report(runs: dict[str, ShapeRuns], args: argparse.Namespace) -> None:
    print()
    print(f"Queuey on one Cassandra node vs the bare driver, {args.connections} in flight, "
          f"{args.rounds} round(s) of {args.duration} s; medians over rounds")
    header = (f"{'shape':<28} {'queuey rps':>10} {'raw rps':>9} {'ratio q/r':>9} {'cpu q/r':>8} {'bound':>6} "
              f"{'q us/req':>9} {'r us/op':>8} {'c us/req':>8} {'q p50 ms':>9} {'q p99 ms':>9} "
              f"{'raw p50':>8} {'raw p99':>8} {'q msgs/s':>9} {'q cpu':>6} {'raw cpu':>7}")
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        r = runs[shape.name]
        ratios = [q.rps / w.rps for q, w in zip(r.queuey, r.raw) if w.rps]
        q_rps = hb.median([x.rps for x in r.queuey])
        cpu_ratios = [w.cpu_us / q.cpu_us for q, w in zip(r.queuey, r.raw) if q.cpu_us]
        bounds = [w.cpu_us / (w.cpu_us + c.cpu_us) for w, c in zip(r.raw, r.ceiling) if w.cpu_us + c.cpu_us]
        print(f"{shape.label:<28} {q_rps:10.1f} {hb.median([x.rps for x in r.raw]):9.1f} "
              f"{hb.median(ratios):9.2f} {hb.median(cpu_ratios):8.2f} {hb.median(bounds):6.2f} "
              f"{hb.median([x.cpu_us for x in r.queuey]):9.0f} {hb.median([x.cpu_us for x in r.raw]):8.0f} "
              f"{hb.median([x.cpu_us for x in r.ceiling]):8.0f} {hb.median([x.p50_ms for x in r.queuey]):9.2f} "
              f"{hb.median([x.p99_ms for x in r.queuey]):9.2f} {hb.median([x.p50_ms for x in r.raw]):8.2f} "
              f"{hb.median([x.p99_ms for x in r.raw]):8.2f} {q_rps * shape.messages_per_request:9.0f} "
              f"{hb.median([x.cpu for x in r.queuey]):6.0%} {hb.median([x.cpu for x in r.raw]):7.0%}")
    if args.baseline:
        print(f"\nagainst the baseline ({args.baseline}), same run: medians of the per-round ratios")
        for shape in SHAPES:
            r = runs[shape.name]
            print(f"{shape.label:<28} baseline {hb.median([x.rps for x in r.baseline]):9.1f} req/s, ratio q/r "
                  f"{hb.median([b.rps / w.rps for b, w in zip(r.baseline, r.raw) if w.rps]):.2f}; queuey/baseline "
                  f"req/s x{hb.median([q.rps / b.rps for q, b in zip(r.queuey, r.baseline) if b.rps]):.2f}, CPU per "
                  f"request x{hb.median([b.cpu_us / q.cpu_us for q, b in zip(r.queuey, r.baseline) if q.cpu_us]):.2f} "
                  "less")
    print("ratio q/r: median of the per-round ratios queuey rps / raw rps (1.0 = HTTP and Queuey cost nothing);")
    print("cpu q/r: median of the per-round ratios raw CPU per operation / queuey CPU per request (the Cassandra "
          "node's CPU not counted on either side);")
    print("bound: median of the per-round raw CPU per operation / (that + the ceiling's CPU per request): the "
          "cpu q/r of a server that added twisted.web's own HTTP work to the driver's and nothing else.")
    print("Per request both sides send the same CQL: POST = queue lookup + insert (or one single-partition "
          "batch of 100); GET = bucket lookup + one range select (the queue comes from Queuey's queue cache).")


def queuey_server(args: argparse.Namespace, workdir: Path, name: str, keyspace: str,
                  env: dict[str, str] | None = None) -> hb.Server:
    """``twistd queuey`` on ``keyspace`` (configured in ``workdir/<name>.ini``), not started yet."""
    config = workdir / f"{name}.ini"
    write_config(config, args.host, args.port, keyspace)
    return hb.Server(name, ["queuey", "--config", str(config), "--port", "tcp:{port}:interface=127.0.0.1"],
                     workdir, args.server_cpu, env)


def cassandra_up(host: str, port: int) -> bool:
    import socket
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hosts", help="host:port of a running Cassandra to use (default: start one)")
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections = raw operations in flight")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures every shape on both sides")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of unmeasured load per shape and side")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU for queuey and the raw worker")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU for wrk")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    parser.add_argument("--quick", action="store_true", help="smoke run: --duration 2 --rounds 1 --warmup 1")
    parser.add_argument("--shape", action="append", choices=[shape.name for shape in SHAPES],
                        help="measure only this shape (repeat for more; default: all three)")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also measure Queuey from this other checkout (e.g. an export of main), side by side, "
                             "in a keyspace of its own")
    args = parser.parse_args(argv)
    hb.only_shapes(args.shape)
    if args.quick:
        args.duration, args.rounds, args.warmup = 2, 1, 1
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        args.server_cpu = args.client_cpu = None
    # The node the scripts start: 127.0.K.1 for QUEUEY_SERVICES_SLOT=K (scripts/service-lib.sh).
    args.host, args.port = f"127.0.{os.environ.get('QUEUEY_SERVICES_SLOT', '0') or '0'}.1", 9042
    if args.hosts:
        args.host, _, port = args.hosts.partition(":")
        args.port = int(port or 9042)
    return args


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--raw-worker":
        raw_worker(json.loads(sys.argv[2]))
        return 0
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    hb.TWISTD = hb.find_twistd()
    print(f"Queuey Cassandra benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs, "
          f"load average {' '.join(open('/proc/loadavg').read().split()[:3])}")

    def body(workdir: Path) -> None:
        keyspace = "bench_" + uuid.uuid4().hex[:8]
        server = queuey_server(args, workdir, "queuey", keyspace)
        canned = workdir / "canned"
        ceiling = hb.Server("ceiling", ["-y", str(HERE / "ceiling.tac")], workdir, args.server_cpu,
                            {"BENCH_CANNED_DIR": str(canned)})
        servers = {"queuey": server, "ceiling": ceiling}
        if args.baseline:
            servers["baseline"] = queuey_server(args, workdir, "baseline", keyspace + "_base",
                                                hb.baseline_env(args.baseline))
        try:
            server.start()
            prepare(server, canned)
            ceiling.start()
            if args.baseline:
                servers["baseline"].start()
                prepare(servers["baseline"], workdir / "canned-baseline")
            print(f"{', '.join(servers)} and the raw worker on CPU {args.server_cpu}, wrk on CPU "
                  f"{args.client_cpu}, Cassandra unpinned; keyspace {keyspace}", flush=True)
            report(measure(servers, keyspace, args), args)
        finally:
            for each in servers.values():
                each.stop()
        logged = hb.report_logged_errors(server)
        if logged:
            print(f"warning: {logged}")
    return on_cassandra(BENCH_DATA, 1, None if args.hosts else args.host, body, keep_logs=args.keep)


def on_cassandra(data: Path, nodes: int, own_host: str | None, body: Callable[[Path], None],
                 keep_logs: bool = False, keep_cassandra: bool = False) -> int:
    """Run ``body(workdir)`` against Cassandra: the exit status of the benchmark.

    With ``own_host``, first start ``nodes`` nodes of our own in ``data``
    (refusing if something already listens on ``own_host``:9042), and stop
    and wipe them at the end unless ``keep_cassandra``.  The temporary
    ``workdir`` (logs) is removed unless the run failed or ``keep_logs``.
    """
    workdir = Path(tempfile.mkdtemp(prefix="queuey-bench-"))
    problems: list[str] = []
    started = time.monotonic()
    try:
        if own_host:
            if cassandra_up(own_host, 9042):
                hb.fail(f"something already listens on {own_host}:9042; stop it, or pass --hosts to use it")
            print(f"starting {nodes} Cassandra node(s) in {data} ...", flush=True)
            subprocess.run([str(ROOT / "scripts" / "cassandra-start.sh"), "--data", str(data), "--clean",
                            "--nodes", str(nodes)], check=True, timeout=1800)
        body(workdir)
    except (BenchError, subprocess.SubprocessError) as e:
        problems.append(str(e))
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        if own_host and not keep_cassandra:
            subprocess.run([str(ROOT / "scripts" / "cassandra-stop.sh"), "--data", str(data), "--clean"],
                           timeout=300)
        if keep_logs or problems:
            print(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"total time {time.monotonic() - started:.0f} s")
    if problems:
        print("\nFAILED:\n- " + "\n- ".join(problems), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
