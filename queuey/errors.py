"""Errors that end a request, each knowing its HTTP status and JSON error_msg."""

from __future__ import annotations


class QueueyError(Exception):
    """Base of the errors the API answers with ``{"status": "error", ...}``."""

    status = 500
    key = "ServerError"

    def __init__(self, message: str = "", errors: dict[str, str] | None = None) -> None:
        super().__init__(message or self.__class__.__doc__ or "")
        self.errors = errors if errors is not None else {self.key: str(self.args[0])}

    @property
    def headers(self) -> dict[str, str]:
        return {}


class InvalidParameters(QueueyError):
    """Bad input: each key names a parameter, each value says what is wrong."""

    status = 400
    key = "InvalidParameters"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()), errors)


class MissingApplicationKey(QueueyError):
    """This request needs an Authorization: Application <key> header."""

    status = 401
    key = "MissingApplicationKey"


class InvalidApplicationKey(QueueyError):
    """The application key is not valid."""

    status = 401
    key = "InvalidApplicationKey"


class AccessDenied(QueueyError):
    """This application key may not do that."""

    status = 403
    key = "AccessDenied"


class NotFound(QueueyError):
    """No such resource."""

    status = 404
    key = "NotFound"


class MethodNotAllowed(QueueyError):
    """That method is not allowed here."""

    status = 405
    key = "MethodNotAllowed"

    def __init__(self, allowed: list[str]) -> None:
        super().__init__(f"Allowed methods: {', '.join(allowed)}.")
        self.allowed = allowed

    @property
    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class QueueExists(QueueyError):
    """A queue with this name exists already."""

    status = 409
    key = "QueueExists"


class BodyTooLarge(QueueyError):
    """The request body is larger than this server accepts."""

    status = 413
    key = "BodyTooLarge"


class StorageUnavailable(QueueyError):
    """The message store is not answering; try again shortly."""

    status = 503
    key = "StorageUnavailable"

    def __init__(self, message: str = "", retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
