"""Real processes for the qdo integration tests and bench: ``twistd queuey``, ``qdo`` workers, a TCP proxy.

Nothing here sleeps for time: :func:`wait_for` polls a condition until a
bounded deadline.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

import orjson
from kazoo.exceptions import NoNodeError
from twisted.internet import defer, protocol, reactor, task
from twisted.internet.error import ProcessDone, ProcessTerminated

from qdo.session import Session
from qdo.zk import ZooKeeper
from queuey import timeuuid
from queuey.client import QueueyClient
from tests.processes import start_queuey, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)
APP, KEY = "a", "key"
#: Another application of the test server, which may read the queues of APP that list it.
PRINCIPAL, PRINCIPAL_KEY = "reader", "reader-key"


def ids(n: int) -> list[str]:
    """``n`` message ids in increasing order."""
    generator = timeuuid.TimeUUIDGenerator(lambda: 17_000_000_000_000_000)
    return [generator.next().hex for _ in range(n)]


class LoggedProcess(protocol.ProcessProtocol):
    """A child process whose output goes to a file; ``ended`` fires with its exit code (or -signal)."""

    def __init__(self, log_path: str) -> None:
        self.log = open(log_path, "ab")
        self.ended: defer.Deferred[int] = defer.Deferred()
        self.pid: int | None = None
        self.running = False

    def connectionMade(self) -> None:
        self.pid = self.transport.pid
        self.running = True

    def outReceived(self, data: bytes) -> None:
        self.log.write(data)
        self.log.flush()

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.running = False
        self.log.close()
        value = reason.value
        if isinstance(value, ProcessDone):
            code = 0
        elif isinstance(value, ProcessTerminated):
            code = value.exitCode if value.exitCode is not None else -(value.signal or 0)
        else:
            code = -999
        self.ended.callback(code)

    def signal(self, name: str) -> None:
        if self.running:
            self.transport.signalProcess(name)

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not ended within ``timeout``."""
        if not self.running:
            return None
        waiting = defer.Deferred()
        self.ended.addBoth(lambda code: (waiting.callback(code) if not waiting.called else None, code)[1])
        self.signal("TERM")
        timer = reactor.callLater(timeout, self.signal, "KILL")
        code = await waiting
        if timer.active():
            timer.cancel()
        return code


def spawn(argv: list[str], log_path: str, env: dict[str, str] | None = None, cwd: str | None = None) -> LoggedProcess:
    process = LoggedProcess(log_path)
    environment = dict(os.environ)
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    environment.update(env or {})
    reactor.spawnProcess(process, argv[0], argv, env=environment, path=cwd or REPO)
    return process


class Cleanups:
    """Stands in for a TestCase's ``addCleanup`` outside a test (the bench): :meth:`run` runs them, last first."""

    def __init__(self) -> None:
        self.cleanups: list[Callable[[], Any]] = []

    def addCleanup(self, function: Callable[..., Any], *args: Any) -> None:
        self.cleanups.append(lambda: function(*args))

    async def run(self) -> None:
        while self.cleanups:
            result = self.cleanups.pop()()
            if isinstance(result, defer.Deferred):
                await result


class Queuey:
    """A real ``twistd -n queuey`` on SQLite (tests/processes.py's start_queuey), on a free loopback port."""

    def __init__(self, directory: str, process: Any) -> None:
        self.directory = directory
        self.process = process
        self.url = f"{process.base}/v1/{APP}"
        self.client = QueueyClient(self.url, KEY, reactor=reactor, retries=1)

    @classmethod
    async def start(cls, test: Any, directory: str) -> "Queuey":
        """Start one; ``test`` (a TestCase, or :class:`Cleanups`) kills it with -9 at the end if it still runs."""
        ini = os.path.join(directory, "queuey.ini")
        with open(ini, "w") as handle:
            handle.write(f"[application_keys]\n{APP} = {KEY}\n{PRINCIPAL} = {PRINCIPAL_KEY}\n\n"
                         "[storage]\nbackend = sqlite\n"
                         f"path = {os.path.join(directory, 'q.sqlite')}\n\n[longpoll]\npoll_interval = 0.2\n")
        queuey = cls(directory, await start_queuey(test, ini))
        await wait_for(queuey.client.heartbeat, 30, "queuey to serve")
        return queuey

    async def stop(self) -> None:
        await self.client.close()
        if not self.process.ended.called:
            self.process.transport.signalProcess("TERM")
            await self.process.ended


