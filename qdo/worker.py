"""What runs inside a qdo worker: jobs and their built-in helpers (the partition loop is qdo.runner).

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

import concurrent.futures
import contextlib
import inspect
import socket
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterator, Mapping

import orjson
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from qdo.config import ERROR_QUEUE
from queuey.client import NotFound

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


class JobThreads:
    """A bounded set of threads for blocking jobs; each result comes back on the reactor thread.

    The hand-over is paid once per message: with Twisted's ``ThreadPool``
    (``deferToThreadPool``) it took a fifth of the reactor thread's time in
    bench/qdo_bench.py; a ``concurrent.futures`` executor, as here, cut the
    worker's CPU per message by about a third.
    """

    def __init__(self, reactor: Any, threads_: int) -> None:
        self.reactor = reactor
        self.threads = threads_
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(self.threads, thread_name_prefix="qdo-job")

    def stop(self) -> None:
        """Waits for the jobs still running."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def run(self, function: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
        """``function(*args)`` in a job thread; the Deferred fires on the reactor thread."""
        if self._executor is None:
            return defer.fail(RuntimeError("the job threads are not running (the worker has stopped)"))
        d: defer.Deferred[Any] = defer.Deferred()
        call_from_thread = self.reactor.callFromThread

        def call() -> None:  # in a job thread
            try:
                result = function(*args)
            except BaseException:
                call_from_thread(d.errback, Failure())
            else:
                call_from_thread(d.callback, result)
        self._executor.submit(call)
        return d


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
        self.threads = JobThreads(reactor, threads_)
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
            self.threads.start()

    def stop(self) -> None:
        self.threads.stop()  # waits for jobs still running in threads
        if self._exit is not None:
            exit_, self._exit = self._exit, None
            exit_()

    def run(self, message: Message) -> defer.Deferred[Any]:
        if self.on_reactor:
            return _as_deferred(self.job, message, self.context)
        return self.threads.run(self.job, message, self.context)

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
