"""Sending a whole response at once: straight to the socket when nothing waits before it.

Twisted's TCP transport keeps every write until the reactor's next turn and
sends it when the socket is writable: two epoll changes and a turn per
answer.  When one post wakes thousands of held reads, their answers go out in
one pass; sent at once, the first client has its answer while the last one's
is made, and each answer costs one ``send``.  Whatever the socket does not
take (or any connection that is not plain TCP, or has bytes queued) goes
through the transport as usual, so order and back-pressure hold.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from twisted.internet import tcp


def sendable_now(transport: Any) -> bool:
    """True when ``transport`` is a plain TCP connection that has nothing queued to send."""
    return (type(transport) is tcp.Server and transport.connected and not transport.disconnecting
            and not getattr(transport, "_writeDisconnected", True)
            and not transport.dataBuffer and not getattr(transport, "_tempDataLen", True))


def send_now(transport: Any, data: bytes) -> None:
    """Write ``data`` on ``transport``, handing the kernel at once what it takes."""
    sent = 0
    if sendable_now(transport):
        try:
            sent = transport.getHandle().send(data)
        except OSError:  # full (would block), interrupted, or broken: the transport finds out
            sent = 0
    if sent < len(data):
        transport.write(data[sent:] if sent else data)


class WholeResponses:
    """The whole responses (head and body) of one body, the last one kept: the requests one
    wake-up answers have equal heads, so theirs is made once."""

    def __init__(self, body: bytes, content_type: bytes) -> None:
        self.body = body
        self.content_type = content_type
        self._key: tuple[Any, ...] | None = None
        self._whole = b""

    def whole(self, version: bytes, code: int, reason: bytes,
              headers: Iterable[tuple[bytes, Sequence[bytes]]]) -> bytes:
        """The response: status line, ``headers``, Content-Type and Content-Length, body."""
        fields = [(name, tuple(values)) for name, values in headers]
        key = (version, code, reason, fields)
        if key != self._key:
            parts = [version, b" %d " % code, reason]
            for name, values in fields:
                for value in values:
                    parts += (b"\r\n", name, b": ", value)
            parts += (b"\r\nContent-Type: ", self.content_type,
                      b"\r\nContent-Length: %d\r\n\r\n" % len(self.body), self.body)
            self._key, self._whole = key, b"".join(parts)
        return self._whole
