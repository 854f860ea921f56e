"""A message as the JSON object a read answers with, rendered once, when it is written.

Range reads are the hot path: turning rows into objects and objects into JSON
cost more than the whole HTTP request around them.  So each message is
rendered when it is stored, and a read joins the stored objects into its page
(as ``orjson.Fragment`` entries) without looking inside them.

A rendered message always starts with ``{"message_id":"<32 hex digits>"``,
so the id of the last message of a page (where the next page resumes) is read
from a fixed place instead of parsing the object.
"""

from __future__ import annotations

import base64
import operator
import uuid
from typing import Any, NamedTuple

import orjson

from queuey import timeuuid
from queuey.interfaces import Message

#: ``{"message_id":"`` precedes the 32 hex digits of the id in every rendered message.
_ID_START = len(b'{"message_id":"')
_ID_END = _ID_START + 32


_JSON = operator.itemgetter(1)


class Rendered(NamedTuple):
    """A stored message as a range read returns it: its body's size (for the page's byte
    budget) and its JSON object, ready to send."""

    size: int
    json: bytes


def message_document(message_id: uuid.UUID, partition: int, body: bytes, content_type: str,
                     hex_id: str | None = None, timestamp: str | None = None) -> dict[str, Any]:
    """The JSON object of one message (``hex_id`` and ``timestamp`` when the caller has them)."""
    document: dict[str, Any] = {
        "message_id": hex_id or f"{message_id.int:032x}",
        "timestamp": timestamp or timeuuid.timestamp_of(message_id),
        "partition": partition, "content_type": content_type}
    try:
        document["body"] = body.decode("utf-8")
    except UnicodeDecodeError:
        document["body"] = base64.b64encode(body).decode("ascii")
        document["body_encoding"] = "base64"
    return document


def render(message_id: uuid.UUID, partition: int, body: bytes, content_type: str,
           hex_id: str | None = None, timestamp: str | None = None) -> bytes:
    """The message's JSON object as bytes, keys in the API's order (as message_document's)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return orjson.dumps(message_document(message_id, partition, body, content_type, hex_id, timestamp))
    return b'{"message_id":"%s","timestamp":"%s","partition":%d,"content_type":%s,"body":%s}' % (
        (hex_id or f"{message_id.int:032x}").encode("ascii"),
        (timestamp or timeuuid.timestamp_of(message_id)).encode("ascii"),
        partition, orjson.dumps(content_type), orjson.dumps(text))


def render_message(message: Message) -> bytes:
    return render(message.id, message.partition, message.body, message.content_type)


def message_id_of(rendered: bytes) -> str:
    """The hex id of a rendered message, from its fixed place."""
    return rendered[_ID_START:_ID_END].decode("ascii")


def parse_rendered(rendered: bytes) -> Message:
    """The Message a rendered one was made from (reads by id, tests; not the hot path)."""
    document = orjson.loads(rendered)
    text = document["body"]
    body = base64.b64decode(text) if document.get("body_encoding") == "base64" else text.encode("utf-8")
    return Message(uuid.UUID(hex=document["message_id"]), document["partition"], body,
                   document["content_type"])


class EncodedList:
    """A JSON array of rendered messages, already encoded: ``pieces`` joined are its
    entries and the commas between them (``[`` and ``]`` not included).

    One page may answer many requests (woken long-polls share their read), so it
    is encoded once, in one join, and each answer only refers to it.
    """

    __slots__ = ("pieces", "length", "count")

    def __init__(self, rendered: list[Rendered]) -> None:
        joined = b",".join(map(_JSON, rendered))
        self.pieces = [joined] if joined else []
        self.length = len(joined)
        self.count = len(rendered)

    def __len__(self) -> int:
        return self.count
