"""qdo end to end, with 1, 2 and 4 workers on 8 partitions: messages/s while messages are posted (batched
offset commits against per-message commits), the time to drain a backlog posted before the workers start,
ZooKeeper offset writes per second, and the time from a worker's death (kill -9) to its partitions being
processed again.

Runs a real ZooKeeper (``$QUEUEY_TEST_ZOOKEEPER``, or one started here with
scripts/zookeeper-start.sh on a free port and stopped at the end), a real
``twistd queuey`` on SQLite and real ``qdo`` processes, all on loopback::

    .venv/bin/python bench/qdo_bench.py [--messages 20000] [--backlog 2500] [--cpu-backlog 250]
        [--job-cpu-ms 1] [--workers 1,2,4] [--repeat 3] [--parts post,drain,cpu,failover]
        [--commit-interval 1] [--session-timeout 4] [--compare KEY=VALUE] [--profile DIR] [--keep]

The job records ``<message id> <partition> <time>`` per message (no fsync).
Posting (``post``): messages are posted while the workers run, from the first
post to the last job done; it includes Queuey's reads and writes (SQLite),
ZooKeeper offset writes and the job threads, and with batched commits it
mostly measures how fast messages are posted. Draining (``drain``): 8 x
``--backlog`` messages are posted first (not timed), then the workers start
while the server is stopped (SIGSTOP) until every worker owns its share;
timed from the first job done to the last, from the journals, batched commits.
``cpu`` is the same with a job that first burns ``--job-cpu-ms`` of Python
CPU, the case where more worker processes could use more cores. Offset writes
are counted exactly (the sum of the offset nodes' versions); CPU time (user +
system, from /proc) per message of the workers (and of the server, for
drains) is a figure less at the mercy of a shared machine than messages/s;
for drains, the time the processes' threads spent runnable but waiting for a
CPU (/proc schedstat) says whether the machine had a core for them. After
each posting run every worker, idle in its long polls, gets SIGTERM; the time
to its exit is shown. Each configuration runs ``--repeat`` times,
interleaved; medians are shown, and ratios are medians of each round's ratio.
``--compare batch_size=500`` adds, after each drain, the same drain with that
worker setting; ``--worker-setting KEY=VALUE`` sets one for every run.
``--profile DIR`` records each drain's workers and server with py-spy (from
PyPI: ``pip install py-spy``). ``--keep`` keeps the temporary directory
(journals, logs, the SQLite store); it is removed otherwise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
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
from tests.qdo_harness import Cleanups, Group, LoggedProcess, Queuey, Worker, spawn, wait_for  # noqa: E402


def bench_job(message, context) -> None:
    """Record the message id and the time it was done (buffered, no fsync), after burning
    ``$QDO_BENCH_JOB_CPU`` seconds of this thread's CPU in Python (holding the GIL, as Python work does)."""
    handle = context.get("journal")
    if handle is None:
        handle = context["journal"] = open(os.environ["QDO_TEST_JOURNAL"] + ".bench", "a", buffering=1)
        context["cpu"] = float(os.environ.get("QDO_BENCH_JOB_CPU", "0"))
    if context["cpu"]:
        until = time.thread_time() + context["cpu"]
        while time.thread_time() < until:
            pass
    handle.write(f"{message.message_id} {message.partition} {time.time():.6f}\n")


class Journals:
    """What the workers' journals say so far: message id -> (partition, time done), read incrementally
    (the bench polls every 50 ms; rereading 20,000 lines each time would load the machine it measures)."""

    def __init__(self, paths: list[str]) -> None:
        self.read_to = {path + ".bench": 0 for path in paths}
        self.found: dict[str, tuple[int, float]] = {}
        self.workers_of: dict[int, set[str]] = {}  # partition -> the journals it appears in

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
                    self.workers_of.setdefault(int(parts[1]), set()).add(path)
        return self.found


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux: /proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scheduled(pid: int) -> tuple[float, float]:
    """Seconds a process's threads (those alive now) have run on a CPU, and have waited, runnable, for one
    (Linux: /proc/PID/task/*/schedstat)."""
    ran = waited = 0
    for task_ in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task_}/schedstat") as handle:
                fields = handle.read().split()
        except FileNotFoundError:
            continue  # a thread that just ended
        ran, waited = ran + int(fields[0]), waited + int(fields[1])
    return ran / 1e9, waited / 1e9


