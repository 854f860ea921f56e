"""Property tests of TimeUUID <-> timestamp conversion and store ordering."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from queuey import timeuuid

ticks = st.integers(min_value=0, max_value=timeuuid.MAX_TICKS)
clock_seqs = st.integers(min_value=0, max_value=0x3FFF)
nodes = st.integers(min_value=0, max_value=(1 << 48) - 1)
ids = st.builds(timeuuid.make_uuid, ticks, clock_seqs, nodes)


def cassandra_order(value: uuid.UUID) -> tuple[int, bytes]:
    """Cassandra's TimeUUIDType: timestamp, then the 8 tail bytes compared as signed bytes."""
    return value.time, bytes((b + 128) % 256 for b in value.bytes[8:])


class TimeUUIDProperties(unittest.TestCase):
    @given(ticks, clock_seqs, nodes)
    def test_made_ids_are_version_1_and_keep_their_time(self, t: int, seq: int, node: int) -> None:
        value = timeuuid.make_uuid(t, seq, node)
        self.assertEqual((value.version, value.variant), (1, uuid.RFC_4122))
        self.assertEqual(timeuuid.ticks_from_uuid(value), t)
        self.assertEqual((value.clock_seq, value.node), (seq, node))
        self.assertEqual(timeuuid.parse_message_id(value.hex), value)

    @given(ticks)
    def test_timestamp_round_trip_at_100ns(self, t: int) -> None:
        text = timeuuid.format_ticks(t)
        whole, fraction = text.split(".")
        self.assertEqual(len(fraction), 7)
        self.assertEqual(timeuuid.parse_timestamp(text), t)

    @given(ticks, ticks)
    def test_timestamp_strings_order_like_ticks(self, a: int, b: int) -> None:
        sa, sb = timeuuid.format_ticks(a), timeuuid.format_ticks(b)
        self.assertEqual(a < b, (int(sa.split(".")[0]), sa.split(".")[1]) < (int(sb.split(".")[0]), sb.split(".")[1]))

    @given(ids)
    def test_sort_key_round_trip(self, value: uuid.UUID) -> None:
        self.assertEqual(timeuuid.from_sort_key(timeuuid.sort_key(value)), value)

    @given(ids, ids)
    def test_sort_key_orders_like_cassandra(self, a: uuid.UUID, b: uuid.UUID) -> None:
        self.assertEqual(timeuuid.sort_key(a) < timeuuid.sort_key(b), cassandra_order(a) < cassandra_order(b))

    @given(ids)
    def test_bounds_at_a_time_enclose_its_ids(self, value: uuid.UUID) -> None:
        t = timeuuid.ticks_from_uuid(value)
        key = timeuuid.sort_key(value)
        self.assertLessEqual(timeuuid.sort_key(timeuuid.lowest_uuid_at(t)), key)
        self.assertGreaterEqual(timeuuid.sort_key(timeuuid.highest_uuid_at(t)), key)
        if t > 0:
            self.assertLess(timeuuid.sort_key(timeuuid.highest_uuid_at(t - 1)), key)

    @given(st.lists(st.integers(min_value=0, max_value=10 ** 17), min_size=1, max_size=50))
    def test_generator_unique_and_increasing_even_if_the_clock_is_not(self, readings: list[int]) -> None:
        clock = iter(readings)
        generator = timeuuid.TimeUUIDGenerator(lambda: next(clock))
        made = [generator.next() for _ in readings]
        keys = [timeuuid.sort_key(m) for m in made]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual(timeuuid.ticks_from_uuid(made[0]), readings[0])

    @given(st.lists(st.tuples(st.integers(min_value=0, max_value=10 ** 17), st.integers(1, 5)), min_size=1,
                    max_size=20))
    def test_batches_of_ids_are_unique_increasing_and_know_their_time(self, readings: list[tuple[int, int]]) -> None:
        clock = iter(reading for reading, _ in readings)
        generator = timeuuid.TimeUUIDGenerator(lambda: next(clock))
        made = [pair for _, count in readings for pair in generator.next_many(count)]
        keys = [timeuuid.sort_key(m) for m, _ in made]
        self.assertEqual(keys, sorted(set(keys)))
        self.assertEqual([timeuuid.ticks_from_uuid(m) for m, _ in made], [ticks for _, ticks in made])
        self.assertEqual(made[0][0], timeuuid.make_uuid(readings[0][0], generator.clock_seq, generator.node))

    def test_node_is_random_and_multicast(self) -> None:
        a, b = timeuuid.TimeUUIDGenerator(lambda: 0), timeuuid.TimeUUIDGenerator(lambda: 0)
        self.assertNotEqual(a.node, b.node)
        self.assertTrue(a.node & (1 << 40))

    def test_known_timestamp(self) -> None:
        value = uuid.UUID("b41087bc-ea1e-11f1-924b-d7d408f88d52")
        self.assertEqual(timeuuid.timestamp_of(value), "1795755301.6096700")

    @given(st.text(max_size=40))
    def test_parse_timestamp_rejects_or_round_trips(self, text: str) -> None:
        try:
            t = timeuuid.parse_timestamp(text)
        except ValueError:
            return
        self.assertGreaterEqual(t, 0)
        self.assertLessEqual(t, timeuuid.MAX_TICKS)

    def test_parse_timestamp_rejects(self) -> None:
        for text in ("", ".", "-1", "1.2.3", "1e9", " 1", "１２", "1.", "99999999999999999999"):
            with self.assertRaises(ValueError, msg=text):
                timeuuid.parse_timestamp(text)

    @given(st.integers(0, 10 ** 11), st.one_of(st.none(), st.text(alphabet="0123456789", max_size=12)))
    def test_parse_timestamp_reads_decimal_seconds(self, whole: int, fraction: str | None) -> None:
        """Valid text too (st.text above almost never is): whole seconds, and up to 100 ns of fraction."""
        text = str(whole) if fraction is None else f"{whole}.{fraction}"
        expected = whole * timeuuid.TICKS_PER_SECOND + int((fraction or "0")[:7].ljust(7, "0"))
        if fraction == "":
            with self.assertRaises(ValueError):
                timeuuid.parse_timestamp(text)  # "1." is not a number
        elif expected > timeuuid.MAX_TICKS:
            with self.assertRaises(ValueError):
                timeuuid.parse_timestamp(text)
        else:
            self.assertEqual(timeuuid.parse_timestamp(text), expected)
