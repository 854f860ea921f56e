"""How many connections one server serves at once, and what happens past that."""

from __future__ import annotations

import enum
from typing import Any


class Verdict(enum.Enum):
    SERVE = "serve"
    REFUSE = "refuse"  # answer 503, then close


#: File descriptors kept free of connections: the store's files, logs, listening sockets,
#: and the connections one accept round of the reactor may take past the refusing cap.
RESERVED_FILES = 128


def refusing_cap_for(cap: int) -> int:
    """How many connections past ``cap`` may be getting their 503 at once."""
    return min(256, max(16, cap // 8))


def connection_cap(configured: int, file_limit: int) -> int:
    """``configured``, lowered so that the served connections, those being refused and
    RESERVED_FILES fit under the process's open-file limit."""
    room = file_limit - RESERVED_FILES
    cap = room - 256 if room >= 9 * 256 else min(room * 8 // 9, room - 16)
    return max(1, min(configured, cap))


class ConnectionCap:
    """Open connections against a cap.  Past it a connection is answered 503; while
    ``refusing_cap`` such answers are under way, the listening ports stop accepting
    (new connections wait in the kernel's backlog) until half of them are done."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.refusing_cap = refusing_cap_for(cap)
        self.open = 0
        self.refusing = 0
        self._ports: list[Any] = []
        self._paused = False

    def watch(self, port: Any) -> None:
        """Pause and resume accepting on ``port`` (a listening port with stop/startReading)."""
        if hasattr(port, "stopReading") and hasattr(port, "startReading"):
            self._ports.append(port)

    def arrive(self) -> Verdict:
        if self.open < self.cap:
            self.open += 1
            return Verdict.SERVE
        self.refusing += 1
        if self.refusing >= self.refusing_cap and not self._paused:
            self._paused = True
            for port in self._ports:
                port.stopReading()
        return Verdict.REFUSE

    def leave(self, verdict: Verdict) -> None:
        if verdict is Verdict.SERVE:
            self.open -= 1
            return
        self.refusing -= 1
        if self._paused and self.refusing <= self.refusing_cap // 2:
            self._paused = False
            for port in self._ports:
                port.startReading()
