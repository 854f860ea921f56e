"""The journal job of the qdo integration tests and bench, and the checks run on journals.

A worker process run with ``job = tests.qdo_journal:journal_job`` appends
to ``$QDO_TEST_JOURNAL`` one ``S`` line when a job starts and one ``E`` line
when it ends::

    S <queue>-<partition> <message id> <worker> <time>
    E <queue>-<partition> <message id> <worker> <time>

(``$QDO_TEST_WORKER`` names the worker, ``$QDO_TEST_JOB_SECONDS`` is how long
each job works, default 0.005.) A message whose body starts with ``fail`` makes
the job raise (only while the file ``$QDO_TEST_FAIL_WHILE`` exists, if set). The checks read every journal of a run.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable


_lock = threading.Lock()


def journal_job(message: Any, context: Any) -> None:
    """A blocking job (it runs in qdo's thread pool) that records what it did and when."""
    path = os.environ["QDO_TEST_JOURNAL"]
    worker = os.environ.get("QDO_TEST_WORKER", "?")
    where = f"{message.queue}-{message.partition}"
    _append(path, f"S {where} {message.message_id} {worker} {time.time():.6f}\n")
    seconds = float(os.environ.get("QDO_TEST_JOB_SECONDS", "0.005"))
    if seconds:
        time.sleep(seconds)  # the job's "work"
    switch = os.environ.get("QDO_TEST_FAIL_WHILE")  # a file: "fail..." bodies fail only while it exists
    if message.body.startswith("fail") and (switch is None or os.path.exists(switch)):
        _append(path, f"E {where} {message.message_id} {worker} {time.time():.6f}\n")
        raise ValueError(f"asked to fail: {message.body}")
    _append(path, f"E {where} {message.message_id} {worker} {time.time():.6f}\n")


def _append(path: str, line: str) -> None:
    with _lock:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class Run:
    """One job run: partition, message, worker, start and end (None if it never ended)."""

    partition: str
    message_id: str
    worker: str
    start: float
    end: float | None


def read_journals(paths: Iterable[str]) -> list[Run]:
    runs: list[Run] = []
    for path in paths:
        if not os.path.exists(path):
            continue
        open_runs: dict[tuple[str, str, str], float] = {}
        with open(path) as handle:
            for line in handle:
                parts = line.split()
                if len(parts) != 5:
                    continue  # a torn last line of a killed process
                kind, partition, message_id, worker, at = parts
                key = (partition, message_id, worker)
                if kind == "S":
                    open_runs[key] = float(at)
                elif kind == "E" and key in open_runs:
                    runs.append(Run(partition, message_id, worker, open_runs.pop(key), float(at)))
        runs.extend(Run(p, m, w, start, None) for (p, m, w), start in open_runs.items())
    return runs


def done_ids(runs: Iterable[Run]) -> set[str]:
    return {r.message_id for r in runs if r.end is not None}


def overlaps(runs: Iterable[Run], deaths: dict[str, float] | None = None) -> list[tuple[Run, Run]]:
    """Pairs of runs on one partition by two workers at the same time.

    A run that never ended lasted until its worker died (``deaths``), or forever.
    """
    deaths = deaths or {}
    by_partition: dict[str, list[tuple[float, float, Run]]] = {}
    for run in runs:
        end = run.end if run.end is not None else deaths.get(run.worker, float("inf"))
        by_partition.setdefault(run.partition, []).append((run.start, end, run))
    found = []
    for intervals in by_partition.values():
        intervals.sort(key=lambda item: item[0])
        latest_end, latest = -1.0, None
        for start, end, run in intervals:
            if latest is not None and start < latest_end and latest.worker != run.worker:
                found.append((latest, run))
            if end > latest_end:
                latest_end, latest = end, run
    return found


def order_violations(runs: Iterable[Run], key: Any) -> list[tuple[Run, Run]]:
    """Within one worker's continuous hold of a partition, message ids must increase."""
    by_worker: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_worker.setdefault((run.partition, run.worker), []).append(run)
    bad = []
    for sequence in by_worker.values():
        sequence.sort(key=lambda r: r.start)
        for before, after in zip(sequence, sequence[1:]):
            if key(after.message_id) < key(before.message_id):
                bad.append((before, after))
    return bad
