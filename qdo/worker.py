"""What runs inside a qdo worker: jobs, their built-in helpers, and the per-partition loop.

Job handlers (named in the configuration):

- ``job(message, context)``: the work. A coroutine function, or a function
  marked :func:`reactor_job` (or decorated with ``inlineCallbacks``), runs on
  the reactor thread and may return a Deferred; any other function is taken to
  be blocking and runs in a bounded thread pool (``job_threads``).
- ``job_context()``: a context manager entered once when the worker starts
  and left when it stops; what it yields is the ``context`` of every call.
- ``job_failure(message, context, queue, exc, client)``: called on the reactor
  thread when a job raised; may return a Deferred or be a coroutine. When it
  returns, the message counts as processed; when it raises, the message is
  tried again later.

Built-ins: :func:`dict_context`, :func:`log_failure`, :func:`save_failed_message`.
"""

from __future__ import annotations

import collections
import contextlib
import inspect
import os
import random
import socket
import tempfile
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import orjson
from twisted.internet import defer, task, threads
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from qdo.assign import Partition
from qdo.config import ERROR_QUEUE
from queuey import timeuuid
from queuey.client import NotFound, QueueyClientError

log = Logger()

ERROR_TTL = 30 * 24 * 3600


@dataclass(frozen=True)
class Message:
    """One message handed to a job (also readable as ``message["body"]``)."""

    application: str
    queue: str
    partition: int
    message_id: str
    timestamp: str
    body: str
    content_type: str = "text/plain"
    body_encoding: str | None = None

    @classmethod
    def from_api(cls, application: str, queue: str, document: Mapping[str, Any]) -> "Message":
        return cls(application, queue, int(document["partition"]), document["message_id"],
                   document["timestamp"], document["body"], document.get("content_type", "text/plain"),
                   document.get("body_encoding"))

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def id_key(message_id: str | None) -> bytes:
    """Sort key of a message id in the store's order (None sorts first)."""
    if not message_id:
        return b""
    return timeuuid.sort_key(timeuuid.parse_message_id(message_id))


# -- built-in job helpers -----------------------------------------------------

@contextlib.contextmanager
def dict_context() -> Iterator[dict[str, Any]]:
    """The default ``job_context``: a dict shared by all jobs of this worker."""
    yield {}


