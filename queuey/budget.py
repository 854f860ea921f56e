"""A count of bytes held at once, shared by many holders, that never goes past its bound."""

from __future__ import annotations


class ByteBudget:
    """Bytes handed out against a fixed ``limit``; a taking that does not fit is refused."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, count: int) -> bool:
        """Hold ``count`` more bytes if they fit; False (and nothing held) if not."""
        if self.held + count > self.limit:
            return False
        self.held += count
        return True

    def give_back(self, count: int) -> None:
        self.held -= count