@dataclass
class Bench:
    """What every measurement shares: its directory, the server, ZooKeeper, and the workers' settings."""

    directory: str
    queuey: Queuey
    zk: str
    session_timeout: float
    settings: dict[str, str]  # more [qdo-worker] keys (--worker-setting)

    def worker(self, run_dir: str, name: str, root: str, queue: str, commit_interval: float,
               settings: dict[str, str] | None = None) -> Worker:
        return Worker(run_dir, name, self.queuey.url, self.zk + root, session_timeout=self.session_timeout,
                      party_wait=0.5, long_poll=5,
                      ids=" ".join(f"{queue}-{p}" for p in range(1, 9)),
                      settings={"job": "bench.qdo_bench:bench_job", "concurrency": 8, "lag_interval": 0,
                                "commit_interval": commit_interval, **self.settings, **(settings or {})})


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


async def post(queuey: Queuey, queue: str, messages: int) -> set[str]:
    """Post ``messages`` to the queue's 8 partitions in turn, 500 a request; their ids."""
    ids: list[str] = []
    for start in range(0, messages, 500):
        batch = [{"body": f"m{i}", "partition": i % 8 + 1} for i in range(start, min(messages, start + 500))]
        ids.extend(m["key"] for m in await queuey.client.post_messages(queue, batch))
    return set(ids)


@dataclass
class Run:
    rate: float  # messages/s, from the first post to the last job done
    writes: float  # offset writes/s
    cpu: float  # CPU microseconds (user + system) the workers used per message
    stops: list[float]  # seconds from SIGTERM to exit, per worker


async def throughput(bench: Bench, workers: int, messages: int, commit_interval: float) -> Run:
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    queue = f"tp{workers}-{uuid.uuid4().hex[:6]}"
    queuey = bench.queuey
    await queuey.client.create_queue(queue, partitions=8)
    group = Group(bench.zk, root)
    await group.start()
    run_dir = os.path.join(bench.directory, queue)
    os.makedirs(run_dir)
    started = [bench.worker(run_dir, f"w{i}", root, queue, commit_interval).start() for i in range(workers)]
    try:
        await settle(group, {w.name for w in started}, 8)
        writes = await offset_writes(group)
        pids = [w.process.pid for w in started if w.process is not None and w.process.pid is not None]
        cpu0 = sum(cpu_seconds(pid) for pid in pids)
        t0 = time.time()
        wanted = await post(queuey, queue, messages)
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


class Profiles:
    """``--profile DIR``: py-spy (``record -f raw --gil --threads``: the thread holding the GIL, so where each
    process's Python time goes) on the workers and the server of each drain, from its first job to its last,
    one file per process. py-spy takes CPU too: not for timing."""

    def __init__(self, directory: str | None, label: str,
                 options: tuple[str, ...] = ("--gil", "--threads", "--nonblocking")) -> None:
        self.directory = directory
        self.label = label
        self.options = options
        self.recorders: list[LoggedProcess] = []

    def start(self, pids: dict[str, int]) -> None:
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
        for name, pid in pids.items():
            out = os.path.join(self.directory, f"{self.label}-{name}.txt")
            self.recorders.append(spawn([py_spy, "record", "-p", str(pid), "-f", "raw", *self.options, "-o", out],
                                        out + ".log"))

    async def stop(self) -> None:
        recorders, self.recorders = self.recorders, []
        for recorder in recorders:
            recorder.signal("INT")  # py-spy writes its file on SIGINT
        for recorder in recorders:
            await recorder.ended


