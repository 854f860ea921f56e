"""Turning request parameters into checked values: pure functions, no HTTP.

Each parser either returns typed values or raises InvalidParameters whose
``errors`` name every bad parameter, so one answer tells the client all that
is wrong.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from queuey import timeuuid
from queuey.errors import InvalidParameters
from queuey.interfaces import CONSISTENCY_LEVELS, QUEUE_TYPES, MessageRef

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
MAX_PARTITIONS = 200
MAX_TTL = 2 ** 25
DEFAULT_TTL = 259200
MAX_BATCH = 1000
MAX_LIMIT = 1000
MAX_WAIT = 60
DEFAULT_CONTENT_TYPE = "text/plain"

Params = Mapping[str, Any]


def is_valid_name(name: str) -> bool:
    """Application and queue names: 1-50 of A-Z a-z 0-9 _ -."""
    return bool(NAME_PATTERN.match(name))


class _Collector:
    """Gathers per-parameter errors so they are all reported at once."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def run(self, name: str, parse: Callable[[], T]) -> T | None:
        try:
            return parse()
        except ValueError as e:
            self.errors[name] = str(e)
            return None

    def raise_if_any(self) -> None:
        if self.errors:
            raise InvalidParameters(self.errors)


def parse_int(text: Any, low: int, high: int, what: str = "a whole number") -> int:
    """A decimal integer in [low, high]; ValueError with a readable sentence otherwise."""
    if isinstance(text, bool) or not isinstance(text, (int, str)):
        raise ValueError(f"Must be {what} from {low} to {high}.")
    if isinstance(text, str):
        stripped = text.strip()
        if not (stripped.isascii() and stripped.removeprefix("-").isdigit()) or len(stripped) > 12:
            raise ValueError(f"Must be {what} from {low} to {high}, not {text!r}.")
        text = int(stripped)
    if not low <= text <= high:
        raise ValueError(f"Must be {what} from {low} to {high}, not {text}.")
    return text


def parse_bool(text: Any) -> bool:
    if isinstance(text, bool):
        return text
    value = str(text).strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ValueError(f"Must be true or false, not {text!r}.")


