"""Errors that end a request, in Queuey's own terms: what went wrong and the API's error_msg.

They say nothing about HTTP: :mod:`queuey.responses` maps each to its status
code and headers.  Storage backends raise the :class:`StorageError` kinds.
"""

from __future__ import annotations


class QueueyError(Exception):
    """Base of the errors the API answers with ``{"status": "error", "error_msg": ...}``."""

    key = "ServerError"

    def __init__(self, message: str = "", errors: dict[str, str] | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        self.errors = errors if errors is not None else {self.key: str(self.args[0])}


class InvalidParameters(QueueyError):
    """Bad input: each key names a parameter, each value says what is wrong."""

    key = "InvalidParameters"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)


class MissingApplicationKey(QueueyError):
    """This request needs an Authorization: Application <key> header."""

    key = "MissingApplicationKey"


class InvalidApplicationKey(QueueyError):
    """The application key is not valid."""

    key = "InvalidApplicationKey"


class AccessDenied(QueueyError):
    """This application key may not do that."""

    key = "AccessDenied"


class NotFound(QueueyError):
    """No such resource."""

    key = "NotFound"


class MethodNotAllowed(QueueyError):
    """That method is not allowed here."""

    key = "MethodNotAllowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(f"Allowed methods: {', '.join(allowed)}.")
        self.allowed = allowed


class BodyTooLarge(QueueyError):
    """The request body is larger than this server accepts."""

    key = "BodyTooLarge"


class StorageError(QueueyError):
    """An answer of the message store that ends the request."""


class QueueExists(StorageError):
    """A queue with this name exists already."""

    key = "QueueExists"


class QueueMissing(StorageError, NotFound):
    """The queue went away while the request worked on it."""

    key = "NotFound"


class StorageUnavailable(StorageError):
    """The message store is not answering; try again shortly."""

    key = "StorageUnavailable"

    def __init__(self, message: str = "", retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
