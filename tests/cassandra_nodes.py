"""The nodes of a test Cassandra cluster, driven through the project's scripts, for the cluster tests.

``scripts/run-cluster-tests.sh`` starts the cluster and exports
``QUEUEY_CASSANDRA_DATA`` (its data directory) and ``QUEUEY_SERVICES_SLOT``,
which the scripts read from the environment.
"""

from __future__ import annotations

import os
import time
from typing import Awaitable, Callable

from twisted.internet import defer, reactor, task, utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: A queuey of application ``c`` on the test cluster: short timeouts, a fast poll (format it).
CONFIG = """
[application_keys]
c = {key}

[storage]
backend = cassandra
hosts = {hosts}
keyspace = {keyspace}
replication = {replication}
connect_timeout = 3
request_timeout = 5

[longpoll]
poll_interval = 0.5
"""


class ScriptFailed(AssertionError):
    """A script of scripts/ exited with an error."""


async def script(name: str, *args: str) -> str:
    """Run ``scripts/NAME ARGS``; its standard output, or ScriptFailed with its error output."""
    out, err, code = await utils.getProcessOutputAndValue(
        os.path.join(ROOT, "scripts", name), list(args), env=dict(os.environ), path=ROOT)
    if code != 0:
        raise ScriptFailed(f"scripts/{name} {' '.join(args)} failed ({code}):\n{err.decode(errors='replace')}")
    return out.decode(errors="replace")


def node(action: str, number: int) -> defer.Deferred[str]:
    """``scripts/cassandra-node.sh ACTION N``: stop, kill (-9) or start one node."""
    return defer.ensureDeferred(script("cassandra-node.sh", action, str(number)))


async def table_stats(number: int, table: str) -> dict[str, str]:
    """``nodetool tablestats KEYSPACE.TABLE`` of node N, as {name: value}."""
    text = await script("cassandra-nodetool.sh", "--node", str(number), "tablestats", table)
    stats = {}
    for line in text.splitlines():
        key, _, value = line.strip().partition(": ")
        if value:
            stats[key] = value
    return stats


async def until(what: str, check: Callable[[], Awaitable[bool]], seconds: float = 60, every: float = 0.1) -> None:
    """Wait for something another process does: ``check()`` until it is true, at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await task.deferLater(reactor, every, lambda: None)


def metric(text: str, name: str) -> float:
    """The value of an unlabelled metric in Prometheus text, 0 when absent."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0
