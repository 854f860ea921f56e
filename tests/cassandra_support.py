"""What the tests on the test Cassandra share: its settings, real time, and clearing an application."""

from __future__ import annotations

import time
from typing import Any, Iterable

from twisted.internet import defer, threads

from queuey import timeuuid
from queuey.config import parse_config
from tests.services import CASSANDRA, require


def cassandra_settings(**storage: str) -> Any:
    """CassandraSettings for the test Cassandra (skips, or fails under CI, without one)."""
    keys = {"hosts": require(CASSANDRA, "Cassandra"), "keyspace": "queuey_test", "connect_timeout": "5",
            "request_timeout": "10", **storage}
    lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
    return parse_config(f"[application_keys]\na = k\n[storage]\nbackend = cassandra\n{lines}").storage


def real_ticks() -> int:
    """Now, in 100-ns ticks: Cassandra keeps time by the real clock."""
    return round(time.time() * timeuuid.TICKS_PER_SECOND)


@defer.inlineCallbacks
def purge(store: Any, applications: Iterable[str]) -> Any:
    """Delete every queue of ``applications`` (and so their messages): a clean start for a test."""
    for application in applications:
        while True:
            queues = yield store.list_queues(application, None, 100)
            if not queues:
                break
            for queue in queues:
                yield store.delete_queue(application, queue.queue_name)


def run_cql(settings: Any, statements: list[str]) -> defer.Deferred[list[Any]]:
    """Run CQL statements on a connection of their own (in a thread: the driver blocks);
    fires with the rows of the last one."""
    def run() -> list[Any]:
        from cassandra.cluster import Cluster
        cluster = Cluster(contact_points=list(settings.hosts), protocol_version=5, connect_timeout=10)
        try:
            session = cluster.connect()
            rows: list[Any] = []
            for statement in statements:
                rows = list(session.execute(statement, timeout=60))
            return rows
        finally:
            cluster.shutdown()
    return threads.deferToThread(run)
