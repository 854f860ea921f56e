"""Where a worker records how far it got in each partition: one interface, two stores.

- :class:`ZooKeeperOffsets` (``policy = automatic``, rule 4): the offset node
  of a partition is rewritten by its claimer (with its token), which fences
  every earlier owner; each commit is a versioned write, so a worker that lost
  the partition can never move its offset. A write whose answer was lost in a
  connection drop is recognised by its token.
- :class:`FileOffsets` (``policy = manual``): a JSON file, replaced atomically
  (temporary file, fsync, rename), written off the reactor thread.

Both never move an offset backwards.
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import orjson
from kazoo.exceptions import BadVersionError, NodeExistsError, NoNodeError
from twisted.internet import defer, threads
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Interface, implementer

from qdo.assign import Partition
from qdo.layout import GroupPaths, loads
from qdo.zk import SessionLost
from queuey import timeuuid

log = Logger()

TEMPORARY_PREFIX = ".qdo-offsets-"


class Fenced(Exception):
    """Someone else wrote this partition's offset: this worker no longer owns it."""


class OffsetsDamaged(Exception):
    """The offsets file cannot be read as offsets."""


def id_key(message_id: str | None) -> bytes:
    """Sort key of a message id in the store's order (None sorts first)."""
    if not message_id:
        return b""
    return timeuuid.sort_key(timeuuid.parse_message_id(message_id))


class IOffsetStore(Interface):
    """Offsets of the partitions one worker works on."""

    def open(partition: Partition) -> defer.Deferred[str | None]:
        """Take the partition's offset for this worker (fencing earlier owners); fires with the offset."""

    def commit(partition: Partition, message_id: str) -> defer.Deferred[None]:
        """Record ``message_id`` as done (never backwards); fails with Fenced if the partition was taken."""


@dataclass
class _Held:
    offset: str | None
    version: int
    epoch: int


@implementer(IOffsetStore)
class ZooKeeperOffsets:
    """Fenced offsets in ``offsets/<app>/<queue>/<n>`` (see the module's docstring)."""

    def __init__(self, session: Any, paths: GroupPaths, worker: str, token: str) -> None:
        self.session = session
        self.zk = session.zk
        self.paths = paths
        self.worker = worker
        self.token = token
        self.held: dict[Partition, _Held] = {}

    def document(self, offset: str | None) -> bytes:
        return orjson.dumps({"offset": offset, "worker": self.worker, "token": self.token, "at": time.time()})

    def open(self, partition: Partition) -> defer.Deferred[str | None]:
        return defer.ensureDeferred(self._fence(partition))

    async def _fence(self, partition: Partition) -> str | None:
        """Read the offset and rewrite it with our token: from now on only our version may write."""
        path = self.paths.offset(partition)
        epoch = self.session.epoch
        while True:
            self.session.check(epoch)
            try:
                value, stat = await self.session.retry(lambda: self.zk.get(path))
            except NoNodeError:
                try:
                    await self.session.retry(lambda: self.zk.create(path, self.document(None), makepath=True))
                except NodeExistsError:
                    continue  # someone else (or our lost answer) created it: read it again
                self.held[partition] = _Held(None, 0, epoch)
                return None
            offset = loads(value).get("offset")
            try:
                new = await self.session.retry(lambda: self.zk.set(path, self.document(offset), version=stat.version))
            except (BadVersionError, NoNodeError):
                continue
            self.held[partition] = _Held(offset, new.version, epoch)
            return offset

    def commit(self, partition: Partition, message_id: str) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._commit(partition, message_id))

    async def _commit(self, partition: Partition, message_id: str) -> None:
        held = self.held.get(partition)
        if held is None:
            raise Fenced("this worker does not hold it")
        if id_key(message_id) <= id_key(held.offset):
            return  # never backwards
        if held.epoch != self.session.epoch:
            raise SessionLost("the session of this partition is gone")
        path = self.paths.offset(partition)
        data = self.document(message_id)
        try:
            stat = await self.session.retry(lambda: self.zk.set(path, data, version=held.version))
        except NoNodeError:
            raise Fenced("its offset node is gone") from None
        except BadVersionError:
            # Someone wrote it since -- or our own write, whose answer was lost: its token tells.
            try:
                value, stat = await self.session.retry(lambda: self.zk.get(path))
            except NoNodeError:
                raise Fenced("its offset node is gone") from None
            written = loads(value)
            if written.get("token") != self.token or written.get("offset") != message_id:
                raise Fenced(f"offset written by {written.get('worker')}") from None
        held.version, held.offset = stat.version, message_id

    def close(self, partition: Partition) -> None:
        self.held.pop(partition, None)


