"""The checks run on qdo's job journals (tests/qdo_journal.py), on journals written by hand."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.qdo_journal import done_ids, order_violations, overlaps, read_journals


class JournalCheckTests(SynchronousTestCase):

    def write(self, text: str) -> str:
        path = self.mktemp()
        with open(path, "w") as handle:
            handle.write(text)
        return path

    def test_pairs_and_overlaps(self) -> None:
        a = self.write("S q-1 m1 a 1.0\nE q-1 m1 a 2.0\nS q-1 m2 a 5.0\n")
        b = self.write("S q-1 m2 b 3.0\nE q-1 m2 b 4.0\nS q-1 m3 b 4.5\nE q-1 m3 b 4.6\nS q-2 m9 b 1.5\nE q-2 m9 b")
        runs = read_journals([a, b])
        self.assertEqual(done_ids(runs), {"m1", "m2", "m3"})
        self.assertEqual(overlaps(runs, {"a": 5.5}), [])
        self.assertEqual(len(overlaps(runs)), 0)  # a's m2 started after b's last end
        c = self.write("S q-1 m4 c 1.5\nE q-1 m4 c 1.6\n")
        found = overlaps(read_journals([a, b, c]))
        self.assertEqual([(x.worker, y.worker) for x, y in found], [("a", "c")])

    def test_order(self) -> None:
        runs = read_journals([self.write("S q-1 02 a 1\nE q-1 02 a 2\nS q-1 01 a 3\nE q-1 01 a 4\n")])
        self.assertEqual(len(order_violations(runs, key=lambda m: m)), 1)
