"""Real ``twistd queuey`` processes for end-to-end tests, killed when the test ends, and how to
wait for what they do: nothing here sleeps for time; :func:`wait_for` polls a condition until a
bounded deadline.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Callable, TypeVar

import treq
from twisted.internet import defer, protocol, reactor, task
from twisted.trial import unittest

TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]


def config_in_temp_dir(test: unittest.TestCase, text: str) -> tuple[str, str]:
    """A new directory for ``test`` holding ``queuey.ini`` with ``text``: (directory, config path)."""
    directory = os.path.abspath(test.mktemp())
    os.makedirs(directory)
    config = os.path.join(directory, "queuey.ini")
    with open(config, "w") as handle:
        handle.write(text)
    return directory, config


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on at ``host`` (an IPv4 or IPv6 address) just now."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


async def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition`` (sync or async) until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error = None
    while True:
        try:
            value = condition()
            if isinstance(value, defer.Deferred) or hasattr(value, "__await__"):
                value = await value
            if value:
                return value
        except Exception as e:  # a condition that cannot be evaluated yet
            last_error = e
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f" (last error: {last_error!r})" if last_error else ""))
        await task.deferLater(reactor, interval, lambda: None)


#: What twistd logs once Queuey's site listens (Twisted's "<factory> starting on <address>"): the
#: whole of it, since other lines may say "starting on" too (a store meeting another process).
LISTENING = b"QueueySite starting on "


class TwistdProcess(protocol.ProcessProtocol):
    """Collects a twistd's output; fires ``listening`` on its site's 'QueueySite starting on' line and
    ``ended`` at exit."""

    base = ""
    port = 0

    def __init__(self) -> None:
        self.output = b""
        self.listening: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data
        if not self.listening.called and LISTENING in self.output:
            self.listening.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError("twistd exited before listening:\n" + self.output.decode()))
        self.ended.callback(reason.value)


P = TypeVar("P", bound="TwistdProcess | CommandProcess")


def _spawn(test: unittest.TestCase, process: P, argv: list[str], env: dict[str, str], cwd: str | None) -> P:
    """``argv`` run with ``process``; killed with -9 at the end of ``test`` if still running."""
    transport = reactor.spawnProcess(process, argv[0], argv, env=env, path=cwd)
    process.transport = transport

    def stop() -> defer.Deferred[Any]:
        if not process.ended.called and transport.pid is not None:
            transport.signalProcess("KILL")
        return process.ended
    test.addCleanup(stop)
    return process


def spawn_queuey(test: unittest.TestCase, cwd: str, *args: str) -> TwistdProcess:
    """``twistd -n queuey ARGS`` in ``cwd``; killed with -9 at the end of ``test`` if still running."""
    return _spawn(test, TwistdProcess(), TWISTD + ["-n", "--pidfile=", "queuey", *args], dict(os.environ), cwd)


@defer.inlineCallbacks
def start_queuey(test: unittest.TestCase, config: str, port: int | None = None, backlog: int = 50) -> Any:
    """A queuey with ``config`` on a loopback ``port``; fires with its process, ``base`` and ``port``
    set, once it listens."""
    port = port or free_port()
    process = spawn_queuey(test, os.path.dirname(config), "--config", config,
                           "--port", f"tcp:{port}:interface=127.0.0.1:backlog={backlog}")
    yield process.listening
    process.base = f"http://127.0.0.1:{port}"
    process.port = port
    return process


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def running(pid: int) -> bool:
    """True while ``pid`` runs (Linux /proc: exists and is no zombie)."""
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def children_of(pid: int) -> list[int]:
    """The running processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and fields[1] == str(pid) and fields[0] != "Z":
                found.append(int(entry))
    return found


def write_config(test: unittest.TestCase, text: str) -> str:
    """``text`` as queuey.ini in a fresh directory of ``test``; its absolute path."""
    return config_in_temp_dir(test, text)[1]


@defer.inlineCallbacks
def request(base: str, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any) -> Any:
    """(status, JSON document) of one request on a connection of its own."""
    response = yield treq.request(method, base + path, headers=headers or {}, persistent=False, **kwargs)
    document = yield response.json()
    return response.code, document


@defer.inlineCallbacks
def held_reads(base: str) -> Any:
    """How many range reads the server at ``base`` holds (``queuey_longpolls_held`` of /metrics)."""
    response = yield treq.get(base + "/metrics", persistent=False)
    text = yield response.text()
    for line in text.splitlines():
        if line.startswith("queuey_longpolls_held "):
            return int(float(line.split()[1]))
    raise AssertionError("no queuey_longpolls_held in /metrics")


def wait_for_held(base: str, count: int, timeout: float = 30) -> defer.Deferred[Any]:
    """Fires once the server at ``base`` holds exactly ``count`` reads (proof that a read waits)."""
    async def holds() -> bool:
        return (await held_reads(base)) == count
    return defer.ensureDeferred(wait_for(holds, timeout, f"{base} to hold {count} read(s)"))


class CommandProcess(protocol.ProcessProtocol):
    """A command's stdout and stderr as they come; ``ended`` fires with its exit code (-signal if killed)."""

    def __init__(self, stdin: bytes | None = None, close_stdin: bool = True) -> None:
        self.stdin = stdin
        self.close_stdin = close_stdin
        self.out = b""
        self.err = b""
        self.ended: defer.Deferred[int] = defer.Deferred()

    def connectionMade(self) -> None:
        if self.stdin is not None:
            self.transport.write(self.stdin)
        if self.close_stdin:
            self.transport.closeStdin()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason: Any) -> None:
        value = reason.value
        code = getattr(value, "exitCode", 0)
        if code is None:
            code = -(getattr(value, "signal", 0) or 0)
        self.ended.callback(code)


def spawn_command(test: unittest.TestCase, argv: list[str], env: dict[str, str] | None = None,
                  stdin: bytes | None = None, cwd: str | None = None, close_stdin: bool = True) -> CommandProcess:
    """``argv`` with ``env`` added to this environment, ``stdin`` written to it (then closed, unless not
    ``close_stdin``); killed with -9 at the end of ``test`` if still running."""
    return _spawn(test, CommandProcess(stdin, close_stdin), argv, {**os.environ, **(env or {})}, cwd)