def reactor_job(function: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a job that runs on the reactor thread (it must not block; it may return a Deferred)."""
    function.qdo_reactor_job = True  # type: ignore[attr-defined]
    return function


@reactor_job
def log_message(message: Message, context: Any) -> None:
    """A job that only logs each message (the example configuration's job)."""
    log.info("{queue}-{partition} {message_id}: {body}", queue=message.queue, partition=message.partition,
             message_id=message.message_id, body=message.body[:200])


def runs_on_reactor(job: Callable[..., Any]) -> bool:
    """Coroutine functions, ``inlineCallbacks`` ones and :func:`reactor_job` ones; others block."""
    if getattr(job, "qdo_reactor_job", False) or inspect.iscoroutinefunction(job):
        return True
    unwrapped = inspect.unwrap(job)
    return unwrapped is not job and inspect.isgeneratorfunction(unwrapped) and not inspect.isgeneratorfunction(job)


def log_failure(message: Message, context: Any, queue: str, exc: BaseException, client: Any) -> None:
    """The default ``job_failure``: log the error with its traceback; the message counts as done."""
    log.failure("Job failed on {queue}-{partition} message {message_id}",
                Failure(exc, type(exc), exc.__traceback__), queue=queue, partition=message.partition,
                message_id=message.message_id)


async def save_failed_message(message: Message, context: Any, queue: str, exc: BaseException,
                              client: Any) -> None:
    """Log, then copy the message to the ``qdo_error`` queue (TTL 30 days) with the error."""
    log_failure(message, context, queue, exc, client)
    document = {**message.as_dict(), "error": f"{type(exc).__name__}: {exc}",
                "worker_host": socket.gethostname()}
    entry = {"body": orjson.dumps(document).decode(), "ttl": ERROR_TTL, "content_type": "application/json"}
    try:
        await client.post_messages(ERROR_QUEUE, [entry])
    except NotFound:
        await client.ensure_queue(ERROR_QUEUE)
        await client.post_messages(ERROR_QUEUE, [entry])


class Jobs:
    """The configured job, context and failure handler, and where each job runs."""

    def __init__(self, job: Callable[..., Any], context_factory: Callable[..., Any],
                 failure_handler: Callable[..., Any], client: Any, reactor: Any, threads_: int) -> None:
        self.job = job
        self.context_factory = context_factory
        self.failure_handler = failure_handler
        self.client = client
        self.reactor = reactor
        self.on_reactor = runs_on_reactor(job)
        self.pool = ThreadPool(minthreads=0, maxthreads=threads_, name="qdo-jobs")
        self.context: Any = None
        self._exit: Callable[[], Any] | None = None

    def start(self) -> None:
        manager = self.context_factory()
        if hasattr(manager, "__enter__") and hasattr(manager, "__exit__"):
            self.context = manager.__enter__()
            self._exit = lambda: manager.__exit__(None, None, None)
        else:
            self.context = manager
        if not self.on_reactor:
            self.pool.start()

    def stop(self) -> None:
        if not self.on_reactor and self.pool.started:
            self.pool.stop()  # waits for jobs still running in threads
        if self._exit is not None:
            exit_, self._exit = self._exit, None
            exit_()

    def run(self, message: Message) -> defer.Deferred[Any]:
        if self.on_reactor:
            return _as_deferred(self.job, message, self.context)
        return threads.deferToThreadPool(self.reactor, self.pool, self.job, message, self.context)

    def failed(self, message: Message, exc: BaseException) -> defer.Deferred[Any]:
        return _as_deferred(self.failure_handler, message, self.context, message.queue, exc, self.client)


def _as_deferred(function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    try:
        result = function(*args)
    except Exception:
        return defer.fail()
    if inspect.isawaitable(result) and not isinstance(result, defer.Deferred):
        return defer.ensureDeferred(result)
    return defer.maybeDeferred(lambda: result)


# -- the gate: may a worker start a new message now? ---------------------------

class Gate:
    """Open while ``check()`` is true; :meth:`wait` fires when it is (re-checked on :meth:`changed`)."""

    def __init__(self, check: Callable[[], bool] = lambda: True) -> None:
        self._check = check
        self._waiters: list[defer.Deferred[None]] = []

    def is_open(self) -> bool:
        return self._check()

    def wait(self) -> defer.Deferred[None]:
        if self.is_open():
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred(lambda d: self._waiters.remove(d) if d in self._waiters else None)
        self._waiters.append(d)
        return d

    def changed(self) -> None:
        if self._waiters and self.is_open():
            waiters, self._waiters = self._waiters, []
            for d in waiters:
                d.callback(None)


class Fenced(Exception):
    """Someone else wrote this partition's offset: this worker no longer owns it."""


class _Stopped(Exception):
    pass


# -- one partition --------------------------------------------------------------

class PartitionRunner:
    """Reads one partition in order and runs the job on each message, one at a time.

    ``commit(partition, message_id)`` records the offset after each job
    (at-least-once) and raises :class:`Fenced` when the partition was taken.
    :meth:`stop` finishes the message in hand and commits it; :meth:`drop`
    abandons everything without committing.
    """

    def __init__(self, partition: Partition, offset: str | None, *, client: Any, jobs: Jobs,
                 commit: Callable[[Partition, str], defer.Deferred[Any]], gate: Gate,
                 semaphore: defer.DeferredSemaphore, clock: Any, batch_size: int = 100,
                 wait_interval: float = 5.0, max_wait_interval: float = 20.0, long_poll: int = 0,
                 on_exit: Callable[["PartitionRunner", str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.partition = partition
        self.offset = offset
        self.client = client
        self.jobs = jobs
        self._commit = commit
        self.gate = gate
        self.semaphore = semaphore
        self.clock = clock
        self.batch_size = batch_size
        self.wait_interval = wait_interval
        self.max_wait_interval = max_wait_interval
        self.long_poll = long_poll
        self.on_exit = on_exit
        self.random = rng or random.Random()
        self.buffer: collections.deque[Message] = collections.deque()
        self.in_hand: Message | None = None
        self.processed = 0
        self.stopping = False
        self.dropped = False
        self._idle = 0
        self._waiting: defer.Deferred[Any] | None = None
        self.done: defer.Deferred[str] | None = None

    def start(self) -> defer.Deferred[str]:
        """Start the loop; the returned Deferred fires with why it ended: stopped, dropped or fenced."""
        self.done = defer.ensureDeferred(self._loop())
        return self.done

    def stop(self) -> defer.Deferred[str]:
        """Finish the message in hand, commit it, end. Fires when the loop has ended."""
        self.stopping = True
        self._interrupt()
        return self._ended()

    def drop(self) -> None:
        """End now, committing nothing (the session is gone or the partition taken)."""
        self.stopping = self.dropped = True
        self._interrupt()

    def _ended(self) -> defer.Deferred[str]:
        if self.done is None:
            return defer.succeed("stopped")
        d: defer.Deferred[str] = defer.Deferred()
        self.done.addBoth(lambda r: (d.callback(r if isinstance(r, str) else "failed"), r)[1])
        return d

    def _interrupt(self) -> None:
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()

    async def _interruptible(self, d: defer.Deferred[Any]) -> Any:
        if self.stopping:
            d.addErrback(lambda _: None)
            d.cancel()
            raise _Stopped()
        self._waiting = d
        try:
            return await d
        except defer.CancelledError:
            if self.stopping:
                raise _Stopped() from None
            raise
        finally:
            self._waiting = None

    def lag(self) -> tuple[int, float]:
        """(messages fetched but not yet done, age in seconds of the oldest of them)."""
        waiting = len(self.buffer) + (1 if self.in_hand else 0)
        oldest = self.in_hand or (self.buffer[0] if self.buffer else None)
        age = 0.0
        if oldest is not None:
            age = max(0.0, self.clock.seconds() - float(oldest.timestamp))
        return waiting, age

    async def _loop(self) -> str:
        why = "stopped"
        try:
            while not self.stopping:
                if not self.buffer:
                    await self._fetch()
                    continue
                await self._interruptible(self.gate.wait())
                if self.stopping:
                    break
                await self._interruptible(self.semaphore.acquire())
                try:
                    if not self.gate.is_open():
                        continue  # suspended while we queued for a slot
                    message = self.buffer.popleft()
                    self.in_hand = message
                    ok = await self._process(message)
                finally:
                    self.semaphore.release()
                if self.dropped:
                    break
                if ok:
                    await self._commit(self.partition, message.message_id)
                    self.offset = message.message_id
                    self.processed += 1
                self.in_hand = None
        except _Stopped:
            pass
        except Fenced as e:
            why = "fenced"
            log.warn("{partition}: fenced ({error}); giving it up", partition=self.partition, error=str(e))
        except Exception as e:
            why = "failed"
            if not self.dropped:
                log.failure("{partition}: stopped by an error", partition=self.partition)
            del e
        if self.dropped:
            why = "dropped"
        self.in_hand = None
        if self.on_exit is not None:
            self.on_exit(self, why)
        return why

    async def _process(self, message: Message) -> bool:
        """Run the job; on failure the failure handler. True when the message is done."""
        try:
            await self.jobs.run(message)
            return True
        except Exception as exc:
            failure_attempt = 0
            while not self.dropped:
                try:
                    await self.jobs.failed(message, exc)
                    return True
                except Exception:
                    log.failure("{partition}: job_failure failed for {message_id}; will try again",
                                partition=self.partition, message_id=message.message_id)
                if self.stopping:
                    return False  # not done: the next owner does it again
                delay = min(self.max_wait_interval, self.wait_interval * 2 ** failure_attempt)
                failure_attempt += 1
                try:
                    await self._interruptible(task.deferLater(self.clock, delay, lambda: None))
                except _Stopped:
                    return False
            return False

    async def _fetch(self) -> None:
        try:
            documents = await self._interruptible(self.client.read_messages(
                self.partition.queue, partitions=[self.partition.number], after=self.offset,
                limit=self.batch_size, wait=self.long_poll or None))
        except (_Stopped, Fenced):
            raise
        except QueueyClientError as e:
            log.warn("{partition}: reading failed: {error}", partition=self.partition, error=str(e))
            documents = []
        except defer.CancelledError:
            raise _Stopped() from None
        except Exception as e:
            log.warn("{partition}: reading failed: {error!r}", partition=self.partition, error=e)
            documents = []
        if documents:
            self._idle = 0
            key = id_key(self.offset)
            for document in documents:
                message = Message.from_api(self.partition.application, self.partition.queue, document)
                if id_key(message.message_id) > key:  # never backwards, never twice
                    self.buffer.append(message)
            return
        if self.long_poll and self._idle == 0:
            self._idle = 1  # a long poll came back empty: ask again at once, once
            return
        delay = min(self.max_wait_interval, self.wait_interval * (1.5 ** self._idle))
        self._idle += 1
        await self._interruptible(task.deferLater(self.clock, delay * self.random.uniform(0.75, 1.25), lambda: None))
        if self.long_poll:
            self._idle = 0


# -- offsets without ZooKeeper ----------------------------------------------------

class FileOffsets:
    """Offsets in a JSON file, for ``policy = manual``: written atomically, off the reactor thread.

    :meth:`commit` fires once a write that holds the new offset is on disk
    (writes are coalesced: one at a time, each with every change so far).
    """

    def __init__(self, path: str, reactor: Any) -> None:
        self.path = path
        self.reactor = reactor
        self.offsets: dict[str, str] = {}
        self._writing = False
        self._pending: list[defer.Deferred[None]] = []
        self._dirty = False

    def load(self) -> defer.Deferred[dict[str, str]]:
        def read() -> dict[str, str]:
            try:
                with open(self.path, "rb") as handle:
                    data = orjson.loads(handle.read())
            except FileNotFoundError:
                return {}
            return {str(k): str(v) for k, v in data.get("offsets", {}).items()}

        def loaded(offsets: dict[str, str]) -> dict[str, str]:
            self.offsets = offsets
            return offsets

        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), read).addCallback(loaded)

    def get(self, partition: Partition) -> str | None:
        return self.offsets.get(partition.key)

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
            fd, temporary = tempfile.mkstemp(prefix=".qdo-offsets-", dir=directory)
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

        threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), write).addBoth(written)
