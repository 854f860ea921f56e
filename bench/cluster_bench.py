#!/usr/bin/env python3
"""Queuey on the three-node loopback cluster: one queuey process against two, side by side.

One command runs everything (see bench/README.rst, "One and two queuey processes on three nodes")::

    .venv/bin/python bench/cluster_bench.py            # about 5 minutes
    .venv/bin/python bench/cluster_bench.py --quick    # about 2 minutes

Two ``twistd queuey`` processes serve one application from one keyspace
(replication 3, strong = QUORUM).  For each request shape of bench/lua/ (a
one-message POST, a 100-message GET) every round measures

one
    one wrk with ``--connections`` connections against one process;
two
    two wrk, half the connections each, at once, against the two processes;

alternating which goes first.  The figures are medians over rounds, the
ratio two/one the median of the per-round ratios.  Unless ``--hosts`` names a
running cluster, the script starts its own in var/cassandra-cluster-bench
(slot QUEUEY_SERVICES_SLOT) and stops and wipes it at the end.  Nothing is
pinned: three Cassandra JVMs, the queuey processes and wrk share the
machine's CPUs, and the load average is printed with every line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

import cassandra_bench as cb  # noqa: E402  (queue preparation)
import http_bench as hb  # noqa: E402  (servers, wrk, shapes)
from http_bench import APP, KEY, SHAPES, median  # noqa: E402

CLUSTER_DATA = ROOT / "var" / "cassandra-cluster-bench"
MEASURED = ("post_single", "get_messages")


def load() -> str:
    return " ".join(open("/proc/loadavg").read().split()[:3])


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class Runs:
    one: list[Run] = field(default_factory=list)
    two: list[Run] = field(default_factory=list)


def measure(servers: list[hb.Server], shape: hb.Shape, duration: int, connections: int) -> Run:
    """wrk against each server at once, the connections shared out; requests summed, latencies averaged."""
    share = max(1, connections // len(servers))
    with ThreadPoolExecutor(len(servers)) as pool:
        results = list(pool.map(lambda server: hb.run_wrk(server, shape, duration, share, None), servers))
    return Run(sum(r.rps for r in results), median([r.p50_ms for r in results]),
               max(r.p99_ms for r in results), sum(r.error_count for r in results))


def write_config(path: Path, hosts: str, keyspace: str) -> None:
    path.write_text(f"""[application_keys]
{APP} = {KEY}

[storage]
backend = cassandra
hosts = {hosts}
keyspace = {keyspace}
replication = SimpleStrategy:3

[delays]
weak = 0
strong = 0
very_strong = 0
""")


def run(args: argparse.Namespace, workdir: Path) -> None:
    keyspace = "cbench_" + uuid.uuid4().hex[:8]
    config = workdir / "cluster.ini"
    write_config(config, args.hosts, keyspace)
    servers = [hb.Server(f"queuey{n}", ["queuey", "--config", str(config), "--port",
                                        "tcp:{port}:interface=127.0.0.1"], workdir, None) for n in (1, 2)]
    try:
        for server in servers:
            server.start()
        cb.prepare(servers[0])
        shapes = [shape for shape in SHAPES if shape.name in MEASURED]
        print(f"keyspace {keyspace} (replication 3) on {args.hosts}; queuey on ports "
              f"{servers[0].port} and {servers[1].port}; {args.connections} connections in all", flush=True)
        for shape in shapes:  # warm-up, both processes
            measure(servers, shape, args.warmup, args.connections)
        runs = {shape.name: Runs() for shape in shapes}
        for round_no in range(args.rounds):
            for shape in shapes:
                for who in (("one", "two") if round_no % 2 == 0 else ("two", "one")):
                    result = measure(servers[:1] if who == "one" else servers, shape, args.duration,
                                     args.connections)
                    if result.errors:
                        raise hb.BenchError(f"{shape.name} with {who} process(es): {result.errors} failed requests"
                                            f"\n{hb.diagnose(servers[0], shape)}")
                    getattr(runs[shape.name], who).append(result)
                    print(f"round {round_no + 1}/{args.rounds}  {shape.name:<13} {who:<4} {result.rps:8.1f} req/s  "
                          f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  load {load()}", flush=True)
        print(f"\nThree nodes (replication 3, QUORUM) on {os.cpu_count()} CPUs, {args.connections} connections, "
              f"{args.rounds} round(s) of {args.duration} s; medians")
        header = f"{'shape':<30} {'1 process':>10} {'2 processes':>12} {'ratio 2/1':>10} {'p50 1':>8} {'p50 2':>8}"
        print(header)
        print("-" * len(header))
        for shape in shapes:
            r = runs[shape.name]
            ratios = [two.rps / one.rps for one, two in zip(r.one, r.two) if one.rps]
            print(f"{shape.label:<30} {median([x.rps for x in r.one]):10.1f} {median([x.rps for x in r.two]):12.1f} "
                  f"{median(ratios):10.2f} {median([x.p50_ms for x in r.one]):8.2f} "
                  f"{median([x.p50_ms for x in r.two]):8.2f}")
        print(f"load average at the end: {load()}")
    finally:
        for server in servers:
            server.stop()
            logged = hb.report_logged_errors(server)
            if logged:
                print(f"warning: {logged}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--hosts", help="contact points of a running cluster (default: start one)")
    parser.add_argument("--duration", type=int, default=10, help="seconds of load per measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections in all")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures both set-ups")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of unmeasured load per shape")
    parser.add_argument("--keep", action="store_true", help="keep the cluster and the logs")
    parser.add_argument("--quick", action="store_true", help="smoke run: --duration 3 --rounds 1 --warmup 1")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.rounds, args.warmup = 3, 1, 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("wrk") is None:
        print("error: wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    hb.TWISTD = hb.find_twistd()
    slot = os.environ.get("QUEUEY_SERVICES_SLOT", "0")
    own_host = None if args.hosts else f"127.0.{slot}.1"
    args.hosts = args.hosts or ",".join(f"127.0.{slot}.{n}" for n in (1, 2, 3))
    print(f"Queuey cluster benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.cpu_count()} CPUs, "
          f"load average {load()}", flush=True)
    return cb.on_cassandra(CLUSTER_DATA, 3, own_host, lambda workdir: run(args, workdir),
                           keep_logs=args.keep, keep_cassandra=args.keep)


if __name__ == "__main__":
    sys.exit(main())