def parse_choice(text: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(text, str) or text not in choices:
        raise ValueError(f"Must be one of {', '.join(choices)}, not {text!r}.")
    return text


def parse_ttl(text: Any) -> int:
    return parse_int(text, 1, MAX_TTL, "a number of seconds")


def parse_partition(text: Any, partitions: int) -> int:
    return parse_int(text, 1, partitions, "a partition number")


def parse_principles(text: Any) -> tuple[str, ...]:
    """A comma list of ``app:<name>``; empty means no restriction."""
    if isinstance(text, (list, tuple)):
        entries = [str(e).strip() for e in text]
    elif isinstance(text, str):
        entries = [e.strip() for e in text.split(",")]
    else:
        raise ValueError("Must be a comma-separated list of app:<name>.")
    entries = [e for e in entries if e]
    for entry in entries:
        kind, _, name = entry.partition(":")
        if kind != "app" or not is_valid_name(name):
            raise ValueError(f"Each entry must be app:<name>, not {entry!r}.")
    return tuple(dict.fromkeys(entries))


def parse_message_id(text: str) -> uuid.UUID:
    try:
        return timeuuid.parse_message_id(text.lower())
    except ValueError:
        raise ValueError(f"{text!r} is not the 32-hex-digit id of a version-1 UUID.") from None


@dataclass(frozen=True)
class QueueParameters:
    """Checked queue settings from a POST or PUT; None means 'not given'."""

    queue_name: str | None = None
    partitions: int | None = None
    type: str | None = None
    consistency: str | None = None
    principles: tuple[str, ...] | None = None


def parse_queue_parameters(params: Params, creating: bool) -> QueueParameters:
    """Check the parameters that create (``creating``) or update a queue."""
    collect = _Collector()
    known = {"partitions", "type", "consistency", "principles", "principals"}
    if creating:
        known.add("queue_name")
    for name in params:
        if name not in known:
            collect.errors[name] = "Unknown parameter."
    queue_name = None
    if creating and "queue_name" in params:
        def check_name() -> str:
            value = params["queue_name"]
            if not isinstance(value, str) or not is_valid_name(value):
                raise ValueError("Must be 1 to 50 characters of A-Z a-z 0-9 _ -.")
            return value
        queue_name = collect.run("queue_name", check_name)
    partitions = type_ = consistency = principles = None
    if "partitions" in params:
        partitions = collect.run("partitions", lambda: parse_int(params["partitions"], 1, MAX_PARTITIONS))
    if "type" in params:
        type_ = collect.run("type", lambda: parse_choice(params["type"], QUEUE_TYPES))
    if "consistency" in params:
        consistency = collect.run("consistency", lambda: parse_choice(params["consistency"], CONSISTENCY_LEVELS))
    for spelling in ("principles", "principals"):
        if spelling in params:
            principles = collect.run(spelling, lambda: parse_principles(params[spelling]))
    collect.raise_if_any()
    return QueueParameters(queue_name, partitions, type_, consistency, principles)


@dataclass(frozen=True)
class ListQuery:
    limit: int = 100
    offset: str | None = None
    details: bool = False
    include_count: bool = False


def parse_list_query(params: Params) -> ListQuery:
    collect = _Collector()
    limit = collect.run("limit", lambda: parse_int(params.get("limit", "100"), 1, MAX_LIMIT))
    details = collect.run("details", lambda: parse_bool(params.get("details", "false")))
    include_count = collect.run("include_count", lambda: parse_bool(params.get("include_count", "false")))
    offset = params.get("offset") or None
    if offset is not None and not is_valid_name(offset):
        collect.errors["offset"] = "Must be a queue name."
    collect.raise_if_any()
    return ListQuery(limit or 100, offset, bool(details), bool(include_count))


@dataclass(frozen=True)
class ReadQuery:
    """A checked range read: which partitions, where to start, how many, how long to wait."""

    partitions: tuple[int, ...] = (1,)
    since_ticks: int | None = None
    since_id: uuid.UUID | None = None
    after_id: uuid.UUID | None = None
    limit: int = 100
    descending: bool = False
    wait: float = 0


def parse_partitions(text: str, partitions: int) -> tuple[int, ...]:
    if text.strip() == "all":
        return tuple(range(1, partitions + 1))
    chosen = [parse_partition(part, partitions) for part in text.split(",")]
    return tuple(dict.fromkeys(chosen))


def parse_read_query(params: Params, partitions: int) -> ReadQuery:
    """Check the query string of a range read on a queue with ``partitions``."""
    collect = _Collector()
    chosen = collect.run("partitions", lambda: parse_partitions(str(params.get("partitions", "1")), partitions))
    since_ticks = since_id = after_id = None
    if "since" in params:
        since = str(params["since"])
        if len(since) == 32 and "." not in since:
            since_id = collect.run("since", lambda: parse_message_id(since))
        else:
            def ticks() -> int:
                try:
                    return timeuuid.parse_timestamp(since)
                except ValueError:
                    raise ValueError(f"Must be a timestamp in seconds or a message id, not {since!r}.") from None
            since_ticks = collect.run("since", ticks)
    if "after" in params:
        after_id = collect.run("after", lambda: parse_message_id(str(params["after"])))
    limit = collect.run("limit", lambda: parse_int(params.get("limit", "100"), 1, MAX_LIMIT))
    order = collect.run("order", lambda: parse_choice(params.get("order", "ascending"), ("ascending", "descending")))
    wait = collect.run("wait", lambda: parse_int(params.get("wait", "0"), 0, MAX_WAIT, "a number of seconds"))
    collect.raise_if_any()
    return ReadQuery(chosen or (1,), since_ticks, since_id, after_id, limit or 100,
                     order == "descending", wait or 0)


def parse_message_refs(text: str) -> tuple[MessageRef, ...]:
    """``{ids}`` of the message routes: hex ids, each optionally ``partition:``-prefixed."""
    refs = []
    for item in text.split(","):
        prefix, colon, hex_id = item.strip().rpartition(":")
        try:
            partition = parse_int(prefix, 1, MAX_PARTITIONS) if colon else 1
            refs.append(MessageRef(partition, parse_message_id(hex_id)))
        except ValueError as e:
            raise InvalidParameters({"messages": f"{item!r}: {e}"}) from None
    return tuple(dict.fromkeys(refs))


@dataclass(frozen=True)
class MessageInput:
    """One message to post, checked; ``partition`` None means 'pick one'."""

    body: bytes
    content_type: str
    ttl: int
    partition: int | None


def parse_single_message(body: bytes, content_type: str | None, ttl: str | None,
                         partition: str | None, partitions: int) -> MessageInput:
    """A message posted as the whole request body, with X-TTL and X-Partition headers."""
    collect = _Collector()
    if not body:
        collect.errors["body"] = "The message body is empty."
    checked_ttl = DEFAULT_TTL if ttl is None else collect.run("ttl", lambda: parse_ttl(ttl))
    checked_partition = None if partition is None else collect.run(
        "partition", lambda: parse_partition(partition, partitions))
    collect.raise_if_any()
    return MessageInput(body, content_type or "application/octet-stream",
                        checked_ttl or DEFAULT_TTL, checked_partition)


def parse_batch(document: Any, partitions: int) -> tuple[MessageInput, ...]:
    """``{"messages": [{"body", "ttl"?, "partition"?, "content_type"?}, ...]}``, checked whole."""
    if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
        raise InvalidParameters({"messages": 'Must be a JSON object {"messages": [...]}.'})
    entries = document["messages"]
    if not 1 <= len(entries) <= MAX_BATCH:
        raise InvalidParameters({"messages": f"A batch holds 1 to {MAX_BATCH} messages, not {len(entries)}."})
    collect = _Collector()
    checked = []
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            collect.errors[str(index)] = "Each message must be a JSON object with a body."
            continue
        for name in entry:
            if name not in ("body", "ttl", "partition", "content_type"):
                collect.errors[f"{index}.{name}"] = "Unknown field."
        body = entry.get("body")
        if not isinstance(body, str) or not body:
            collect.errors[f"{index}.body"] = "Must be a non-empty string."
            body = ""
        content_type = entry.get("content_type", DEFAULT_CONTENT_TYPE)
        if not isinstance(content_type, str) or not content_type:
            collect.errors[f"{index}.content_type"] = "Must be a non-empty string."
        ttl = collect.run(f"{index}.ttl", lambda: parse_ttl(entry["ttl"])) if "ttl" in entry else DEFAULT_TTL
        partition = (collect.run(f"{index}.partition", lambda: parse_partition(entry["partition"], partitions))
                     if "partition" in entry else None)
        checked.append(MessageInput(body.encode("utf-8"), str(content_type), ttl or DEFAULT_TTL, partition))
    collect.raise_if_any()
    return tuple(checked)
