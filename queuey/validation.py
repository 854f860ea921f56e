"""Turning request parameters into checked values: pure functions, no HTTP.

Each parser either returns typed values or raises InvalidParameters whose
``errors`` name every bad parameter, so one answer tells the client all that
is wrong.
"""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

from queuey import timeuuid
from queuey.errors import InvalidParameters
from queuey.interfaces import CONSISTENCY_LEVELS, QUEUE_TYPES, MessageRef

T = TypeVar("T")

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
MAX_PARTITIONS = 200
MAX_TTL = 2 ** 25
#: The longest delay any configuration allows (10 years); [limits] max_delay is checked by the core.
MAX_DELAY = 10 * 365 * 86400
DEFAULT_TTL = 259200
MAX_BATCH = 1000
MAX_LIMIT = 1000
MAX_WAIT = 60
MAX_PRINCIPLES = 100
MAX_CONTENT_TYPE = 255
DEFAULT_CONTENT_TYPE = "text/plain"
SINGLE_CONTENT_TYPE = "application/octet-stream"
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
MEDIA_TYPE = re.compile(rf"^{_TOKEN}/{_TOKEN}(\s*;[\x20-\x7e\t]*)?$")

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


def parse_delay(text: Any) -> int:
    return parse_int(text, 0, MAX_DELAY, "a number of seconds")


def parse_partition(text: Any, partitions: int) -> int:
    return parse_int(text, 1, partitions, "a partition number")


@functools.lru_cache(maxsize=1024)
def _is_media_type(text: str) -> bool:
    """Cached: a batch usually names one content type (or none) for all its messages."""
    return len(text) <= MAX_CONTENT_TYPE and MEDIA_TYPE.match(text) is not None


def parse_media_type(text: Any) -> str:
    """A media type (``type/subtype`` and parameters) of at most MAX_CONTENT_TYPE characters."""
    if not isinstance(text, str) or len(text) > MAX_CONTENT_TYPE or not _is_media_type(text):
        raise ValueError(f"Must be a media type such as text/plain, of at most {MAX_CONTENT_TYPE} characters.")
    return text


def parse_principles(text: Any) -> tuple[str, ...]:
    """A comma list of at most MAX_PRINCIPLES ``app:<name>``; empty means no restriction."""
    if isinstance(text, (list, tuple)):
        entries = [str(e).strip() for e in text]
    elif isinstance(text, str):
        entries = [e.strip() for e in text.split(",", MAX_PRINCIPLES * 2)]
    else:
        raise ValueError("Must be a comma-separated list of app:<name>.")
    entries = [e for e in entries if e]
    if len(entries) > MAX_PRINCIPLES:
        raise ValueError(f"At most {MAX_PRINCIPLES} entries, not {len(entries)}.")
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
    all_partitions: bool = False
    since_ticks: int | None = None
    since_id: uuid.UUID | None = None
    after_id: uuid.UUID | None = None
    limit: int = 100
    descending: bool = False
    wait: float = 0

    def for_partitions(self, partitions: int) -> "ReadQuery":
        """This query on a queue of ``partitions``; InvalidParameters when it names more."""
        if self.all_partitions:
            return replace(self, partitions=tuple(range(1, partitions + 1)))
        beyond = [p for p in self.partitions if p > partitions]
        if beyond:
            raise InvalidParameters({"partitions": f"Must be partition numbers from 1 to {partitions}, "
                                                   f"not {beyond[0]}."})
        return self


def parse_partitions(text: str, partitions: int) -> tuple[int, ...]:
    if text.strip() == "all":
        return tuple(range(1, partitions + 1))
    chosen = [parse_partition(part, partitions) for part in text.split(",", MAX_PARTITIONS)]
    return tuple(dict.fromkeys(chosen))


