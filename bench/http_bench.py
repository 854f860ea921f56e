#!/usr/bin/env python3
"""Queuey's HTTP benchmark on the embedded SQLite store, against a bare twisted.web ceiling.

One command runs everything (see bench/README.rst)::

    .venv/bin/python bench/http_bench.py            # full run, a few minutes
    .venv/bin/python bench/http_bench.py --quick    # smoke run, well under a minute

Part 1 (shapes): wrk drives three request shapes -- one-message POST, a
100-message batch POST and a 100-message GET -- first against ``twistd
queuey`` (SQLite, a temporary config), then against ``bench/ceiling.tac``, a
bare ``twisted.web`` resource under the same twistd that answers the same
requests with Queuey's own responses, captured byte for byte.  Rounds
alternate which server goes first; the figures are medians over rounds and
the ratio is the median of the per-round (paired) ratios.

Part 2 (listing): an application with 1,000,000 queues written straight into
the SQLite file before the server starts; the first, middle and last page of
``GET /v1/<app>?limit=100`` are timed over HTTP, interleaved.

The script owns everything it starts: temporary directory, free loopback
ports, server processes (each in its own session, stopped by pid), and every
wait is bounded in time.  Exit status 1 when any request of a measured shape
failed (non-2xx, socket error, timeout) or a sanity check did not hold.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LUA = HERE / "lua"
sys.path.insert(0, str(ROOT))

APP, KEY = "bench", "bench-key"
LIST_APP, LIST_KEY = "many", "many-key"
BODY_BYTES = 100
BATCH_SIZE = 100
READ_LIMIT = 100
PAGE = 100
DISTURBED = "*"
HEARTBEAT_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


# -- small helpers -------------------------------------------------------------

class BenchError(Exception):
    """The benchmark could not run or its figures cannot be trusted."""


def fail(message: str) -> NoReturn:
    raise BenchError(message)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def message_text(seed: str, size: int) -> str:
    """The same bodies the Lua scripts build (see bench/lua/*.lua)."""
    return (seed * (size // len(seed) + 1))[:size]


SINGLE_BODY = message_text("single message body for the queuey benchmark ", BODY_BYTES).encode()
BATCH_BODY = json.dumps({"messages": [
    {"body": message_text("batched message body for the queuey benchmark ", BODY_BYTES)}] * BATCH_SIZE},
    separators=(",", ":")).encode()


def request(port: int, method: str, path: str, body: bytes | None = None,
            headers: dict[str, str] | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def expect(port: int, status: int, method: str, path: str, body: bytes | None = None,
           headers: dict[str, str] | None = None) -> bytes:
    got, data = request(port, method, path, body, headers)
    if got != status:
        fail(f"{method} {path}: expected {status}, got {got}: {data[:500]!r}")
    return data


def auth(key: str = KEY, **more: str) -> dict[str, str]:
    return {"Authorization": f"Application {key}", **more}


def _stat_fields(pid: int | str) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads, and of its running children
    (the workers of ``twistd queuey --workers N``), from /proc."""
    fields = _stat_fields(pid)
    if fields is None:
        return float("nan")
    ticks = int(fields[11]) + int(fields[12])
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            child = _stat_fields(entry)
            if child is not None and child[1] == str(pid):
                ticks += int(child[11]) + int(child[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_jiffies(cpu: int | None) -> tuple[int, int]:
    """(busy, total) clock ticks of one CPU (all CPUs when None) since boot.

    Steal time (the hypervisor ran someone else) counts as busy; interrupt time
    does not, since on loopback most of it is the benchmark's own packets.
    """
    name = "cpu" if cpu is None else f"cpu{cpu}"
    with open("/proc/stat") as handle:
        for line in handle:
            fields = line.split()
            if fields[0] == name:
                user, nice, system, idle, iowait, irq, softirq, steal = map(int, fields[1:9])
                busy = user + nice + system + steal
                return busy, busy + idle + iowait + irq + softirq
    return 0, 0


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


# -- servers -------------------------------------------------------------------

class Server:
    """One twistd process in its own session, pinned to ``cpu``; stopped by its pid."""

    def __init__(self, name: str, argv: list[str], workdir: Path, cpu: int | None,
                 env: dict[str, str] | None = None) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [arg.replace("{port}", str(self.port)) for arg in argv]
        self.log_path = workdir / f"{name}.log"
        self.out_path = workdir / f"{name}.out"
        self.cpu = cpu
        self.env = {**os.environ, **(env or {}), "BENCH_CEILING_PORT": str(self.port)}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        pin = ["taskset", "-c", str(self.cpu)] if self.cpu is not None else []
        twistd = [str(TWISTD), "-n", "--pidfile=", "-l", str(self.log_path)]
        with open(self.out_path, "wb") as out:
            self.proc = subprocess.Popen(pin + twistd + self.argv, cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + HEARTBEAT_TIMEOUT
        while True:  # bounded: HEARTBEAT_TIMEOUT
            if self.proc.poll() is not None:
                fail(f"{self.name} exited with {self.proc.returncode} while starting:\n{self.tail()}")
            try:
                status, _ = request(self.port, "GET", "/__lbheartbeat__", timeout=2)
                if status == 200:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                fail(f"{self.name} did not answer /__lbheartbeat__ within {HEARTBEAT_TIMEOUT:.0f} s:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            print(f"warning: {self.name} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT:.0f} s; killing it",
                  file=sys.stderr)
            os.killpg(proc.pid, signal.SIGKILL)  # its own session: only what it started
            proc.wait(5)

    def log_files(self) -> list[Path]:
        """The twistd log, oldest first (twistd rotates it at 1 MB: .log.N is older than .log.1)."""
        rotated = sorted(self.log_path.parent.glob(self.log_path.name + ".*"),
                         key=lambda path: -int(path.suffix[1:]) if path.suffix[1:].isdigit() else 0)
        return [*rotated, self.log_path, self.out_path]

    def log_lines(self) -> Any:
        for path in self.log_files():
            if path.exists():
                with open(path, errors="replace") as handle:
                    yield from handle

    def tail(self, lines: int = 40) -> str:
        return "".join(list(self.log_lines())[-lines:])

    def reactor(self) -> str:
        for line in self.log_lines():
            if "reactor class:" in line:
                return line.split("reactor class:", 1)[1].strip().rstrip(".")
        return "unknown"

    def error_events(self) -> list[str]:
        """Logged errors (critical/error level, tracebacks): each its first line and the indented lines after."""
        events: list[str] = []
        current: list[str] | None = None
        for line in self.log_lines():
            if current is not None and line.startswith(("\t", " ")):
                current.append(line)
                continue
            current = None
            if any(mark in line for mark in ("#critical]", "#error]", "#failure]", "Unhandled Error", "Traceback")):
                current = [line]
                events.append(current)  # type: ignore[arg-type]
        return ["".join(event).rstrip() for event in events]  # type: ignore[arg-type]

    def problems(self, keep: int = 3) -> str:
        events = self.error_events()
        if not events:
            return "(none)"
        return f"{len(events)} logged error(s); the last {min(keep, len(events))}:\n" + "\n".join(events[-keep:])


def report_logged_errors(server: Server) -> str | None:
    """Print a warning naming the errors ``server`` logged; return a one-line summary, or None."""
    events = server.error_events()
    if not events:
        return None
    kinds: dict[str, int] = {}
    for event in events:
        lines = event.splitlines()
        kind = next((line.strip() for line in reversed(lines) if line.strip() and not line.strip().startswith("]")),
                    lines[0])
        kind = f"{lines[0].split('] ', 1)[-1].strip()} -> {kind[:160]}"
        kinds[kind] = kinds.get(kind, 0) + 1
    print(f"\nWARNING: {server.name} logged {len(events)} error(s) (clients did not see these):")
    for kind, count in sorted(kinds.items(), key=lambda item: -item[1]):
        print(f"  {count:6d} x {kind}")
    print("  first one in full:\n" + "\n".join("    " + line for line in events[0].splitlines()))
    return f"{server.name} logged {len(events)} error(s)"


# -- wrk -----------------------------------------------------------------------

@dataclass
class Shape:
    name: str
    label: str
    script: str
    path: str
    args: list[str]
    messages_per_request: int
    method: str
    body: bytes | None
    headers: dict[str, str]
    status: int


SHAPES = [
    Shape("post_single", f"POST 1 msg ({BODY_BYTES} B text/plain)", "post_single.lua",
          f"/v1/{APP}/q-single", [KEY, str(BODY_BYTES)], 1,
          "POST", SINGLE_BODY, auth(**{"Content-Type": "text/plain"}), 201),
    Shape("post_batch", f"POST batch of {BATCH_SIZE} (JSON)", "post_batch.lua",
          f"/v1/{APP}/q-batch", [KEY, str(BATCH_SIZE), str(BODY_BYTES)], BATCH_SIZE,
          "POST", BATCH_BODY, auth(**{"Content-Type": "application/json"}), 201),
    Shape("get_messages", f"GET {READ_LIMIT} msgs", "get_messages.lua",
          f"/v1/{APP}/q-read?limit={READ_LIMIT}", [KEY], READ_LIMIT,
          "GET", None, auth(), 200),
]
#: Every shape, whichever ``--shape`` measures: the ceiling answers each with Queuey's response.
ALL_SHAPES = tuple(SHAPES)


def only_shapes(names: list[str] | None) -> None:
    """Measure only the shapes named (``--shape``; all when none is)."""
    if names:
        SHAPES[:] = [shape for shape in ALL_SHAPES if shape.name in names]


@dataclass
class WrkResult:
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    bytes_per_response: float
    errors: dict[str, int]
    server_cpu: float
    server_cpu_seconds: float
    client_cpu: float
    foreign: float  # share of the server's CPU that other processes (or the hypervisor) took meanwhile

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    @property
    def cpu_us_per_request(self) -> float:
        """Server CPU time per request (all its threads): unlike req/s, barely moved by other
        processes taking the server's core."""
        return self.server_cpu_seconds / self.requests * 1e6 if self.requests else float("nan")


def run_wrk(server: Server, shape: Shape, duration: int, connections: int, cpu: int | None) -> WrkResult:
    pin = ["taskset", "-c", str(cpu)] if cpu is not None else []
    cmd = pin + ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s",
                 "-s", str(LUA / shape.script), f"http://127.0.0.1:{server.port}{shape.path}", "--", *shape.args]
    tick = os.sysconf("SC_CLK_TCK")
    busy_before, total_before = cpu_jiffies(server.cpu)
    client_before, server_before, started = children_cpu_seconds(), process_cpu_seconds(server.pid), time.monotonic()
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=duration + 60, check=False)
    except subprocess.TimeoutExpired:  # run() killed wrk already
        fail(f"wrk did not finish within {duration + 60} s: {' '.join(cmd)}")
    wall = time.monotonic() - started
    client_cpu = (children_cpu_seconds() - client_before) / wall
    server_seconds = process_cpu_seconds(server.pid) - server_before
    server_cpu = server_seconds / wall
    busy_after, total_after = cpu_jiffies(server.cpu)
    others = (busy_after - busy_before) - server_seconds * tick
    if server.cpu is None:  # all CPUs: wrk is not foreign either
        others -= (children_cpu_seconds() - client_before) * tick
    foreign = max(0.0, others / max(1, total_after - total_before))
    out = done.stdout.decode(errors="replace")
    line = next((line for line in out.splitlines() if line.startswith("BENCH_RESULT ")), None)
    if done.returncode != 0 or line is None:
        fail(f"wrk failed (exit {done.returncode}): {' '.join(cmd)}\n{out}\n{done.stderr.decode(errors='replace')}")
    data = json.loads(line.split(" ", 1)[1])
    seconds = data["duration_us"] / 1e6
    requests = data["requests"]
    return WrkResult(
        requests=requests, seconds=seconds, rps=requests / seconds if seconds else 0.0,
        p50_ms=data["p50_us"] / 1000, p99_ms=data["p99_us"] / 1000,
        bytes_per_response=data["bytes"] / requests if requests else 0.0,
        errors={"non-2xx/3xx": data["status_errors"], "connect": data["connect_errors"],
                "read": data["read_errors"], "write": data["write_errors"], "timeout": data["timeouts"]},
        server_cpu=server_cpu, server_cpu_seconds=server_seconds, client_cpu=client_cpu, foreign=foreign)


# -- part 1: shapes against the ceiling -----------------------------------------

def write_config(path: Path, db: Path, apps: dict[str, str], synchronous: str | None,
                 limits: str = "") -> None:
    """A SQLite configuration for the benchmarks; ``limits`` adds lines to ``[limits]``."""
    keys = "\n".join(f"{app} = {key}" for app, key in apps.items())
    extra = f"synchronous = {synchronous}\n" if synchronous else ""
    path.write_text(f"""[application_keys]
{keys}

[storage]
backend = sqlite
path = {db}
{extra}
[delays]
weak = 0
strong = 0
very_strong = 0

[limits]
max_message_bytes = 262144
{limits}""")


def start_queuey(args: argparse.Namespace, workdir: Path, name: str, options: list[str],
                 env: dict[str, str] | None = None) -> Server:
    """Another Queuey server, on a database of its own, set up like queuey."""
    config = workdir / f"{name}.ini"
    write_config(config, workdir / f"{name}.sqlite", {APP: KEY}, args.synchronous)
    server = Server(name, ["queuey", "--config", str(config), *options, "--port",
                           "tcp:{port}:interface=127.0.0.1:backlog=1024"], workdir, args.server_cpu, env)
    server.start()
    prepare_queuey(server, workdir / f"canned-{name}")
    return server


def baseline_env(checkout: str) -> dict[str, str]:
    """The environment that runs Queuey from ``checkout`` (``--baseline``); fails unless it is one."""
    tree = Path(checkout).resolve()
    if not (tree / "queuey" / "__init__.py").exists():
        fail(f"--baseline {tree}: not a Queuey checkout (no queuey/__init__.py)")
    return {"PYTHONPATH": str(tree)}


def start_baseline(args: argparse.Namespace, workdir: Path) -> Server:
    """Queuey from another checkout (``--baseline``), on a database of its own, set up like queuey."""
    return start_queuey(args, workdir, "baseline", [], baseline_env(args.baseline))


def prepare_queuey(server: Server, canned: Path) -> None:
    """Create the bench queues, pre-fill the read queue, capture one real response per shape."""
    for name in ("q-single", "q-batch", "q-read"):
        expect(server.port, 201, "POST", f"/v1/{APP}", f"queue_name={name}&partitions=1".encode(),
               auth(**{"Content-Type": "application/x-www-form-urlencoded"}))
    for _ in range(2):
        expect(server.port, 201, "POST", f"/v1/{APP}/q-read", BATCH_BODY, auth(**{"Content-Type": "application/json"}))
    canned.mkdir()
    for shape in ALL_SHAPES:
        data = expect(server.port, shape.status, shape.method, shape.path, shape.body, shape.headers)
        document = json.loads(data)
        count = len(document.get("messages", ()))
        if document.get("status") != "ok" or count != shape.messages_per_request:
            fail(f"{shape.method} {shape.path}: expected {shape.messages_per_request} messages, got {data[:300]!r}")
        (canned / f"{shape.name}.json").write_bytes(data)


@dataclass
class ShapeRuns:
    results: dict[str, list[WrkResult]] = field(default_factory=dict)
    warmup_errors: dict[str, int] = field(default_factory=dict)


def measure_shapes(servers: dict[str, Server], args: argparse.Namespace) -> dict[str, ShapeRuns]:
    """Every shape on every server, each round in a rotated order (drift cancels out)."""
    runs = {shape.name: ShapeRuns({who: [] for who in servers}) for shape in SHAPES}
    names = list(servers)
    if args.warmup:
        print(f"warm-up: {args.warmup} s per shape and server", flush=True)
        for shape in SHAPES:
            for who, server in servers.items():
                result = run_wrk(server, shape, args.warmup, args.connections, args.client_cpu)
                if result.error_count:
                    runs[shape.name].warmup_errors[who] = result.error_count
    for round_no in range(args.rounds):
        order = names[round_no % len(names):] + names[:round_no % len(names)]
        for shape in SHAPES:
            for who in order:
                result = run_wrk(servers[who], shape, args.duration, args.connections, args.client_cpu)
                runs[shape.name].results[who].append(result)
                print(f"round {round_no + 1}/{args.rounds}  {shape.name:<13} {who:<8} "
                      f"{result.rps:9.1f} req/s  p50 {result.p50_ms:8.2f} ms  p99 {result.p99_ms:8.2f} ms  "
                      f"cpu/req {result.cpu_us_per_request:7.0f} us  "
                      f"server cpu {result.server_cpu:4.0%}  wrk cpu {result.client_cpu:4.0%}  "
                      f"others {result.foreign:4.0%}{DISTURBED if result.foreign > args.noise else ' '}  "
                      f"errors {result.error_count}", flush=True)
    return runs


def paired(a: list[WrkResult], b: list[WrkResult], measure: Any) -> float:
    """The median over rounds of measure(a_round, b_round)."""
    return median([measure(x, y) for x, y in zip(a, b)])


def report_shapes(runs: dict[str, ShapeRuns], args: argparse.Namespace) -> list[tuple[str, Shape, str]]:
    """Print the tables; return the problems that make the run fail: (server, shape, what)."""
    problems: list[tuple[str, Shape, str]] = []
    names = list(next(iter(runs.values())).results)
    print()
    print(f"Part 1: request shapes, {args.rounds} round(s) x {args.duration} s, wrk -t1 -c{args.connections}; "
          "medians over rounds; ratios are medians of the per-round ratios")
    print("  rps ratio q/c = queuey req/s / ceiling req/s;  cpu ratio q/c = ceiling CPU per request / queuey "
          "CPU per request (what the ratio would be with the server alone on its core)")
    header = (f"{'shape':<30} {'queuey rps':>11} {'ceiling rps':>12} {'rps q/c':>8} {'cpu q/c':>8}   "
              f"{'q us/req':>9} {'c us/req':>9}   {'queuey p50/p99 ms':>18}   {'q msgs/s':>9}   "
              f"{'resp B q/c':>13}   {'non-2xx':>8}")
    print(header)
    print("-" * len(header))
    for shape in SHAPES:
        shape_runs = runs[shape.name]
        q, c = shape_runs.results["queuey"], shape_runs.results["ceiling"]
        q_rps = median([r.rps for r in q])
        non2xx = "/".join(str(sum(r.errors["non-2xx/3xx"] for r in shape_runs.results[who])) for who in names)
        print(f"{shape.label:<30} {q_rps:11.1f} {median([r.rps for r in c]):12.1f} "
              f"{paired(q, c, lambda x, y: x.rps / y.rps if y.rps else float('nan')):8.3f} "
              f"{paired(q, c, lambda x, y: y.cpu_us_per_request / x.cpu_us_per_request):8.3f}   "
              f"{median([r.cpu_us_per_request for r in q]):9.0f} {median([r.cpu_us_per_request for r in c]):9.0f}   "
              f"{median([r.p50_ms for r in q]):8.2f}/{median([r.p99_ms for r in q]):<9.2f}   "
              f"{q_rps * shape.messages_per_request:9.0f}   "
              f"{median([r.bytes_per_response for r in q]):6.0f}/{median([r.bytes_per_response for r in c]):<6.0f}   "
              f"{non2xx:>8}")
        for who, results in shape_runs.results.items():
            errors: dict[str, int] = {}
            for result in results:
                for kind, count in result.errors.items():
                    errors[kind] = errors.get(kind, 0) + count
            if shape_runs.warmup_errors.get(who):
                errors["during warm-up"] = shape_runs.warmup_errors[who]
            bad = {kind: count for kind, count in errors.items() if count}
            if bad:
                problems.append((who, shape, f"{who} {shape.name}: errors {bad}"))
    for other in names[2:]:  # --baseline, --workers: against the ceiling and against queuey, same run
        print()
        print(f"{other} ({args.baseline if other == 'baseline' else 'twistd queuey --workers ' + other[7:-1]}), "
              f"in the same run: x = {other}; ratios to the ceiling, and queuey / x")
        header = (f"{'shape':<30} {'x rps':>12} {'rps x/c':>8} {'cpu x/c':>8} {'x us/req':>9}   "
                  f"{'rps q/x':>8} {'cpu q/x':>8}")
        print(header)
        print("-" * len(header))
        for shape in SHAPES:
            results = runs[shape.name].results
            q, c, b = results["queuey"], results["ceiling"], results[other]
            print(f"{shape.label:<30} {median([r.rps for r in b]):12.1f} "
                  f"{paired(b, c, lambda x, y: x.rps / y.rps if y.rps else float('nan')):8.3f} "
                  f"{paired(b, c, lambda x, y: y.cpu_us_per_request / x.cpu_us_per_request):8.3f} "
                  f"{median([r.cpu_us_per_request for r in b]):9.0f}   "
                  f"{paired(q, b, lambda x, y: x.rps / y.rps if y.rps else float('nan')):8.3f} "
                  f"{paired(q, b, lambda x, y: y.cpu_us_per_request / x.cpu_us_per_request):8.3f}")
    print()
    print("per round (req/s queuey / ceiling = ratio; median server CPU use while loaded; "
          f"{DISTURBED} = other processes took > {args.noise:.0%} of the server's CPU during that pair):")
    disturbed = 0
    for shape in SHAPES:
        cells = []
        results = runs[shape.name].results
        for a, b in zip(results["queuey"], results["ceiling"]):
            noisy = max(a.foreign, b.foreign) > args.noise
            disturbed += noisy
            cells.append(f"{a.rps:.0f}/{b.rps:.0f}={a.rps / b.rps if b.rps else float('nan'):.3f}"
                         f"{DISTURBED if noisy else ' '}")
        cpus = ", ".join(f"{who} {median([r.server_cpu for r in results[who]]):.0%}" for who in names)
        wrk_cpu = max(r.client_cpu for who in names for r in results[who])
        print(f"  {shape.name:<13} {'  '.join(cells)}   cpu {cpus}, wrk at most {wrk_cpu:.0%}")
        if wrk_cpu > 0.8:
            print(f"  warning: wrk used {wrk_cpu:.0%} of a core on {shape.name}: the load generator may be a limit")
    if disturbed:
        print(f"  warning: {disturbed} of {len(SHAPES) * args.rounds} pairs ran while other processes used the "
              "server's CPU: absolute req/s and latencies of those are low; the cpu ratios suffer least, "
              "but rerun on a quieter machine (or with more --rounds) before trusting small differences")
    return problems


def diagnose(server: Server, shape: Shape) -> str:
    """One request of ``shape`` by hand, and the server's error log lines, for a failure report."""
    try:
        status, data = request(server.port, shape.method, shape.path, shape.body, shape.headers)
        sample = f"one {shape.method} {shape.path} now answers {status}: {data[:400]!r}"
    except OSError as e:
        sample = f"one {shape.method} {shape.path} now fails: {e}"
    return f"{sample}\n{server.name} log: {server.problems()}"


# -- part 2: listing a million queues ----------------------------------------------

def queue_name(index: int) -> str:
    return f"q{index:07d}"


def populate(db: Path, count: int) -> float:
    """Write ``count`` queues of LIST_APP straight into a new SQLite file; return the seconds it took."""
    from queuey.storage.sqlite import _create_schema, connect
    started = time.monotonic()
    conn = connect(str(db), synchronous="OFF")
    try:
        conn.execute("PRAGMA cache_size = -400000")
        _create_schema(conn)
        created = int(time.time() * 10_000_000)
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO queues (application, queue_name, partitions, type, consistency, principles, created) "
            "VALUES (?, ?, 1, 'user', 'strong', '', ?)",
            ((LIST_APP, queue_name(i), created) for i in range(count)))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return time.monotonic() - started


def measure_listing(server: Server, count: int, samples: int) -> tuple[dict[str, list[float]], list[str]]:
    base = f"/v1/{LIST_APP}?limit={PAGE}"
    pages = {
        "first": (base, queue_name(0), queue_name(PAGE - 1)),
        "middle": (f"{base}&offset={queue_name(count // 2 - 1)}", queue_name(count // 2),
                   queue_name(count // 2 + PAGE - 1)),
        "last": (f"{base}&offset={queue_name(count - PAGE - 1)}", queue_name(count - PAGE), queue_name(count - 1)),
    }
    problems: list[str] = []
    timings: dict[str, list[float]] = {page: [] for page in pages}
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for sample in range(-3, samples):  # three warm-up rounds, then the measured ones, interleaved
            for page, (path, first, last) in pages.items():
                started = time.perf_counter()
                conn.request("GET", path, headers=auth(LIST_KEY))
                response = conn.getresponse()
                data = response.read()
                elapsed = time.perf_counter() - started
                if response.status != 200:
                    problems.append(f"listing {page} page: {response.status} {data[:300]!r}")
                    return timings, problems
                names = [q["queue_name"] for q in json.loads(data)["queues"]]
                if len(names) != PAGE or names[0] != first or names[-1] != last:
                    problems.append(f"listing {page} page: expected {PAGE} queues {first}..{last}, got "
                                    f"{len(names)} ({names[:1]}..{names[-1:]})")
                    return timings, problems
                if sample >= 0:
                    timings[page].append(elapsed * 1000)
    finally:
        conn.close()
    return timings, problems


def report_listing(timings: dict[str, list[float]], count: int, seconds: float, samples: int) -> None:
    print()
    print(f"Part 2: listing GET /v1/{LIST_APP}?limit={PAGE} of an application with {count:,} queues "
          f"(written in {seconds:.1f} s); {samples} requests per page, interleaved, one keep-alive connection")
    print(f"{'page':<8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'vs first':>9}")
    first = median(timings["first"])
    for page, values in timings.items():
        if values:
            print(f"{page:<8} {median(values):10.2f} {min(values):8.2f} {max(values):8.2f} "
                  f"{median(values) / first:9.2f}")
    if timings["last"]:
        print(f"ratio last/first page: {median(timings['last']) / first:.2f}; "
              f"middle/first: {median(timings['middle']) / first:.2f}")


# -- main ------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--duration", type=int, default=5, help="seconds of load per measurement")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (one wrk thread)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; each measures every shape on both servers")
    parser.add_argument("--warmup", type=int, default=1, help="seconds of unmeasured load per shape and server")
    parser.add_argument("--list-queues", type=int, default=1_000_000, help="queues in the listing application")
    parser.add_argument("--list-samples", type=int, default=20, help="timed requests per listing page")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the servers are pinned to")
    parser.add_argument("--client-cpu", type=int, default=1, help="CPU wrk (and this script) are pinned to")
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument("--noise", type=float, default=0.10,
                        help="mark runs during which other processes took more than this share of the server's CPU")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL", "EXTRA"],
                        help="[storage] synchronous for queuey (unset: the server's default, FULL)")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="also measure Queuey from this other checkout (e.g. an export of main), side by side")
    parser.add_argument("--workers", type=int, default=1,
                        help="also measure twistd queuey --workers N, side by side (use with --no-pin)")
    parser.add_argument("--shape", action="append", choices=[shape.name for shape in SHAPES],
                        help="measure only this shape (repeat for more; default: all three)")
    parser.add_argument("--skip-listing", action="store_true", help="only part 1")
    parser.add_argument("--skip-shapes", action="store_true", help="only part 2")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, databases)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: --duration 1 --rounds 1 --warmup 1 --list-queues 100000 --list-samples 5")
    args = parser.parse_args(argv)
    only_shapes(args.shape)
    if args.quick:
        args.duration, args.rounds, args.warmup, args.list_queues, args.list_samples = 1, 1, 1, 100_000, 5
    if args.duration < 1 or args.rounds < 1 or args.connections < 1 or args.warmup < 0:
        parser.error("--duration, --rounds and --connections must be at least 1, --warmup at least 0")
    if args.list_queues < 2 * PAGE + 2 or args.list_samples < 1:
        parser.error(f"--list-queues must be at least {2 * PAGE + 2}, --list-samples at least 1")
    cpus = sorted(os.sched_getaffinity(0))
    if args.no_pin or len(cpus) < 2:
        if not args.no_pin:
            print("warning: fewer than 2 CPUs available: not pinning; wrk and the server share a CPU",
                  file=sys.stderr)
        args.server_cpu = args.client_cpu = None
    elif args.server_cpu == args.client_cpu or not {args.server_cpu, args.client_cpu} <= set(cpus):
        parser.error(f"--server-cpu and --client-cpu must be two different CPUs of {cpus}")
    return args


def find_twistd() -> Path:
    beside = Path(sys.executable).parent / "twistd"
    if beside.exists():
        return beside
    found = shutil.which("twistd")
    if not found:
        raise BenchError("twistd not found (run this with the project's .venv/bin/python)")
    return Path(found)


TWISTD = Path("twistd")


def main(argv: list[str] | None = None) -> int:
    global TWISTD
    args = parse_args(argv)
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None and (tool == "wrk" or args.server_cpu is not None):
            print(f"error: {tool} is not installed (apt-get install -y {'wrk' if tool == 'wrk' else 'util-linux'})",
                  file=sys.stderr)
            return 2
    TWISTD = find_twistd()
    if args.client_cpu is not None:
        os.sched_setaffinity(0, {args.client_cpu})  # this script is a client too (listing, set-up)

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGHUP, terminate)

    import twisted
    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, timeout=10).stdout.decode().split("\n")[0]
    print(f"Queuey HTTP benchmark, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"python {platform.python_version()}, twisted {twisted.__version__}, {wrk_version.strip()}; "
          f"{os.cpu_count()} CPUs, load average {' '.join(open('/proc/loadavg').read().split()[:3])}")
    print(f"servers on CPU {args.server_cpu}, wrk on CPU {args.client_cpu}" if args.server_cpu is not None
          else "no CPU pinning")
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="queuey-bench-"))
    servers: list[Server] = []
    problems: list[str] = []
    warnings: list[str] = []
    try:
        if not args.skip_shapes:
            config = workdir / "bench.ini"
            write_config(config, workdir / "bench.sqlite", {APP: KEY}, args.synchronous)
            queuey = Server("queuey", ["queuey", "--config", str(config), "--port",
                                       "tcp:{port}:interface=127.0.0.1"], workdir, args.server_cpu)
            servers.append(queuey)
            queuey.start()
            canned = workdir / "canned"
            prepare_queuey(queuey, canned)
            ceiling = Server("ceiling", ["-y", str(HERE / "ceiling.tac")], workdir, args.server_cpu,
                             {"BENCH_CANNED_DIR": str(canned)})
            servers.append(ceiling)
            ceiling.start()
            measured = {"queuey": queuey, "ceiling": ceiling}
            if args.baseline:
                measured["baseline"] = start_baseline(args, workdir)
                servers.append(measured["baseline"])
            if args.workers > 1:
                name = f"queuey-{args.workers}w"
                measured[name] = start_queuey(args, workdir, name, ["--workers", str(args.workers)])
                servers.append(measured[name])
            reactors = {server.reactor() for server in measured.values()}
            print(f"reactor: {' vs '.join(sorted(reactors))}; queuey storage synchronous="
                  f"{args.synchronous or 'FULL (default)'}")
            if len(reactors) != 1:
                problems.append(f"the servers run different reactors: {reactors}")
            runs = measure_shapes(measured, args)
            shape_problems = report_shapes(runs, args)
            for who, shape, problem in shape_problems:
                problems.append(f"{problem}\n{diagnose(measured[who], shape)}")
            for server in measured.values():
                server.stop()
                logged = report_logged_errors(server)
                if logged:
                    warnings.append(logged)
        if not args.skip_listing:
            db = workdir / "list.sqlite"
            print(f"\nwriting {args.list_queues:,} queues into {db.name} ...", flush=True)
            seconds = populate(db, args.list_queues)
            config = workdir / "list.ini"
            write_config(config, db, {LIST_APP: LIST_KEY}, args.synchronous)
            lister = Server("queuey-list", ["queuey", "--config", str(config), "--port",
                                            "tcp:{port}:interface=127.0.0.1"], workdir, args.server_cpu)
            servers.append(lister)
            lister.start()
            timings, list_problems = measure_listing(lister, args.list_queues, args.list_samples)
            report_listing(timings, args.list_queues, seconds, args.list_samples)
            problems += list_problems
            lister.stop()
            logged = report_logged_errors(lister)
            if logged:
                warnings.append(logged)
    except BenchError as e:
        problems.append(str(e))
    except KeyboardInterrupt:
        problems.append("interrupted")
    finally:
        for server in servers:
            server.stop()
        if args.keep or problems:
            print(f"\nlogs and databases kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\ntotal time {time.monotonic() - started:.0f} s")
    for warning in warnings:
        print(f"warning: {warning} (see above; --keep keeps the logs)")
    if problems:
        print("\nFAILED:", file=sys.stderr)
        for problem in problems:
            print(f"- {problem}", file=sys.stderr)
        return 1
    return 0


def run_main(main: Any) -> NoReturn:
    """Exit with what ``main()`` returns; a BenchError is one line on stderr and exit 1."""
    try:
        sys.exit(main())
    except BenchError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
