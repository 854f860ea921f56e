"""Partitions, and the pure function that shares them among workers.

:func:`assign` is what the elected leader runs: given every partition, every
live worker and the assignment in force, it returns the next assignment,
which is

- complete: every partition has exactly one worker, and only live workers get any;
- balanced: workers' counts differ by at most one;
- sticky: the fewest possible partitions change hands (a partition whose
  worker is still there and not over its share stays where it is);
- deterministic: the same inputs give the same answer, whatever their order.

No I/O, no clock, no randomness: property-tested with hypothesis.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping


@dataclass(frozen=True, order=True)
class Partition:
    """One partition of one queue of one application."""

    application: str
    queue: str
    number: int

    @property
    def key(self) -> str:
        """``app/queue/number``: the form used in ZooKeeper paths and the assignment."""
        return f"{self.application}/{self.queue}/{self.number}"

    @property
    def name(self) -> str:
        """``queue-number``: the form of the configuration's ``ids`` and of the logs."""
        return f"{self.queue}-{self.number}"

    def __str__(self) -> str:
        return self.name

    @classmethod
    def from_key(cls, key: str) -> "Partition":
        application, queue, number = key.split("/")
        return cls(application, queue, int(number))

    @classmethod
    def from_name(cls, application: str, name: str) -> "Partition":
        """Parse ``queue-number`` (queue names may hold ``-``: the last one splits)."""
        queue, dash, number = name.rpartition("-")
        if not dash or not queue or not number.isdigit() or int(number) < 1:
            raise ValueError(f"{name!r} is not <queue>-<partition number>")
        return cls(application, queue, int(number))


Assignment = dict[Partition, str]


def shares(partitions: int, workers: list[str], current: Mapping[str, int]) -> dict[str, int]:
    """How many partitions each worker gets: ``q`` or ``q + 1``.

    The ``r`` larger shares go to the workers that hold the most now (ties by
    id), which is what keeps the number of moves minimal.
    """
    if not workers:
        return {}
    base, extra = divmod(partitions, len(workers))
    by_holding = sorted(workers, key=lambda w: (-current.get(w, 0), w))
    return {worker: base + (1 if rank < extra else 0) for rank, worker in enumerate(by_holding)}


def assign(partitions: Iterable[Partition], workers: Iterable[str],
           previous: Mapping[Partition, str] | None = None) -> Assignment:
    """The next assignment of ``partitions`` to ``workers``, starting from ``previous``."""
    wanted = sorted(set(partitions))
    live = sorted(set(workers))
    if not live:
        return {}
    previous = previous or {}
    present = set(wanted)
    held: dict[str, list[Partition]] = {w: [] for w in live}
    for partition in wanted:
        owner = previous.get(partition)
        if owner in held:
            held[owner].append(partition)
    quota = shares(len(wanted), live, {w: len(ps) for w, ps in held.items()})
    result: Assignment = {}
    load = {w: 0 for w in live}
    for worker in live:
        for partition in held[worker][:quota[worker]]:  # keeps the first ones, sorted
            result[partition] = worker
            load[worker] += 1
    free = [p for p in wanted if p not in result]
    for partition in free:
        worker = min((w for w in live if load[w] < quota[w]), key=lambda w: (load[w], w))
        result[partition] = worker
        load[worker] += 1
    assert len(result) == len(present)
    return result


def moved(previous: Mapping[Partition, str], current: Mapping[Partition, str]) -> dict[Partition, tuple[str, str]]:
    """Partitions that changed worker: partition -> (from, to). New and gone ones are not moves."""
    return {p: (previous[p], w) for p, w in current.items() if p in previous and previous[p] != w}


def minimal_moves(partitions: Iterable[Partition], workers: Iterable[str],
                  previous: Mapping[Partition, str]) -> int:
    """The least number of partitions held by live workers that any balanced assignment must move.

    Computed independently of :func:`assign` (for tests and logs): with shares
    of ``q`` or ``q + 1`` (``r`` of the latter), a worker holding ``c`` keeps at
    most ``min(c, q)``, plus one for each of at most ``r`` workers with ``c > q``.
    """
    wanted = set(partitions)
    live = set(workers)
    if not live:
        return 0
    counts: dict[str, int] = {w: 0 for w in live}
    for partition, worker in previous.items():
        if partition in wanted and worker in live:
            counts[worker] += 1
    base, extra = divmod(len(wanted), len(live))
    keep = sum(min(c, base) for c in counts.values()) + min(extra, sum(1 for c in counts.values() if c > base))
    return sum(counts.values()) - keep