def parse_read_query(params: Params, partitions: int = MAX_PARTITIONS) -> ReadQuery:
    """Check the query string of a range read on a queue with ``partitions``.

    Without the queue's count the HTTP layer passes MAX_PARTITIONS; the core then
    narrows the query to the queue with :meth:`ReadQuery.for_partitions`.
    """
    collect = _Collector()
    every = str(params.get("partitions", "1")).strip() == "all"
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
    return ReadQuery(chosen or (1,), every, since_ticks, since_id, after_id, limit or 100,
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


class MessageInput(NamedTuple):
    """One message to post, checked; ``partition`` None means 'pick one'; ``delay`` seconds
    until it becomes visible.  (A tuple, as NewMessage: a batch makes one per message.)"""

    body: bytes
    content_type: str
    ttl: int
    partition: int | None
    delay: int = 0


@dataclass(frozen=True)
class PostedMessages:
    """What one POST carries: a single message, or a ``batch`` (errors then name ``N.field``)."""

    messages: tuple[MessageInput, ...]
    batch: bool


def parse_single_message(body: bytes, content_type: str | None, ttl: str | None,
                         partition: str | None, partitions: int, delay: str | None = None) -> MessageInput:
    """A message posted as the whole request body, with X-TTL, X-Partition and X-Delay headers."""
    collect = _Collector()
    if not body:
        collect.errors["body"] = "The message body is empty."
    checked_type = SINGLE_CONTENT_TYPE if content_type is None else collect.run(
        "content_type", lambda: parse_media_type(content_type))
    checked_ttl = DEFAULT_TTL if ttl is None else collect.run("ttl", lambda: parse_ttl(ttl))
    checked_partition = None if partition is None else collect.run(
        "partition", lambda: parse_partition(partition, partitions))
    checked_delay = 0 if delay is None else collect.run("delay", lambda: parse_delay(delay))
    collect.raise_if_any()
    return MessageInput(body, checked_type or SINGLE_CONTENT_TYPE, checked_ttl or DEFAULT_TTL, checked_partition,
                        checked_delay or 0)


def parse_batch(document: Any, partitions: int) -> tuple[MessageInput, ...]:
    """``{"messages": [{"body", "ttl"?, "partition"?, "content_type"?, "delay"?}, ...]}``, checked whole."""
    if not isinstance(document, dict) or not isinstance(document.get("messages"), list):
        raise InvalidParameters({"messages": 'Must be a JSON object {"messages": [...]}.'})
    entries = document["messages"]
    if not 1 <= len(entries) <= MAX_BATCH:
        raise InvalidParameters({"messages": f"A batch holds 1 to {MAX_BATCH} messages, not {len(entries)}."})
    collect = _Collector()
    checked = []
    for index, entry in enumerate(entries):
        if type(entry) is dict and len(entry) == 1 and type(body := entry.get("body")) is str and body:
            checked.append(MessageInput(body.encode("utf-8"), DEFAULT_CONTENT_TYPE, DEFAULT_TTL, None))
            continue  # the usual entry, {"body": "..."}: nothing else to check
        if not isinstance(entry, dict):
            collect.errors[str(index)] = "Each message must be a JSON object with a body."
            continue
        for name in entry:
            if name not in ("body", "ttl", "partition", "content_type", "delay"):
                collect.errors[f"{index}.{name}"] = "Unknown field."
        body = entry.get("body")
        if not isinstance(body, str) or not body:
            collect.errors[f"{index}.body"] = "Must be a non-empty string."
            body = ""
        content_type = (collect.run(f"{index}.content_type", lambda: parse_media_type(entry["content_type"]))
                        if "content_type" in entry else DEFAULT_CONTENT_TYPE)
        ttl = collect.run(f"{index}.ttl", lambda: parse_ttl(entry["ttl"])) if "ttl" in entry else DEFAULT_TTL
        partition = (collect.run(f"{index}.partition", lambda: parse_partition(entry["partition"], partitions))
                     if "partition" in entry else None)
        delay = collect.run(f"{index}.delay", lambda: parse_delay(entry["delay"])) if "delay" in entry else 0
        checked.append(MessageInput(body.encode("utf-8"), content_type or DEFAULT_CONTENT_TYPE,
                                    ttl or DEFAULT_TTL, partition, delay or 0))
    collect.raise_if_any()
    return tuple(checked)


@dataclass(frozen=True)
class SigningRequest:
    """What a signed URL should grant: ``methods`` (of GET, POST), for ``expires_in`` seconds."""

    methods: tuple[str, ...]
    expires_in: int


def parse_signing_request(params: Params, max_expiry: int, signable: tuple[str, ...]) -> SigningRequest:
    """``methods`` (a comma list or a JSON list, default GET) and ``expires_in`` (1 to ``max_expiry``,
    default 3600 or ``max_expiry`` when shorter)."""
    collect = _Collector()
    for name in params:
        if name not in ("methods", "expires_in"):
            collect.errors[name] = "Unknown parameter."

    def methods() -> tuple[str, ...]:
        raw = params.get("methods", "GET")
        items = raw if isinstance(raw, list) else str(raw).split(",") if isinstance(raw, str) else None
        if items is None or not items or len(items) > len(signable):
            raise ValueError(f"Must be a comma list of {', '.join(signable)}.")
        chosen = [str(item).strip().upper() for item in items]
        if any(item not in signable for item in chosen):
            raise ValueError(f"Must be a comma list of {', '.join(signable)}, not {raw!r}.")
        return tuple(dict.fromkeys(chosen))

    chosen = collect.run("methods", methods)
    expires_in = collect.run("expires_in", lambda: parse_int(params.get("expires_in", min(3600, max_expiry)),
                                                             1, max_expiry, "a number of seconds"))
    collect.raise_if_any()
    return SigningRequest(chosen or ("GET",), expires_in or 1)
