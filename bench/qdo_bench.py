"""qdo end to end: messages/s from post to job done with 1, 2 and 4 workers on 8 partitions, for batched
offset commits (``commit_interval``) against per-message commits (``commit_interval = 0``), side by side in
one run; ZooKeeper offset writes per second; and the time from a worker's death (kill -9) to its partitions
being processed again.

Runs a real ZooKeeper (``$QUEUEY_TEST_ZOOKEEPER``, or one started here with
scripts/zookeeper-start.sh on a free port and stopped at the end), a real
``twistd queuey`` on SQLite and real ``qdo`` processes, all on loopback::

    .venv/bin/python bench/qdo_bench.py [--messages 20000] [--workers 1,2,4] [--repeat 3]
        [--commit-interval 1] [--session-timeout 4]

The job records ``<message id> <time>`` per message (no fsync); "done" is when
every posted id is recorded. Throughput includes Queuey's reads and writes
(SQLite), ZooKeeper offset writes and the job's thread pool. Offset writes are
counted exactly: the sum of the offset nodes' versions after a run; the
workers' CPU time (user + system, from /proc) per message is shown too, a
figure less at the mercy of a shared machine than messages/s. Each
configuration runs ``--repeat`` times, the modes interleaved; medians are shown.
After each run every worker, idle in its long polls, gets SIGTERM; the time to
its exit is shown too. 20,000 messages per run by default: with 4,000 a batched
run lasted under a second, too short for stable figures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet import defer, task  # noqa: E402

from tests.processes import free_port  # noqa: E402
from tests.qdo_harness import Cleanups, Group, Queuey, Worker, wait_for  # noqa: E402


def bench_job(message, context) -> None:
    """Record the message id and the time it was done (buffered, no fsync)."""
    handle = context.get("journal")
    if handle is None:
        handle = context["journal"] = open(os.environ["QDO_TEST_JOURNAL"] + ".bench", "a", buffering=1)
    handle.write(f"{message.message_id} {message.partition} {time.time():.6f}\n")


class Journals:
    """What the workers' journals say so far: message id -> (partition, time done), read incrementally
    (the bench polls every 50 ms; rereading 20,000 lines each time would load the machine it measures)."""

    def __init__(self, paths: list[str]) -> None:
        self.read_to = {path + ".bench": 0 for path in paths}
        self.found: dict[str, tuple[int, float]] = {}

    def read(self) -> dict[str, tuple[int, float]]:
        for path, offset in self.read_to.items():
            try:
                with open(path, "rb") as handle:
                    handle.seek(offset)
                    data = handle.read()
            except FileNotFoundError:
                continue
            whole = data.rfind(b"\n") + 1  # a line being written is read next time
            self.read_to[path] = offset + whole
            for line in data[:whole].decode().splitlines():
                parts = line.split()
                if len(parts) == 3:
                    self.found.setdefault(parts[0], (int(parts[1]), float(parts[2])))
        return self.found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux: /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_worker(directory: str, name: str, url: str, zk: str, session_timeout: float, queue: str,
                commit_interval: float) -> Worker:
    return Worker(directory, name, url, zk, session_timeout=session_timeout, party_wait=0.5, long_poll=5,
                  ids=" ".join(f"{queue}-{p}" for p in range(1, 9)),
                  settings={"job": "bench.qdo_bench:bench_job", "concurrency": 8, "lag_interval": 0,
                            "commit_interval": commit_interval})


async def settle(group: Group, names: set[str], partitions: int) -> None:
    async def ok() -> bool:
        owners = await group.owners()
        return len(owners) == partitions and {w for w, _ in owners.values()} == names
    await wait_for(ok, 60, f"{sorted(names)} to own all partitions", interval=0.1)


async def offset_writes(group: Group) -> int:
    """Writes to the group's offset nodes so far (each bumps its node's version)."""
    return sum(stat.version for _, stat in (await group._leaves("offsets")).values())


async def stop_all(workers: list[Worker]) -> list[float]:
    """SIGTERM every worker at once; seconds from the signal to each one's exit."""
    async def one(worker: Worker) -> float:
        t0 = time.time()
        await worker.stop()
        return time.time() - t0
    return list(await defer.gatherResults([defer.ensureDeferred(one(w)) for w in workers]))


