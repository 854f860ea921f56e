"""Queuey in memory: the whole HTTP app, a real SQLite store, no sockets, no threads.

Like ``treq.testing.StubTreq``, which it uses: requests go through Queuey's
own site and channel (head checks, limits) and routes; storage runs inline on
an in-memory database; time is a ``task.Clock`` you advance::

    memory = MemoryQueuey()
    response = yield memory.treq.get(memory.url("/__heartbeat__"))
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock

from queuey.app import QueueyApp
from queuey.config import Config
from queuey.core import Queuey
from queuey.storage.sqlite import SQLiteStore

DEFAULT_KEYS = {"queuey": ("queuey-key",), "other": ("other-key", "other-key-2")}


class MemoryQueuey:
    """A complete Queuey app for tests; ``treq`` talks to it, ``clock`` is its time."""

    base = "http://queuey.test"

    def __init__(self, config: Config | None = None, clock: Clock | None = None,
                 store: Any = None, start: float = 1_700_000_000.0) -> None:
        self.clock = clock or Clock()
        if clock is None:
            self.clock.advance(start)
        self.config = config or Config(application_keys=DEFAULT_KEYS)
        self.store = store or SQLiteStore.in_memory(self.clock)
        self.opened = self.store.open()
        self.core = Queuey(self.config, self.store, self.clock)
        self.app = QueueyApp(self.core)
        self.site = self.app.site(self.clock)
        self.treq = StubTreq(self.app.resource())
        self.treq._agent._serverFactory = self.site  # serve through Queuey's site, not a plain one

    def url(self, path: str) -> str:
        return self.base + path

    def auth(self, app: str = "queuey") -> dict[str, str]:
        """Headers that authenticate as ``app`` with its first configured key."""
        return {"Authorization": f"Application {self.config.application_keys[app][0]}"}

    def advance(self, seconds: float) -> None:
        """Move time on and deliver whatever responses that produced."""
        self.clock.advance(seconds)
        self.treq.flush()

    def close(self) -> None:
        self.store.close()
