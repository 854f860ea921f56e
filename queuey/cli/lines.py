"""Lines of a file as batches of messages, for ``queuey post``: pure, no I/O of its own.

Each non-empty line is one message (its newline, ``\\n`` or ``\\r\\n``, is not
part of it).  A batch holds at most ``max_messages`` lines, and at most
``max_bytes`` bytes of bodies unless one line alone is longer (it then goes
alone, and the server says whether it fits).  Batches carry their line
numbers, so that an error can name the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

#: Body bytes in one batch.  JSON may grow a body up to six times (control characters
#: become \\uXXXX), so a batch stays well under the server's 16 MiB request limit.
BATCH_BYTES = 1024 * 1024


@dataclass(frozen=True)
class Line:
    number: int  # counted from 1, as editors do
    body: str


@dataclass(frozen=True)
class Batch:
    lines: tuple[Line, ...]
    #: Bytes of input read for this batch (its lines and the empty lines before them), for progress.
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


def batches(raw_lines: Iterable[bytes], max_messages: int, max_bytes: int = BATCH_BYTES) -> Iterator[Batch]:
    """The non-empty lines of ``raw_lines`` in order, grouped in batches.  A line that is not UTF-8
    raises :class:`NotText` once the batch before it has been handed out."""
    pending: list[Line] = []
    size = consumed = 0
    for number, raw in enumerate(raw_lines, start=1):
        consumed += len(raw)
        content = raw[:-1] if raw.endswith(b"\n") else raw
        if content.endswith(b"\r"):
            content = content[:-1]
        if not content:
            continue
        try:
            body = content.decode("utf-8")
        except UnicodeDecodeError:
            if pending:
                yield Batch(tuple(pending), consumed - len(raw))
            raise NotText(number) from None
        if pending and (len(pending) >= max_messages or size + len(content) > max_bytes):
            yield Batch(tuple(pending), consumed - len(raw))
            pending, size, consumed = [], 0, len(raw)
        pending.append(Line(number, body))
        size += len(content)
    if pending:
        yield Batch(tuple(pending), consumed)