@dataclass(frozen=True)
class Backlog:
    """What a drain drains: ``per_partition`` messages on each of 8 partitions, and the job's CPU per message;
    with more worker ``settings`` when it is the ``--compare`` variant of a ``baseline``."""

    name: str
    per_partition: int
    job_cpu: float  # seconds
    settings: tuple[tuple[str, str], ...] = ()
    baseline: Backlog | None = None

    def described(self) -> str:
        job = f"append a line after {self.job_cpu * 1000:g} ms of Python CPU" if self.job_cpu else "append a line"
        return f"job = {job}" + "".join(f", {key} = {value}" for key, value in self.settings)


@dataclass
class Drain:
    seconds: float  # from the first job done to the last
    cpu: float  # CPU microseconds (user + system) the workers used per message, during the drain
    server_cpu: float  # the queuey server's, per message
    workers_cores: float  # the workers' CPU seconds per second of drain
    server_cores: float  # the queuey server's
    workers_waiting: float  # seconds per second of drain the workers' threads were runnable but had no CPU
    server_waiting: float  # the queuey server's
    busy: int  # workers that did jobs
    moved: int  # partitions done by more than one worker (a rebalance during the drain)
    load: float  # the machine's 1-minute load average at the end


async def drain(bench: Bench, workers: int, backlog: Backlog, commit_interval: float, profiles: Profiles) -> Drain:
    """Post a backlog (not timed), then start the workers; time them from the first job done to the last.

    The server is stopped (SIGSTOP) while the workers start and share the partitions, and resumed (SIGCONT)
    once each owns its share: workers whose start takes seconds longer than another's (a loaded machine) then
    neither find their partitions half done nor move them mid-drain (counted: ``moved``, ``busy``)."""
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    queue = f"{backlog.name}{workers}-{uuid.uuid4().hex[:6]}"
    queuey = bench.queuey
    await queuey.client.create_queue(queue, partitions=8)
    wanted = await post(queuey, queue, 8 * backlog.per_partition)
    group = Group(bench.zk, root)
    await group.start()
    run_dir = os.path.join(bench.directory, queue)
    os.makedirs(run_dir)
    started = [bench.worker(run_dir, f"w{i}", root, queue, commit_interval, settings=dict(backlog.settings))
               for i in range(workers)]
    server = queuey.process.transport.pid
    try:
        os.kill(server, signal.SIGSTOP)
        try:
            for worker in started:
                worker.env["QDO_BENCH_JOB_CPU"] = str(backlog.job_cpu)
                worker.start()
            await settle(group, {w.name for w in started}, 8)
        finally:
            os.kill(server, signal.SIGCONT)
        pids = [w.process.pid for w in started if w.process is not None and w.process.pid is not None]
        journals = Journals([w.journal for w in started])
        await wait_for(journals.read, 120, "the first job", interval=0.05)
        cpu0, server0 = sum(cpu_seconds(pid) for pid in pids), cpu_seconds(server)
        waited0, server_waited0 = sum(scheduled(pid)[1] for pid in pids), scheduled(server)[1]
        profiles.start({"server": server, **{f"worker{i}": pid for i, pid in enumerate(pids)}})
        await wait_for(lambda: wanted <= journals.read().keys(), 600, "the backlog done", interval=0.05)
        cpu, server_cpu = sum(cpu_seconds(pid) for pid in pids) - cpu0, cpu_seconds(server) - server0
        waited = sum(scheduled(pid)[1] for pid in pids) - waited0
        server_waited = scheduled(server)[1] - server_waited0
        await profiles.stop()
        times = [t for key, (_, t) in journals.found.items() if key in wanted]
        seconds = max(times) - min(times)
        return Drain(seconds, cpu * 1e6 / len(wanted), server_cpu * 1e6 / len(wanted), cpu / seconds,
                     server_cpu / seconds, waited / seconds, server_waited / seconds,
                     busy=len(set().union(*journals.workers_of.values())),
                     moved=sum(len(paths) > 1 for paths in journals.workers_of.values()),
                     load=os.getloadavg()[0])
    finally:
        await profiles.stop()
        await stop_all(started)
        await group.stop()


