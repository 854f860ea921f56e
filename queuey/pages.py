"""Cutting a range read's page to its byte budget, and saying where to go on.

A pure function over what the store returned, so it can be property-tested:
messages are kept in the order of the response (partition by partition, as
requested) while their bodies fit the budget; the first one always fits.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Sequence

from queuey.rendering import EncodedList, Rendered, message_id_of

_size = operator.itemgetter(0)


@dataclass
class Page:
    """The messages of one answer, rendered; ``resume`` maps each partition that may hold more
    (cut by the budget) to the id to read on ``after``, or None when none of it came."""

    messages: list[Rendered]
    resume: dict[int, str | None] = field(default_factory=dict)
    _encoded: EncodedList | None = None

    @property
    def truncated(self) -> bool:
        return bool(self.resume)

    def encoded(self) -> EncodedList:
        """The messages as one encoded JSON array, made once however many answers share the page."""
        if self._encoded is None:
            self._encoded = EncodedList(self.messages)
        return self._encoded


def cut_page(partitions: Sequence[int], groups: Sequence[Sequence[Rendered]], limit: int,
             read_budget: int, budget: int) -> Page:
    """Keep ``groups`` (one per partition, as the store gave them) within ``budget`` body bytes.

    A group may have been stopped by the store at ``read_budget`` bytes; it may
    hold more when it is shorter than ``limit`` and its bodies reached that.
    """
    if len(groups) == 1:  # the usual read: one partition, within its budget as the store cut it
        group = groups[0]
        group_bytes = sum(map(_size, group))
        if group_bytes <= budget:
            resume: dict[int, str | None] = {}
            if len(group) < limit and group and group_bytes >= read_budget:
                resume[partitions[0]] = message_id_of(group[-1][1])
            return Page(list(group), resume)
    kept: list[Rendered] = []
    resume = {}
    total = 0
    for partition, group in zip(partitions, groups):
        group_bytes = 0
        last: str | None = None
        for row in group:
            size = row[0]
            if kept and total + size > budget:
                resume[partition] = last
                break
            kept.append(row)
            total += size
            group_bytes += size
            last = message_id_of(row[1])
        else:
            if len(group) < limit and group_bytes >= read_budget:
                resume[partition] = last
    return Page(kept, resume)
