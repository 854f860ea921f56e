#!/usr/bin/env python3
"""Memory of a ``twistd queuey`` (SQLite, default [limits]) while clients abuse it.

    .venv/bin/python bench/abuse_bench.py            # about a minute
    .venv/bin/python bench/abuse_bench.py --quick    # fewer long-polls and slow heads

Each scenario samples the server's resident memory (VmRSS) every 20 ms and
reports its median before, and its peak during, the abuse:

1. ``keyless``: 20 clients without a key each declare and push a 16 MiB form
   body (``a&`` repeated), as fast as the server takes it;
2. ``longpolls``: 10,000 long-polls (``wait=60``) held on a public queue,
   then woken by one post;
3. ``slow-heads``: 500 connections sending their request head one byte a
   second, until the head deadline answers them;
4. ``non-readers``: two clients ask for a full page (the response byte budget)
   of 256 KiB messages and do not read it (after two clients that did read
   one, so that SQLite's page caches, a bounded cost per reader thread, are
   already full).

Each scenario runs on a server of its own, so none inherits another's memory.

This is a benchmark, not a test: it prints figures (docs/api.rst states the
bounds they support).  It owns what it starts: a temporary directory, one
server (its own session, stopped by pid), and its client sockets; every wait
is bounded.  Needs an open-file limit of at least 2 x 10,000 + 1,000.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Awaitable, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
import http_bench  # noqa: E402  (bench/ is not a package: the shared server and request helpers)
from http_bench import BenchError, Server, request  # noqa: E402

KEY = "abuse-key"
CONFIG = """
[application_keys]
abuse = {key}

[storage]
backend = sqlite
path = {directory}/abuse.sqlite

