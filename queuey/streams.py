"""A queue as a live stream of server-sent events (``text/event-stream``); docs/api.rst has the format.

Each stream reads through a :class:`queuey.following.Follower` and writes
through an :class:`Outbox`, whose writes wait while the client's connection
is full (back-pressure).  The stream reads more when the client has taken
what it has, or when new messages arrive; so a client that stops reading
holds at most ``buffer_bytes`` of events, and past that its stream is cut
(the client resumes with ``Last-Event-ID``).  Waiting uses the long-poll
hub's public ``wait``, so streams wake as held reads do, in every process.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from queuey.core import message_json
from queuey.errors import QueueyError
from queuey.following import Delivery, Follower
from queuey.metrics import Metrics
from queuey.responses import WRITE_SIZE, ResponseWriter

log = Logger()
EVENT_STREAM = b"text/event-stream"
KEEPALIVE = b": keep-alive\n\n"
#: A stopping server waits this long at most for a stream's last chunk to be sent.
HANG_UP_SECONDS = 2.0


def wants_events(method: bytes, accept: bytes | None) -> bool:
    """True when a GET's ``Accept`` names ``text/event-stream`` (with a q above 0)."""
    if method != b"GET" or not accept:
        return False
    for media_range in accept.split(b","):
        media, _, parameters = media_range.partition(b";")
        if media.strip().lower() != EVENT_STREAM:
            continue
        for parameter in parameters.split(b";"):
            name, _, value = parameter.partition(b"=")
            if name.strip().lower() == b"q" and value.strip() in (b"0", b"0.", b"0.0", b"0.00", b"0.000"):
                return False
        return True
    return False


def event_bytes(delivery: Delivery) -> bytes:
    """One message as an event: the cursor after it as ``id``, its range-read JSON as ``data``."""
    return (b"id: " + delivery.cursor.encode("ascii") + b"\ndata: " + orjson.dumps(message_json(delivery.message))
            + b"\n\n")


@dataclass(frozen=True)
class StreamSettings:
    """``keepalive`` seconds of silence before a comment; at most ``buffer_bytes`` of events kept for a
    client; ``retry_ms`` for EventSource; reads of at most ``page_bytes`` of bodies at once."""

    keepalive: float
    buffer_bytes: int
    retry_ms: int
    page_bytes: int


class Overflow(Exception):
    """More events wait for a client than its stream may keep."""