@dataclass
class Run:
    rate: float  # messages/s, from the first post to the last job done
    writes: float  # offset writes/s
    cpu: float  # CPU microseconds (user + system) the workers used per message
    stops: list[float]  # seconds from SIGTERM to exit, per worker


async def throughput(directory: str, queuey: Queuey, zk: str, workers: int, messages: int,
                     session_timeout: float, commit_interval: float) -> Run:
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    queue = f"tp{workers}-{uuid.uuid4().hex[:6]}"
    await queuey.client.create_queue(queue, partitions=8)
    group = Group(zk, root)
    await group.start()
    run_dir = os.path.join(directory, queue)
    os.makedirs(run_dir)
    started = [make_worker(run_dir, f"w{i}", queuey.url, zk + root, session_timeout, queue, commit_interval).start()
               for i in range(workers)]
    try:
        await settle(group, {w.name for w in started}, 8)
        writes = await offset_writes(group)
        pids = [w.process.pid for w in started if w.process is not None and w.process.pid is not None]
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        t0 = time.time()
        ids: list[str] = []
        for start in range(0, messages, 500):
            batch = [{"body": f"m{i}", "partition": i % 8 + 1} for i in range(start, min(messages, start + 500))]
            ids.extend(m["key"] for m in await queuey.client.post_messages(queue, batch))
        wanted = set(ids)
        journals = Journals([w.journal for w in started])
        await wait_for(lambda: wanted <= journals.read().keys(), 600, "all messages done", interval=0.05)
        cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0
        finished = max(t for key, (_, t) in journals.found.items() if key in wanted)
        written = await offset_writes(group) - writes  # includes the commits at rest, after the last job
        return Run(messages / (finished - t0), written / (time.time() - t0), cpu * 1e6 / messages,
                   await stop_all(started))  # idle: each runner waits in a long poll
    finally:
        await stop_all(started)  # after an error (stopping a stopped worker does nothing)
        await group.stop()


async def failover(directory: str, queuey: Queuey, zk: str, session_timeout: float,
                   commit_interval: float) -> tuple[float, float]:
    """kill -9 one of two workers while messages trickle in; seconds until each of its partitions
    has a message done by the survivor (max, and min)."""
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    group = Group(zk, root)
    await group.start()
    run_dir = os.path.join(directory, "failover")
    os.makedirs(run_dir)
    await queuey.client.create_queue("fo", partitions=8)
    a = make_worker(run_dir, "a", queuey.url, zk + root, session_timeout, "fo", commit_interval).start()
    b = make_worker(run_dir, "b", queuey.url, zk + root, session_timeout, "fo", commit_interval).start()
    stop = False

    async def trickle() -> None:
        while not stop:
            await queuey.client.post_messages("fo", [{"body": "t", "partition": p} for p in range(1, 9)])
            await task.deferLater(reactor, 0.05, lambda: None)
    try:
        await settle(group, {"a", "b"}, 8)
        owners = await group.owners()
        b_partitions = {int(name.rsplit("-", 1)[1]) for name, (w, _) in owners.items() if w == "b"}
        feeding = defer.ensureDeferred(trickle())
        await task.deferLater(reactor, 1.0, lambda: None)  # steady state before the kill
        b.kill()
        killed = time.time()

        journal = Journals([a.journal])

        def recovered() -> dict[int, float] | None:
            firsts: dict[int, float] = {}
            for _, (partition, at) in journal.read().items():
                if partition in b_partitions and at > killed:
                    firsts[partition] = min(at, firsts.get(partition, at))
            return firsts if set(firsts) == b_partitions else None
        firsts = await wait_for(recovered, 120, "b's partitions to be processed by a", interval=0.05)
        stop = True
        await feeding
        return max(firsts.values()) - killed, min(firsts.values()) - killed
    finally:
        stop = True
        await a.stop()
        await b.stop()
        await group.stop()


