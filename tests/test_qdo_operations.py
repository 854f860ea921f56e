"""What an operator sees, against a real ZooKeeper, a real ``twistd queuey`` and real ``qdo`` workers:
``qdo status`` (table and JSON, with workers running and with none), each worker's metrics endpoint, and the
failed-message queue filled by ``save_failed_message`` (with its TTL), listed and replayed.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from typing import Any

import orjson
import treq
from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from qdo.worker import ERROR_TTL
from tests.processes import free_port, wait_for
from tests.qdo_harness import Group, Queuey, Worker, post_spread, run_qdo
from tests.qdo_journal import done_ids, read_journals
from tests.services import ZOOKEEPER, require


class Operations(TestCase):
    timeout = 180

    async def _setUp(self) -> None:
        self.zookeeper = require(ZOOKEEPER, "ZooKeeper")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.root = f"/qdo-ops-{uuid.uuid4().hex[:12]}"
        self.queuey = await Queuey.start(self, self.directory)
        self.addCleanup(lambda: defer.ensureDeferred(self.queuey.stop()))
        self.client = self.queuey.client
        self.group = Group(self.zookeeper, self.root)
        await self.group.start()
        self.addCleanup(lambda: defer.ensureDeferred(self.group.stop()))

    def setUp(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._setUp())

    def worker(self, name: str, **kwargs: Any) -> Worker:
        worker = Worker(self.directory, name, self.queuey.url, f"{self.zookeeper}{self.root}", **kwargs)
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        return worker

    async def status(self, worker: Worker) -> dict[str, Any]:
        code, out, err = await run_qdo("status", "-c", worker.conf, "--json")
        self.assertEqual(code, 0, err)
        return orjson.loads(out)


class StatusAndMetricsTests(Operations):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=4)
        posted = await post_spread(self.client, "jobs", 4, 200, "x")
        ports = {"a": free_port(), "b": free_port()}
        a, b = (self.worker(n, settings={"metrics": f"tcp:{ports[n]}:interface=127.0.0.1"}).start() for n in "ab")
        journals = [a.journal, b.journal]
        await wait_for(lambda: set(posted) <= done_ids(read_journals(journals)), 90, "all processed")

        async def settled() -> dict[str, Any] | None:
            status = await self.status(a)
            rows = status["partitions"]
            if len(rows) == 4 and all(r["behind"] == 0 and r["owner"] == r["assigned"] for r in rows):
                return status
            return None
        status = await wait_for(settled, 60, "status to show 4 partitions owned, none behind")
        members = {m["worker"]: m for m in status["members"]}
        self.assertEqual({n: m["pid"] for n, m in members.items()}, {"a": a.process.pid, "b": b.process.pid})
        self.assertIn(status["leader"], ("a", "b"))
        self.assertEqual([m["worker"] for m in status["members"] if m["leader"]], [status["leader"]])
        self.assertEqual(sorted(r["owner"] for r in status["partitions"]).count("a"), 2)
        self.assertEqual(status["group"], f"{self.root}/test")

        # Each worker's metrics.
        response = await treq.get(f"http://127.0.0.1:{ports['a']}/metrics", persistent=False)
        text = (await response.text()).splitlines()

        def value(name: str) -> float:
            found = [float(line.rsplit(" ", 1)[1]) for line in text if line.startswith(name + " ")]
            self.assertEqual(len(found), 1, name)
            return found[0]
        processed_by_a = sum(1 for r in read_journals([a.journal]) if r.end is not None)
        self.assertEqual(value('qdo_messages_total{outcome="ok"}'), processed_by_a)
        self.assertEqual(value("qdo_partitions_held"), 2)
        self.assertEqual(value('qdo_zookeeper_session{qdo_zookeeper_session="connected"}'), 1)
        self.assertGreater(value("qdo_offset_commit_seconds_count"), 0)
        self.assertGreaterEqual(value("qdo_rebalances_total"), 1)
        self.assertEqual(value("qdo_job_duration_seconds_count"), processed_by_a)
        self.assertEqual(len([line for line in text if line.startswith("qdo_partition_lag_messages{")]), 2)

        # With no worker running: offsets stay in ZooKeeper, and the backlog shows.
        self.assertEqual(await a.stop(), 0)
        self.assertEqual(await b.stop(), 0)
        waiting = await self.client.post_messages("jobs", [{"body": f"w{i}", "partition": 1} for i in range(5)])
        status = await self.status(a)
        self.assertEqual(status["members"], [])
        rows = {r["partition"]: r for r in status["partitions"]}
        self.assertEqual(rows["jobs-1"]["behind"], 5)
        self.assertEqual(rows["jobs-1"]["offset"], max(posted[0::4]))
        self.assertGreaterEqual(rows["jobs-1"]["oldest_age"], 0)
        self.assertLess(rows["jobs-1"]["oldest_age"], 60)
        self.assertEqual({rows[f"jobs-{n}"]["behind"] for n in (2, 3, 4)}, {0})
        self.assertTrue(waiting)
        # The table, and the form without a worker's configuration.
        code, out, err = await run_qdo("status", "--zookeeper", f"{self.zookeeper}{self.root}", "--group", "test",
                                       "--queuey", self.queuey.url, "--app-key", "key")
        self.assertEqual(code, 0, err)
        self.assertIn("0 member(s)", out)
        line = next(x for x in out.splitlines() if x.startswith("jobs-1 "))
        self.assertEqual(line.split()[4], "5", out)

    def test_status_and_metrics(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())

    async def _unreachable(self) -> None:
        started = time.monotonic()
        code, out, err = await run_qdo("status", "--zookeeper", f"127.0.0.1:{free_port()}", "--queuey",
                                       self.queuey.url)
        self.assertEqual(code, 1)
        self.assertIn("did not answer", err)
        self.assertEqual(len(err.strip().splitlines()), 1, err)
        self.assertLess(time.monotonic() - started, 60)

    def test_status_says_when_zookeeper_does_not_answer(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._unreachable())


class FailedMessagesTests(Operations):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=2)
        switch = os.path.join(self.directory, "failing")
        open(switch, "w").close()
        w = self.worker("a", settings={"job_failure": "qdo.worker:save_failed_message"})
        w.env["QDO_TEST_FAIL_WHILE"] = switch
        w.start()
        posted = await self.client.post_messages("jobs", [{"body": "ok-1", "partition": 1},
                                                          {"body": "fail-me", "partition": 2},
                                                          {"body": "ok-2", "partition": 2}])
        await wait_for(lambda: {p["key"] for p in posted} <= done_ids(read_journals([w.journal])), 60, "all run")

        async def listed() -> list[dict[str, Any]] | None:
            code, out, err = await run_qdo("errors", "list", "-c", w.conf, "--json")
            self.assertEqual(code, 0, err)
            return orjson.loads(out) or None
        entries = await wait_for(listed, 60, "the failure to be saved")
        self.assertEqual(len(entries), 1)
        entry = entries[0]
        self.assertEqual((entry["queue"], entry["partition"], entry["message_id"], entry["body"]),
                         ("jobs", 2, posted[1]["key"], "fail-me"))
        self.assertEqual(entry["error"], "ValueError: asked to fail: fail-me")
        # Kept 30 days: the stored expiry of the entry, in the server's database.
        expires_ms = await threads.deferToThread(self._latest_expiry)
        self.assertLess(abs(expires_ms / 1000 - entry["saved_at"] - ERROR_TTL), 60)
        code, out, _ = await run_qdo("errors", "list", "-c", w.conf)
        self.assertIn("jobs-2 " + posted[1]["key"], out)
        # The cause is fixed: replay it onto jobs-2, where the worker now processes it.
        os.unlink(switch)
        code, out, err = await run_qdo("errors", "replay", "-c", w.conf)
        self.assertEqual(code, 2, "replay what? refuses to guess")
        code, out, err = await run_qdo("errors", "replay", "-c", w.conf, "--queue", "jobs")
        self.assertEqual(code, 0, err)
        new_key = out.split(" as ", 1)[1].split()[0]
        await wait_for(lambda: new_key in done_ids(read_journals([w.journal])), 60, "the replay processed")
        replayed = [r for r in read_journals([w.journal]) if r.message_id == new_key]
        self.assertEqual(replayed[0].partition, "jobs-2")
        code, out, _ = await run_qdo("errors", "list", "-c", w.conf, "--json")
        self.assertEqual(orjson.loads(out), [], "a replayed entry is gone")

    def _latest_expiry(self) -> int:
        """The latest expiry of any stored message: the error entry's (the others have the default 3 days)."""
        connection = sqlite3.connect(os.path.join(self.directory, "q.sqlite"))
        try:
            rows = connection.execute("SELECT expires_ms FROM messages").fetchall()
            columns = [c[1] for c in connection.execute("PRAGMA table_info(messages)")]
        finally:
            connection.close()
        self.assertIn("expires_ms", columns)
        return max(r[0] for r in rows)

    def test_saved_listed_and_replayed(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())
