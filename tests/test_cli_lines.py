"""queuey/cli/lines.py: the lines of a file as batches of messages for ``queuey post``."""

from __future__ import annotations

import io
import os
from typing import Iterator

from hypothesis import HealthCheck, given, settings, strategies as st
from twisted.trial.unittest import SynchronousTestCase

from queuey.cli.lines import LineTooLong, NotText, batches, read_lines

#: Lines of ASCII, multi-byte characters, tabs and NULs: fast to draw, and what the byte counts must get right.
text_lines = st.lists(st.text(st.sampled_from("ab é€😀\t\x00"), max_size=30), max_size=60)


class BatchTests(SynchronousTestCase):

    @settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
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
        # Progress counts every byte up to the end of the last message's line, once.
        last = max([n for n, text in enumerate(lines) if text], default=-1)
        through_last = sum(len(text.encode()) + len(newline) for text in lines[:last + 1])
        self.assertEqual(sum(b.consumed for b in found), min(through_last, len(data)))

    def test_a_full_batch_goes_before_the_next_line_is_read(self) -> None:
        def lines() -> Iterator[bytes]:
            yield b"one\n"
            yield b"two\n"
            raise AssertionError("read a line too many")
        self.assertEqual([line.body for line in next(batches(lines(), 2)).lines], ["one", "two"])

    def test_read_lines_from_a_file_descriptor(self) -> None:
        read, write = os.pipe()
        os.write(write, b"a\n\nlong " + b"x" * 100 + b"\nno newline")
        os.close(write)
        self.assertEqual(list(read_lines(read, chunk=7)), [b"a\n", b"\n", b"long " + b"x" * 100 + b"\n", b"no newline"])
        os.close(read)
        read, write = os.pipe()
        os.write(write, b"ok\n" + b"y" * 50)
        os.close(write)
        lines = read_lines(read, chunk=8, max_line=20)
        self.assertEqual(next(lines), b"ok\n")
        with self.assertRaises(LineTooLong) as caught:
            next(lines)
        self.assertEqual(caught.exception.number, 2)
        os.close(read)

    def test_not_utf8_after_the_batch_before_it(self) -> None:
        found = batches(io.BytesIO(b"one\ntwo\n\xff\nthree\n"), 10)
        self.assertEqual([line.body for line in next(found).lines], ["one", "two"])
        with self.assertRaises(NotText) as caught:
            next(found)
        self.assertEqual(caught.exception.number, 3)

