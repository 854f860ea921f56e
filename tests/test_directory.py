"""The sharded directory's pure parts: shards of names, and pages merged exactly with bounded work."""

from __future__ import annotations

import bisect
import collections
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.trial.unittest import SynchronousTestCase

from queuey.storage.directory import ShardRead, first_round_size, merged_page, second_round, shard_of

NAME_CHARS = "abcXYZ019_-"
names_st = st.lists(st.text(NAME_CHARS, min_size=1, max_size=6), unique=True, max_size=300)


class Shards:
    """Names in shards, as the sorted partitions of a store would hold them, counting every read."""

    def __init__(self, names: list[str], shards: int, place: Any = None) -> None:
        place = place or (lambda name: shard_of(name, shards))
        self.shards = shards
        self.held: dict[int, list[str]] = collections.defaultdict(list)
        for name in sorted(names):
            self.held[place(name)].append(name)
        self.reads: list[ShardRead] = []
        self.first_rounds = 0
        self.rows = 0
        self.in_flight = self.most_in_flight = 0
        self.waiting: list[tuple[defer.Deferred[list[str]], list[str]]] = []

    def read_all(self, after: str, limit: int) -> defer.Deferred[dict[int, list[str]]]:
        self.first_rounds += 1
        found = {}
        for shard in range(self.shards):
            names = self.held.get(shard, [])
            start = bisect.bisect_right(names, after)
            if names[start:start + limit]:
                found[shard] = names[start:start + limit]
        self.rows += sum(map(len, found.values()))
        return defer.succeed(found)

    def read(self, request: ShardRead) -> defer.Deferred[list[str]]:
        """Answers later (see :meth:`answer_all`), so that concurrency can be observed."""
        self.reads.append(request)
        names = self.held.get(request.shard, [])
        start = bisect.bisect_right(names, request.after)
        end = len(names) if request.upto is None else bisect.bisect_right(names, request.upto)
        rows = names[start:min(end, start + request.limit)]
        self.rows += len(rows)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        d: defer.Deferred[list[str]] = defer.Deferred()
        self.waiting.append((d, rows))
        return d

    def answer_all(self) -> None:
        while self.waiting:
            d, rows = self.waiting.pop(0)
            self.in_flight -= 1
            d.callback(rows)

    def page(self, test: SynchronousTestCase, after: str | None, limit: int, concurrency: int = 32) -> list[str]:
        d = defer.ensureDeferred(merged_page(self.read_all, self.read, self.shards, after, limit, lambda n: n,
                                             concurrency))
        self.answer_all()
        return test.successResultOf(d)


def expected(names: list[str], after: str | None, limit: int) -> list[str]:
    return [n for n in sorted(names) if after is None or n > after][:limit]


class ShardOfTests(SynchronousTestCase):
    def test_stable_values(self) -> None:
        """The shard function is part of the stored format: these values must never change."""
        self.assertEqual((shard_of("a", 64), shard_of("q0000001", 64), shard_of("Queue-Name_9", 4096)),
                         (47, 7, 3499))

    def test_spread(self) -> None:
        """Names like q0000000..q0009999 fill 64 shards evenly (within 25 % of the mean)."""
        counts = collections.Counter(shard_of(f"q{i:07d}", 64) for i in range(10000))
        self.assertEqual(set(counts), set(range(64)))
        self.assertLess(max(counts.values()), 10000 / 64 * 1.25)
        self.assertGreater(min(counts.values()), 10000 / 64 * 0.75)

    def test_first_round_size(self) -> None:
        self.assertEqual(first_round_size(100, 1), 100)  # one shard: the whole page at once
        self.assertEqual(first_round_size(100, 64), 7)
        self.assertEqual(first_round_size(1000, 64), 29)
        self.assertEqual(first_round_size(1, 64), 1)