async def main(reactor_: object, args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="qdo-bench-")
    zk = os.environ.get("QUEUEY_TEST_ZOOKEEPER", "")
    started_zk = None
    if not zk:
        port = free_port()
        started_zk = os.path.join(directory, "zookeeper")
        out = subprocess.run([os.path.join(REPO, "scripts", "zookeeper-start.sh"), "--port", str(port), "--data",
                              started_zk, "--clean"], check=True, capture_output=True, text=True)
        zk = out.stdout.strip().splitlines()[-1]
    cleanups = Cleanups()
    queuey = await Queuey.start(cleanups, directory)
    modes = {"per message": 0.0, f"batched {args.commit_interval:g}s": args.commit_interval}
    results: dict[tuple[str, int], list[Run]] = {}
    try:
        for round_ in range(args.repeat):
            for n in args.workers:
                for mode, interval in modes.items():
                    run = await throughput(directory, queuey, zk, n, args.messages, args.session_timeout, interval)
                    results.setdefault((mode, n), []).append(run)
                    print(f"  round {round_ + 1}, {n} worker(s), {mode}: {run.rate:8.0f} messages/s, "
                          f"{run.writes:6.1f} offset writes/s, {run.cpu:5.0f} us CPU/message, "
                          f"stopped in {max(run.stops):.2f} s", flush=True)
        worst, best = await failover(directory, queuey, zk, args.session_timeout, args.commit_interval)
        print()
        print(f"qdo end to end, 8 partitions, {args.messages} messages per run, job = append a line "
              f"(no fsync), concurrency 8, long_poll 5 s; medians of {args.repeat} runs")
        print(f"{'workers':>8} | {'commits':>12} | {'messages/s':>10} | {'offset writes/s':>15} | "
              f"{'vs per message':>14} | {'worker CPU/message':>18}")
        print(f"{'-' * 8}-+-{'-' * 12}-+-{'-' * 10}-+-{'-' * 15}-+-{'-' * 14}-+-{'-' * 18}")
        for n in args.workers:
            base = statistics.median(r.rate for r in results[("per message", n)])
            for mode in modes:
                runs = results[(mode, n)]
                rate = statistics.median(r.rate for r in runs)
                writes = statistics.median(r.writes for r in runs)
                cpu = statistics.median(r.cpu for r in runs)
                print(f"{n:>8} | {mode:>12} | {rate:>10.0f} | {writes:>15.1f} | {rate / base:>13.2f}x | "
                      f"{cpu:>15.0f} us")
        print(f"(batched: at most 8 partitions / {args.commit_interval:g} s = {8 / args.commit_interval:.0f} "
              f"offset writes/s whatever the message rate)")
        stops = [s for runs in results.values() for r in runs for s in r.stops]
        print(f"SIGTERM to exit of an idle worker (every partition in a long poll): "
              f"median {statistics.median(stops):.2f} s, longest {max(stops):.2f} s, of {len(stops)}")
        print()
        print(f"kill -9 of one of 2 workers (session_timeout {args.session_timeout:g} s, party_wait 0.5 s): "
              f"its partitions processed again after {best:.2f} s (first) to {worst:.2f} s (last)")
    finally:
        await queuey.stop()
        await cleanups.run()
        if started_zk:
            subprocess.run([os.path.join(REPO, "scripts", "zookeeper-stop.sh"), "--data", started_zk, "--clean"],
                           check=False, capture_output=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    from twisted.internet import reactor
    task.react(lambda r: defer.ensureDeferred(main(r, parser.parse_args())))