async def failover(bench: Bench, commit_interval: float) -> tuple[float, float]:
    """kill -9 one of two workers while messages trickle in; seconds until each of its partitions
    has a message done by the survivor (max, and min)."""
    root = f"/qdo-bench-{uuid.uuid4().hex[:8]}"
    queuey = bench.queuey
    group = Group(bench.zk, root)
    await group.start()
    run_dir = os.path.join(bench.directory, "failover")
    os.makedirs(run_dir)
    await queuey.client.create_queue("fo", partitions=8)
    a = bench.worker(run_dir, "a", root, "fo", commit_interval).start()
    b = bench.worker(run_dir, "b", root, "fo", commit_interval).start()
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


POSTING = ("per message", "batched")


def backlogs(args: argparse.Namespace) -> list[Backlog]:
    """The drains this run makes (``--parts``)."""
    kinds = [Backlog("drain", args.backlog, 0.0), Backlog("cpu", args.cpu_backlog, args.job_cpu_ms / 1000)]
    chosen = [kind for kind in kinds if kind.name in args.parts]
    if not args.compare:
        return chosen
    return [each for kind in chosen for each in
            (kind, Backlog(f"{kind.name}-compare", kind.per_partition, kind.job_cpu, tuple(args.compare), kind))]


Results = tuple[dict[tuple[str, int], list[Run]], dict[tuple[Backlog, int], list[Drain]]]


async def rounds(bench: Bench, args: argparse.Namespace) -> Results:
    """Every configuration ``--repeat`` times, interleaved: per round, per worker count, each posting mode
    then each drain."""
    intervals = {"per message": 0.0, "batched": args.commit_interval}
    posting: dict[tuple[str, int], list[Run]] = {}
    drains: dict[tuple[Backlog, int], list[Drain]] = {}
    for round_ in range(args.repeat):
        for n in args.workers:
            for mode in POSTING if "post" in args.parts else ():
                run = await throughput(bench, n, args.messages, intervals[mode])
                posting.setdefault((mode, n), []).append(run)
                print(f"  round {round_ + 1}, {n} worker(s), posting, {mode}: {run.rate:8.0f} messages/s, "
                      f"{run.writes:6.1f} offset writes/s, {run.cpu:5.0f} us CPU/message, "
                      f"stopped in {max(run.stops):.2f} s", flush=True)
            for backlog in backlogs(args):
                d = await drain(bench, n, backlog, args.commit_interval,
                                Profiles(args.profile, f"round{round_ + 1}-{backlog.name}-{n}workers"))
                drains.setdefault((backlog, n), []).append(d)
                print(f"  round {round_ + 1}, {n} worker(s), {backlog.name}: {d.seconds:6.2f} s, "
                      f"{8 * backlog.per_partition / d.seconds:8.0f} messages/s, CPU/message: workers {d.cpu:.0f} us, "
                      f"server {d.server_cpu:.0f} us; cores running: workers {d.workers_cores:.2f}, server "
                      f"{d.server_cores:.2f}; waiting for a CPU: workers {d.workers_waiting:.2f}, server "
                      f"{d.server_waiting:.2f}; {d.busy} busy, {d.moved} moved, load {d.load:.1f}", flush=True)
    return posting, drains


