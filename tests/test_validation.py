"""Request validation: property tests of the pure parsers."""

from __future__ import annotations

import string
from typing import Any

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


# -- valid inputs too: what parses must parse to what was meant --------------------

def _spaced(text: str) -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(["", " "]), st.sampled_from(["", " "])).map(lambda p: p[0] + text + p[1])


#: (query value, what it means) for the parameters of a range read; None means "refused".
_read_values = {
    "limit": st.one_of(st.integers(1, 1000).map(lambda n: (str(n), n)),
                       st.sampled_from([("0", None), ("1001", None), ("x", None), ("--5", None), ("1.5", None)])),
    "wait": st.one_of(st.integers(0, 60).map(lambda n: (str(n), n)),
                      st.sampled_from([("61", None), ("-1", None), ("soon", None)])),
    "order": st.sampled_from([("ascending", False), ("descending", True), ("up", None), ("", None)]),
    "after": st.one_of(ids.map(lambda i: (i.hex, i)), ids.map(lambda i: (i.hex.upper(), i)),
                       st.sampled_from([("1234", None), ("z" * 32, None), ("0" * 32, None)])),
    "since": st.one_of(ids.map(lambda i: (i.hex, ("id", i))),
                       st.integers(0, 10 ** 17).map(lambda t: (timeuuid.format_ticks(t), ("ticks", t))),
                       st.integers(0, 10 ** 9).map(lambda s: (str(s), ("ticks", s * timeuuid.TICKS_PER_SECOND))),
                       st.sampled_from([("yesterday", None), ("-5", None), ("1e9", None)])),
}


class ValidInputProperties(unittest.TestCase):
    """Parsers given valid input as well as garbage: a parser that refuses everything fails these."""

    @given(st.integers(-10 ** 13, 10 ** 13).flatmap(lambda n: st.tuples(st.just(n), _spaced(str(n)))),
           st.integers(-5, 5), st.integers(0, 10 ** 6))
    def test_int_parser_reads_numbers(self, case: tuple[int, str], low: int, span: int) -> None:
        number, text = case
        high = low + span
        try:
            parsed = validation.parse_int(text, low, high)
        except ValueError as e:
            self.assertTrue(len(str(number)) > 12 or not low <= number <= high, text)
            self.assertTrue(str(e).startswith("Must be"), str(e))
        else:
            self.assertEqual(parsed, number)

    @given(st.from_regex(r"\A ?[-+]{0,2}[0-9]{0,14}[.x]?[0-9]? ?\Z") | st.text(max_size=14))
    def test_int_parser_refusals_are_sentences(self, text: str) -> None:
        try:
            validation.parse_int(text, 1, 100)
        except ValueError as e:
            self.assertTrue(str(e).startswith("Must be"), str(e))

    @given(st.lists(st.tuples(st.integers(1, 200), ids, st.booleans()), min_size=1, max_size=8),
           st.integers(0, 300), st.sampled_from(["", ",", ":", "x", "0", "g", " "]))
    def test_message_refs_nearly_valid(self, refs: list, at: int, inserted: str) -> None:
        """Valid id lists (upper or lower case) with one character inserted: parsed exactly, or refused."""
        text = ",".join(f"{p}:{i.hex.upper() if upper else i.hex}" for p, i, upper in refs)
        text = text[:at] + inserted + text[at:]
        try:
            parsed = validation.parse_message_refs(text)
        except InvalidParameters as e:
            self.assertEqual(list(e.errors), ["messages"])
            self.assertTrue(inserted, f"refused the valid {text!r}")
            return
        for ref in parsed:
            self.assertIn(f"{ref.id.hex}", text.lower())
        if not inserted:
            self.assertEqual([(r.partition, r.id) for r in parsed], list(dict.fromkeys((p, i) for p, i, _ in refs)))

    @given(st.fixed_dictionaries({}, optional=_read_values), st.integers(1, 200),
           st.one_of(st.none(), st.just("all"), st.lists(st.integers(0, 201), min_size=1, max_size=5)))
    def test_read_query_means_what_was_asked(self, chosen: dict, partitions: int, wanted: Any) -> None:
        params = {name: text for name, (text, _) in chosen.items()}
        refused = {name for name, (_, meaning) in chosen.items() if meaning is None}
        expected_partitions: tuple[int, ...] = (1,)
        if wanted == "all":
            params["partitions"] = "all"
            expected_partitions = tuple(range(1, partitions + 1))
        elif wanted is not None:
            params["partitions"] = ",".join(map(str, wanted))
            expected_partitions = tuple(dict.fromkeys(wanted))
            if not all(1 <= p <= partitions for p in wanted):
                refused.add("partitions")
        try:
            query = validation.parse_read_query(params, partitions)
        except InvalidParameters as e:
            self.assertEqual(set(e.errors), refused, params)
            return
        self.assertEqual(refused, set(), params)
        meaning = {name: value for name, (_, value) in chosen.items()}
        self.assertEqual(query.partitions, expected_partitions)
        self.assertEqual(query.limit, meaning.get("limit", 100))
        self.assertEqual(query.wait, meaning.get("wait", 0))
        self.assertEqual(query.descending, meaning.get("order", False))
        self.assertEqual(query.after_id, meaning.get("after"))
        kind, since = meaning.get("since", (None, None))
        self.assertEqual((query.since_id, query.since_ticks),
                         (since if kind == "id" else None, since if kind == "ticks" else None))
