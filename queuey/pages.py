"""Cutting a range read's page to its byte budget, and saying where to go on.

A pure function over what the store returned, so it can be property-tested:
messages are kept in the order of the response (partition by partition, as
requested) while their bodies fit the budget; the first one always fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from queuey.interfaces import Message


@dataclass(frozen=True)
class Page:
    """The messages of one answer; ``resume`` maps each partition that may hold more
    (cut by the budget) to the id to read on ``after``, or None when none of it came."""

    messages: list[Message]
    resume: dict[int, str | None] = field(default_factory=dict)

    @property
    def truncated(self) -> bool:
        return bool(self.resume)


def cut_page(partitions: Sequence[int], groups: Sequence[Sequence[Message]], limit: int,
             read_budget: int, budget: int) -> Page:
    """Keep ``groups`` (one per partition, as the store gave them) within ``budget`` body bytes.

    A group may have been stopped by the store at ``read_budget`` bytes; it may
    hold more when it is shorter than ``limit`` and its bodies reached that.
    """
    kept: list[Message] = []
    resume: dict[int, str | None] = {}
    total = 0
    for partition, group in zip(partitions, groups):
        group_bytes = 0
        last: str | None = None
        for message in group:
            size = len(message.body)
            if kept and total + size > budget:
                resume[partition] = last
                break
            kept.append(message)
            total += size
            group_bytes += size
            last = f"{message.id.int:032x}"
        else:
            if len(group) < limit and group_bytes >= read_budget:
                resume[partition] = last
    return Page(kept, resume)
