"""``queuey queues list|create|info|update|delete``: an application's queues."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from queuey.cli import output
from queuey.cli.completion import complete_queue
from queuey.cli.running import CommandFailed, Connection, ExitCode, client_options, run_client

if TYPE_CHECKING:
    from queuey.client import QueueyClient

TYPES = click.Choice(["user", "public"])
CONSISTENCIES = click.Choice(["weak", "strong", "very_strong"])
#: Queues asked for per request while listing them all.
LIST_PAGE = 1000


@click.group()
def queues() -> None:
    """List, create, inspect, change and delete queues."""


def show_settings(conn: Connection, settings: dict[str, Any]) -> None:
    if conn.json:
        output.emit_json(settings)
    else:
        output.console().print(output.settings_table(settings))


def settings_options(command: Any) -> Any:
    for option in reversed([
        click.option("--partitions", type=click.IntRange(1, 200), help="Number of partitions (1-200; may only grow)."),
        click.option("--type", "queue_type", type=TYPES, help="public: anyone may read its messages."),
        click.option("--consistency", type=CONSISTENCIES, help="Read delay class (and Cassandra consistency)."),
        click.option("--principles", "--principals", "principles", metavar="app:NAME,...",
                     help="Who reads instead of the owner: comma-separated app:<name> ('' clears)."),
    ]):
        command = option(command)
    return command


@queues.command("list")
@click.option("--count", is_flag=True, help="Also count each queue's unexpired messages (slower).")
@click.option("--page-size", type=click.IntRange(1, LIST_PAGE), default=LIST_PAGE, show_default=True,
              help="Queues asked for per request.")
@client_options
def list_queues(conn: Connection, count: bool, page_size: int) -> None:
    """Every queue of the application, with its settings (the owner's key).

    Printed page by page as they arrive, so memory stays bounded however many
    queues the application has; ``--json`` still writes one document."""
    listing = QueueListing(conn.json, count, conn.application)

    async def work(client: QueueyClient, reactor: Any) -> None:
        offset = None
        while True:
            page = await client.list_queues(limit=page_size, offset=offset, details=True, include_count=count)
            listing.page(page)
            if len(page) < page_size:
                return
            offset = page[-1]["queue_name"]

    run_client(conn, work, stopped=listing.stopped)
    listing.end()


class QueueListing:
    """Writes a listing one page at a time: JSON as one streamed document, or one table per page."""

    def __init__(self, as_json: bool, count: bool, application: str) -> None:
        self._json, self._count, self._application = as_json, count, application
        self.listed = 0
        self._console = output.console()

    def page(self, queues: list[dict[str, Any]]) -> None:
        if self._json:
            for queue in queues:
                output.write_text(("{\"queues\":[" if self.listed == 0 else ",") + output.json_text(queue))
                self.listed += 1
        elif queues or self.listed == 0:
            self._console.print(output.queues_table(queues, self._count, header=self.listed == 0))
            self.listed += len(queues)

    def stopped(self) -> str:
        """What was written when a signal stopped it (a --json document stays unfinished, as the exit status says)."""
        return f"stopped after {self.listed} queue{'' if self.listed == 1 else 's'}"

    def end(self) -> None:
        if self._json:
            output.write_text(("{\"queues\":[" if self.listed == 0 else "") + "]}\n")
        else:
            output.note(f"{self.listed} queue{'' if self.listed == 1 else 's'} in {self._application}")


@queues.command("create")
@click.argument("name", required=False)
@settings_options
@client_options
def create(conn: Connection, name: str | None, partitions: int | None, queue_type: str | None,
           consistency: str | None, principles: str | None) -> None:
    """Create a queue (NAME: default a new random name).  Exit 6 if it exists."""
    settings = run_client(conn, lambda client, reactor: client.create_queue(
        name, partitions=partitions, type=queue_type, consistency=consistency, principles=principles))
    show_settings(conn, settings)


@queues.command("info")
@click.argument("name", shell_complete=complete_queue)
@client_options
def info(conn: Connection, name: str) -> None:
    """Partitions, type and consistency of a queue this key may read (or any public queue, without a key)."""
    show_settings(conn, run_client(conn, lambda client, reactor: client.queue_info(name)))


@queues.command("update")
@click.argument("name", shell_complete=complete_queue)
@settings_options
@client_options
def update(conn: Connection, name: str, partitions: int | None, queue_type: str | None,
           consistency: str | None, principles: str | None) -> None:
    """Change a queue's settings; what is not given stays as it is."""
    if partitions is None and queue_type is None and consistency is None and principles is None:
        raise click.UsageError("nothing to change: give --partitions, --type, --consistency or --principles")
    settings = run_client(conn, lambda client, reactor: client.update_queue(
        name, partitions=partitions, type=queue_type, consistency=consistency, principles=principles))
    show_settings(conn, settings)


@queues.command("delete")
@click.argument("name", shell_complete=complete_queue)
@click.option("--yes", "-y", is_flag=True, help="Do not ask first.")
@client_options
def delete(conn: Connection, name: str, yes: bool) -> None:
    """Delete a queue and every message in it."""
    if not yes:
        if not sys.stdin.isatty():
            raise CommandFailed(f"not deleting {name!r} without --yes (no terminal to ask on)", ExitCode.USAGE)
        click.confirm(f"Delete queue {name!r} of {conn.application} and all its messages?", abort=True)
    run_client(conn, lambda client, reactor: client.delete_queue(name))
    if conn.json:
        output.emit_json({"status": "ok", "deleted": name})
    else:
        output.note(f"deleted queue {name}")
