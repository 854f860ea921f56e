"""Delayed messages in real time: a ``qdo`` worker never runs a job on one before it is visible.

A real ``twistd queuey`` (SQLite) and a real ``qdo`` worker (manual policy,
no ZooKeeper needed).  A batch mixes messages for now with one delayed by a
few seconds; the worker runs the ones for now at once, and the delayed one
only at or after the time its id and timestamp name, exactly once.
"""

from __future__ import annotations

import os

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from queuey import timeuuid
from tests.qdo_harness import Queuey, Worker
from tests.processes import wait_for
from tests.qdo_journal import done_ids, read_journals

DELAY = 5


class DelayedJobTests(TestCase):
    timeout = 120

    async def _test(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        queuey = await Queuey.start(self, directory)
        self.addCleanup(lambda: defer.ensureDeferred(queuey.stop()))
        client = queuey.client
        await client.create_queue("jobs", partitions=1)
        worker = Worker(directory, "w", queuey.url, "127.0.0.1:1/unused", policy="manual", ids="jobs-1")
        worker.start()
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        warm = await client.post_messages("jobs", [{"body": "warm-up"}])  # the worker is up and reading
        await wait_for(lambda: warm[0]["key"] in done_ids(read_journals([worker.journal])), 60, "the worker")
        posted = await client.post_messages("jobs", [{"body": "now-0"}, {"body": "later", "delay": DELAY},
                                                     {"body": "now-1"}])
        now_ids = {posted[0]["key"], posted[2]["key"]}
        later_id = posted[1]["key"]
        visible_at = timeuuid.parse_timestamp(posted[1]["timestamp"]) / timeuuid.TICKS_PER_SECOND
        await wait_for(lambda: now_ids <= done_ids(read_journals([worker.journal])), 60, "the jobs for now")
        await wait_for(lambda: later_id in done_ids(read_journals([worker.journal])), 60, "the delayed job")
        runs = read_journals([worker.journal])
        later_runs = [r for r in runs if r.message_id == later_id]
        self.assertEqual(len(later_runs), 1)
        self.assertGreaterEqual(later_runs[0].start, visible_at, "the delayed message ran before it was visible")
        self.assertEqual(sorted(r.message_id for r in runs), sorted(now_ids | {later_id, warm[0]["key"]}),
                         "each exactly once")

    def test_a_worker_runs_a_delayed_message_only_once_it_is_visible(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())
