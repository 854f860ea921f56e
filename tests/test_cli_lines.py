"""queuey/cli/lines.py: the lines of a file as batches of messages for ``queuey post``."""

from __future__ import annotations

import io

from hypothesis import given, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from queuey.cli.lines import NotText, batches

text_lines = st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=30),
                      max_size=60)


class BatchTests(SynchronousTestCase):

    @given(text_lines, st.integers(1, 7), st.integers(1, 80), st.sampled_from(["\n", "\r\n"]), st.booleans())
    def test_every_non_empty_line_once_in_order_within_bounds(self, lines: list[str], max_messages: int,
                                                              max_bytes: int, newline: str, last_newline: bool) -> None:
        data = (newline.join(lines) + (newline if last_newline else "")).encode()
        found = list(batches(io.BytesIO(data), max_messages, max_bytes))
        self.assertEqual([(line.number, line.body) for b in found for line in b.lines],
                         [(n, text) for n, text in enumerate(lines, start=1) if text])
        for batch in found:
            self.assertTrue(batch.lines)
            self.assertLessEqual(len(batch.lines), max_messages)
            size = sum(len(line.body.encode()) for line in batch.lines)
            self.assertTrue(size <= max_bytes or len(batch.lines) == 1, batch)
        # Progress counts every byte read, empty lines included, once.
        self.assertEqual(sum(b.consumed for b in found), len(data) if any(lines) else 0)

    def test_not_utf8_after_the_batch_before_it(self) -> None:
        found = batches(io.BytesIO(b"one\ntwo\n\xff\nthree\n"), 10)
        self.assertEqual([line.body for line in next(found).lines], ["one", "two"])
        with self.assertRaises(NotText) as caught:
            next(found)
        self.assertEqual(caught.exception.number, 3)

