"""Real ``twistd queuey`` processes for end-to-end tests, killed when the test ends."""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

from twisted.internet import defer, protocol, reactor
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwistdProcess(protocol.ProcessProtocol):
    """Collects a twistd's output; fires ``listening`` on its 'starting on' line and ``ended`` at exit."""

    base = ""

    def __init__(self) -> None:
        self.output = b""
        self.listening: defer.Deferred[None] = defer.Deferred()
        self.ended: defer.Deferred[Any] = defer.Deferred()

    def childDataReceived(self, fd: int, data: bytes) -> None:
        self.output += data
        if not self.listening.called and b"starting on" in self.output:
            self.listening.callback(None)

    def processEnded(self, reason: Any) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError("twistd exited before listening:\n" + self.output.decode()))
        self.ended.callback(reason.value)


def spawn_queuey(test: unittest.TestCase, cwd: str, *args: str) -> TwistdProcess:
    """``twistd -n queuey ARGS`` in ``cwd``; killed with -9 at the end of ``test`` if still running."""
    process = TwistdProcess()
    transport = reactor.spawnProcess(process, sys.executable, TWISTD + ["-n", "--pidfile=", "queuey", *args],
                                     env=dict(os.environ), path=cwd)
    process.transport = transport

    def stop() -> defer.Deferred[Any]:
        if not process.ended.called and transport.pid is not None:
            transport.signalProcess("KILL")
        return process.ended
    test.addCleanup(stop)
    return process


@defer.inlineCallbacks
def start_queuey(test: unittest.TestCase, config: str, port: int | None = None) -> Any:
    """A queuey with ``config`` on a loopback ``port``; fires with its process, ``base`` set, once it listens."""
    port = port or free_port()
    process = spawn_queuey(test, os.path.dirname(config), "--config", config,
                           "--port", f"tcp:{port}:interface=127.0.0.1")
    yield process.listening
    process.base = f"http://127.0.0.1:{port}"
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
