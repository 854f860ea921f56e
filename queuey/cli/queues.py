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
@client_options
def list_queues(conn: Connection, count: bool) -> None:
    """Every queue of the application, with its settings (the owner's key)."""
    async def work(client: QueueyClient, reactor: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        offset = None
        while True:
            page = await client.list_queues(limit=LIST_PAGE, offset=offset, details=True, include_count=count)
            found.extend(page)
            if len(page) < LIST_PAGE:
                return found
            offset = page[-1]["queue_name"]

    listed = run_client(conn, work)
    if conn.json:
        output.emit_json({"queues": listed})
    else:
        output.console().print(output.queues_table(listed, count))
        output.note(f"{len(listed)} queue{'' if len(listed) == 1 else 's'} in {conn.application}")


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
