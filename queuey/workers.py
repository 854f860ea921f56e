"""Several Queuey processes on one machine, sharing one listening socket (``--workers N``).

One Python process serves from one core.  With ``--workers N`` the twistd
process listens, serves as worker 0, and starts N - 1 more ``twistd queuey``
processes that accept connections on the same socket (handed down as a file
descriptor; the kernel gives each new connection to one of them).

The workers tell each other, over Unix datagram sockets in a directory of
their own (the *bus*), what a held read elsewhere must know at once:

* ``notify``: messages were stored on these partitions of a queue: each
  worker wakes its long-polls there, as for a post of its own;
* ``forget``: a queue was changed or deleted: each worker drops it from its
  queue cache.

A datagram that cannot be sent (a worker restarting, its buffer full) is
dropped: each worker's own store poll (``[longpoll] poll_interval``) still
wakes the reads it concerns, and the queue cache forgets on its own after
``[storage] queue_cache_seconds``.  Worker 0 restarts a worker that dies and
stops them all when it stops; a worker whose parent is gone stops too.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sys
import tempfile
from typing import Any, Callable, Sequence

from twisted.application import service
from twisted.internet import defer, protocol, stdio
from twisted.internet.abstract import FileDescriptor
from twisted.logger import Logger

from queuey.core import Queuey

log = Logger()
#: Seconds a worker that exited waits before it is started again; a stopping one is killed after STOP_GRACE.
RESTART_DELAY = 1.0
STOP_GRACE = 20.0
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def encode(kind: str, application: str, queue_name: str, partitions: Sequence[int] = ()) -> bytes:
    return "\0".join([kind, application, queue_name, ",".join(map(str, partitions))]).encode("utf-8")


def decode(datagram: bytes) -> tuple[str, str, str, tuple[int, ...]]:
    kind, application, queue_name, partitions = datagram.decode("utf-8").split("\0")
    return kind, application, queue_name, tuple(int(p) for p in partitions.split(",") if p)


class _BusReader(FileDescriptor):
    """Reads the bus socket on the reactor, without blocking."""

    def __init__(self, sock: socket.socket, bus: "WorkerBus", reactor: Any) -> None:
        super().__init__(reactor)
        self._sock = sock
        self._bus = bus

    def fileno(self) -> int:
        return self._sock.fileno()

    def doRead(self) -> None:
        for _ in range(256):  # a bounded burst per turn; the rest on the next
            try:
                datagram = self._sock.recv(4096)
            except BlockingIOError:
                return
            except OSError as e:
                log.warn("Worker bus: cannot read: {error}", error=e)
                return
            self._bus.received(datagram)

    def connectionLost(self, reason: Any) -> None:
        self._sock.close()


class WorkerBus:
    """This worker's end of the bus: tells its siblings, and hears them, about queues."""

    def __init__(self, directory: str, index: int, count: int, core: Queuey, reactor: Any) -> None:
        self.directory = directory
        self.index = index
        self._core = core
        self._reactor = reactor
        self._siblings = [self.path(n) for n in range(count) if n != index]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._reader: _BusReader | None = None
        self.dropped = 0

    def path(self, index: int) -> str:
        return os.path.join(self.directory, f"worker-{index}.sock")

    def start(self) -> None:
        own = self.path(self.index)
        if os.path.exists(own):
            os.unlink(own)
        self._sock.bind(own)
        self._reader = _BusReader(self._sock, self, self._reactor)
        self._reader.startReading()
        self._core.hub.on_local_post = self.announce_post
        self._core.on_queue_changed = self.announce_change

    def stop(self) -> None:
        self._core.hub.on_local_post = None
        self._core.on_queue_changed = None
        if self._reader is not None:
            self._reader.stopReading()
            self._reader.connectionLost(None)
            self._reader = None

    def _send(self, datagram: bytes) -> None:
        for sibling in self._siblings:
            try:
                self._sock.sendto(datagram, sibling)
            except OSError as e:  # not started yet, restarting, or its buffer is full
                if e.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOBUFS):
                    log.warn("Worker bus: cannot tell {sibling}: {error}", sibling=sibling, error=e)
                self.dropped += 1

    def announce_post(self, application: str, queue_name: str, partitions: Sequence[int]) -> None:
        self._send(encode("notify", application, queue_name, sorted(partitions)))

    def announce_change(self, application: str, queue_name: str) -> None:
        self._send(encode("forget", application, queue_name))

    def received(self, datagram: bytes) -> None:
        try:
            kind, application, queue_name, partitions = decode(datagram)
        except ValueError:
            log.warn("Worker bus: dropped a datagram it cannot read")
            return
        if kind == "notify":
            self._core.hub.notify(application, queue_name, partitions, local=False)
        elif kind == "forget":
            self._core.queues.forget(application, queue_name)