WORKER_CONF = """\
[qdo-worker]
{worker}

[partitions]
policy = {policy}
discover_interval = {discover_interval}
offsets_file = {offsets_file}
{ids}
{queues}

[queuey]
connection = {queuey}
app_key = {key}

[zookeeper]
connection = {zookeeper}
group = test
party_wait = {party_wait}
max_party_wait = 3
session_timeout = {session_timeout}
"""


class Worker:
    """One real ``qdo -c <conf>`` process with the journal job."""

    def __init__(self, directory: str, name: str, queuey: str, zookeeper: str, *, policy: str = "automatic",
                 session_timeout: float = 20, party_wait: float = 0.5, long_poll: int = 0,
                 discover_interval: float = 1.0, job_seconds: float = 0.01, ids: str = "", queues: str = "",
                 key: str = KEY, settings: dict[str, Any] | None = None) -> None:
        """``settings``: more (or other) ``[qdo-worker]`` keys; ``queues``: ``[partitions] queues``;
        ``key``: the worker's application key. Sessions are long (20 s) unless a test
        studies their expiry: a loaded machine must not lose one by accident."""
        self.name = name
        self.directory = directory
        self.journal = os.path.join(directory, f"journal-{name}")
        self.conf = os.path.join(directory, f"{name}.conf")
        self.log_path = os.path.join(directory, f"{name}.log")
        with open(self.conf, "w") as handle:
            handle.write(WORKER_CONF.format(
                policy=policy, queuey=queuey, key=key, zookeeper=zookeeper, party_wait=party_wait,
                session_timeout=session_timeout, long_poll=long_poll, discover_interval=discover_interval,
                offsets_file=os.path.join(directory, f"offsets-{name}.json"), ids=f"ids = {ids}" if ids else "",
                queues=f"queues = {queues}" if queues else "",
                worker="\n".join(f"{k} = {v}" for k, v in {
                    "job": "tests.qdo_journal:journal_job", "name": name, "wait_interval": 0.2,
                    "max_wait_interval": 0.5, "long_poll": long_poll, "concurrency": 4, "lag_interval": 5,
                    **(settings or {})}.items())))
        self.job_seconds = job_seconds
        self.env: dict[str, str] = {}
        self.process: LoggedProcess | None = None
        self.died_at: float | None = None

    def start(self, *command: str) -> "Worker":
        """``qdo -c <conf>``, or another command line (``command``, to which the journal settings apply too)."""
        argv = list(command) or [sys.executable, "-m", "qdo", "-c", self.conf]
        self.process = spawn(argv, self.log_path, env={
            "QDO_TEST_JOURNAL": self.journal, "QDO_TEST_WORKER": self.name,
            "QDO_TEST_JOB_SECONDS": str(self.job_seconds), **self.env})
        return self

    def kill(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.died_at = time.time()

    async def stop(self) -> int | None:
        if self.process is None:
            return None
        code = await self.process.stop()
        if self.died_at is None:
            self.died_at = time.time()
        return code

    def log(self) -> str:
        with open(self.log_path, errors="replace") as handle:
            return handle.read()

    def lost_a_session(self) -> bool:
        """Whether this worker lost a ZooKeeper session (on a loaded machine: not a defect in itself)."""
        return os.path.exists(self.log_path) and "ZooKeeper session lost" in self.log()


class Group:
    """Reads a qdo group's state from ZooKeeper (with a session of the test's own)."""

    def __init__(self, hosts: str, root: str, group: str = "test") -> None:
        self.zk = ZooKeeper(hosts, reactor, session_timeout=10)
        self.session = Session(self.zk, reactor, 10)
        self.base = f"{root}/{group}"

    async def start(self) -> None:
        await self.zk.start()

    async def stop(self) -> None:
        await self.zk.stop()

    async def workers(self) -> set[str]:
        try:
            return set(await self.session.retry(lambda: self.zk.children(self.base + "/workers")))
        except NoNodeError:
            return set()

    async def assignment(self) -> dict[str, Any]:
        try:
            value, _ = await self.session.retry(lambda: self.zk.get(self.base + "/assignment"))
        except NoNodeError:
            return {}
        return orjson.loads(value)

    async def _leaves(self, sub: str) -> dict[str, tuple[bytes, Any]]:
        found: dict[str, tuple[bytes, Any]] = {}
        root = f"{self.base}/{sub}"
        try:
            queues_of = await self.session.retry(lambda: self.zk.children(f"{root}/{APP}"))
        except NoNodeError:
            return found
        for queue in queues_of:
            try:
                numbers = await self.session.retry(lambda: self.zk.children(f"{root}/{APP}/{queue}"))
            except NoNodeError:
                continue
            for number in numbers:
                try:
                    path = f"{root}/{APP}/{queue}/{number}"
                    found[f"{queue}-{number}"] = await self.session.retry(lambda: self.zk.get(path))
                except NoNodeError:
                    pass
        return found

    async def owners(self) -> dict[str, tuple[str, int]]:
        """partition name -> (worker, czxid of the owner node)."""
        return {k: (orjson.loads(v)["worker"], stat.czxid) for k, (v, stat) in (await self._leaves("owners")).items()}

    async def offsets(self) -> dict[str, str | None]:
        return {k: orjson.loads(v).get("offset") for k, (v, _) in (await self._leaves("offsets")).items()}


class OffsetSampler:
    """Samples every offset node while it runs; records the values each took, in order."""

    def __init__(self, group: Group) -> None:
        self.group = group
        self.history: dict[str, list[str]] = {}
        self.loop = task.LoopingCall(lambda: defer.ensureDeferred(self.sample()))
        self.loop.clock = reactor

    async def sample(self) -> None:
        for partition, offset in (await self.group.offsets()).items():
            if offset is None:
                continue
            seen = self.history.setdefault(partition, [])
            if not seen or seen[-1] != offset:
                seen.append(offset)

    def start(self) -> None:
        self.loop.start(0.05)

    def stop(self) -> None:
        if self.loop.running:
            self.loop.stop()


class TCPProxy(protocol.Factory):
    """A loopback TCP relay that a test can cut (every connection dropped, new ones refused) and restore;
    ``sent`` counts the bytes its clients sent."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_off = False
        self.sent = 0
        self.connections: set[Any] = set()
        self.port = reactor.listenTCP(0, self, interface="127.0.0.1")
        self.address = f"127.0.0.1:{self.port.getHost().port}"

    def buildProtocol(self, addr: Any) -> "_Inbound":
        return _Inbound(self)

    def cut(self) -> None:
        self.cut_off = True
        for connection in list(self.connections):
            connection.transport.abortConnection()

    def restore(self) -> None:
        self.cut_off = False

    def close(self) -> defer.Deferred[Any]:
        self.cut()
        return defer.maybeDeferred(self.port.stopListening)


class _Outbound(protocol.Protocol):
    def __init__(self, inbound: "_Inbound") -> None:
        self.inbound = inbound

    def connectionMade(self) -> None:
        self.inbound.outbound = self
        self.inbound.proxy.connections.add(self)
        if self.inbound.buffer:
            self.transport.write(b"".join(self.inbound.buffer))
            self.inbound.buffer = []

    def dataReceived(self, data: bytes) -> None:
        if not self.inbound.proxy.cut_off:
            self.inbound.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.inbound.proxy.connections.discard(self)
        self.inbound.transport.loseConnection()


class _Inbound(protocol.Protocol):
    def __init__(self, proxy: TCPProxy) -> None:
        self.proxy = proxy
        self.outbound: _Outbound | None = None
        self.buffer: list[bytes] = []

    def connectionMade(self) -> None:
        if self.proxy.cut_off:
            self.transport.abortConnection()
            return
        self.proxy.connections.add(self)
        factory = protocol.ClientFactory()
        factory.protocol = lambda: _Outbound(self)  # type: ignore[assignment]
        reactor.connectTCP("127.0.0.1", self.proxy.target_port, factory)

    def dataReceived(self, data: bytes) -> None:
        if self.proxy.cut_off:
            return
        self.proxy.sent += len(data)
        if self.outbound is None:
            self.buffer.append(data)
        else:
            self.outbound.transport.write(data)

    def connectionLost(self, reason: Any) -> None:
        self.proxy.connections.discard(self)
        if self.outbound is not None:
            self.outbound.transport.loseConnection()


async def run_qdo(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    """``qdo ARGS`` (status, errors ...) to its end: (exit code, stdout, stderr)."""
    from twisted.internet import utils
    environment = dict(os.environ)
    environment["PYTHONPATH"] = REPO + os.pathsep + environment.get("PYTHONPATH", "")
    d = utils.getProcessOutputAndValue(sys.executable, ["-m", "qdo", *args], env=environment, path=REPO)
    d.addTimeout(timeout, reactor)
    out, err, code = await d
    return code, out.decode(), err.decode()


async def post_spread(client: QueueyClient, queue: str, partitions: int, count: int, tag: str,
                      batch: int = 200) -> list[str]:
    """Post ``count`` messages spread over the partitions; their ids."""
    ids: list[str] = []
    for start in range(0, count, batch):
        messages = [{"body": f"{tag}-{i}", "partition": i % partitions + 1}
                    for i in range(start, min(count, start + batch))]
        ids.extend(m["key"] for m in await client.post_messages(queue, messages))
    return ids
