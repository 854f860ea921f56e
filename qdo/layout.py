"""Where a qdo group keeps its state in ZooKeeper, and the JSON documents it keeps there.

Under ``<root>/<group>`` (root from the connection's chroot, default ``/qdo``)::

    workers/<worker-id>        ephemeral: {worker, host, pid, token, started}
    leader/n_<sequence>        ephemeral sequential, data = the worker's token: the lowest leads
    assignment                 persistent: {generation, leader, workers, assignment: {app/queue/n: worker}}
    owners/<app>/<queue>/<n>   ephemeral: {worker, token}: who reads that partition now
    offsets/<app>/<queue>/<n>  persistent: {offset: last processed id, worker, token, at}

The layout is the first edition's: workers of both editions can share a group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from qdo.assign import Partition

SECTIONS = ("workers", "leader", "owners", "offsets")


@dataclass(frozen=True)
class GroupPaths:
    base: str

    @classmethod
    def of(cls, root: str, group: str) -> "GroupPaths":
        return cls(f"{root.rstrip('/')}/{group}")

    def path(self, *parts: str) -> str:
        return "/".join((self.base,) + parts)

    @property
    def workers(self) -> str:
        return self.path("workers")

    def worker(self, name: str) -> str:
        return self.path("workers", name)

    @property
    def leader(self) -> str:
        return self.path("leader")

    @property
    def assignment(self) -> str:
        return self.path("assignment")

    def owner(self, partition: Partition) -> str:
        return self.path("owners", partition.key)

    def offset(self, partition: Partition) -> str:
        return self.path("offsets", partition.key)


def loads(value: bytes | None) -> dict[str, Any]:
    """A node's JSON object, or {} for anything else (empty, foreign, damaged)."""
    if not value:
        return {}
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    return document if isinstance(document, dict) else {}


def assignment_of(document: dict[str, Any]) -> dict[Partition, str]:
    return {Partition.from_key(k): w for k, w in document.get("assignment", {}).items()}
