"""Event-stream fan-out: N streams open on one queue, one post; how long until each stream has it.

Side by side in one run, the baseline: N long-polls (``wait=60``) held on the
same queue, woken by the same kind of post, answered through the same hub.
A real ``twistd queuey`` on SQLite, clients in this process on loopback::

    .venv/bin/python bench/stream_bench.py [--streams 1000] [--posts 20] [--repeat 3]

A post is one single-message POST; its latency to a client is from just
before the POST is sent to the moment the client has parsed the event (or
the long-poll's answer).  Each repeat measures both modes (streams first in
odd repeats, long-polls first in even ones) and prints p50 and p99 over all
(client, post) pairs; the last lines give the medians over the repeats.  The
clients share this process's one reactor thread, so the last client of a
fan-out also waits for the parsing of all the others: that is part of what
is measured, for both modes alike.  Prints the load (``/proc/loadavg``) at
the start and the end: the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from typing import Any

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import treq  # noqa: E402
from twisted.internet import defer, endpoints, protocol, task  # noqa: E402

from tests.qdo_harness import APP, KEY, Cleanups, Queuey  # noqa: E402
from tests.sse import SSEClient, open_stream  # noqa: E402

WAVE = 100  # connections opened at once (the server's listen backlog is 50)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def load() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


class HeldRead(protocol.Protocol):
    """One raw long-poll; ``answered`` fires with the time its whole answer came."""

    def __init__(self, request: bytes) -> None:
        self._request = request
        self._data = b""
        self.answered: defer.Deferred[float] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self._request)

    def dataReceived(self, data: bytes) -> None:
        self._data += data
        head, separator, body = self._data.partition(b"\r\n\r\n")
        if separator and b"content-length:" in head.lower():
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length and not self.answered.called:
                self.answered.callback(time.perf_counter())
                self.transport.loseConnection()


class Bench:
    def __init__(self, reactor: Any, queuey: Queuey, port: int, clients: int) -> None:
        self.reactor = reactor
        self.queuey = queuey
        self.port = port
        self.clients = clients
        self.posted = 0

    async def post(self) -> tuple[float, str]:
        self.posted += 1
        started = time.perf_counter()
        answer = await self.queuey.client.post_messages("fan", [f"post {self.posted}"])
        return started, answer[0]["key"]

    async def metric(self, name: str) -> float:
        response = await treq.get(f"http://127.0.0.1:{self.port}/metrics", persistent=False)
        for line in (await response.content()).decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return -1.0

    async def until_metric(self, name: str, value: float) -> None:
        deadline = time.monotonic() + 120
        while await self.metric(name) != value:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} never reached {value}")
            await task.deferLater(self.reactor, 0.05, lambda: None)

    async def streams(self, posts: int) -> list[float]:
        clients: list[SSEClient] = []
        for start in range(0, self.clients, WAVE):
            clients += await defer.gatherResults([
                open_stream(self.port, f"/v1/{APP}/fan?after={self.last}",
                            {"Authorization": f"Application {KEY}"})
                for _ in range(min(WAVE, self.clients - start))])
        await self.until_metric("queuey_streams_open", self.clients)
        latencies: list[float] = []
        try:
            for index in range(posts):
                started, self.last = await self.post()
                await defer.gatherResults([c.wait_events(index + 1) for c in clients])
                latencies += [c.arrivals[index] - started for c in clients]
        finally:
            for client in clients:
                client.transport.abortConnection()
        await self.until_metric("queuey_streams_open", 0)
        return latencies

    async def longpolls(self, posts: int) -> list[float]:
        latencies: list[float] = []
        for _ in range(posts):
            request = (f"GET /v1/{APP}/fan?after={self.last}&wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       f"Authorization: Application {KEY}\r\nConnection: close\r\n\r\n").encode()
            held: list[HeldRead] = []
            for start in range(0, self.clients, WAVE):
                wave = [HeldRead(request) for _ in range(min(WAVE, self.clients - start))]
                await defer.gatherResults([endpoints.connectProtocol(
                    endpoints.TCP4ClientEndpoint(self.reactor, "127.0.0.1", self.port), read) for read in wave])
                held += wave
            await self.until_metric("queuey_longpolls_held", self.clients)
            started, self.last = await self.post()
            answered = await defer.gatherResults([read.answered for read in held])
            latencies += [at - started for at in answered]
        return latencies


async def main(reactor: Any, args: argparse.Namespace) -> None:
    print(f"load at start: {load()}  (2 cores; other work on this machine shows here)")
    cleanups = Cleanups()
    directory = tempfile.mkdtemp(prefix="queuey-stream-bench-")
    try:
        queuey = await Queuey.start(cleanups, directory)
        await queuey.client.create_queue("fan", partitions=1)
        port = int(queuey.process.base.rsplit(":", 1)[1])
        bench = Bench(reactor, queuey, port, args.streams)
        _, bench.last = await bench.post()
        results: dict[str, list[tuple[float, float]]] = {"streams": [], "long-polls": []}
        for repeat in range(1, args.repeat + 1):
            order = ["streams", "long-polls"] if repeat % 2 else ["long-polls", "streams"]
            for mode in order:
                run = bench.streams if mode == "streams" else bench.longpolls
                latencies = await run(args.posts)
                p50, p99 = percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000
                results[mode].append((p50, p99))
                print(f"repeat {repeat}/{args.repeat}  {mode:<10}  {args.streams} clients x {args.posts} posts  "
                      f"p50 {p50:8.1f} ms  p99 {p99:8.1f} ms  max {max(latencies) * 1000:8.1f} ms")
        print()
        for mode, rows in results.items():
            print(f"median over {args.repeat} repeats  {mode:<10}  p50 {statistics.median(r[0] for r in rows):8.1f} ms"
                  f"  p99 {statistics.median(r[1] for r in rows):8.1f} ms")
        streams, polls = results["streams"], results["long-polls"]
        print(f"streams / long-polls: p50 x{statistics.median(s[0] / p[0] for s, p in zip(streams, polls)):.2f}"
              f"  p99 x{statistics.median(s[1] / p[1] for s, p in zip(streams, polls)):.2f}")
        print(f"load at end: {load()}")
        await queuey.stop()
    finally:
        await cleanups.run()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="clients of each mode (default 1000)")
    parser.add_argument("--posts", type=int, default=20, help="posts per mode and repeat (default 20)")
    parser.add_argument("--repeat", type=int, default=3, help="repeats, modes interleaved (default 3)")
    task.react(lambda r: defer.ensureDeferred(main(r, parser.parse_args())))
