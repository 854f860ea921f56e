"""Reading a ``text/event-stream`` as a browser's ``EventSource`` does: pure, fed bytes as they come.

The rules are the HTML standard's: lines end in CR LF, LF or CR; a line
starting with ``:`` is a comment; ``data`` lines add up until an empty line
dispatches the event; ``id`` sets the last event id, which every later event
carries too; ``retry`` sets the reconnection delay.  A line longer than
``max_line`` bytes is an error (memory stays bounded whatever a server sends).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Bytes of one line: a Queuey event is one message as JSON, well under this.
MAX_LINE = 16 * 1024 * 1024


@dataclass(frozen=True)
class Event:
    data: str
    id: str | None = None
    type: str = "message"


class StreamError(ValueError):
    """The bytes are not an event stream this reader can follow."""


class EventParser:
    """Bytes in (:meth:`feed`), events out; ``last_event_id`` and ``retry`` as the stream set them."""

    def __init__(self, max_line: int = MAX_LINE) -> None:
        self.last_event_id: str | None = None
        self.retry: int | None = None  # milliseconds
        self.comments = 0
        self._max_line = max_line
        self._pending = b""
        self._after_cr = False
        self._data: list[str] = []
        self._type = ""

    def feed(self, chunk: bytes) -> list[Event]:
        """The events that ``chunk`` completes."""
        if not chunk:
            return []  # keeps a CR that ended the last chunk waiting for its LF
        if self._after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]  # the LF of a CR LF split between two chunks
        self._after_cr = chunk.endswith(b"\r")
        events: list[Event] = []
        text = self._pending + chunk
        lines = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._pending = lines.pop()
        if len(self._pending) > self._max_line:
            raise StreamError(f"a line of the event stream is longer than {self._max_line} bytes")
        for line in lines:
            event = self._line(line)
            if event is not None:
                events.append(event)
        return events

    def _line(self, raw: bytes) -> Event | None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise StreamError("the event stream is not UTF-8") from None
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            self.comments += 1
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "id" and "\0" not in value:
            self.last_event_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._type
        self._data, self._type = [], ""
        if not data:
            return None
        return Event("\n".join(data), self.last_event_id, kind or "message")
