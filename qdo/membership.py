"""Rule 1, membership: a worker is in its group while it holds the ephemeral node named by its stable id.

If that node exists and belongs to another session, it is an earlier (dead)
session of the same worker, or a live rival with the same name: either way the
worker says which it looks like, once, and waits by watch until the node goes.
Only a node of its own session (a create retried after a connection loss) is
taken as its own.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import orjson
from kazoo.exceptions import NoNodeError
from twisted.logger import Logger

from qdo.layout import GroupPaths, loads
from qdo.session import Session

log = Logger()


class Membership:
    """This worker's node under ``workers/``, and the list of members."""

    def __init__(self, session: Session, paths: GroupPaths, worker: str, token: str) -> None:
        self.session = session
        self.paths = paths
        self.worker = worker
        self.token = token
        self.host = socket.gethostname()

    def document(self) -> bytes:
        return orjson.dumps({"worker": self.worker, "host": self.host, "pid": os.getpid(), "token": self.token,
                             "started": time.time()})

    async def register(self, epoch: int) -> None:
        warned = False

        def held(value: bytes, stat: Any) -> None:
            """Say once whose the node looks like: an earlier session of this worker, or a live rival."""
            nonlocal warned
            if warned:
                return
            warned = True
            other = loads(value)
            if other.get("token") == self.token or (other.get("host") == self.host and not alive(other.get("pid"))):
                log.warn("Worker id {me} is still held by an earlier session (0x{owner:x}) of this worker; "
                         "waiting for it to expire", me=self.worker, owner=stat.ephemeralOwner)
            else:
                log.error("Worker id {me} is held by another live worker (host {host}, pid {pid}, session "
                          "0x{owner:x}); waiting until it leaves: give each worker its own name",
                          me=self.worker, host=other.get("host"), pid=other.get("pid"), owner=stat.ephemeralOwner)

        await self.session.acquire_ephemeral(self.paths.worker(self.worker), self.document, epoch, held=held)

    async def leave(self) -> None:
        await self.session.delete_own(self.paths.worker(self.worker))

    async def members(self, watch: Any = None) -> set[str]:
        zk = self.session.zk
        try:
            return set(await self.session.retry(lambda: zk.children(self.paths.workers, watch=watch)))
        except NoNodeError:
            return set()


def alive(pid: Any) -> bool:
    """Whether a process of this host with that pid runs (a zombie does not)."""
    try:
        os.kill(int(pid), 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{int(pid)}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True