class BusService(service.Service):
    def __init__(self, bus: WorkerBus) -> None:
        self.bus = bus

    def startService(self) -> None:
        super().startService()
        self.bus.start()

    def stopService(self) -> None:
        super().stopService()
        self.bus.stop()


class _Worker(protocol.ProcessProtocol):
    def __init__(self, supervisor: "Supervisor", index: int) -> None:
        self.supervisor = supervisor
        self.index = index
        self.ended: defer.Deferred[None] = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)
        self.supervisor.ended(self, reason)


class Supervisor(service.Service):
    """Worker 0's side: starts workers 1..N-1 on the listening socket, restarts them, stops them."""

    def __init__(self, count: int, arguments: Sequence[str], bus_directory: str, reactor: Any) -> None:
        self.count = count
        self.arguments = list(arguments)
        self.bus_directory = bus_directory
        self._reactor = reactor
        self._fd: int | None = None
        self._workers: dict[int, tuple[_Worker, Any]] = {}
        self._stopping = False

    def listening(self, port: Any) -> None:
        """The socket is open: start the workers on it."""
        self._fd = port.fileno()
        for index in range(1, self.count):
            self._start(index)

    def _start(self, index: int) -> None:
        if self._stopping or self._fd is None:
            return
        worker = _Worker(self, index)
        argv = [*TWISTD, "-n", "--pidfile=", "queuey", *self.arguments, "--listen-fd", "3",
                "--worker-index", str(index), "--workers", str(self.count), "--worker-bus", self.bus_directory]
        transport = self._reactor.spawnProcess(worker, sys.executable, argv, env=dict(os.environ),
                                               childFDs={0: "w", 1: 1, 2: 2, 3: self._fd})
        self._workers[index] = (worker, transport)
        log.info("Started worker {index} of {count} (pid {pid})", index=index, count=self.count,
                 pid=transport.pid)

    def ended(self, worker: _Worker, reason: Any) -> None:
        self._workers.pop(worker.index, None)
        if not self._stopping:
            log.warn("Worker {index} exited ({reason}); starting it again in {delay} s", index=worker.index,
                     reason=reason.getErrorMessage(), delay=RESTART_DELAY)
            self._reactor.callLater(RESTART_DELAY, self._start, worker.index)

    def stopService(self) -> Any:
        super().stopService()
        self._stopping = True
        waits = []
        for worker, transport in list(self._workers.values()):
            try:
                transport.signalProcess("TERM")
            except Exception:  # already gone
                continue
            kill = self._reactor.callLater(STOP_GRACE, self._kill, transport)
            waits.append(worker.ended.addBoth(lambda _, k=kill: k.cancel() if k.active() else None))
        done = defer.DeferredList(waits)
        done.addBoth(lambda _: shutil.rmtree(self.bus_directory, ignore_errors=True))
        return done

    @staticmethod
    def _kill(transport: Any) -> None:
        try:
            transport.signalProcess("KILL")
        except Exception:
            pass


class ParentWatch(protocol.Protocol):
    """A worker's standard input is a pipe from worker 0: when it closes, worker 0 is gone."""

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor

    def connectionLost(self, reason: Any) -> None:
        if self._reactor.running:
            log.warn("Worker 0 is gone: stopping")
            self._reactor.stop()


def add_worker_services(top: service.MultiService, on_listening: list[Callable[[Any], None]], core: Queuey,
                        reactor: Any, count: int, index: int, bus: str | None, arguments: Sequence[str]) -> None:
    """What a worker adds to the Queuey service: the bus; in worker 0 (no ``bus`` yet) the
    supervisor of the others, started once the port listens; in the others the parent watch."""
    if bus is None:
        bus = tempfile.mkdtemp(prefix="queuey-workers-")
        supervisor = Supervisor(count, arguments, bus, reactor)
        on_listening.append(supervisor.listening)
        supervisor.setServiceParent(top)
    else:
        stdio.StandardIO(ParentWatch(reactor), reactor=reactor)
    BusService(WorkerBus(bus, index, count, core, reactor)).setServiceParent(top)
