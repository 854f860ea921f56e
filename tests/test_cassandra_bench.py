"""bench/cassandra_bench.py's raw side on a real Cassandra: each shape's CQL runs without a failure.

The raw worker prepares Queuey's own statements and reads Queuey's keyspace,
so a change of the schema or of a statement's arguments breaks it; nothing
else runs it (the benchmark is not part of the tests).  Needs a running
Cassandra, as tests/test_cassandra_store.py.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from twisted.internet import defer, reactor, utils
from twisted.trial import unittest

from queuey import timeuuid
from queuey.interfaces import NewMessage, QueueSettings
from queuey.rendering import render
from tests.cassandra_support import cassandra_settings, purge, real_ticks

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench" / "cassandra_bench.py"
#: As bench/http_bench.py names them: the application and the queues each shape uses.
BENCH_APP = "bench"
BENCH_QUEUES = ("raw-single", "raw-batch", "q-read")


class RawWorkerTests(unittest.TestCase):
    timeout = 120

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        from queuey.storage.cassandra import CassandraStore
        self.settings = cassandra_settings()
        self.store = CassandraStore(self.settings, reactor)
        yield self.store.open()
        self.addCleanup(self.store.close)
        yield purge(self.store, [BENCH_APP])
        self.addCleanup(purge, self.store, [BENCH_APP])
        for name in BENCH_QUEUES:
            yield self.store.create_queue(QueueSettings(BENCH_APP, name, 1, created=real_ticks()))
        read_queue = yield self.store.get_queue(BENCH_APP, "q-read")
        ids = timeuuid.TimeUUIDGenerator(real_ticks)
        yield self.store.put_messages(read_queue, [
            NewMessage(message_id, 1, b"body", "text/plain", 600, render(message_id, 1, b"body", "text/plain"))
            for message_id in (ids.next() for _ in range(120))])

    @defer.inlineCallbacks
    def run_shape(self, shape: str) -> Any:
        """One second of the shape, four operations in flight; the worker's result."""
        host, port = self.settings.hosts[0]
        spec = {"host": host, "port": port, "keyspace": self.settings.keyspace, "shape": shape,
                "duration": 1, "warmup": 0, "concurrency": 4}
        out, err, code = yield utils.getProcessOutputAndValue(
            sys.executable, [str(BENCH), "--raw-worker", json.dumps(spec)], env=dict(os.environ), path=str(ROOT))
        lines = [line for line in out.decode(errors="replace").splitlines() if line.startswith("BENCH_RESULT ")]
        self.assertEqual((code, len(lines)), (0, 1), err.decode(errors="replace")[-3000:])
        return json.loads(lines[0].split(" ", 1)[1])

    @defer.inlineCallbacks
    def test_every_shape_runs_without_a_failed_operation(self) -> Any:
        for shape in ("post_single", "post_batch", "get_messages"):
            result = yield self.run_shape(shape)
            self.assertEqual((result["errors"], result["first_error"]), (0, []), shape)
            self.assertGreater(result["requests"], 0, shape)
