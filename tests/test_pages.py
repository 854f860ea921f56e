"""cut_page keeps a page within its byte budget and says exactly where each partition goes on."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from queuey import timeuuid
from queuey.pages import cut_page
from queuey.rendering import EncodedList, Rendered, message_document, message_id_of, parse_rendered, render
from queuey.responses import json_pieces

sizes = st.lists(st.integers(1, 50), max_size=8)


def messages(partition: int, body_sizes: list[int]) -> list[Rendered]:
    return [Rendered(size, render(timeuuid.make_uuid(1_700_000_000 * timeuuid.TICKS_PER_SECOND + i, partition, 1),
                                  partition, b"x" * size, "text/plain")) for i, size in enumerate(body_sizes)]


def partition_of(row: Rendered) -> int:
    return parse_rendered(row.json).partition


class CutPageProperties(unittest.TestCase):
    @given(st.lists(sizes, min_size=1, max_size=5), st.integers(1, 8), st.integers(1, 120), st.integers(1, 120))
    def test_budget_and_resume(self, groups_sizes: list[list[int]], limit: int, read_budget: int,
                               budget: int) -> None:
        partitions = list(range(1, len(groups_sizes) + 1))
        groups = [messages(p, s[:limit]) for p, s in zip(partitions, groups_sizes)]
        page = cut_page(partitions, groups, limit, read_budget, budget)
        total = sum(m.size for m in page.messages)
        self.assertTrue(total <= budget or len(page.messages) == 1)
        for partition, group in zip(partitions, groups):
            kept = [m for m in page.messages if partition_of(m) == partition]
            self.assertEqual(kept, group[:len(kept)])  # a prefix of what the store gave, in order
            group_bytes = sum(m.size for m in group)
            may_hold_more = len(kept) < len(group) or (len(group) < limit and group_bytes >= read_budget)
            self.assertEqual(partition in page.resume, may_hold_more)
            if partition in page.resume:
                self.assertEqual(page.resume[partition],
                                 f"{parse_rendered(kept[-1].json).id.int:032x}" if kept else None)
        order = [partition_of(m) for m in page.messages]
        self.assertEqual(order, sorted(order))  # grouped by partition, in the order asked
        encoded = b"[" + b"".join(page.encoded().pieces) + b"]"
        self.assertEqual(orjson.loads(encoded), [orjson.loads(m.json) for m in page.messages])

    @given(st.lists(st.dictionaries(st.text(max_size=5), st.integers(-2 ** 63, 2 ** 63 - 1) | st.text(max_size=5), max_size=3),
                    max_size=5), st.booleans())
    def test_json_pieces_are_the_document(self, entries: list, truncated: bool) -> None:
        document = {"status": "ok", "messages": entries, **({"truncated": True} if truncated else {})}
        pieces, length = json_pieces(document, "messages")
        self.assertEqual(b"".join(pieces), orjson.dumps(document))
        self.assertEqual(length, len(orjson.dumps(document)))


class RenderingTests(unittest.TestCase):
    @given(st.binary(min_size=1, max_size=64) | st.text(min_size=1).map(str.encode), st.integers(1, 200),
           st.sampled_from(["text/plain", "a/b; x=\"1\""]))
    def test_rendered_message_round_trips_and_names_its_id_first(self, body: bytes, partition: int,
                                                                content_type: str) -> None:
        message_id = timeuuid.make_uuid(1_700_000_000 * timeuuid.TICKS_PER_SECOND, 7, 5)
        rendered = render(message_id, partition, body, content_type)
        self.assertEqual(rendered, orjson.dumps(message_document(message_id, partition, body, content_type)))
        self.assertEqual(message_id_of(rendered), message_id.hex)
        message = parse_rendered(rendered)
        self.assertEqual((message.id, message.partition, message.body, message.content_type),
                         (message_id, partition, body, content_type))
        self.assertEqual(list(orjson.loads(rendered))[:4], ["message_id", "timestamp", "partition", "content_type"])

    def test_encoded_list_in_a_document(self) -> None:
        rows = messages(1, [3, 4])
        document = {"status": "ok", "messages": EncodedList(rows), "truncated": True}
        pieces, length = json_pieces(document, "messages")
        expected = orjson.dumps({"status": "ok", "messages": [orjson.loads(r.json) for r in rows], "truncated": True})
        self.assertEqual(b"".join(pieces), expected)
        self.assertEqual(length, len(expected))
