"""Signed URLs: a queue's owner lets whoever holds a URL read or post to that one queue, for a while.

A browser's EventSource cannot send an ``Authorization`` header, so private
queues are streamed through these.  The URL carries the methods it grants,
its expiry (Unix seconds) and an HMAC-SHA256 over the queue's path, those
methods and that expiry, keyed with a server-side secret (``[signing]
secret``; the first of several signs, each one verifies, for rotation).
Checking compares against every secret in constant time; a URL that is
expired, forged, or used for another queue or method grants nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from typing import Mapping, Sequence
from urllib.parse import urlencode

from queuey.errors import AccessDenied, NotFound

#: What a signed URL may grant: reading (range reads, streams, reads by id) and posting.
SIGNABLE_METHODS = ("GET", "POST")
#: The query parameters a signed URL carries.
SIGNATURE_PARAMETERS = ("methods", "expires", "signature")


@dataclass(frozen=True)
class SignedUrl:
    path: str
    query: str
    methods: tuple[str, ...]
    expires: int

    @property
    def url(self) -> str:
        return f"{self.path}?{self.query}"


def queue_path(application: str, queue_name: str) -> str:
    return f"/v1/{application}/{queue_name}"


class UrlSigner:
    """Signs and checks URLs of queues with the configured secrets."""

    def __init__(self, secrets: Sequence[bytes]) -> None:
        self._secrets = tuple(secrets)

    @property
    def enabled(self) -> bool:
        return bool(self._secrets)

    @staticmethod
    def _signature(secret: bytes, path: str, methods: str, expires: str) -> bytes:
        message = f"{path}\n{methods}\n{expires}".encode("utf-8")
        return base64.urlsafe_b64encode(hmac.new(secret, message, hashlib.sha256).digest()).rstrip(b"=")

    def sign(self, application: str, queue_name: str, methods: Sequence[str], expires: int) -> SignedUrl:
        if not self.enabled:
            raise NotFound("Signed URLs are off on this server (no [signing] secret).")
        path = queue_path(application, queue_name)
        listed = ",".join(m for m in SIGNABLE_METHODS if m in methods)
        signature = self._signature(self._secrets[0], path, listed, str(expires)).decode("ascii")
        query = urlencode({"methods": listed, "expires": expires, "signature": signature}, safe=",")
        return SignedUrl(path, query, tuple(listed.split(",")), expires)

    def check(self, application: str, queue_name: str, method: str, params: Mapping[str, str],
              now: float) -> None:
        """AccessDenied unless ``params`` hold a signature of this queue, unexpired, granting ``method``."""
        methods, expires, signature = (params.get(name, "") for name in SIGNATURE_PARAMETERS)
        candidate = signature.encode("ascii", "replace")
        path = queue_path(application, queue_name)
        matched = False
        for secret in self._secrets:  # no early exit: timing says nothing about which secret
            matched |= hmac.compare_digest(self._signature(secret, path, methods, expires), candidate)
        if not matched:
            raise AccessDenied("This signed URL is not valid for this queue (forged, altered or for another "
                               "server).")
        if not expires.isdigit() or int(expires) < now:
            raise AccessDenied("This signed URL has expired.")
        if ("GET" if method == "HEAD" else method) not in methods.split(","):
            raise AccessDenied(f"This signed URL grants {methods} only.")