def report_posting(results: dict[tuple[str, int], list[Run]], args: argparse.Namespace) -> None:
    print(f"Posting while the workers run: 8 partitions, {args.messages} messages per run, from the first post "
          f"to the last job done; job = append a line (no fsync), concurrency 8, long_poll 5 s; "
          f"medians of {args.repeat} runs")
    print(f"{'workers':>8} | {'commits':>12} | {'messages/s':>10} | {'offset writes/s':>15} | "
          f"{'vs per message':>14} | {'worker CPU/message':>18}")
    print(f"{'-' * 8}-+-{'-' * 12}-+-{'-' * 10}-+-{'-' * 15}-+-{'-' * 14}-+-{'-' * 18}")
    for n in args.workers:
        base = statistics.median(r.rate for r in results[("per message", n)])
        for mode in POSTING:
            runs = results[(mode, n)]
            label = mode if mode == "per message" else f"batched {args.commit_interval:g}s"
            rate = statistics.median(r.rate for r in runs)
            writes = statistics.median(r.writes for r in runs)
            cpu = statistics.median(r.cpu for r in runs)
            print(f"{n:>8} | {label:>12} | {rate:>10.0f} | {writes:>15.1f} | {rate / base:>13.2f}x | "
                  f"{cpu:>15.0f} us")
    print(f"(batched: at most 8 partitions / {args.commit_interval:g} s = {8 / args.commit_interval:.0f} "
          f"offset writes/s whatever the message rate)")
    stops = [s for runs in results.values() for r in runs for s in r.stops]
    print(f"SIGTERM to exit of an idle worker (every partition in a long poll): "
          f"median {statistics.median(stops):.2f} s, longest {max(stops):.2f} s, of {len(stops)}")


def report_drain(backlog: Backlog, drains: dict[tuple[Backlog, int], list[Drain]], args: argparse.Namespace
                 ) -> None:
    messages = 8 * backlog.per_partition
    print(f"Draining a backlog: 8 partitions x {backlog.per_partition} messages posted before the workers start, "
          f"from the first job done to the last; {backlog.described()}; batched commits ({args.commit_interval:g} s), "
          f"concurrency 8; medians of {args.repeat} runs")
    first = args.workers[0]
    print(f"{'workers':>8} | {'drain':>7} | {'messages/s':>10} | {f'vs {first}':>6} | {'CPU/message':>19} | "
          f"{'cores running':>16} | {'waiting for a CPU':>17}")
    print(f"{'':>8} | {'':>7} | {'':>10} | {'':>6} | {'workers':>8} {'server':>10} | {'workers':>7} {'server':>8} | "
          f"{'workers':>8} {'server':>8}")
    print(f"{'-' * 8}-+-{'-' * 7}-+-{'-' * 10}-+-{'-' * 6}-+-{'-' * 19}-+-{'-' * 16}-+-{'-' * 17}")
    for n in args.workers:
        runs = drains[(backlog, n)]
        m = {field: statistics.median(getattr(d, field) for d in runs) for field in Drain.__dataclass_fields__}
        ratio = statistics.median(base.seconds / d.seconds for base, d in zip(drains[(backlog, first)], runs))
        print(f"{n:>8} | {m['seconds']:>5.2f} s | {messages / m['seconds']:>10.0f} | {ratio:>5.2f}x | "
              f"{m['cpu']:>5.0f} us {m['server_cpu']:>7.0f} us | {m['workers_cores']:>7.2f} "
              f"{m['server_cores']:>8.2f} | {m['workers_waiting']:>8.2f} {m['server_waiting']:>8.2f}")
    every = [d for n in args.workers for d in drains[(backlog, n)]]
    loads = [d.load for d in every]
    print(f"(vs {first}: the median of each round's ratio of drain times. Cores running: CPU seconds per second "
          f"of drain, on {os.cpu_count()} cores shared with ZooKeeper, the bench and whatever else runs; waiting "
          f"for a CPU: seconds per second of drain their threads were runnable but not running. Load average "
          f"(1 min) after each drain: median {statistics.median(loads):.1f}, {min(loads):.1f} to {max(loads):.1f}. "
          f"Partitions moved during a drain: {sum(d.moved for d in every)}; runs with a worker that got nothing: "
          f"{sum(d.busy < n for n in args.workers for d in drains[(backlog, n)])})")
    if backlog.baseline is not None:
        ratios = [statistics.median(base.seconds / d.seconds
                                    for base, d in zip(drains[(backlog.baseline, n)], drains[(backlog, n)]))
                  for n in args.workers]
        print(f"Against the same drain without {', '.join(f'{k} = {v}' for k, v in backlog.settings)} (median of "
              f"each round's ratio): " + ", ".join(f"{n} worker(s) {r:.2f}x" for n, r in zip(args.workers, ratios)))


