"""``qdo status``: what a group is doing, read from ZooKeeper and Queuey (no worker needs to run).

Members with their hosts and pids, the leader, the assignment in force, and
per partition its owner, its committed offset, how many messages are behind
it and how old the oldest of them is — like ``kafka-consumer-groups --describe``.
"""

from __future__ import annotations

import datetime
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from kazoo.exceptions import NoNodeError

from qdo.assign import Partition
from qdo.layout import GroupPaths, assignment_of, loads
from qdo.session import Session

# Messages behind an offset are counted by reading them: at most this many per partition.
COUNT_LIMIT = 10_000
PAGE = 1000


@dataclass
class Member:
    worker: str
    host: str | None
    pid: int | None
    started: float | None
    leader: bool = False


@dataclass
class PartitionStatus:
    partition: str
    assigned: str | None
    owner: str | None
    offset: str | None
    committed_by: str | None
    committed_at: float | None
    behind: int | None = None  # None: Queuey could not be asked
    behind_is_at_least: bool = False  # more than COUNT_LIMIT: counting stopped there
    oldest_age: float | None = None  # seconds; None when nothing is behind


@dataclass
class GroupStatus:
    group: str
    members: list[Member] = field(default_factory=list)
    leader: str | None = None
    generation: int | None = None
    partitions: list[PartitionStatus] = field(default_factory=list)
    queuey_error: str | None = None

    def as_json(self) -> bytes:
        return orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2)


async def _children(session: Session, path: str) -> list[str]:
    try:
        return sorted(await session.retry(lambda: session.zk.children(path)))
    except NoNodeError:
        return []


async def _document(session: Session, path: str) -> dict[str, Any] | None:
    try:
        value, _ = await session.retry(lambda: session.zk.get(path))
    except NoNodeError:
        return None
    return loads(value)


async def _leaves(session: Session, root: str) -> dict[Partition, dict[str, Any]]:
    """The documents under ``<root>/<app>/<queue>/<n>``."""
    found = {}
    for application in await _children(session, root):
        for queue in await _children(session, f"{root}/{application}"):
            for number in await _children(session, f"{root}/{application}/{queue}"):
                document = await _document(session, f"{root}/{application}/{queue}/{number}")
                if document is not None and number.isdigit():
                    found[Partition(application, queue, int(number))] = document
    return found


async def read_group(session: Session, paths: GroupPaths) -> tuple[GroupStatus, dict[Partition, PartitionStatus]]:
    """Everything the group keeps in ZooKeeper."""
    status = GroupStatus(paths.base)
    tokens = {}
    for name in await _children(session, paths.workers):
        document = await _document(session, paths.worker(name)) or {}
        status.members.append(Member(name, document.get("host"), document.get("pid"), document.get("started")))
        tokens[document.get("token")] = name
    election = sorted(await _children(session, paths.leader), key=lambda c: c.rsplit("_", 1)[-1])
    for node in election[:1]:
        try:
            value, _ = await session.retry(lambda: session.zk.get(paths.path("leader", node)))
            status.leader = tokens.get(value.decode("ascii", "replace"))
        except NoNodeError:
            pass
    for member in status.members:
        member.leader = member.worker == status.leader
    assignment_document = await _document(session, paths.assignment) or {}
    status.generation = assignment_document.get("generation")
    assignment = assignment_of(assignment_document)
    owners = await _leaves(session, paths.path("owners"))
    offsets = await _leaves(session, paths.path("offsets"))
    rows = {}
    for partition in sorted(set(assignment) | set(owners) | set(offsets)):
        offset = offsets.get(partition, {})
        rows[partition] = PartitionStatus(partition.name, assignment.get(partition),
                                          owners.get(partition, {}).get("worker"), offset.get("offset"),
                                          offset.get("worker"), offset.get("at"))
    status.partitions = list(rows.values())
    return status, rows


async def measure_lag(client: Any, partition: Partition, row: PartitionStatus, now: float) -> None:
    """Count the messages after the committed offset (up to COUNT_LIMIT) and the age of the first."""
    after, counted = row.offset, 0
    while counted < COUNT_LIMIT:
        page = await client.read_messages(partition.queue, partitions=[partition.number], after=after, limit=PAGE)
        if page and counted == 0:
            row.oldest_age = max(0.0, now - float(page[0]["timestamp"]))
        counted += len(page)
        if len(page) < PAGE:
            break
        after = page[-1]["message_id"]
    row.behind = min(counted, COUNT_LIMIT)
    row.behind_is_at_least = counted >= COUNT_LIMIT


async def group_status(session: Session, paths: GroupPaths, client: Any, now: float) -> GroupStatus:
    status, rows = await read_group(session, paths)
    for partition, row in rows.items():
        if partition.application != client.application:
            continue
        try:
            await measure_lag(client, partition, row, now)
        except Exception as e:
            status.queuey_error = f"{type(e).__name__}: {e}"
    return status


def _when(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows)]
    return ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [header, *rows]]


def render(status: GroupStatus) -> str:
    """The human table."""
    lines = [f"Group {status.group}: {len(status.members)} member(s), leader {status.leader or '-'}, "
             f"assignment generation {status.generation if status.generation is not None else '-'}", ""]
    lines += _table(["MEMBER", "HOST", "PID", "STARTED (UTC)", "LEADER"],
                    [[m.worker, m.host or "-", str(m.pid or "-"), _when(m.started), "yes" if m.leader else ""]
                     for m in status.members]) if status.members else ["(no members: no worker runs)"]
    lines.append("")
    rows = []
    for p in status.partitions:
        behind = "?" if p.behind is None else f"{p.behind}{'+' if p.behind_is_at_least else ''}"
        age = "-" if p.oldest_age is None else f"{p.oldest_age:.1f}s"
        rows.append([p.partition, p.assigned or "-", p.owner or "-", p.offset or "-", behind, age])
    lines += _table(["PARTITION", "ASSIGNED", "OWNER", "OFFSET", "BEHIND", "OLDEST"], rows) if rows \
        else ["(no partitions)"]
    if status.queuey_error:
        lines += ["", f"Queuey could not be asked for the messages behind: {status.queuey_error}"]
    return "\n".join(lines) + "\n"
