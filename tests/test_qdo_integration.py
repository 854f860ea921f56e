"""qdo end to end: a real ZooKeeper, a real ``twistd queuey``, several real ``qdo`` processes.

Each worker runs the journal job (tests/qdo_journal.py). After each
scenario: every message was processed at least once, no partition was
processed by two workers at the same time, offsets only went forward, and at
rest every partition has exactly one owner, the one the assignment names,
with workers' shares within one of each other.
"""

from __future__ import annotations

import os
import uuid
from typing import Any

from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from qdo.assign import Partition, minimal_moves
from qdo.offsets import id_key
from queuey.client import Forbidden, QueueyClient
from tests.services import ZOOKEEPER, require
from tests.processes import wait_for
from tests.qdo_harness import (APP, PRINCIPAL, PRINCIPAL_KEY, Group, OffsetSampler, Queuey, TCPProxy, Worker,
                               post_spread)
from tests.qdo_journal import done_ids, order_violations, overlaps, read_journals


class Scenario(TestCase):
    timeout = 240

    async def _setUp(self) -> None:
        self.zookeeper = require(ZOOKEEPER, "ZooKeeper")
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.root = f"/qdo-test-{uuid.uuid4().hex[:12]}"
        self.queuey = await Queuey.start(self, self.directory)
        self.addCleanup(lambda: defer.ensureDeferred(self.queuey.stop()))
        self.workers: list[Worker] = []
        self.group = Group(self.zookeeper, self.root)
        await self.group.start()
        self.addCleanup(lambda: defer.ensureDeferred(self.group.stop()))
        self.sampler = OffsetSampler(self.group)
        self.addCleanup(self.sampler.stop)
        self.client = self.queuey.client
        self.posted: list[str] = []

    def setUp(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._setUp())

    def worker(self, name: str, zookeeper: str | None = None, queuey: str | None = None, **kwargs: Any) -> Worker:
        worker = Worker(self.directory, name, queuey or self.queuey.url, f"{zookeeper or self.zookeeper}{self.root}",
                        **kwargs)
        self.workers.append(worker)

        async def stop() -> None:
            await worker.stop()
        self.addCleanup(lambda: defer.ensureDeferred(stop()))
        return worker.start()

    async def post(self, queue: str, partitions: int, count: int, tag: str) -> None:
        self.posted.extend(await post_spread(self.client, queue, partitions, count, tag))

    def runs(self) -> list[Any]:
        return read_journals(w.journal for w in self.workers)

    async def all_done(self, timeout: float = 90) -> None:
        wanted = set(self.posted)
        await wait_for(lambda: wanted <= done_ids(self.runs()), timeout,
                       f"all {len(wanted)} messages to be processed")

    async def at_rest(self, live: list[Worker], partitions: set[str], timeout: float = 60) -> dict[str, Any]:
        """Wait until assignment, owners and membership agree and are balanced; return the assignment."""
        names = {w.name for w in live}

        async def settled() -> dict[str, Any] | None:
            assignment = await self.group.assignment()
            mapping = {Partition.from_key(k).name: w for k, w in assignment.get("assignment", {}).items()}
            owners = {p: w for p, (w, _) in (await self.group.owners()).items()}
            if set(mapping) != partitions or set(mapping.values()) != names:
                return None
            if owners != mapping or await self.group.workers() != names:
                return None
            counts = [list(mapping.values()).count(n) for n in names]
            if max(counts) - min(counts) > 1:
                return None
            return assignment
        return await wait_for(settled, timeout, f"the group to settle on {sorted(names)}", interval=0.2)

    def stable_owners(self, before: dict[str, Any], after: dict[str, Any], partitions: Any) -> None:
        """Partitions that stayed with their worker kept the same owner node (were never paused) -- unless
        that worker lost its ZooKeeper session meanwhile, which a loaded machine may cause: said, not failed."""
        lost = {w.name for w in self.workers if w.lost_a_session()}
        for name in partitions:
            owner = before[name][0]
            if owner in lost:
                continue
            self.assertEqual(after[name], before[name], f"{name} was released though it stayed with {owner}")
        if lost:
            print(f"note: {sorted(lost)} lost a ZooKeeper session (load); their partitions' owner nodes not compared")

    def check_journal(self) -> None:
        runs = self.runs()
        missing = set(self.posted) - done_ids(runs)
        self.assertEqual(missing, set(), f"{len(missing)} messages never processed")
        deaths = {w.name: w.died_at for w in self.workers if w.died_at is not None}
        self.assertEqual(overlaps(runs, deaths), [], "a partition was processed by two workers at once")
        self.assertEqual(order_violations(runs, id_key), [])

    async def check_offsets(self) -> None:
        # At rest, each partition's offset comes to be its newest message (commits are batched: within
        # commit_interval of the last job).
        last: dict[str, str] = {}
        for m in await self.client.read_messages("jobs", partitions="all", limit=1000):
            last[f"jobs-{m['partition']}"] = m["message_id"]

        async def committed() -> bool:
            offsets = await self.group.offsets()
            return all(offsets.get(partition) == newest for partition, newest in last.items())
        await wait_for(committed, 30, "every offset at its partition's newest message")
        await self.sampler.sample()
        self.sampler.stop()
        for partition, history in self.sampler.history.items():
            keys = [id_key(o) for o in history]
            self.assertEqual(keys, sorted(keys), f"offset of {partition} went backwards: {history}")


