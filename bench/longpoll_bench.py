#!/usr/bin/env python3
"""Long-poll fan-out: how long one post takes to reach the reads held for it.

    .venv/bin/python bench/longpoll_bench.py                 # 3 rounds, a few minutes
    .venv/bin/python bench/longpoll_bench.py --workers 2     # the same on twistd queuey --workers 2
    .venv/bin/python bench/longpoll_bench.py --quick         # 1,000 held reads, one round
    .venv/bin/python bench/longpoll_bench.py --no-ceilings   # Queuey alone (and --baseline's)

Two scenarios, each on a ``twistd queuey`` of its own (SQLite, temporary):

``one queue``
    ``--reads`` (10,000) held reads (``GET ...?wait=60``) on one public queue,
    then one post to it: the latency of each held read is the time from just
    before the post is sent until its answer is seen by the client.
``many queues``
    ``--reads`` held reads spread over ``--queues`` (1,000) queues, ten per
    queue; then ``--posts`` (20) posts, one at a time, each to another queue;
    each post's latencies are those of the reads held on its queue.

Each scenario of each round also runs, right after Queuey's, on two ceilings
(``--no-ceilings`` leaves them out), both ``bench/fanout_ceiling.tac``: a bare
twisted.web server, no Queuey code, that holds every read and answers those of
a post's queue with one canned message, shaped like Queuey's answer:

``twisted.web``
    each held read answered the twisted.web way (headers, ``write``,
    ``finish``): what any Twisted server pays per woken read;
``socket``
    the response built once and ``send()`` straight to each read's socket:
    about what the machine can do.

The ceilings are one process whatever ``--workers`` says, and get the same
requests as Queuey (queue creation included).  The summary gives each side's
p99 over queuey's, the median of the rounds' ratios, so the figures read as
ratios: x0.5 is half queuey's time, above 1 that side is slower than queuey.

The client is one Python process with an epoll loop over raw sockets: an
answer is time-stamped when the loop first sees its socket readable (all the
sockets of one poll share that time), so its own cost per answer (a few
microseconds, on the other core) is part of the figures.  Percentiles are over
all reads of a round; the figures printed are their medians over rounds.

The script owns what it starts (a temporary directory, the server in its own
session, stopped by pid, and its sockets); every wait is bounded.  It raises
its own open-file limit (the server inherits it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import resource
import select
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench  # noqa: E402  (bench/ is not a package: the shared server and request helpers)
from http_bench import Server, fail, request  # noqa: E402

KEY = "lp-key"
AUTH = {"Authorization": f"Application {KEY}"}
ANSWER_TIMEOUT = 60.0
CEILING_TAC = Path(__file__).resolve().parent / "fanout_ceiling.tac"


class Side(NamedTuple):
    """What a scenario runs on: Queuey (this checkout's, or --baseline's) or a ceiling (fanout_ceiling.tac)."""

    name: str
    env: dict[str, str]
    ceiling: bool = False


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def create_queues(port: int, names: list[str]) -> None:
    for name in names:
        status, data = request(port, "POST", "/v1/lp", f"queue_name={name}&type=public".encode(),
                               {**AUTH, "Content-Type": "application/x-www-form-urlencoded"})
        if status != 201:
            fail(f"creating queue {name}: {status} {data[:200]!r}")


def worker_connections(port: int, workers: int) -> list[http.client.HTTPConnection]:
    """One keep-alive connection to each worker (the kernel picks; /__version__ says which)."""
    if workers == 1:
        return [http.client.HTTPConnection("127.0.0.1", port, timeout=30)]
    found: dict[int, http.client.HTTPConnection] = {}
    for _ in range(200 * workers):
        if len(found) == workers:
            return list(found.values())
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/__version__")
        worker = json.loads(conn.getresponse().read())["worker"]
        if worker in found:
            conn.close()
            time.sleep(0.01)
        else:
            found[worker] = conn
    fail(f"could not reach all {workers} workers")


def held_count(connections: list[http.client.HTTPConnection]) -> int:
    """Reads held by the whole server: the sum of each worker's /metrics."""
    total = 0
    for conn in connections:
        conn.request("GET", "/metrics")
        found = re.search(rb"queuey_longpolls_held (\d+)", conn.getresponse().read())
        total += int(found.group(1)) if found else 0
    return total