[limits]
max_connections = {connections}
"""
MIB = 1024 * 1024
SAMPLE = 0.02


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        found = re.search(r"VmRSS:\s+(\d+) kB", status.read())
    return int(found.group(1)) * 1024 if found else 0


async def measured(pid: int, abuse: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """(median RSS over the second before, peak RSS while ``abuse`` runs)."""
    before = []
    for _ in range(50):
        before.append(rss(pid))
        await asyncio.sleep(SAMPLE)
    peak = 0
    done = asyncio.ensure_future(abuse())
    while not done.done():
        peak = max(peak, rss(pid))
        await asyncio.sleep(SAMPLE)
    done.result()
    return int(statistics.median(before)), max(peak, rss(pid))


async def keyless_pushers(port: int, clients: int = 20, size: int = 16 * MIB) -> None:
    """Each client declares ``size`` bytes of form and sends all but the last MiB, fast."""
    async def push() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/abuse HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                     b"Content-Length: %d\r\n\r\n" % size)
        answer = asyncio.ensure_future(reader.read(4096))
        chunk = b"a&" * (MIB // 2)
        try:
            for _ in range(size // MIB - 1):  # all but the last byte's MiB, as fast as taken
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 30)
        except (ConnectionError, asyncio.TimeoutError):
            pass  # the server answered 401 and closed
        assert (await asyncio.wait_for(answer, 30)).startswith(b"HTTP/1.1 401")
        writer.close()
    await asyncio.gather(*(push() for _ in range(clients)))


async def held_longpolls(port: int, count: int) -> None:
    connections = []
    for start in range(0, count, 500):
        opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                        for _ in range(min(500, count - start))))
        for reader, writer in opened:
            writer.write(b"GET /v1/abuse/pub?wait=60 HTTP/1.1\r\nHost: x\r\n\r\n")
        connections.extend(opened)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the server holds them all
        _, text = await asyncio.to_thread(request, port, "GET", "/metrics")
        held = re.search(rb"queuey_longpolls_held (\d+)", text)
        if held and int(held.group(1)) >= count:
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(1)  # a second of holding them all
    status, _ = await asyncio.to_thread(request, port, "POST", "/v1/abuse/pub", b"wake",
                                        {"Authorization": f"Application {KEY}", "Content-Type": "text/plain"})
    assert status == 201
    answers = await asyncio.gather(*(asyncio.wait_for(reader.read(200), 60) for reader, _ in connections))
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), {a[:20] for a in answers}
    for _, writer in connections:
        writer.close()


async def slow_heads(port: int, count: int) -> None:
    connections = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in range(count)))
    for _, writer in connections:
        writer.write(b"GET /__lbheartbeat__ HTTP/1.1\r\nX-Slow: ")

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        for _ in range(60):
            try:
                return await asyncio.wait_for(reader.read(200), 1.0)
            except asyncio.TimeoutError:
                writer.write(b"x")
        return b""
    answers = await asyncio.gather(*(trickle(r, w) for r, w in connections))
    assert all(a.startswith(b"HTTP/1.1 408") for a in answers), {a[:20] for a in answers}
    for _, writer in connections:
        writer.close()


async def non_readers(port: int, clients: int = 2) -> None:
    connections = []
    for _ in range(clients):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=64 * 1024)
        writer.transport.set_write_buffer_limits(0)
        writer.write(b"GET /v1/abuse/big?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n")
        writer.transport.pause_reading()
        connections.append((reader, writer))
    await asyncio.sleep(3)  # the server writes what the sockets take, then waits
    for _, writer in connections:
        writer.close()


def prepare(port: int, big_messages: int) -> None:
    """The public queues ``pub`` (for long-polls) and ``big`` (``big_messages`` of 256 KiB)."""
    auth = {"Authorization": f"Application {KEY}"}
    for queue in ("pub", "big"):
        status, _ = request(port, "POST", "/v1/abuse", f"queue_name={queue}&type=public".encode(),
                            {**auth, "Content-Type": "application/x-www-form-urlencoded"})
        assert status == 201
    body = b"m" * (256 * 1024 - 100)
    for _ in range(big_messages):
        status, _ = request(port, "POST", "/v1/abuse/big", body, {**auth, "Content-Type": "text/plain"})
        assert status == 201
    if big_messages:  # two reading clients first: SQLite's page caches (bounded, per reader) fill here
        with ThreadPoolExecutor(2) as pool:
            assert all(status == 200 for status, _ in pool.map(
                lambda _: request(port, "GET", "/v1/abuse/big?limit=1000"), range(2)))


def scenarios(longpolls: int, heads: int) -> list[tuple[str, Callable[[int], Awaitable[Any]], int]]:
    """(name, abuse of a server's port, 256 KiB messages it needs in the queue ``big``)."""
    return [("keyless: 20 x 16 MiB without a key", keyless_pushers, 0),
            (f"longpolls: {longpolls:,} held", lambda port: held_longpolls(port, longpolls), 0),
            (f"slow-heads: {heads} at 1 byte/s", lambda port: slow_heads(port, heads), 0),
            ("non-readers: 2 x an 8 MiB page", non_readers, 40)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 long-polls and 100 slow heads")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (medians are reported)")
    parser.add_argument("--only", default="", help="run only the scenarios whose name starts with this")
    args = parser.parse_args(argv)
    longpolls, heads = (1000, 100) if args.quick else (10000, 500)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = longpolls + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, need * 2), hard))  # the server inherits it
    http_bench.TWISTD = http_bench.find_twistd()
    results: dict[str, list[tuple[int, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="queuey-abuse-") as directory:
        workdir = Path(directory)
        config = workdir / "abuse.ini"
        config.write_text(CONFIG.format(key=KEY, directory=directory, connections=longpolls + 2000))
        for round_ in range(1, args.rounds + 1):
            print(f"round {round_}/{args.rounds}", flush=True)
            for name, abuse, big_messages in scenarios(longpolls, heads):
                if not name.startswith(args.only):
                    continue
                server = Server("queuey", ["queuey", "--config", str(config), "--port",
                                           "tcp:{port}:interface=127.0.0.1:backlog=4096"], workdir, cpu=None)
                server.start()  # a new server for each scenario: none inherits another's memory
                try:
                    prepare(server.port, big_messages)
                    before, peak = asyncio.run(measured(server.pid, lambda: abuse(server.port)))
                finally:
                    server.stop()
                    (workdir / "abuse.sqlite").unlink(missing_ok=True)
                results.setdefault(name, []).append((before, peak))
                print(f"  {name:40s} before {before / MIB:7.1f} MiB  peak {peak / MIB:7.1f} MiB  "
                      f"(+{(peak - before) / MIB:.1f})", flush=True)
    print("\nscenario                                  RSS before  peak during  growth   (MiB, medians over rounds)")
    for name, samples in results.items():
        before = statistics.median(b for b, _ in samples) / MIB
        peak = statistics.median(p for _, p in samples) / MIB
        print(f"{name:40s}  {before:10.1f}  {peak:11.1f}  {peak - before:6.1f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
