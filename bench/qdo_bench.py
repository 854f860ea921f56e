"""qdo end to end: messages/s from post to job done with 1, 2 and 4 workers on 8 partitions,
and the time from a worker's death (kill -9) to its partitions being processed again.

Runs a real ZooKeeper (``$QUEUEY_TEST_ZOOKEEPER``, or one started here with
scripts/zookeeper-start.sh on a free port and stopped at the end), a real
``twistd queuey`` on SQLite and real ``qdo`` processes, all on loopback::

    .venv/bin/python bench/qdo_bench.py [--messages 4000] [--workers 1,2,4] [--session-timeout 4]

The job records ``<message id> <time>`` per message (no fsync); "done" is when
every posted id is recorded. Throughput includes Queuey's reads and writes
(SQLite), ZooKeeper offset writes (one per message) and the job's thread pool.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from twisted.internet import defer, task  # noqa: E402

from tests.qdo_harness import Group, Queuey, Worker, free_port, wait_for  # noqa: E402


def bench_job(message, context) -> None:
    """Record the message id and the time it was done (buffered, no fsync)."""
    handle = context.get("journal")
    if handle is None:
        handle = context["journal"] = open(os.environ["QDO_TEST_JOURNAL"] + ".bench", "a", buffering=1)
    handle.write(f"{message.message_id} {message.partition} {time.time():.6f}\n")


def done(paths: list[str]) -> dict[str, tuple[int, float]]:
    found: dict[str, tuple[int, float]] = {}
    for path in paths:
        try:
            with open(path + ".bench") as handle:
                for line in handle:
                    parts = line.split()
                    if len(parts) == 3:
                        found.setdefault(parts[0], (int(parts[1]), float(parts[2])))
        except FileNotFoundError:
            pass
    return found


def make_worker(directory: str, name: str, url: str, zk: str, session_timeout: float, queue: str) -> Worker:
    worker = Worker(directory, name, url, zk, session_timeout=session_timeout, party_wait=0.5, long_poll=5,
                    ids=" ".join(f"{queue}-{p}" for p in range(1, 9)))
    with open(worker.conf) as handle:
        conf = handle.read()
    with open(worker.conf, "w") as handle:
        handle.write(conf.replace("tests.qdo_journal:journal_job", "bench.qdo_bench:bench_job")
                     .replace("concurrency = 4", "concurrency = 8").replace("lag_interval = 5", "lag_interval = 0"))
    return worker


async def settle(group: Group, names: set[str], partitions: int) -> None:
    async def ok() -> bool:
        owners = await group.owners()
        return len(owners) == partitions and {w for w, _ in owners.values()} == names
    await wait_for(ok, 60, f"{sorted(names)} to own all partitions", interval=0.1)


async def throughput(directory: str, queuey: Queuey, zk: str, workers: int, messages: int,
                     session_timeout: float) -> float:
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    queue = f"tp{workers}"
    await queuey.client.create_queue(queue, partitions=8)
    group = Group(zk, root)
    await group.start()
    run_dir = os.path.join(directory, f"tp{workers}")
    os.makedirs(run_dir)
    started = [make_worker(run_dir, f"w{i}", queuey.url, zk + root, session_timeout, queue).start() for i in range(workers)]
    try:
        await settle(group, {w.name for w in started}, 8)
        t0 = time.time()
        ids: list[str] = []
        for start in range(0, messages, 500):
            batch = [{"body": f"m{i}", "partition": i % 8 + 1} for i in range(start, min(messages, start + 500))]
            ids.extend(m["key"] for m in await queuey.client.post_messages(queue, batch))
        wanted = set(ids)
        journals = [w.journal for w in started]
        await wait_for(lambda: wanted <= set(done(journals)), 600, "all messages done", interval=0.05)
        finished = max(t for key, (_, t) in done(journals).items() if key in wanted)
        return messages / (finished - t0)
    finally:
        for w in started:
            await w.stop()
        await group.stop()


async def failover(directory: str, queuey: Queuey, zk: str, session_timeout: float) -> tuple[float, float]:
    """kill -9 one of two workers while messages trickle in; seconds until each of its partitions
    has a message done by the survivor (max, and min)."""
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    group = Group(zk, root)
    await group.start()
    run_dir = os.path.join(directory, "failover")
    os.makedirs(run_dir)
    await queuey.client.create_queue("fo", partitions=8)
    a = make_worker(run_dir, "a", queuey.url, zk + root, session_timeout, "fo").start()
    b = make_worker(run_dir, "b", queuey.url, zk + root, session_timeout, "fo").start()
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

        def recovered() -> dict[int, float] | None:
            firsts: dict[int, float] = {}
            for _, (partition, at) in done([a.journal]).items():
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
    queuey = Queuey(directory)
    try:
        await queuey.ready()
        rows = []
        for n in args.workers:
            rate = await throughput(directory, queuey, zk, n, args.messages, args.session_timeout)
            rows.append((n, rate))
            print(f"  {n} worker(s): {rate:8.0f} messages/s", flush=True)
        worst, best = await failover(directory, queuey, zk, args.session_timeout)
        print()
        print(f"qdo end to end, 8 partitions, {args.messages} messages per run, job = append a line "
              f"(no fsync), concurrency 8, long_poll 5 s")
        print(f"{'workers':>8} | {'messages/s':>10}")
        print(f"{'-' * 8}-+-{'-' * 10}")
        for n, rate in rows:
            print(f"{n:>8} | {rate:>10.0f}")
        print()
        print(f"kill -9 of one of 2 workers (session_timeout {args.session_timeout:g} s, party_wait 0.5 s): "
              f"its partitions processed again after {best:.2f} s (first) to {worst:.2f} s (last)")
    finally:
        await queuey.stop()
        if started_zk:
            subprocess.run([os.path.join(REPO, "scripts", "zookeeper-stop.sh"), "--data", started_zk, "--clean"],
                           check=False, capture_output=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=4000)
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--session-timeout", type=float, default=4.0)
    from twisted.internet import reactor
    task.react(lambda r: defer.ensureDeferred(main(r, parser.parse_args())))