async def main(reactor_: object, args: argparse.Namespace) -> None:
    directory = tempfile.mkdtemp(prefix="qdo-bench-")
    zk = os.environ.get("QUEUEY_TEST_ZOOKEEPER", "")
    started_zk = None
    if not zk:
        port = free_port()
        started_zk = os.path.join(directory, "zookeeper")
        out = subprocess.run([os.path.join(REPO, "scripts", "zookeeper-start.sh"), "--port", str(port), "--data",
                              started_zk, "--clean"], check=False, capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"scripts/zookeeper-start.sh failed ({out.returncode}):\n{out.stderr}")
        zk = out.stdout.strip().splitlines()[-1]
    cleanups = Cleanups()
    queuey = await Queuey.start(cleanups, directory)
    try:
        print(f"load average (1, 5, 15 min) at the start: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
        bench = Bench(directory, queuey, zk, args.session_timeout, dict(args.worker_setting))
        posting, drains = await rounds(bench, args)
        failed_over = None
        if "failover" in args.parts:
            failed_over = await failover(bench, args.commit_interval)
        if posting:
            print()
            report_posting(posting, args)
        for backlog in backlogs(args):
            print()
            report_drain(backlog, drains, args)
        if failed_over is not None:
            worst, best = failed_over
            print()
            print(f"kill -9 of one of 2 workers (session_timeout {args.session_timeout:g} s, party_wait 0.5 s): "
                  f"its partitions processed again after {best:.2f} s (first) to {worst:.2f} s (last)")
        print(f"load average (1, 5, 15 min) at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    finally:
        await queuey.stop()
        await cleanups.run()
        if started_zk:
            subprocess.run([os.path.join(REPO, "scripts", "zookeeper-stop.sh"), "--data", started_zk, "--clean"],
                           check=False, capture_output=True)
        if args.keep:
            print(f"kept {directory} (journals, worker logs and configurations, the SQLite store)")
        else:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20000, help="per posting run")
    parser.add_argument("--backlog", type=int, default=2500, help="messages per partition to drain")
    parser.add_argument("--cpu-backlog", type=int, default=250,
                        help="messages per partition to drain with a job that takes CPU")
    parser.add_argument("--job-cpu-ms", type=float, default=1.0, help="that job's CPU per message")
    parser.add_argument("--parts", type=lambda s: set(s.split(",")), default={"post", "drain", "cpu", "failover"},
                        help="which of post,drain,cpu,failover to run (default: all)")
    parser.add_argument("--profile", metavar="DIR", help="record the drains with py-spy into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--worker-setting", metavar="KEY=VALUE", type=lambda s: tuple(s.split("=", 1)),
                        action="append", default=[], help="one more [qdo-worker] key for every worker (repeatable)")
    parser.add_argument("--compare", metavar="KEY=VALUE", type=lambda s: tuple(s.split("=", 1)), action="append",
                        default=[], help="also run each drain with this [qdo-worker] key, side by side (repeatable)")
    parser.add_argument("--workers", type=lambda s: [int(x) for x in s.split(",")], default=[1, 2, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--session-timeout", type=float, default=4.0)
    from twisted.internet import reactor
    task.react(lambda r: defer.ensureDeferred(main(r, parser.parse_args())))
