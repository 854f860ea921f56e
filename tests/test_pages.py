"""cut_page keeps a page within its byte budget and says exactly where each partition goes on."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from queuey import timeuuid
from queuey.interfaces import Message
from queuey.pages import cut_page
from queuey.responses import json_pieces

sizes = st.lists(st.integers(1, 50), max_size=8)


def messages(partition: int, body_sizes: list[int]) -> list[Message]:
    return [Message(timeuuid.make_uuid(1_700_000_000 * timeuuid.TICKS_PER_SECOND + i, partition, 1), partition,
                    b"x" * size, "text/plain") for i, size in enumerate(body_sizes)]


class CutPageProperties(unittest.TestCase):
    @given(st.lists(sizes, min_size=1, max_size=5), st.integers(1, 8), st.integers(1, 120), st.integers(1, 120))
    def test_budget_and_resume(self, groups_sizes: list[list[int]], limit: int, read_budget: int,
                               budget: int) -> None:
        partitions = list(range(1, len(groups_sizes) + 1))
        groups = [messages(p, s[:limit]) for p, s in zip(partitions, groups_sizes)]
        page = cut_page(partitions, groups, limit, read_budget, budget)
        total = sum(len(m.body) for m in page.messages)
        self.assertTrue(total <= budget or len(page.messages) == 1)
        for partition, group in zip(partitions, groups):
            kept = [m for m in page.messages if m.partition == partition]
            self.assertEqual(kept, group[:len(kept)])  # a prefix of what the store gave, in order
            group_bytes = sum(len(m.body) for m in group)
            may_hold_more = len(kept) < len(group) or (len(group) < limit and group_bytes >= read_budget)
            self.assertEqual(partition in page.resume, may_hold_more)
            if partition in page.resume:
                self.assertEqual(page.resume[partition], f"{kept[-1].id.int:032x}" if kept else None)
        order = [m.partition for m in page.messages]
        self.assertEqual(order, sorted(order))  # grouped by partition, in the order asked

    @given(st.lists(st.dictionaries(st.text(max_size=5), st.integers(-2 ** 63, 2 ** 63 - 1) | st.text(max_size=5), max_size=3),
                    max_size=5), st.booleans())
    def test_json_pieces_are_the_document(self, entries: list, truncated: bool) -> None:
        document = {"status": "ok", "messages": entries, **({"truncated": True} if truncated else {})}
        pieces, length = json_pieces(document, "messages")
        self.assertEqual(b"".join(pieces), orjson.dumps(document))
        self.assertEqual(length, len(orjson.dumps(document)))
