"""``qdo errors list`` and ``qdo errors replay``: the failed messages that ``save_failed_message`` kept.

Each entry of the ``qdo_error`` queue is a JSON copy of the message (its
queue, partition, id, body, content type) with the error and the worker's
host. Replaying posts the body back onto its original queue and partition
(a new message id), then deletes the entry: an entry replayed is not
replayed twice, unless the command stops between the two steps.
"""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass
from typing import Any, Iterable

import orjson

from qdo.config import ERROR_QUEUE
from queuey.client import NotFound


@dataclass
class SavedFailure:
    entry: str  # "<partition>:<id>" of the entry in the error queue
    saved_at: float
    queue: str
    partition: int
    message_id: str
    error: str
    worker_host: str
    body: str
    content_type: str
    body_encoding: str | None

    @classmethod
    def from_entry(cls, document: dict[str, Any]) -> "SavedFailure":
        saved = orjson.loads(document["body"])
        return cls(f"{document['partition']}:{document['message_id']}", float(document["timestamp"]),
                   saved["queue"], int(saved["partition"]), saved["message_id"], saved.get("error", ""),
                   saved.get("worker_host", ""), saved["body"], saved.get("content_type", "text/plain"),
                   saved.get("body_encoding"))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def saved_failures(client: Any, limit: int = 1000) -> list[SavedFailure]:
    """The entries of the error queue, oldest first (at most ``limit``); none if the queue does not exist."""
    found: list[SavedFailure] = []
    after = None
    while len(found) < limit:
        batch = min(1000, limit - len(found))
        try:
            page = await client.read_messages(ERROR_QUEUE, partitions=1, after=after, limit=batch)
        except NotFound:
            return []
        for document in page:
            try:
                found.append(SavedFailure.from_entry(document))
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # not one of ours
        if len(page) < batch:
            break
        after = page[-1]["message_id"]
    return found[:limit]


async def replay(client: Any, failure: SavedFailure) -> dict[str, Any]:
    """Post the message back onto its queue and partition, then delete the entry; the new message's key."""
    if failure.body_encoding == "base64":
        posted = await client.post_message(failure.queue, base64.b64decode(failure.body), partition=failure.partition,
                                           content_type=failure.content_type)
    else:
        posted = (await client.post_messages(failure.queue, [{"body": failure.body, "partition": failure.partition,
                                                              "content_type": failure.content_type}]))[0]
    await client.delete_messages(ERROR_QUEUE, [failure.entry])
    return posted


def select(failures: Iterable[SavedFailure], queue: str | None = None,
           entries: Iterable[str] = ()) -> list[SavedFailure]:
    wanted = set(entries)
    return [f for f in failures if (queue is None or f.queue == queue)
            and (not wanted or f.entry in wanted or f.entry.split(":", 1)[1] in wanted)]


def render(failures: list[SavedFailure]) -> str:
    if not failures:
        return "No failed messages saved.\n"
    lines = []
    for f in failures:
        body = f.body if len(f.body) <= 60 else f.body[:57] + "..."
        lines.append(f"{f.entry}  {f.queue}-{f.partition} {f.message_id}  {f.error}  (host {f.worker_host})\n"
                     f"    body: {body!r}")
    return "\n".join(lines) + f"\n{len(failures)} failed message(s)\n"
