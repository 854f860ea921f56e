"""The ``qdo`` command as an operator meets it: exit codes, signals, ``twistd qdo``, the manual policy's
discovery and ``exclude``, a crash mid-write of the offsets file, and no ZooKeeper at all.

Real processes (``qdo``, ``twistd qdo``, ``twistd queuey``); the manual policy needs no ZooKeeper.
"""

from __future__ import annotations

import glob
import logging
import os
import signal
import sys
from typing import Any

import orjson
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qdo.assign import Partition
from qdo.offsets import TEMPORARY_PREFIX, FileOffsets
from qdo.zk import ConnectionNotices
from tests.qdo_harness import BIN, Queuey, Worker, ids, post_spread, spawn
from tests.processes import wait_for
from tests.qdo_journal import done_ids, read_journals


class ExitCodeTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)

    def worker(self, **kwargs: Any) -> Worker:
        worker = Worker(self.directory, "m", "http://127.0.0.1:1/v1/a", "127.0.0.1:1/unused", policy="manual",
                        **kwargs)
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        return worker

    async def _bad_configuration(self) -> None:
        worker = self.worker(settings={"concurrency": 0})
        code = await worker.start().process.ended
        self.assertEqual(code, 2)
        self.assertIn("qdo: bad configuration: [qdo-worker] concurrency", worker.log())

    def test_a_bad_configuration_exits_2(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._bad_configuration())

    async def _cannot_start(self) -> None:
        worker = self.worker()
        with open(os.path.join(self.directory, "offsets-m.json"), "w") as handle:
            handle.write('{"offsets": {"a/jobs/1": ')  # damaged (e.g. a copy cut short)
        code = await worker.start().process.ended
        self.assertEqual(code, 1)
        log = worker.log()
        self.assertIn("could not start: ", log)
        self.assertIn("is not a qdo offsets file", log)
        self.assertNotIn("Traceback", log, "one clear line, not a traceback")

    def test_a_worker_that_cannot_start_exits_1(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._cannot_start())


class ManualWorkerTests(TestCase):
    """SIGINT, ``twistd qdo``, discovery and ``exclude`` of the manual policy, with a real queuey."""

    timeout = 180

    async def _setUp(self) -> None:
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.queuey = await Queuey.start(self, self.directory)
        self.addCleanup(lambda: defer.ensureDeferred(self.queuey.stop()))
        self.client = self.queuey.client

    def setUp(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._setUp())

    def worker(self, **kwargs: Any) -> Worker:
        worker = Worker(self.directory, "m", self.queuey.url, "127.0.0.1:1/unused", policy="manual", **kwargs)
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        return worker

    def offsets(self) -> dict[str, str]:
        with open(os.path.join(self.directory, "offsets-m.json"), "rb") as handle:
            return orjson.loads(handle.read())["offsets"]

    async def _sigint(self) -> None:
        await self.client.create_queue("jobs", partitions=2)
        posted = await post_spread(self.client, "jobs", 2, 40, "x")
        worker = self.worker(ids="jobs-1 jobs-2").start()
        await wait_for(lambda: set(posted) <= done_ids(read_journals([worker.journal])), 60, "all done")
        ended = worker.process.ended
        worker.process.signal("INT")
        self.assertEqual(await ended, 0)
        newest = {f"a/jobs/{n}": max((i for i in posted[n - 1::2]), key=lambda i: i) for n in (1, 2)}
        self.assertEqual(self.offsets(), newest, "SIGINT commits before exiting, like SIGTERM")
        self.assertIn("Worker m stopped", worker.log())

    def test_sigint_commits_and_exits_0(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._sigint())

    async def _twistd(self) -> None:
        await self.client.create_queue("jobs", partitions=1)
        posted = await post_spread(self.client, "jobs", 1, 20, "t")
        worker = self.worker(ids="jobs-1")
        worker.start(os.path.join(BIN, "twistd"), "-n", "--pidfile=", "qdo", "--config", worker.conf)
        await wait_for(lambda: set(posted) <= done_ids(read_journals([worker.journal])), 60, "all done")
        # twistd ends a SIGTERM'd process with the signal's own status, once shut down cleanly.
        self.assertIn(await worker.stop(), (0, -signal.SIGTERM))
        self.assertIn("Worker m stopped", worker.log())
        self.assertIn("Server Shut Down", worker.log())
        self.assertEqual(self.offsets(), {"a/jobs/1": posted[-1]})

    def test_twistd_qdo_runs_a_worker(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._twistd())

    async def _discovery(self) -> None:
        await self.client.create_queue("jobs", partitions=2)
        await self.client.create_queue("skipped", partitions=1)
        await self.client.create_queue("qdo_error", partitions=1)
        posted = await post_spread(self.client, "jobs", 2, 20, "j")
        await self.client.post_messages("skipped", ["not for us"])
        await self.client.post_messages("qdo_error", ["not for us either"])
        worker = self.worker(discover_interval=0.3)
        with open(worker.conf) as handle:  # every queue but skipped (and qdo_error, always)
            conf = handle.read().replace("[partitions]", "[partitions]\nexclude = skipped")
        with open(worker.conf, "w") as handle:
            handle.write(conf)
        worker.start()
        await wait_for(lambda: set(posted) <= done_ids(read_journals([worker.journal])), 60, "jobs done")
        await self.client.create_queue("late", partitions=2)  # found by the next discovery
        late = await post_spread(self.client, "late", 2, 10, "l")
        await wait_for(lambda: set(late) <= done_ids(read_journals([worker.journal])), 60, "late done")
        self.assertEqual(await worker.stop(), 0)
        queues = {r.partition.rsplit("-", 1)[0] for r in read_journals([worker.journal])}
        self.assertEqual(queues, {"jobs", "late"}, "skipped and qdo_error excluded")

    def test_manual_discovery_and_exclude(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._discovery())