class MergedPageTests(SynchronousTestCase):

    @settings(max_examples=300, deadline=None)
    @given(names_st, st.integers(1, 70), st.one_of(st.none(), st.text(NAME_CHARS, max_size=6)),
           st.integers(1, 120))
    def test_page_is_exactly_the_next_names(self, names: list[str], shards: int, after: str | None,
                                            limit: int) -> None:
        self.assertEqual(Shards(names, shards).page(self, after, limit), expected(names, after, limit))

    @settings(max_examples=200, deadline=None)
    @given(names_st, st.integers(1, 70), st.integers(1, 40), st.data())
    def test_adversarial_placement(self, names: list[str], shards: int, limit: int, data: Any) -> None:
        """Exact whatever the placement: all in one shard, or any arbitrary one."""
        placement = data.draw(st.sampled_from(["one", "arbitrary"]))
        chosen = {n: data.draw(st.integers(0, shards - 1)) for n in names} if placement == "arbitrary" else {}
        store = Shards(names, shards, place=lambda n: chosen.get(n, 0))
        self.assertEqual(store.page(self, None, limit), expected(names, None, limit))

    @settings(max_examples=200, deadline=None)
    @given(names_st, st.integers(1, 70), st.integers(1, 120), st.data())
    def test_work_is_bounded(self, names: list[str], shards: int, limit: int, data: Any) -> None:
        """One first round, then at most one read per shard; at most the first round plus a page per shard read."""
        after = data.draw(st.one_of(st.none(), st.sampled_from(sorted(names) or ["x"])))
        store = Shards(names, shards)
        store.page(self, after, limit)
        self.assertEqual(store.first_rounds, 1)
        per_shard = collections.Counter(r.shard for r in store.reads)
        self.assertLessEqual(max(per_shard.values(), default=0), 1)
        self.assertLessEqual(store.rows, shards * first_round_size(limit, shards) + limit * len(per_shard))

    def test_pages_walk_everything_once(self) -> None:
        names = [f"q{i:05d}" for i in range(0, 5000, 3)]
        store = Shards(names, 64)
        seen: list[str] = []
        after = None
        while True:
            page = store.page(self, after, 100)
            if not page:
                break
            seen.extend(page)
            after = page[-1]
        self.assertEqual(seen, names)

    def test_typical_page_reads_little(self) -> None:
        """Uniform names: one round nearly always, about four names read per name listed."""
        names = [f"q{i:07d}" for i in range(20000)]
        store = Shards(names, 64)
        for after in (None, "q0010000", "q0019899"):
            store.page(self, after, 100)
        self.assertLess(len(store.reads), 3)
        self.assertLess(store.rows, 3 * 100 * 4.5)

    def test_concurrency_is_bounded(self) -> None:
        """The first names crowd 16 shards, all of which are read again, 8 at a time."""
        names = [f"n{i:04d}" for i in range(2000)]
        store = Shards(names, 64, place=lambda n: int(n[1:]) % 16 if int(n[1:]) < 640 else 16 + int(n[1:]) % 48)
        self.assertEqual(store.page(self, None, 400, concurrency=8), names[:400])
        self.assertEqual(len(store.reads), 16)
        self.assertEqual(store.most_in_flight, 8)

    def test_no_limit_no_reads(self) -> None:
        store = Shards(["a"], 4)
        self.assertEqual(store.page(self, None, 0), [])
        self.assertEqual(store.reads, [])

    def test_failure_of_a_shard_fails_the_page(self) -> None:
        def read_all(after: str, limit: int) -> defer.Deferred[dict[int, list[str]]]:
            return defer.succeed({shard: [f"{shard}-{i}" for i in range(limit)] for shard in range(8)})

        def read(request: ShardRead) -> defer.Deferred[list[str]]:
            return defer.fail(RuntimeError("down")) if request.shard == 3 else defer.succeed([])
        d = defer.ensureDeferred(merged_page(read_all, read, 8, None, 100, lambda n: n))
        self.assertEqual(str(self.failureResultOf(d, RuntimeError).value), "down")


class SecondRoundTests(SynchronousTestCase):
    def test_only_shards_that_may_hold_more(self) -> None:
        first = {0: ["a", "b"], 1: ["c"], 2: ["d", "z"], 3: ["e", "f"]}
        # cut-off = 4th smallest = "d"; shard 1 is short (done), shards 2 and 3 reach past "d";
        # 2 names are at or before shard 0's last, so 2 more of it could make the page.
        self.assertEqual(second_round(first, 2, 4, lambda n: n), [ShardRead(0, "b", "d", 2)])

    def test_no_cutoff_reads_on(self) -> None:
        first = {0: ["a", "b"], 1: []}
        self.assertEqual(second_round(first, 2, 10, lambda n: n), [ShardRead(0, "b", None, 8)])