def hold(port: int, queues: list[str], workers: int) -> dict[int, tuple[socket.socket, str]]:
    """One held read per entry of ``queues``: {fd: (socket, queue)}, once the server holds them all."""
    held: dict[int, tuple[socket.socket, str]] = {}
    for name in queues:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(f"GET /v1/lp/{name}?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        sock.setblocking(False)
        held[sock.fileno()] = (sock, name)
    connections = worker_connections(port, workers)
    try:
        deadline = time.monotonic() + 60
        count = 0
        while time.monotonic() < deadline:  # until the server holds them all
            count = held_count(connections)
            if count >= len(queues):
                return held
            time.sleep(0.1)
    finally:
        for conn in connections:
            conn.close()
    fail(f"the server holds {count} of {len(queues)} reads after 60 s")


def post_and_time(port: int, queue: str, held: dict[int, tuple[socket.socket, str]]) -> list[float]:
    """Post to ``queue``; the latency of each held read of it, in ms."""
    waiting = {fd for fd, (_, name) in held.items() if name == queue}
    poller = select.epoll()
    for fd in waiting:
        poller.register(fd, select.EPOLLIN)
    post = socket.create_connection(("127.0.0.1", port), timeout=10)
    started = time.perf_counter()
    post.sendall(f"POST /v1/lp/{queue} HTTP/1.1\r\nHost: x\r\nAuthorization: Application {KEY}\r\n"
                 f"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nwake".encode())
    latencies: list[float] = []
    deadline = started + ANSWER_TIMEOUT
    while waiting and time.perf_counter() < deadline:
        events = poller.poll(1.0)
        seen = time.perf_counter()
        for fd, _ in events:
            sock = held[fd][0]
            data = sock.recv(65536)
            if not data.startswith(b"HTTP/1.1 200") or b'"wake"' not in data:
                fail(f"a held read of {queue} answered {data[:300]!r}")
            latencies.append((seen - started) * 1000)
            poller.unregister(fd)
            waiting.discard(fd)
    answer = post.recv(4096)
    post.close()
    poller.close()
    if not answer.startswith(b"HTTP/1.1 201"):
        fail(f"the post to {queue} answered {answer[:300]!r}")
    if waiting:
        fail(f"{len(waiting)} held reads of {queue} had no answer after {ANSWER_TIMEOUT:.0f} s")
    return latencies


def close_all(held: dict[int, tuple[socket.socket, str]]) -> None:
    for sock, _ in held.values():
        sock.close()


def one_queue(port: int, reads: int, workers: int) -> list[float]:
    create_queues(port, ["one"])
    held = hold(port, ["one"] * reads, workers)
    try:
        return post_and_time(port, "one", held)
    finally:
        close_all(held)


def many_queues(port: int, reads: int, queues: int, posts: int, workers: int) -> list[float]:
    names = [f"q{n:05d}" for n in range(queues)]
    create_queues(port, names)  # on a ceiling too: its first posts would be cold otherwise (~6 ms more)
    held = hold(port, [names[n % queues] for n in range(reads)], workers)
    latencies: list[float] = []
    try:
        for name in names[:: max(1, queues // posts)][:posts]:
            latencies.extend(post_and_time(port, name, held))
    finally:
        close_all(held)
    return latencies


def run_scenario(scenario: Any, side: Side, config: Path, workdir: Path, args: argparse.Namespace) -> list[float]:
    """One scenario on a fresh server (and database) of ``side``."""
    if side.ceiling:  # one process (it answers the queue-creating posts 201 and forgets them)
        argv, workers = ["-y", str(CEILING_TAC)], 1
    else:
        argv = ["queuey", "--config", str(config), *(["--workers", str(args.workers)] if args.workers > 1 else []),
                "--port", "tcp:{port}:interface=127.0.0.1:backlog=4096"]
        workers = args.workers
    server = Server(side.name, argv, workdir, args.server_cpu, side.env)
    server.start()
    try:
        return scenario(server.port, workers)
    finally:
        server.stop()
        for path in workdir.glob("longpoll.sqlite*"):
            path.unlink()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=10_000, help="held reads per scenario")
    parser.add_argument("--queues", type=int, default=1_000, help="queues of the many-queues scenario")
    parser.add_argument("--posts", type=int, default=20, help="posts (to distinct queues) of the many-queues scenario")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians of the percentiles are reported)")
    parser.add_argument("--workers", type=int, default=1, help="twistd queuey --workers")
    parser.add_argument("--server-cpu", type=int, help="pin the server (all its workers) to this CPU")
    parser.add_argument("--quick", action="store_true", help="1,000 reads over 100 queues, 5 posts, one round")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also run each scenario on Queuey from this checkout (e.g. an export of main), "
                             "right after this one's, in every round")
    parser.add_argument("--ceilings", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each scenario on fanout_ceiling.tac (sides twisted.web and socket), "
                             "right after queuey, in every round")
    args = parser.parse_args(argv)
    if args.quick:
        args.reads, args.queues, args.posts, args.rounds = 1000, 100, 5, 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * args.reads + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need), hard))  # the server inherits it
    http_bench.TWISTD = http_bench.find_twistd()
    print(f"Queuey long-poll fan-out, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}; load average "
          f"{' '.join(open('/proc/loadavg').read().split()[:3])}; {args.reads:,} held reads, "
          f"--workers {args.workers}, server {'on CPU %d' % args.server_cpu if args.server_cpu is not None else 'unpinned'}")
    sides = [Side("queuey", {})]
    if args.ceilings:
        sides += [Side("twisted.web", {"CEILING_MODE": "web"}, True), Side("socket", {"CEILING_MODE": "socket"}, True)]
    if args.baseline:
        sides.append(Side("baseline", {"PYTHONPATH": str(Path(args.baseline).resolve())}))
    results: dict[tuple[str, str], list[list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="queuey-longpoll-") as directory:
        workdir = Path(directory)
        config = workdir / "longpoll.ini"
        http_bench.write_config(config, workdir / "longpoll.sqlite", {"lp": KEY}, None,
                                f"max_connections = {args.reads + 2000}\n")
        for round_ in range(1, args.rounds + 1):
            for name, scenario in (
                    ("one queue", lambda port, workers: one_queue(port, args.reads, workers)),
                    (f"{args.queues:,} queues", lambda port, workers: many_queues(port, args.reads, args.queues,
                                                                                 args.posts, workers))):
                for side in sides:
                    latencies = run_scenario(scenario, side, config, workdir, args)
                    results.setdefault((name, side.name), []).append(latencies)
                    print(f"round {round_}/{args.rounds}  {name:<12}  {side.name:<11}  {len(latencies):6d} answers  "
                          f"p50 {percentile(latencies, 0.5):8.1f} ms  p99 {percentile(latencies, 0.99):8.1f} ms  "
                          f"max {max(latencies):8.1f} ms", flush=True)
    print(f"\nscenario      side         answers/round  p50 ms  p99 ms  max ms   (medians over {args.rounds} round(s); "
          f"--workers {args.workers})")
    for (name, side), rounds in results.items():
        print(f"{name:<12}  {side:<11}  {statistics.median(len(r) for r in rounds):13.0f}  "
              f"{statistics.median(percentile(r, 0.5) for r in rounds):6.1f}  "
              f"{statistics.median(percentile(r, 0.99) for r in rounds):6.1f}  "
              f"{statistics.median(max(r) for r in rounds):6.1f}")
    others = [side.name for side in sides[1:]]
    if others:
        print("\np99 of each side / p99 of queuey, the median of the rounds' ratios (below 1: that side reaches its "
              "held reads sooner; x0.5 = in half queuey's time)")
        print("scenario    " + "".join(f"  {other + '/queuey':>18}" for other in others))
        for name in dict.fromkeys(name for name, _ in results):
            cells = []
            for other in others:
                ratios = [percentile(o, 0.99) / percentile(q, 0.99)
                          for q, o in zip(results[(name, "queuey")], results[(name, other)])]
                cells.append(f"  {'x%.2f' % statistics.median(ratios):>18}")
            print(f"{name:<12}" + "".join(cells))
    return 0


if __name__ == "__main__":
    http_bench.run_main(main)
