"""The pure assignment function: complete, balanced, deterministic, minimal movement."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from qdo.assign import Partition, assign, minimal_moves, moved, shares

WORKERS = [f"w{i}" for i in range(12)]


def parts(n: int, queue: str = "q", app: str = "a") -> list[Partition]:
    return [Partition(app, queue, i) for i in range(1, n + 1)]


partitions_st = st.lists(
    st.builds(Partition, st.sampled_from(["a", "b"]), st.sampled_from(["q", "jobs", "x-1"]),
              st.integers(1, 30)), unique=True, max_size=60)
workers_st = st.lists(st.sampled_from(WORKERS), unique=True, max_size=10)


@st.composite
def scenarios(draw):
    """Partitions, workers, and a previous assignment over an older partition and worker set."""
    partitions = draw(partitions_st)
    workers = draw(workers_st)
    old_partitions = draw(st.lists(st.sampled_from(partitions), unique=True)) if partitions else []
    old_partitions += draw(partitions_st)  # some gone since
    old_workers = draw(st.lists(st.sampled_from(WORKERS), min_size=1, unique=True))
    how = draw(st.sampled_from(["assigned", "arbitrary"]))
    if how == "assigned":
        previous = assign(old_partitions, old_workers)
    else:
        previous = {p: draw(st.sampled_from(old_workers)) for p in old_partitions}
    return partitions, workers, previous


class AssignProperties(SynchronousTestCase):

    @settings(max_examples=400, deadline=None)
    @given(scenarios())
    def test_complete_and_only_live_workers(self, scenario):
        partitions, workers, previous = scenario
        result = assign(partitions, workers, previous)
        if not workers:
            self.assertEqual(result, {})
            return
        self.assertEqual(set(result), set(partitions))
        self.assertLessEqual(set(result.values()), set(workers))

    @settings(max_examples=400, deadline=None)
    @given(scenarios())
    def test_balanced_within_one(self, scenario):
        partitions, workers, previous = scenario
        result = assign(partitions, workers, previous)
        counts = [sum(1 for w in result.values() if w == worker) for worker in workers]
        if counts:
            self.assertLessEqual(max(counts) - min(counts), 1)

    @settings(max_examples=300, deadline=None)
    @given(scenarios(), st.randoms(use_true_random=False))
    def test_deterministic_whatever_the_order(self, scenario, rng):
        partitions, workers, previous = scenario
        shuffled_p, shuffled_w = list(partitions), list(workers)
        rng.shuffle(shuffled_p)
        rng.shuffle(shuffled_w)
        items = list(previous.items())
        rng.shuffle(items)
        self.assertEqual(assign(partitions, workers, previous), assign(shuffled_p, shuffled_w, dict(items)))

    @settings(max_examples=400, deadline=None)
    @given(scenarios())
    def test_moves_are_minimal(self, scenario):
        partitions, workers, previous = scenario
        result = assign(partitions, workers, previous)
        # Only partitions whose old worker is still live count as moves: the
        # others have to go somewhere anyway.
        live = set(workers)
        moves = {p for p, (old, new) in moved(previous, result).items() if old in live}
        self.assertEqual(len(moves), minimal_moves(partitions, workers, previous))

    @settings(max_examples=200, deadline=None)
    @given(scenarios())
    def test_stable_when_nothing_changes(self, scenario):
        partitions, workers, previous = scenario
        result = assign(partitions, workers, previous)
        self.assertEqual(assign(partitions, workers, result), result)

    @settings(max_examples=200, deadline=None)
    @given(partitions_st, st.lists(st.sampled_from(WORKERS), min_size=1, unique=True), st.data())
    def test_new_partitions_move_nothing_that_was_balanced(self, partitions, workers, data):
        """Partitions appear (rule 5): as long as the old shares stay within the
        new quota, no old partition moves."""
        before = assign(partitions, workers)
        extra = data.draw(partitions_st)
        after = assign(partitions + extra, workers, before)
        self.assertEqual(len(moved(before, after)), minimal_moves(partitions + extra, workers, before))
        new = set(extra) - set(partitions)
        if len(new) % len(workers) == 0:  # every share grows by the same amount: nothing moves
            self.assertEqual({p: after[p] for p in partitions}, before)


class AssignExamples(SynchronousTestCase):

    def test_three_to_four_workers_moves_three_of_twelve(self):
        twelve = parts(12)
        before = assign(twelve, ["a", "b", "c"])
        self.assertEqual(sorted(list(before.values()).count(w) for w in "abc"), [4, 4, 4])
        after = assign(twelve, ["a", "b", "c", "d"], before)
        changes = moved(before, after)
        self.assertEqual(len(changes), 3)
        self.assertEqual({new for _, new in changes.values()}, {"d"})
        self.assertEqual(sorted(list(after.values()).count(w) for w in "abcd"), [3, 3, 3, 3])

    def test_four_to_three_workers_moves_only_the_leavers(self):
        twelve = parts(12)
        before = assign(twelve, ["a", "b", "c", "d"])
        after = assign(twelve, ["a", "b", "c"], before)
        self.assertEqual({p for p, w in before.items() if w == "d"}, {p for p in twelve if before[p] != after[p]})

    def test_interleaves_queues_at_first(self):
        result = assign(parts(4, "x") + parts(4, "y"), ["a", "b"])
        self.assertEqual([result[p] for p in parts(4, "x")], ["a", "b", "a", "b"])

    def test_no_workers(self):
        self.assertEqual(assign(parts(3), []), {})

    def test_shares(self):
        self.assertEqual(shares(10, ["a", "b", "c"], {"c": 5}), {"c": 4, "a": 3, "b": 3})

    def test_partition_names(self):
        p = Partition.from_name("app", "my-queue-12")
        self.assertEqual((p.queue, p.number, p.key, p.name), ("my-queue", 12, "app/my-queue/12", "my-queue-12"))
        self.assertEqual(Partition.from_key(p.key), p)
        for bad in ("queue", "-1", "q-0", "q-x"):
            self.assertRaises(ValueError, Partition.from_name, "app", bad)

    def test_random_churn_stays_balanced(self):
        rng = random.Random(4)
        current: dict = {}
        for _ in range(200):
            workers = rng.sample(WORKERS, rng.randint(1, 8))
            partitions = parts(rng.randint(0, 40))
            current = assign(partitions, workers, current)
            counts = [list(current.values()).count(w) for w in workers]
            self.assertLessEqual(max(counts) - min(counts), 1)
