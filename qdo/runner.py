"""The loop that works one partition: fetch a page (and the next one meanwhile), run the job, commit offsets.

Offsets are committed in batches, the way Kafka consumers do: at most once
every ``commit_interval`` seconds per partition, and at the latest
``commit_interval`` after a message is done; always when the partition is
released or the worker stops. ``commit_interval = 0`` commits after every
message (the first edition's behaviour). A commit runs beside the work, one at
a time per partition; a fenced commit (the partition was taken) ends the loop.
"""

from __future__ import annotations

import collections
import random
from typing import Any, Callable

from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qdo.assign import Partition
from qdo.metrics import WorkerMetrics
from qdo.offsets import Fenced, id_key
from qdo.worker import Jobs, Message
from queuey.client import QueueyClientError

log = Logger()

Commit = Callable[[Partition, str], "defer.Deferred[Any]"]


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


class _Stopped(Exception):
    pass


class Committer:
    """Batches one partition's offset commits: at most one write per ``interval``, one in flight at a time."""

    def __init__(self, partition: Partition, offset: str | None, commit: Commit, clock: IReactorTime,
                 interval: float, metrics: WorkerMetrics, on_failure: Callable[[BaseException], None]) -> None:
        self.partition = partition
        self.committed = offset  # what the store holds
        self.done = offset  # the last message whose job is done
        self._commit = commit
        self.clock = clock
        self.interval = interval
        self.metrics = metrics
        self.on_failure = on_failure
        self.last = -float("inf")
        self.failure: BaseException | None = None
        self._flight: defer.Deferred[None] | None = None
        self._timer: Any = None

    def advance(self, message_id: str) -> defer.Deferred[None]:
        """A message is done. Per-message mode: fires once its offset is written; batched: at once."""
        self.done = message_id
        if self.interval <= 0:
            return self.flush()
        if self._flight is None and self._timer is None:
            due = self.last + self.interval - self.clock.seconds()
            if due <= 0:
                self._start()
            else:
                self._timer = self.clock.callLater(due, self._tick)
        return defer.succeed(None)

    def _tick(self) -> None:
        self._timer = None
        if self._flight is None:
            self._start()

    def _start(self) -> None:
        if self.failure is not None or id_key(self.done) <= id_key(self.committed):
            return
        target = self.done
        assert target is not None
        began = self.clock.seconds()
        self.last = began
        flight = self._flight = defer.maybeDeferred(self._commit, self.partition, target)

        def written(_: Any) -> None:
            self.committed = target
            self.metrics.committed(self.clock.seconds() - began)

        def failed(failure: Any) -> None:
            if self.failure is None:
                self.failure = failure.value
                self.on_failure(failure.value)

        def over(_: Any) -> None:
            if self._flight is flight:
                self._flight = None
            if self.failure is None and id_key(self.done) > id_key(self.committed) and self._timer is None:
                due = self.last + self.interval - self.clock.seconds()
                self._timer = self.clock.callLater(max(0.0, due), self._tick)
        flight.addCallbacks(written, failed).addBoth(over)

    async def flush(self) -> None:
        """Write the last done offset now (after the write in flight); raises what made a commit fail."""
        self.cancel()
        while self._flight is not None:
            await _quietly(self._flight)
        if self.failure is None and id_key(self.done) > id_key(self.committed):
            self._start()
            while self._flight is not None:
                await _quietly(self._flight)
        if self.failure is not None:
            raise self.failure

    def cancel(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def _quietly(d: defer.Deferred[Any]) -> defer.Deferred[None]:
    waiting: defer.Deferred[None] = defer.Deferred()
    d.addBoth(lambda r: (waiting.callback(None) if not waiting.called else None, r)[1])
    return waiting


class PartitionRunner:
    """Reads one partition in order and runs the job on each message, one at a time.

    ``commit(partition, message_id)`` records an offset (at-least-once) and fails
    with :class:`Fenced` when the partition was taken. :meth:`stop` finishes the
    message in hand and commits; :meth:`drop` abandons everything without committing.
    """

    def __init__(self, partition: Partition, offset: str | None, *, client: Any, jobs: Jobs, commit: Commit,
                 gate: Gate, semaphore: defer.DeferredSemaphore, clock: IReactorTime, batch_size: int = 100,
                 wait_interval: float = 5.0, max_wait_interval: float = 20.0, long_poll: int = 0,
                 commit_interval: float = 0.0, metrics: WorkerMetrics | None = None,
                 on_exit: Callable[["PartitionRunner", str], None] | None = None,
                 rng: random.Random | None = None) -> None:
        self.partition = partition
        self.client = client
        self.jobs = jobs
        self.gate = gate
        self.semaphore = semaphore
        self.clock = clock
        self.batch_size = batch_size
        self.wait_interval = wait_interval
        self.max_wait_interval = max_wait_interval
        self.long_poll = long_poll
        self.metrics = metrics or WorkerMetrics()
        self.committer = Committer(partition, offset, commit, clock, commit_interval, self.metrics,
                                   on_failure=lambda _: self.drop())
        self.on_exit = on_exit
        self.random = rng or random.Random()
        self.buffer: collections.deque[Message] = collections.deque()
        self.in_hand: Message | None = None
        self.fetched_to = offset  # the last message id fetched
        self.processed = 0
        self.stopping = False
        self.dropped = False
        self._idle = 0
        self._waiting: defer.Deferred[Any] | None = None
        self._prefetch: defer.Deferred[list[dict[str, Any]]] | None = None
        self.done: defer.Deferred[str] | None = None

    @property
    def offset(self) -> str | None:
        """The last offset written to the store."""
        return self.committer.committed

    def start(self) -> defer.Deferred[str]:
        """Start the loop; the returned Deferred fires with why it ended: stopped, dropped, fenced or failed."""
        self.done = defer.ensureDeferred(self._loop())
        return self.done

    def stop(self) -> defer.Deferred[str]:
        """Finish the message in hand, commit, end. Fires when the loop has ended."""
        self.stopping = True
        self._interrupt()
        return self._ended()

    def drop(self) -> None:
        """End now, committing nothing more (the session is gone, or the partition was taken)."""
        self.stopping = self.dropped = True
        self.committer.cancel()
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
        if self._prefetch is not None and not self._prefetch.called:
            self._prefetch.addErrback(lambda _: None)
            self._prefetch.cancel()

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
                if not self.gate.is_open():
                    await self._interruptible(self.gate.wait())
                await self._interruptible(self.semaphore.acquire())
                try:
                    if not self.gate.is_open():
                        continue  # suspended while we queued for a slot
                    message = self.in_hand = self.buffer.popleft()
                    ok = await self._process(message)
                finally:
                    self.semaphore.release()
                if self.dropped:
                    break
                if ok:
                    self.processed += 1
                    await self.committer.advance(message.message_id)
                self.in_hand = None
        except _Stopped:
            pass
        except Exception as e:
            why = self._why(e)
        self.in_hand = None
        if not self.dropped and why == "stopped":
            try:
                await self.committer.flush()
            except Exception as e:
                why = self._why(e)
        if self.committer.failure is not None and why in ("stopped", "dropped"):
            why = self._why(self.committer.failure)
        elif self.dropped:
            why = "dropped"
        self.committer.cancel()
        if self.on_exit is not None:
            self.on_exit(self, why)
        return why

    def _why(self, error: BaseException) -> str:
        if isinstance(error, Fenced):
            log.warn("{partition}: fenced ({error}); giving it up", partition=self.partition, error=str(error))
            return "fenced"
        if not self.dropped or self.committer.failure is error:
            log.error("{partition}: stopped by an error: {error!r}", partition=self.partition, error=error)
        return "failed"

    async def _process(self, message: Message) -> bool:
        """Run the job; on failure the failure handler. True when the message is done."""
        began = self.clock.seconds()
        try:
            await self.jobs.run(message)
            self.metrics.job_done("ok", self.clock.seconds() - began)
            return True
        except Exception as exc:
            self.metrics.job_done("failed", self.clock.seconds() - began)
            failure_attempt = 0
            while not self.dropped:
                try:
                    await self.jobs.failed(message, exc)
                    return True
                except Exception:
                    self.metrics.failure_handler_failed()
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

    def _read(self, wait: int | None) -> defer.Deferred[list[dict[str, Any]]]:
        return self.client.read_messages(self.partition.queue, partitions=[self.partition.number],
                                         after=self.fetched_to, limit=self.batch_size, wait=wait)

    async def _fetch(self) -> None:
        prefetched, self._prefetch = self._prefetch, None
        try:
            documents = await self._interruptible(prefetched if prefetched is not None
                                                  else self._read(self.long_poll or None))
        except (_Stopped, Fenced):
            raise
        except defer.CancelledError:
            raise _Stopped() from None
        except QueueyClientError as e:
            log.warn("{partition}: reading failed: {error}", partition=self.partition, error=str(e))
            documents = []
        except Exception as e:
            log.warn("{partition}: reading failed: {error!r}", partition=self.partition, error=e)
            documents = []
        if documents:
            self._idle = 0
            key = id_key(self.fetched_to)
            for document in documents:
                message = Message.from_api(self.partition.application, self.partition.queue, document)
                message_key = id_key(message.message_id)
                if message_key > key:  # never backwards, never twice
                    self.buffer.append(message)
                    self.fetched_to, key = message.message_id, message_key
            if len(documents) >= self.batch_size and not self.stopping:
                self._prefetch = self._read(None)  # a full page: there is likely more; read it meanwhile
            return
        if prefetched is not None:
            return  # the page after a full one was empty: an ordinary read follows
        if self.long_poll and self._idle == 0:
            self._idle = 1  # a long poll came back empty: ask again at once, once
            return
        delay = min(self.max_wait_interval, self.wait_interval * (1.5 ** self._idle))
        self._idle += 1
        await self._interruptible(task.deferLater(self.clock, delay * self.random.uniform(0.75, 1.25), lambda: None))
        if self.long_poll:
            self._idle = 0
