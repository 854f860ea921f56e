"""``queuey post|read|get|delete``: messages of a queue (``tail`` is in :mod:`queuey.cli.tail`)."""

from __future__ import annotations

import os
import sys
import threading
from typing import IO, TYPE_CHECKING, Any, Callable, TypeVar

import click
from twisted.internet import defer
from twisted.python.failure import Failure

from queuey.cli import output
from queuey.cli.completion import complete_queue
from queuey.cli.lines import Batch, LineTooLong, NotText, batches, read_lines
from queuey.cli.progress import PostProgress
from queuey.cli.running import CommandFailed, Connection, ExitCode, client_options, failed, run_client

if TYPE_CHECKING:
    from queuey.client import QueueyClient, QueueyClientError

T = TypeVar("T")
PARTITIONS_HELP = "One partition number, a comma list, or 'all' (default 1)."


# -- post --------------------------------------------------------------------------


@click.command()
@click.argument("queue", shell_complete=complete_queue)
@click.argument("body", required=False)
@click.option("--file", "-f", "source", type=click.File("rb"), help="One message per line of FILE ('-': stdin).")
@click.option("--whole", is_flag=True, help="With --file: the whole file is one message (any bytes).")
@click.option("--ttl", type=click.IntRange(1, 2 ** 25), help="Seconds each message lives (server default: 3 days).")
@click.option("--partition", type=click.IntRange(1, 200), help="Partition (default: a random one).")
@click.option("--content-type", default="text/plain", show_default=True, help="Media type stored with each message.")
@click.option("--batch-size", type=click.IntRange(1, 1000), default=100, show_default=True,
              help="Lines sent per request.")
@click.option("--progress/--no-progress", default=None, help="A progress bar on stderr (default: on a terminal).")
@client_options
def post(conn: Connection, queue: str, body: str | None, source: IO[bytes] | None, whole: bool, ttl: int | None,
         partition: int | None, content_type: str, batch_size: int, progress: bool | None) -> None:
    """Post BODY to QUEUE; or each line of --file (or of stdin) as a message, in batches.

    Prints what was stored: the message id, time and partition of each (with --json, one JSON
    object per message, with its line number)."""
    if body is not None and source is not None:
        raise click.UsageError("give BODY or --file, not both")
    if whole and source is None:
        raise click.UsageError("--whole goes with --file")
    if body is None and source is None:
        if sys.stdin.isatty():
            raise click.UsageError("give a BODY, --file FILE, or pipe lines in")
        source = click.get_binary_stream("stdin")
    if body is not None or whole:
        data = body.encode("utf-8") if body is not None else source.read()  # type: ignore[union-attr]
        stored = run_client(conn, lambda client, reactor: client.post_message(
            queue, data, ttl=ttl, partition=partition, content_type=content_type))
        _print_stored(conn, [stored], None)
        return
    assert source is not None
    show = progress if progress is not None else sys.stderr.isatty()
    poster = LinePoster(queue, source, batch_size, {"ttl": ttl, "partition": partition, "content_type": content_type},
                        conn, PostProgress(_size_of(source), show))
    run_client(conn, poster.run, lambda: f"stopped: {poster.done()}")
    if not conn.json:
        output.note(f"posted {poster.posted} message{'' if poster.posted == 1 else 's'} to {queue}")


def _size_of(source: IO[bytes]) -> int | None:
    try:
        return os.fstat(source.fileno()).st_size or None
    except (OSError, ValueError, AttributeError):
        return None


def _print_stored(conn: Connection, stored: list[dict[str, Any]], batch: Batch | None) -> None:
    for index, message in enumerate(stored):
        if conn.json:
            output.emit_json({**message, **({"line": batch.lines[index].number} if batch else {})})
        elif batch is None:
            click.echo(f"{message['key']} {output.readable_time(message['timestamp'])} partition {message['partition']}")


def in_daemon_thread(reactor: Any, function: Callable[[], T]) -> defer.Deferred[T]:
    """``function()`` in a thread of its own, its result fired on the reactor thread.  A daemon thread:
    one blocked reading a pipe does not keep the process alive after Ctrl-C stopped the reactor."""
    done: defer.Deferred[T] = defer.Deferred()

    def work() -> None:
        try:
            result = function()
        except BaseException:
            failure = Failure()
            reactor.callFromThread(done.errback, failure)
        else:
            reactor.callFromThread(done.callback, result)

    threading.Thread(target=work, name="queuey-post-reader", daemon=True).start()
    return done