class KillAndAddTests(Scenario):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=12)
        await self.post("jobs", 12, 1500, "first")
        self.sampler.start()
        a, c = self.worker("a", job_seconds=0.02), self.worker("c", job_seconds=0.02)
        b = self.worker("b", job_seconds=0.02, session_timeout=5)  # the one whose death is studied
        partitions = {f"jobs-{n}" for n in range(1, 13)}
        before = await self.at_rest([a, b, c], partitions)
        # Mid-stream: some, not all, done.
        await wait_for(lambda: len(done_ids(self.runs())) >= 300, 60, "300 messages done")
        b.kill()
        await self.post("jobs", 12, 300, "second")
        after_kill = await self.at_rest([a, c], partitions)
        moved_on_kill = {p for p, w in after_kill["assignment"].items() if before["assignment"][p] != w}
        self.assertEqual({before["assignment"][p] for p in moved_on_kill}, {"b"}, "only b's partitions move")
        owners_before = await self.group.owners()
        d = self.worker("d", job_seconds=0.02)
        await self.post("jobs", 12, 300, "third")
        after_add = await self.at_rest([a, c, d], partitions)
        moves = {p for p, w in after_add["assignment"].items() if after_kill["assignment"][p] != w}
        previous = {Partition.from_key(k): w for k, w in after_kill["assignment"].items()}
        self.assertEqual(len(moves), minimal_moves(previous, ["a", "c", "d"], previous))
        self.assertEqual(len(moves), 4)  # 12 over 2 (6, 6) -> over 3 (4, 4, 4)
        # Partitions that did not move were never paused: the same owner node all along.
        stayed = {Partition.from_key(key).name for key in set(after_add["assignment"]) - moves}
        self.stable_owners(owners_before, await self.group.owners(), stayed)
        await self.all_done()
        await self.at_rest([a, c, d], partitions)
        self.check_journal()
        await self.check_offsets()

    def test_kill_9_one_worker_then_add_one(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class SessionExpiryTests(Scenario):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=12)
        proxy = TCPProxy(int(self.zookeeper.rsplit(":", 1)[1]))
        self.addCleanup(proxy.close)
        partitions = {f"jobs-{n}" for n in range(1, 13)}
        a = self.worker("a", job_seconds=0.01)
        b = self.worker("b", zookeeper=proxy.address, job_seconds=0.01, session_timeout=3)
        await self.at_rest([a, b], partitions)
        self.sampler.start()
        await self.post("jobs", 12, 600, "before")
        await wait_for(lambda: len(done_ids(self.runs())) >= 100, 60, "100 messages done")
        proxy.cut()  # b's ZooKeeper connection is gone: suspended, then expired on the server
        await self.post("jobs", 12, 300, "during")

        async def a_owns_all() -> bool:
            owners = await self.group.owners()
            return len(owners) == 12 and {w for w, _ in owners.values()} == {"a"}
        await wait_for(a_owns_all, 60, "a to own every partition after b's session expired")
        proxy.restore()
        await self.post("jobs", 12, 300, "after")
        await self.at_rest([a, b], partitions)
        await self.all_done()
        log = b.log()
        self.assertIn("ZooKeeper connection suspended", log)
        self.assertIn("ZooKeeper session lost: dropping", log)
        self.check_journal()
        await self.check_offsets()

    def test_expired_session_drops_and_rejoins(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class ManyWorkersTests(Scenario):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=12)
        await self.post("jobs", 12, 600, "x")
        self.sampler.start()
        workers = [self.worker(f"w{i}", job_seconds=0.005) for i in range(10)]
        partitions = {f"jobs-{n}" for n in range(1, 13)}
        assignment = await self.at_rest(workers, partitions, timeout=90)
        counts = sorted(list(assignment["assignment"].values()).count(w.name) for w in workers)
        self.assertEqual(counts, [1] * 8 + [2] * 2)
        await self.all_done()
        self.check_journal()
        await self.check_offsets()

    def test_ten_workers_start_at_once(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class DiscoveryTests(Scenario):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=4)
        a = self.worker("a", discover_interval=0.5, long_poll=2)
        b = self.worker("b", discover_interval=0.5, long_poll=2)
        first = await self.at_rest([a, b], {f"jobs-{n}" for n in range(1, 5)})
        owners_before = await self.group.owners()
        self.sampler.start()
        await self.post("jobs", 4, 100, "old")
        await self.client.update_queue("jobs", partitions=8)
        await self.client.create_queue("more", partitions=2)
        wanted = {f"jobs-{n}" for n in range(1, 9)} | {"more-1", "more-2"}
        after = await self.at_rest([a, b], wanted)
        for key, worker in first["assignment"].items():
            self.assertEqual(after["assignment"][key], worker, "an old partition moved")
        self.stable_owners(owners_before, await self.group.owners(), set(owners_before))
        await self.post("jobs", 8, 200, "new")
        self.posted.extend(m["key"] for m in await self.client.post_messages(
            "more", [{"body": f"more-{i}", "partition": i % 2 + 1} for i in range(20)]))
        await self.all_done()
        self.check_journal()
        await self.check_offsets()

    def test_new_partitions_and_queues_are_picked_up(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class PrincipalTests(Scenario):
    """Workers holding only a principal's key consume another application's partitioned queue that lists
    that principal: the queue's partitions come from the reader's info request, not from listing."""

    async def _test(self) -> None:
        reader = QueueyClient(self.queuey.url, PRINCIPAL_KEY, reactor=reactor, retries=1)
        self.addCleanup(reader.close)
        await self.client.create_queue("jobs", partitions=3, principles=[f"app:{PRINCIPAL}"])
        with self.assertRaises(Forbidden):  # the principal may not list the owner's queues
            await reader.all_queues()
        a = self.worker("a", queues="jobs", key=PRINCIPAL_KEY, discover_interval=0.5)
        b = self.worker("b", queues="jobs", key=PRINCIPAL_KEY, discover_interval=0.5)
        await self.at_rest([a, b], {"jobs-1", "jobs-2", "jobs-3"})
        self.sampler.start()
        await self.post("jobs", 3, 300, "before")
        await self.client.update_queue("jobs", partitions=4)  # found by the leader's next discovery
        await self.at_rest([a, b], {"jobs-1", "jobs-2", "jobs-3", "jobs-4"})
        await self.post("jobs", 4, 200, "after")
        await self.all_done()
        self.check_journal()
        self.client = reader  # the owner may no longer read the queue; its reader checks the offsets
        await self.check_offsets()
        for worker in (a, b):
            self.assertNotIn("Could not list the queues", worker.log())

    def test_principal_key_consumes_a_listed_queue(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class ShutdownTests(Scenario):

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=6)
        a = self.worker("a", session_timeout=30)
        b = self.worker("b", session_timeout=30)
        partitions = {f"jobs-{n}" for n in range(1, 7)}
        await self.at_rest([a, b], partitions)
        self.sampler.start()
        await self.post("jobs", 6, 600, "x")
        await wait_for(lambda: len(done_ids(self.runs())) >= 100, 60, "100 messages done")
        code = await b.stop()
        self.assertEqual(code, 0)
        # When b has exited, its nodes are gone already (b removed them or closed its session): its
        # partitions are free at once, not when its 30 s session would have expired.
        self.assertNotIn("b", await self.group.workers())
        self.assertNotIn("b", {w for w, _ in (await self.group.owners()).values()})
        await self.at_rest([a], partitions)
        await self.all_done()
        self.check_journal()
        await self.check_offsets()
        # Graceful hand-over commits what it did: nothing was processed twice (a session lost to load
        # would explain repeats: at least once. Say so rather than fail).
        runs = [r for r in self.runs() if r.end is not None]
        if not (a.lost_a_session() or b.lost_a_session()):
            self.assertEqual(len(runs), len({r.message_id for r in runs}), "processed twice after a clean hand-over")
        self.assertIn("handed over at offset", b.log())

    def test_sigterm_hands_over_and_exits_0(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class StopDuringLongPollTests(Scenario):
    """SIGTERM while every partition waits in a long poll: the worker lets the polls go and leaves at once
    (it used to retry each cancelled poll, and so waited one more poll before exiting)."""

    async def _test(self) -> None:
        await self.client.create_queue("jobs", partitions=4)
        await self.post("jobs", 4, 40, "x")
        proxy = TCPProxy(int(self.queuey.process.base.rsplit(":", 1)[1]))  # sees what the worker sends
        self.addCleanup(proxy.close)
        a = self.worker("a", queuey=f"http://{proxy.address}/v1/{APP}", long_poll=30,
                        ids="jobs-1 jobs-2 jobs-3 jobs-4")
        await self.all_done()
        await self.check_offsets()  # committed: each runner now waits in a 30 s poll of an empty partition
        sent = proxy.sent
        code = await a.stop()  # SIGTERM (SIGKILL after 30 s)
        self.assertEqual(proxy.sent, sent, "a request to Queuey after SIGTERM (a cancelled poll retried?)")
        self.assertEqual(code, 0)
        self.assertEqual(a.log().count("handed over at offset"), 4)
        self.check_journal()

    def test_sigterm_lets_the_long_polls_go(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())


class ManualPolicyTests(TestCase):
    """Without ZooKeeper: one worker, all partitions, offsets in a file; a restart resumes."""

    timeout = 120

    async def _test(self) -> None:
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        queuey = await Queuey.start(self, directory)
        self.addCleanup(lambda: defer.ensureDeferred(queuey.stop()))
        client = queuey.client
        await client.create_queue("jobs", partitions=3)
        await client.create_queue("skipped", partitions=1)
        posted = await post_spread(client, "jobs", 3, 150, "one")
        await client.post_messages("skipped", ["not for us"])
        worker = Worker(directory, "m", queuey.url, "127.0.0.1:1/unused", policy="manual", ids="jobs-1 jobs-2 jobs-3")
        worker.start()
        self.addCleanup(lambda: defer.ensureDeferred(worker.stop()))
        journals = [worker.journal]
        await wait_for(lambda: set(posted) <= done_ids(read_journals(journals)), 60, "first batch done")
        self.assertEqual(await worker.stop(), 0)
        more = await post_spread(client, "jobs", 3, 60, "two")
        worker.start()
        await wait_for(lambda: set(more) <= done_ids(read_journals(journals)), 60, "second batch done")
        runs = [r for r in read_journals(journals) if r.end is not None]
        self.assertEqual(sorted(r.message_id for r in runs), sorted(posted + more), "each exactly once")
        self.assertTrue(os.path.exists(os.path.join(directory, "offsets-m.json")))

    def test_restart_resumes_from_the_offsets_file(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())