class Outbox:
    """Events on their way to one client, written as fast as it reads them and kept meanwhile.

    :meth:`flush` runs for the stream's life, writing through a ResponseWriter
    (which waits while the connection is full).  :meth:`put` refuses to keep
    more than ``bound`` bytes once the client has fallen behind.
    """

    def __init__(self, writer: ResponseWriter, bound: int) -> None:
        self._writer = writer
        self._bound = bound
        self._pieces: list[bytes] = []
        self.size = 0
        self._more: defer.Deferred[None] | None = None
        self._drained: list[defer.Deferred[None]] = []
        self._closed = False

    def put(self, pieces: list[bytes]) -> None:
        """Queue the events of one read; Overflow when bytes were waiting already (the client has
        not taken the last read yet) and now more than ``bound`` do."""
        behind = self.size > 0
        self._pieces.extend(pieces)
        self.size += sum(len(piece) for piece in pieces)
        if behind and self.size > self._bound:
            raise Overflow(f"{self.size} bytes of events wait for the client")
        self._wake()

    def drained(self) -> defer.Deferred[None]:
        """Fires once every queued byte has been handed to the connection."""
        if not self._pieces:
            return defer.succeed(None)
        waiting: defer.Deferred[None] = defer.Deferred(lambda d: self._drained.remove(d))
        self._drained.append(waiting)
        return waiting

    def close(self) -> None:
        """Write what is queued, then let :meth:`flush` end."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        more, self._more = self._more, None
        if more is not None:
            more.callback(None)

    async def flush(self) -> None:
        """Write queued events until closed (and empty) or the client goes."""
        while True:
            if not self._pieces:
                drained, self._drained = self._drained, []
                for waiting in drained:
                    waiting.callback(None)
                if self._closed:
                    return
                self._more = defer.Deferred()
                await self._more
                continue
            count, size = 0, 0
            while count < len(self._pieces) and size < WRITE_SIZE:
                size += len(self._pieces[count])
                count += 1
            batch = b"".join(self._pieces[:count])
            del self._pieces[:count]
            self.size -= size
            if not await self._writer.write(batch):
                return


class EventStream:
    """One client's stream: headers, then events as the follower finds them, until it ends."""

    def __init__(self, request: Any, follower: Follower, settings: StreamSettings, metrics: Metrics,
                 clock: IReactorTime) -> None:
        self._request = request
        self._follower = follower
        self._settings = settings
        self._metrics = metrics
        self._clock = clock
        self._closing = False
        self._waiting: defer.Deferred[Any] | None = None

    def close(self) -> None:
        """End the stream soon (the server stops): what is queued is sent, then the last chunk."""
        self._closing = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def run(self) -> None:
        request = self._request
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        request.setHeader(b"X-Accel-Buffering", b"no")
        writer = ResponseWriter(request)
        outbox = Outbox(writer, self._settings.buffer_bytes)
        flushing = defer.ensureDeferred(outbox.flush())
        flushing.addErrback(lambda failure: failure.trap(defer.CancelledError) and None)
        outbox.put([b"retry: %d\n\n" % self._settings.retry_ms])
        try:
            await self._follow(outbox)
        except Overflow as e:
            self._metrics.streams_cut.inc()
            log.info("Cut the stream of {queue} to a client that does not keep up: {why}",
                     queue=self._follower.queue.queue_name, why=str(e))
            flushing.cancel()
            writer.close()
            request.transport.abortConnection()
            return
        except defer.CancelledError:
            if not self._closing:  # the client went away
                flushing.cancel()
                raise
        except QueueyError as e:  # the store failed: end the stream, the client comes back
            log.warn("Ended a stream of {queue}: {error}", queue=self._follower.queue.queue_name, error=str(e))
        if self._closing:  # what the client has not been handed yet, it reads after reconnecting
            flushing.cancel()
        else:
            outbox.close()
            await flushing
        writer.close()
        if writer.stopped:
            return
        request.finish()
        if self._closing:
            await self._hang_up()

    async def _hang_up(self) -> None:
        """Close the connection once the last chunk is sent (HANG_UP_SECONDS at most), so that
        a stopping server's clients see their streams end rather than a reset."""
        transport = self._request.channel.transport
        closed = self._request.channel.when_closed()
        transport.loseConnection()
        index, _ = await defer.race([closed, task.deferLater(self._clock, HANG_UP_SECONDS, lambda: None)])
        if index == 1:
            transport.abortConnection()

    async def _follow(self, outbox: Outbox) -> None:
        settings = self._settings
        while not self._closing:
            deliveries, more = await self._follower.read(settings.page_bytes)
            if deliveries:
                outbox.put([event_bytes(delivery) for delivery in deliveries])
                self._metrics.stream_events.inc(len(deliveries))
            if more:
                await self._until_taken_or_arrived(outbox)
                continue
            arrived = await self._wait(self._follower.wait(settings.keepalive))
            if not arrived and outbox.size == 0:
                outbox.put([KEEPALIVE])

    async def _until_taken_or_arrived(self, outbox: Outbox) -> None:
        """More is stored: read it once the client took what it has, or once the queue moves on."""
        while not self._closing:
            index, arrived = await self._wait(defer.race([outbox.drained(),
                                                          self._follower.wait(self._settings.keepalive)]))
            if index == 0 or arrived:
                return

    async def _wait(self, waiting: defer.Deferred[Any]) -> Any:
        self._waiting = waiting
        try:
            return await waiting
        finally:
            self._waiting = None


class Streams:
    """The open streams of one server: counted in /metrics, ended when it stops."""

    def __init__(self, metrics: Metrics) -> None:
        self._open: dict[EventStream, defer.Deferred[None]] = {}
        metrics.watch_streams(lambda: len(self._open))

    async def serve(self, stream: EventStream) -> None:
        done: defer.Deferred[None] = defer.Deferred()
        self._open[stream] = done
        try:
            await stream.run()
        finally:
            del self._open[stream]
            done.callback(None)

    def close_all(self) -> defer.Deferred[Any]:
        """End every stream; fires when they are all over (HANG_UP_SECONDS at most)."""
        ending = list(self._open.items())
        for stream, _ in ending:
            stream.close()
        return defer.DeferredList([done for _, done in ending])
