"""Turning what an HTTP request carries into the core's typed inputs.

Query strings and form bodies are percent-decoded as strict UTF-8 (anything
else is a 400 naming the part), with a bounded number of fields; JSON bodies
must be objects; the X-TTL and X-Partition headers and the ``{ids}`` segment
become numbers and message references.  What a value must be is
:mod:`queuey.validation`'s business; this module only gets the values out.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import parse_qsl

import orjson

from queuey import validation
from queuey.errors import InvalidParameters
from queuey.following import parse_cursor
from queuey.interfaces import MessageRef
from queuey.signing import SIGNABLE_METHODS
from queuey.validation import (ListQuery, MessageInput, PostedMessages, QueueParameters, ReadQuery,
                               SigningRequest)

JSON_TYPE = "application/json"
#: Fields of one query string or form body; every API call needs far fewer.
MAX_FIELDS = 32


def _pairs(text: str, where: str) -> dict[str, str]:
    """``a=1&b=2`` as a dict (first value of each name wins), strictly UTF-8, at most MAX_FIELDS."""
    try:
        pairs = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict",
                          max_num_fields=MAX_FIELDS)
    except UnicodeDecodeError:
        raise InvalidParameters({where: "Parameters must be UTF-8 once percent-decoded."}) from None
    except ValueError:
        raise InvalidParameters({where: f"At most {MAX_FIELDS} parameters."}) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        params.setdefault(name, value)
    return params


def query_params(uri: bytes) -> dict[str, str]:
    """The query string's parameters.  The request line is ASCII, as the HTTP parser checked."""
    _, _, query = uri.partition(b"?")
    return _pairs(query.decode("ascii", "replace"), "query") if query else {}


def media_type(content_type: bytes | None) -> str:
    """The lower-cased ``type/subtype`` of a Content-Type header, '' without one."""
    if content_type is None:
        return ""
    return content_type.split(b";", 1)[0].strip().lower().decode("latin-1")


def _json(body: bytes, what: str) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidParameters({"body": f"{what} must be valid JSON."}) from None


def body_params(content_type: bytes | None, body: bytes) -> dict[str, Any]:
    """Parameters of a POST/PUT on an application or queue: a JSON object or a form."""
    if media_type(content_type) == JSON_TYPE:
        document = _json(body, "The body") if body.strip() else {}
        if not isinstance(document, dict):
            raise InvalidParameters({"body": "Must be a JSON object of parameters."})
        if len(document) > MAX_FIELDS:
            raise InvalidParameters({"body": f"At most {MAX_FIELDS} parameters."})
        return document
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidParameters({"body": "A form body must be UTF-8."}) from None
    return _pairs(text, "body")


def queue_parameters(content_type: bytes | None, body: bytes, creating: bool) -> QueueParameters:
    return validation.parse_queue_parameters(body_params(content_type, body), creating)


def signing_request(content_type: bytes | None, body: bytes, max_expiry: int) -> SigningRequest:
    return validation.parse_signing_request(body_params(content_type, body), max_expiry, SIGNABLE_METHODS)


def list_query(uri: bytes) -> ListQuery:
    return validation.parse_list_query(query_params(uri))


def read_query(uri: bytes) -> ReadQuery:
    return validation.parse_read_query(query_params(uri))


def stream_cursor(last_event_id: bytes | None) -> dict[int, uuid.UUID]:
    """A ``Last-Event-ID`` header's positions (none without one)."""
    if not last_event_id or not last_event_id.strip():
        return {}
    return parse_cursor(last_event_id.decode("latin-1"))


def _header_text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def posted_messages(content_type: bytes | None, body: bytes, ttl: bytes | None,
                    partition: bytes | None, delay: bytes | None = None) -> PostedMessages:
    """A JSON batch (``Content-Type: application/json``), or the body as one message."""
    if media_type(content_type) == JSON_TYPE:
        if delay is not None:
            raise InvalidParameters({"delay": 'X-Delay is for a single message; give each message of a batch '
                                              'its own "delay".'})
        batch = validation.parse_batch(_json(body, "A batch"), validation.MAX_PARTITIONS)
        return PostedMessages(batch, batch=True)
    return PostedMessages((single_message(content_type, body, ttl, partition, delay),), batch=False)


def single_message(content_type: bytes | None, body: bytes, ttl: bytes | None,
                   partition: bytes | None = None, delay: bytes | None = None) -> MessageInput:
    return validation.parse_single_message(body, _header_text(content_type), _header_text(ttl),
                                           _header_text(partition), validation.MAX_PARTITIONS,
                                           _header_text(delay))


def message_refs(ids: str) -> tuple[MessageRef, ...]:
    return validation.parse_message_refs(ids)
