"""What ``queuey``'s client commands print: rich tables for people, JSON for scripts.

With ``--json`` stdout carries exactly JSON: one document, or one object per
line for the commands that go on (``post`` from lines, ``tail``).  Notes for
people (a page was cut, how to resume) go to stderr either way.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any, Iterable, Mapping, Sequence

import click
import orjson
from rich.console import Console
from rich.table import Table
from rich.text import Text

#: Body characters shown in a table cell; --json gives them whole.
BODY_PREVIEW = 200


def console(stderr: bool = False) -> Console:
    return Console(stderr=stderr, highlight=False, soft_wrap=False)


def emit_json(document: Any) -> None:
    """One JSON document (or JSON Lines entry) on stdout, written at once."""
    sys.stdout.write(orjson.dumps(document).decode() + "\n")
    sys.stdout.flush()


def note(text: str) -> None:
    """A line for the person at the terminal, on stderr."""
    click.echo(text, err=True)


def readable_time(timestamp: str) -> str:
    """``"1795755301.5957346"`` -> ``2026-11-27 01:35:01.595`` (UTC)."""
    try:
        moment = datetime.datetime.fromtimestamp(float(timestamp), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        return timestamp
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"


def body_preview(message: Mapping[str, Any]) -> str:
    """The body on one line, cut short; its content type first unless it is text/plain."""
    body = str(message.get("body", ""))
    kind = str(message.get("content_type", "text/plain"))
    if message.get("body_encoding") == "base64":
        kind += ", base64"
    body = body.replace("\r", "\\r").replace("\n", "\\n")
    body = body if len(body) <= BODY_PREVIEW else body[:BODY_PREVIEW] + "…"
    return body if kind == "text/plain" else f"[{kind}] {body}"


def messages_table(messages: Sequence[Mapping[str, Any]], width: int) -> Table:
    """Partition, id, time and body of each message, in ``width`` columns: the body is cut to fit."""
    partition_width = max([1] + [len(str(m.get("partition", ""))) for m in messages])
    body_width = max(8, width - partition_width - 32 - 23 - 13)  # 13: the borders and padding of 4 columns
    table = Table()
    table.add_column("p", justify="right", no_wrap=True)
    table.add_column("message id", no_wrap=True)
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("body", no_wrap=True)
    for m in messages:
        body = Text(body_preview(m))
        body.truncate(body_width, overflow="ellipsis")
        table.add_row(*_cells(m.get("partition", ""), m.get("message_id", ""),
                              readable_time(str(m.get("timestamp")))), body)
    return table


def message_line(message: Mapping[str, Any]) -> str:
    """One message on one line, as ``tail`` prints them."""
    return (f"{message.get('partition', '?')} {message.get('message_id', '?')} "
            f"{readable_time(str(message.get('timestamp')))} {body_preview(message)}")


def queues_table(queues: Iterable[Mapping[str, Any]], count: bool) -> Table:
    table = Table()
    table.add_column("queue", overflow="fold", min_width=12)
    table.add_column("partitions", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("consistency", no_wrap=True)
    table.add_column("principles", overflow="fold", min_width=10)
    table.add_column("created (UTC)", no_wrap=True)
    if count:
        table.add_column("messages", justify="right", no_wrap=True)
    for q in queues:
        row = [q["queue_name"], q.get("partitions", ""), q.get("type", ""), q.get("consistency", ""),
               ", ".join(q.get("principles", [])), readable_time(str(q["created"]))[:16] if "created" in q else ""]
        if count:
            row.append(q.get("count", ""))
        table.add_row(*_cells(*row))
    return table


def settings_table(settings: Mapping[str, Any]) -> Table:
    """A queue's settings (or what a reader may know of them), one per row."""
    table = Table(show_header=False)
    table.add_column("setting", style="bold")
    table.add_column("value")
    for key, value in settings.items():
        if key == "status":
            continue
        if key == "created":
            value = readable_time(str(value)) + " UTC"
        elif isinstance(value, list):
            value = ", ".join(value) or "-"
        table.add_row(*_cells(key, value))
    return table


def _cells(*values: Any) -> list[Text]:
    """Table cells shown as they are: a ``[`` in a body is not rich markup."""
    return [Text(str(value)) for value in values]
