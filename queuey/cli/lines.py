"""Lines of a file as batches of messages, for ``queuey post``: pure, no I/O of its own.

Each non-empty line is one message (its newline, ``\\n`` or ``\\r\\n``, is not
part of it).  A batch holds at most ``max_messages`` lines, and at most
``max_bytes`` bytes of bodies unless one line alone is longer (it then goes
alone, and the server says whether it fits).  Batches carry their line
numbers, so that an error can name the line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

#: Body bytes in one batch.  JSON may grow a body up to six times (control characters
#: become \\uXXXX), so a batch stays well under the server's 16 MiB request limit.
BATCH_BYTES = 1024 * 1024
#: The longest line read: far over any message a server takes (256 KiB by default), and bounded.
MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class Line:
    number: int  # counted from 1, as editors do
    body: str


@dataclass(frozen=True)
class Batch:
    lines: tuple[Line, ...]
    #: Bytes of input this batch's lines took (with the empty lines before them), for progress.
    consumed: int

    @property
    def first(self) -> int:
        return self.lines[0].number

    @property
    def last(self) -> int:
        return self.lines[-1].number


class NotText(ValueError):
    """A line is not UTF-8 text: a batch carries bodies as JSON strings."""

    def __init__(self, number: int) -> None:
        super().__init__(f"line {number} is not UTF-8 text (post such a body alone, as BODY or with --file "
                         f"and --whole)")
        self.number = number


class LineTooLong(ValueError):
    def __init__(self, number: int) -> None:
        super().__init__(f"line {number} is longer than {MAX_LINE_BYTES} bytes")
        self.number = number


def read_lines(fd: int, chunk: int = 64 * 1024, max_line: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """The lines of file descriptor ``fd``, each with its newline (the last maybe without), read with
    ``os.read``: no Python buffer lock is held while waiting, so a daemon thread blocked here does not
    stop the process from exiting."""
    pending = b""
    number = 0
    while True:
        data = os.read(fd, chunk)
        if not data:
            break
        pending += data
        *lines, pending = pending.split(b"\n")
        for line in lines:
            number += 1
            yield line + b"\n"
        if len(pending) > max_line:
            raise LineTooLong(number + 1)
    if pending:
        yield pending


def batches(raw_lines: Iterable[bytes], max_messages: int, max_bytes: int = BATCH_BYTES) -> Iterator[Batch]:
    """The non-empty lines of ``raw_lines`` in order, grouped in batches; a full batch is handed out at
    once, before the next line is read.  A line that is not UTF-8 raises :class:`NotText` once the
    batch before it has been handed out."""
    pending: list[Line] = []
    size = read = through = reported = 0  # body bytes pending; bytes read, up to the last line kept, handed out
    for number, raw in enumerate(raw_lines, start=1):
        read += len(raw)
        content = raw[:-1] if raw.endswith(b"\n") else raw
        if content.endswith(b"\r"):
            content = content[:-1]
        if not content:
            continue
        try:
            body = content.decode("utf-8")
        except UnicodeDecodeError:
            if pending:
                yield Batch(tuple(pending), through - reported)
            raise NotText(number) from None
        if pending and size + len(content) > max_bytes:
            yield Batch(tuple(pending), through - reported)
            pending, size, reported = [], 0, through
        pending.append(Line(number, body))
        size += len(content)
        through = read
        if len(pending) >= max_messages:  # at once: lines from a live pipe go as soon as a batch is full
            yield Batch(tuple(pending), through - reported)
            pending, size, reported = [], 0, through
    if pending:
        yield Batch(tuple(pending), through - reported)