CRASHING_WRITER = """
import os, sys
from twisted.internet import reactor, defer
from qdo.assign import Partition
from qdo.offsets import FileOffsets
path, first, second = sys.argv[1:4]
offsets = FileOffsets(path, reactor)

def crash_in_fsync(fd):
    sys.stdout.write("writing\\n"); sys.stdout.flush()
    os.kill(os.getpid(), 9)  # the crash, between writing the temporary file and renaming it

@defer.inlineCallbacks
def main():
    yield offsets.load()
    yield offsets.commit(Partition("a", "q", 1), first)
    os.fsync = crash_in_fsync
    yield offsets.commit(Partition("a", "q", 1), second)

reactor.callWhenRunning(main)
reactor.run()
"""


class OffsetsFileCrashTests(TestCase):

    async def _crash(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        path = os.path.join(directory, "offsets.json")
        first, second = ids(2)
        process = spawn([sys.executable, "-c", CRASHING_WRITER, path, first, second],
                        os.path.join(directory, "writer.log"))
        code = await process.ended
        self.assertEqual(code, -signal.SIGKILL)
        self.assertEqual(len(glob.glob(os.path.join(directory, TEMPORARY_PREFIX + "*"))), 1, "killed mid-write")
        offsets = FileOffsets(path, reactor)
        await offsets.load()
        self.assertEqual(offsets.get(Partition("a", "q", 1)), first, "the file before the crash, whole")
        self.assertEqual(glob.glob(os.path.join(directory, TEMPORARY_PREFIX + "*")), [], "the leftover removed")

    def test_a_crash_mid_write_leaves_the_previous_offsets(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._crash())


class _Attempts(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.attempts += 1  # type: ignore[attr-defined]
        self.transport.abortConnection()


class NoZooKeeperTests(TestCase):
    """Issue 7, row 16: started with no ZooKeeper, a worker says so once, clearly, then keeps quiet."""

    timeout = 120

    async def _test(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        factory = protocol.Factory.forProtocol(_Attempts)
        factory.attempts = 0  # type: ignore[attr-defined]
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        address = f"127.0.0.1:{port.getHost().port}"
        worker = Worker(directory, "w", "http://127.0.0.1:1/v1/a", address + "/qdo").start()
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        await wait_for(lambda: factory.attempts >= 4, 60, "four connection attempts")  # type: ignore[attr-defined]
        self.assertEqual(await worker.stop(), 0)
        lines = [line for line in worker.log().splitlines() if "ZooKeeper" in line or "kazoo" in line]
        notices = [line for line in lines if "Cannot reach ZooKeeper at " + address in line]
        self.assertEqual(len(notices), 1, "\n".join(lines))
        self.assertIn("keeps trying", notices[0])
        self.assertEqual([line for line in lines if "kazoo" in line or "Connection dropped" in line and
                          line not in notices], [], "kazoo's own warnings are summed up, not repeated")

    def test_one_clear_line_then_quiet(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class ConnectionNoticesTests(SynchronousTestCase):
    """The back-off of the notices, on a clock."""

    def test_first_failure_then_fewer_and_fewer(self) -> None:
        now = [0.0]
        said: list[str] = []
        notices = ConnectionNotices("h:1", said.append, clock=lambda: now[0], first_reminder=30, max_interval=120)

        def attempt() -> bool:
            record = logging.LogRecord("kazoo", logging.WARNING, __file__, 1, "Connection dropped: %s", ("refused",),
                                       None)
            return notices.filter(record)

        self.assertFalse(attempt())
        self.assertEqual(len(said), 1)
        self.assertIn("Cannot reach ZooKeeper at h:1 (Connection dropped: refused); qdo keeps trying", said[0])
        for second in range(1, 400):
            now[0] = float(second)
            attempt()
        # reminders at 30, then 30+60, then every 120 s: 90+120=210, 330
        self.assertEqual(len(said), 5, said)
        self.assertTrue(all(s.startswith("Still cannot reach") for s in said[1:]))
        notices.connected()
        self.assertIn("answers again", said[-1])
        other = logging.LogRecord("kazoo", logging.WARNING, __file__, 1, "Something else", (), None)
        self.assertTrue(notices.filter(other), "other warnings pass")
