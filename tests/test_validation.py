"""Request validation: property tests of the pure parsers."""

from __future__ import annotations

import string

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from queuey import timeuuid, validation
from queuey.errors import InvalidParameters

names = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=1, max_size=50)
ids = st.builds(timeuuid.make_uuid, st.integers(0, timeuuid.MAX_TICKS), st.integers(0, 0x3FFF),
                st.integers(0, (1 << 48) - 1))


class ValidationProperties(unittest.TestCase):
    @given(names)
    def test_valid_names(self, name: str) -> None:
        self.assertTrue(validation.is_valid_name(name))

    @given(st.text(min_size=51) | st.text(alphabet=" /.:%?#é", min_size=1) | st.just(""))
    def test_invalid_names(self, name: str) -> None:
        self.assertFalse(validation.is_valid_name(name))

    @given(st.integers(-10 ** 6, 10 ** 6), st.integers(1, 500))
    def test_partition_in_range_or_error(self, value: int, partitions: int) -> None:
        try:
            parsed = validation.parse_partition(str(value), partitions)
        except ValueError as e:
            self.assertFalse(1 <= value <= partitions)
            self.assertIn(str(partitions), str(e))
        else:
            self.assertEqual(parsed, value)

    @given(st.text(max_size=20))
    def test_int_parser_never_crashes(self, text: str) -> None:
        try:
            value = validation.parse_int(text, 1, 100)
        except ValueError:
            return
        self.assertTrue(1 <= value <= 100)

    @given(st.lists(st.tuples(st.integers(1, 200), ids), min_size=1, max_size=20), st.booleans())
    def test_message_refs_round_trip(self, refs: list, prefix_one: bool) -> None:
        text = ",".join(f"{p}:{i.hex}" if p != 1 or prefix_one else i.hex for p, i in refs)
        parsed = validation.parse_message_refs(text)
        self.assertEqual([(r.partition, r.id) for r in parsed], list(dict.fromkeys(refs)))

    @given(st.text(max_size=80))
    def test_message_refs_reject_cleanly(self, text: str) -> None:
        try:
            validation.parse_message_refs(text)
        except InvalidParameters as e:
            self.assertEqual(list(e.errors), ["messages"])

    @given(st.dictionaries(st.sampled_from(["partitions", "since", "after", "limit", "order", "wait"]),
                           st.text(max_size=40)), st.integers(1, 200))
    def test_read_query_all_or_named_errors(self, params: dict, partitions: int) -> None:
        try:
            query = validation.parse_read_query(params, partitions)
        except InvalidParameters as e:
            self.assertTrue(set(e.errors) <= set(params))
            self.assertTrue(e.errors)
        else:
            self.assertTrue(all(1 <= p <= partitions for p in query.partitions))
            self.assertTrue(1 <= query.limit <= 1000 and 0 <= query.wait <= 60)

    @given(st.lists(st.fixed_dictionaries({"body": st.text(min_size=1, max_size=10)},
                                          optional={"ttl": st.integers(-5, 2 ** 26),
                                                    "partition": st.integers(-2, 5)}), min_size=1, max_size=30))
    def test_batch_valid_whole_or_rejected_with_indexed_keys(self, entries: list) -> None:
        try:
            checked = validation.parse_batch({"messages": entries}, partitions=3)
        except InvalidParameters as e:
            for key in e.errors:
                index, _, field = key.partition(".")
                self.assertIn(field, ("ttl", "partition"))
                bad = entries[int(index)][field]
                self.assertFalse(1 <= bad <= (3 if field == "partition" else 2 ** 25))
        else:
            self.assertEqual(len(checked), len(entries))
            for entry, message in zip(entries, checked):
                self.assertEqual(message.body, entry["body"].encode())
                self.assertEqual(message.ttl, entry.get("ttl", validation.DEFAULT_TTL))
                self.assertEqual(message.partition, entry.get("partition"))

    def test_principles(self) -> None:
        self.assertEqual(validation.parse_principles("app:a, app:b,,app:a"), ("app:a", "app:b"))
        self.assertEqual(validation.parse_principles(["app:a"]), ("app:a",))
        for bad in ("a", "app:", "user:x", "app:a b", 5):
            with self.assertRaises(ValueError):
                validation.parse_principles(bad)

    def test_booleans(self) -> None:
        self.assertTrue(validation.parse_bool("TRUE"))
        self.assertFalse(validation.parse_bool("0"))
        with self.assertRaises(ValueError):
            validation.parse_bool("perhaps")
