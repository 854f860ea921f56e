"""``queuey tail``: follow a queue's event stream, reconnecting where it stopped, as EventSource does."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click
import orjson
from twisted.internet import task
from twisted.internet.error import ConnectionDone, ConnectionLost

from queuey.cli import output
from queuey.cli.completion import complete_queue
from queuey.cli.running import CommandFailed, Connection, ExitCode, client_options, run_client
from queuey.sse import EventParser, StreamError

if TYPE_CHECKING:
    from queuey.client import QueueyClient

#: Milliseconds before reconnecting when the server named no ``retry`` (EventSource's usual wait).
DEFAULT_RETRY_MS = 2000


class Enough(Exception):
    """``--count`` messages have come: stop reading."""


class Follower:
    """Reads a queue's stream, prints each message, and reconnects with the last cursor when it ends."""

    def __init__(self, conn: Connection, queue: str, partitions: str, since: str | None, after: str | None,
                 cursor: str | None, count: int | None) -> None:
        self.conn = conn
        self.queue = queue
        self.partitions = partitions
        self.since = since
        self.after = after
        self.cursor = cursor  # the last event's id: where a new connection resumes
        self.count = count
        self.received = 0

    async def run(self, client: QueueyClient, reactor: Any) -> None:
        """Until ``count`` messages came.  The first connection gets ``--retries`` tries; once a stream
        was open, reconnecting goes on as long as it takes (a server restart), as EventSource does."""
        import treq
        from twisted.web.client import ResponseDone, ResponseFailed

        from queuey.client import ConnectionFailed, ServiceUnavailable
        failures = 0
        followed = False
        retry_ms = DEFAULT_RETRY_MS
        while True:
            try:
                response = await client.open_stream(self.queue, partitions=self.partitions, since=self.since,
                                                    after=self.after, last_event_id=self.cursor)
            except (ConnectionFailed, ServiceUnavailable) as e:
                failures += 1
                if not followed and failures > self.conn.retries:
                    raise
                if followed and (failures in (1, 10) or failures % 100 == 0):
                    output.note(f"no stream yet ({e}); trying again every {retry_ms / 1000:g}s")
            else:
                failures, followed = 0, True
                parser = EventParser()
                try:
                    await treq.collect(response, lambda chunk: self._received(parser, chunk))
                except Enough:
                    return
                except (StreamError, orjson.JSONDecodeError) as e:
                    raise CommandFailed(f"not a stream of Queuey messages: {e}", ExitCode.FAILED) from None
                except (ResponseFailed, ResponseDone, ConnectionLost, ConnectionDone):
                    pass  # the stream was cut: resume it
                retry_ms = parser.retry if parser.retry is not None else retry_ms
                output.note(f"stream ended; reconnecting in {retry_ms / 1000:g}s"
                            + (f" after {self.cursor}" if self.cursor else ""))
            await task.deferLater(reactor, retry_ms / 1000, lambda: None)

    def _received(self, parser: EventParser, chunk: bytes) -> None:
        for event in parser.feed(chunk):
            message = orjson.loads(event.data)
            self.cursor = event.id or self.cursor
            self.received += 1
            if self.conn.json:
                output.emit_json({**message, "cursor": event.id})
            else:
                click.echo(output.message_line(message))
            if self.count is not None and self.received >= self.count:
                raise Enough()


@click.command()
@click.argument("queue", shell_complete=complete_queue)
@click.option("--partitions", "-p", default="1", show_default=True,
              help="One partition number, a comma list, or 'all'.")
@click.option("--since", help="Start at this time (seconds since the epoch) or message id.")
@click.option("--after", "after", metavar="ID|CURSOR",
              help="Start after this message id, or resume after a cursor ('1:<id>,2:<id>') that tail printed.")
@click.option("--count", "-n", type=click.IntRange(1), help="Stop after this many messages.")
@client_options
def tail(conn: Connection, queue: str, partitions: str, since: str | None, after: str | None,
         count: int | None) -> None:
    """Follow QUEUE: the messages there, then each new one as it comes, until Ctrl-C (or --count).

    Without --since or --after it starts at the oldest message.  When the stream is cut (a
    server restart) it reconnects and resumes exactly where it stopped.  On Ctrl-C it says
    the cursor to resume from with --after."""
    cursor = after if after and ":" in after else None
    follower = Follower(conn, queue, partitions, since, None if cursor else after, cursor, count)
    def stopped() -> str:
        resume = f"; resume with: queuey tail {queue} --after {follower.cursor}" if follower.cursor else ""
        return f"stopped after {follower.received} messages{resume}"

    run_client(conn, follower.run, stopped)