class LinePoster:
    """Posts the lines of ``source`` batch by batch; the lines are read off the reactor thread."""

    def __init__(self, queue: str, source: IO[bytes], batch_size: int, settings: dict[str, Any],
                 conn: Connection, progress: PostProgress) -> None:
        self.queue = queue
        self.batches = batches(read_lines(source.fileno()), batch_size)
        self.settings = {k: v for k, v in settings.items() if v is not None}
        self.conn = conn
        self.progress = progress
        self.posted = 0
        self.last_line = 0

    def _next(self) -> Batch | None:
        return next(self.batches, None)

    async def run(self, client: QueueyClient, reactor: Any) -> None:
        from queuey.client import QueueyClientError
        with self.progress:
            while True:
                try:
                    batch = await in_daemon_thread(reactor, self._next)
                except (NotText, LineTooLong) as e:
                    raise self._stopped(str(e), ExitCode.REFUSED) from None
                if batch is None:
                    self.progress.finish()
                    return
                try:
                    stored = await client.post_messages(self.queue, [
                        {"body": line.body, **self.settings} for line in batch.lines])
                except QueueyClientError as e:
                    raise self._failed(batch, e) from None
                _print_stored(self.conn, stored, batch)
                self.posted += len(stored)
                self.last_line = batch.last
                self.progress.advance(batch.consumed, len(stored))

    def done(self) -> str:
        return f"lines up to {self.last_line} were posted ({self.posted} messages)" if self.posted else "nothing was posted"

    def _stopped(self, why: str, code: ExitCode) -> CommandFailed:
        return CommandFailed(f"{why}\n  {self.done()}", code)

    def _failed(self, batch: Batch, error: QueueyClientError) -> CommandFailed:
        """The server's complaint, with ``N.field`` turned into the line it is about."""
        errors = {}
        for key, text in error.errors.items():
            index, dot, field = key.partition(".")
            if dot and index.isdigit() and int(index) < len(batch.lines):
                key = f"line {batch.lines[int(index)].number}: {field}"
            errors[key] = text
        error.errors = errors
        reason = failed(error)
        return self._stopped(f"lines {batch.first}-{batch.last} not posted: {reason.format_message()}",
                             ExitCode(reason.exit_code))


# -- read, get, delete -------------------------------------------------------------------------


def show_messages(conn: Connection, answer: dict[str, Any]) -> None:
    if conn.json:
        output.emit_json(answer)
        return
    messages = answer["messages"]
    screen = output.console()
    screen.print(output.messages_table(messages, screen.width))
    output.note(f"{len(messages)} message{'' if len(messages) == 1 else 's'}")


@click.command()
@click.argument("queue", shell_complete=complete_queue)
@click.option("--partitions", "-p", default="1", show_default=True, help=PARTITIONS_HELP)
@click.option("--since", help="A time (seconds since the epoch) or message id: messages at or after it.")
@click.option("--after", help="A message id: only messages after it (a reader's cursor).")
@click.option("--limit", type=click.IntRange(1, 1000), help="Messages per partition (server default 100).")
@click.option("--order", type=click.Choice(["ascending", "descending"]), help="Oldest first (default) or newest.")
@click.option("--wait", type=click.IntRange(0, 60), help="Seconds to hold the read while nothing matches.")
@client_options
def read(conn: Connection, queue: str, partitions: str, since: str | None, after: str | None, limit: int | None,
         order: str | None, wait: int | None) -> None:
    """Read QUEUE by time range: one page of messages, grouped by partition."""
    answer = run_client(conn, lambda client, reactor: client.read_page(queue, partitions, since, after, limit,
                                                                       order, wait))
    show_messages(conn, answer)
    if answer.get("truncated"):
        resume = ", ".join(f"partition {p}: --after {after}" if after else f"partition {p}: again as asked"
                           for p, after in answer.get("resume", {}).items())
        output.note(f"the page was cut by the server's size limit; go on with {resume}")


@click.command()
@click.argument("queue", shell_complete=complete_queue)
@click.argument("ids", nargs=-1, required=True)
@client_options
def get(conn: Connection, queue: str, ids: tuple[str, ...]) -> None:
    """Messages of QUEUE by id (IDS: hex ids, or PARTITION:hex).  Exit 5 if any is missing."""
    messages = run_client(conn, lambda client, reactor: client.get_messages(queue, list(ids)))
    answer = {"status": "ok", "messages": messages}
    show_messages(conn, answer)
    found = {(m["partition"], m["message_id"]) for m in answer["messages"]}
    missing = [i for i in ids if _ref(i) not in found]
    if missing:
        raise CommandFailed(f"not found: {' '.join(missing)}", ExitCode.NOT_FOUND)


def _ref(given: str) -> tuple[int, str]:
    partition, colon, hex_id = given.rpartition(":")
    return (int(partition) if colon and partition.isdigit() else 1), hex_id.lower()


@click.command()
@click.argument("queue", shell_complete=complete_queue)
@click.argument("ids", nargs=-1, required=True)
@client_options
def delete(conn: Connection, queue: str, ids: tuple[str, ...]) -> None:
    """Delete messages of QUEUE by id (IDS: hex ids, or PARTITION:hex)."""
    run_client(conn, lambda client, reactor: client.delete_messages(queue, list(ids)))
    if conn.json:
        output.emit_json({"status": "ok", "deleted": list(ids)})
    else:
        output.note(f"deleted {len(ids)} message{'' if len(ids) == 1 else 's'} from {queue}")