@implementer(IOffsetStore)
class FileOffsets:
    """Offsets in a JSON file, for ``policy = manual``: written atomically, off the reactor thread.

    :meth:`commit` fires once a write that holds the new offset is on disk
    (writes are coalesced: one at a time, each with every change so far).
    A crash mid-write leaves the previous file whole (and a temporary file,
    removed at the next start).
    """

    def __init__(self, path: str, reactor: IReactorThreads) -> None:
        self.path = path
        self.reactor = reactor
        self.offsets: dict[str, str] = {}
        self._writing = False
        self._pending: list[defer.Deferred[None]] = []
        self._dirty = False

    def _in_thread(self, function: Any) -> defer.Deferred[Any]:
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), function)

    def load(self) -> defer.Deferred[dict[str, str]]:
        """Read the file (none yet: no offsets); fails with :class:`OffsetsDamaged` if it is not offsets."""
        path = self.path

        def read() -> dict[str, str]:
            directory = os.path.dirname(os.path.abspath(path))
            for stale in glob.glob(os.path.join(glob.escape(directory), TEMPORARY_PREFIX + "*")):
                with contextlib.suppress(OSError):
                    os.unlink(stale)  # left by a crash mid-write; the file itself is whole
            try:
                with open(path, "rb") as handle:
                    data = orjson.loads(handle.read())
                offsets = data["offsets"]
                return {str(k): str(v) for k, v in offsets.items() if Partition.from_key(str(k)) and id_key(v)}
            except FileNotFoundError:
                return {}
            except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError) as e:
                raise OffsetsDamaged(f"{path} is not a qdo offsets file ({type(e).__name__}: {e}); "
                                     "move it away to start from the beginning") from None

        def loaded(offsets: dict[str, str]) -> dict[str, str]:
            self.offsets = offsets
            return offsets

        return self._in_thread(read).addCallback(loaded)

    def get(self, partition: Partition) -> str | None:
        return self.offsets.get(partition.key)

    def open(self, partition: Partition) -> defer.Deferred[str | None]:
        return defer.succeed(self.get(partition))

    def commit(self, partition: Partition, message_id: str) -> defer.Deferred[None]:
        if id_key(message_id) <= id_key(self.offsets.get(partition.key)):
            return defer.succeed(None)  # never backwards
        self.offsets[partition.key] = message_id
        self._dirty = True
        d: defer.Deferred[None] = defer.Deferred()
        self._pending.append(d)
        if not self._writing:
            self._write()
        return d

    def _write(self) -> None:
        self._writing = True
        self._dirty = False
        waiting, self._pending = self._pending, []
        data = orjson.dumps({"offsets": self.offsets}, option=orjson.OPT_SORT_KEYS)
        path = self.path

        def write() -> None:
            directory = os.path.dirname(os.path.abspath(path))
            os.makedirs(directory, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=TEMPORARY_PREFIX, dir=directory)
            try:
                with os.fdopen(fd, "wb") as handle:
                    handle.write(data)
                    handle.flush()
                    os.fsync(handle.fileno())
                os.replace(temporary, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
                raise

        def written(result: Any) -> None:
            self._writing = False
            for d in waiting:
                if isinstance(result, Failure):
                    d.errback(result)
                else:
                    d.callback(None)
            if self._dirty or self._pending:
                self._write()

        self._in_thread(write).addBoth(written)
