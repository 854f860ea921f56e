"""qdo's ZooKeeper rules, one at a time, in process against a real ZooKeeper.

Rule 1 (membership with stable ids and ephemeralOwner), the claim of rule 3
(an owner node waited for while another session holds it) and rule 4 (fenced,
monotonic offsets) are driven here directly; the multi-process scenarios in
test_qdo_integration.py cover the rest end to end.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from twisted.internet import defer, reactor
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from qdo.assign import Partition
from qdo.config import parse_config
from qdo.claims import Slot, SlotState
from qdo.coordinator import ZooKeeperCoordinator
from qdo.layout import SECTIONS
from qdo.offsets import Fenced, id_key
from qdo.zk import ZooKeeper
from tests.services import ZOOKEEPER, require
from tests.qdo_harness import ids
from tests.processes import wait_for

CONF = """
[qdo-worker]
job = tests.qdo_journal:journal_job
name = {name}
[queuey]
connection = http://127.0.0.1:1/v1/a
[zookeeper]
connection = {hosts}{root}
group = g
session_timeout = 4
"""


class RulesTests(TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.hosts = require(ZOOKEEPER, "ZooKeeper")
        self.root = f"/qdo-rules-{uuid.uuid4().hex[:10]}"
        self.events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    async def coordinator(self, name: str) -> ZooKeeperCoordinator:
        config = parse_config(CONF.format(name=name, hosts=self.hosts, root=self.root))
        coordinator = ZooKeeperCoordinator(config, None, None, reactor)  # type: ignore[arg-type]
        await coordinator.zk.start()
        self.addCleanup(coordinator.zk.stop)
        for section in SECTIONS:
            await coordinator.zk.ensure_path(coordinator.paths.path(section))
        return coordinator

    async def other_session(self) -> ZooKeeper:
        zk = ZooKeeper(self.hosts, reactor, session_timeout=4)
        await zk.start()
        return zk

    def logged(self, text: str) -> bool:
        return any(text in (e.get("log_format") or "") for e in self.events)

    # -- rule 1 ------------------------------------------------------------------

    async def _dead_session(self) -> None:
        me = await self.coordinator("w1")
        earlier = await self.other_session()  # stands for this worker's earlier, dead process
        path = me.paths.worker("w1")
        await earlier.create(path, orjson.dumps({"worker": "w1", "host": me.membership.host, "pid": 2 ** 22 + 7}),
                           ephemeral=True)
        registered = defer.ensureDeferred(me.membership.register(me.session.epoch))
        await wait_for(lambda: self.logged("still held by an earlier session"), 10, "the worker to notice")
        self.assertNoResult(registered)
        _, stat = await me.zk.get(path)
        self.assertEqual(stat.ephemeralOwner, earlier.session_id, "it did not take the node")
        await earlier.stop()  # the earlier session ends (here: closed; in life: expires)
        await registered
        _, stat = await me.zk.get(path)
        self.assertEqual(stat.ephemeralOwner, me.zk.session_id)

    def test_waits_for_its_earlier_session_to_go(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._dead_session())

    async def _live_rival(self) -> None:
        me = await self.coordinator("w1")
        rival = await self.other_session()
        self.addCleanup(rival.stop)
        path = me.paths.worker("w1")
        await rival.create(path, orjson.dumps({"worker": "w1", "host": "elsewhere", "pid": 1}),
                         ephemeral=True)
        registered = defer.ensureDeferred(me.membership.register(me.session.epoch))
        await wait_for(lambda: self.logged("held by another live worker"), 10, "the worker to notice")
        self.assertNoResult(registered)
        me._lose_session()  # abandon: the wait is cancelled, nothing is taken
        await self.assertFailure(registered, Exception)
        _, stat = await me.zk.get(path)
        self.assertEqual(stat.ephemeralOwner, rival.session_id)

    def test_does_not_fight_a_live_rival(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._live_rival())

    async def _own_node(self) -> None:
        me = await self.coordinator("w1")
        path = me.paths.worker("w1")
        await me.zk.create(path, b"{}", ephemeral=True)  # as if a retried create had gone through
        _, before = await me.zk.get(path)
        await me.membership.register(me.session.epoch)
        _, after = await me.zk.get(path)
        self.assertEqual(before.czxid, after.czxid)

    def test_a_node_of_its_own_session_is_its_own(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._own_node())

    # -- rule 3: claiming an owner node ---------------------------------------------

    async def _held_owner_node(self, me: ZooKeeperCoordinator) -> tuple[ZooKeeper, Slot, defer.Deferred[None]]:
        """An owner node held by another worker's session, and ``me`` claiming it, waiting."""
        previous = await self.other_session()
        self.addCleanup(previous.stop)
        partition = Partition("a", "jobs", 1)
        await previous.create(me.paths.owner(partition), orjson.dumps({"worker": "w0", "token": "t0"}),
                            ephemeral=True, makepath=True)
        slot = me.claims.slots[partition] = Slot(partition, desired=True)
        claimed = defer.ensureDeferred(me.claims._claim(slot, me.session.epoch))
        await wait_for(lambda: self.logged("to hand it over"), 10, "the claim to wait")
        self.assertNoResult(claimed)
        self.assertEqual(slot.state, SlotState.CLAIMING)
        self.assertIsNotNone(slot.wait, "the wait can be cancelled")
        return previous, slot, claimed

    async def _claim_waits(self) -> None:
        me = await self.coordinator("w1")
        started: list[Any] = []

        class Runner:
            def start(self) -> None:
                started.append(self)
        me.claims.make_runner = lambda *args, **kwargs: Runner()  # type: ignore[method-assign,assignment]
        previous, slot, claimed = await self._held_owner_node(me)
        await previous.delete(me.paths.owner(slot.partition))  # w0 hands it over
        await claimed
        self.assertEqual((slot.state, len(started), slot.wait), (SlotState.RUNNING, 1, None))
        _, stat = await me.zk.get(me.paths.owner(slot.partition))
        self.assertEqual(stat.ephemeralOwner, me.zk.session_id)
        value, _ = await me.zk.get(me.paths.offset(slot.partition))
        self.assertEqual(orjson.loads(value)["token"], me.token, "the claim fenced the offset")

    def test_a_claim_waits_for_the_previous_owner(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._claim_waits())

    async def _claim_abandoned(self) -> None:
        me = await self.coordinator("w1")
        previous, slot, claimed = await self._held_owner_node(me)
        me.claims.want(slot.partition, False, me.session.epoch)  # assigned elsewhere meanwhile: cancels the wait
        await claimed
        self.assertEqual((slot.state, slot.wait, slot.runner), (SlotState.IDLE, None, None))
        _, stat = await me.zk.get(me.paths.owner(slot.partition))
        self.assertEqual(stat.ephemeralOwner, previous.session_id, "it took nothing")
        self.assertIsNone(await me.zk.exists(me.paths.offset(slot.partition)), "nor fenced the offset")

    def test_a_claim_no_longer_wanted_stops_waiting(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._claim_abandoned())

    # -- rule 4 ------------------------------------------------------------------

    async def _fencing(self) -> None:
        a, b = await self.coordinator("a"), await self.coordinator("b")
        partition = Partition("a", "jobs", 1)
        first, second, third = ids(3)
        self.assertIsNone(await a.offsets.open(partition))
        await a.offsets.commit(partition, first)
        # b takes the partition over (in life: after a's owner node went).
        self.assertEqual(await b.offsets.open(partition), first)
        # a, late, tries to record progress: refused.
        with self.assertRaises(Fenced):
            await a.offsets.commit(partition, second)
        await b.offsets.commit(partition, third)
        await b.offsets.commit(partition, second)  # older than the offset: never backwards
        value, _ = await b.zk.get(b.paths.offset(partition))
        self.assertEqual(orjson.loads(value)["offset"], third)
        self.assertLess(id_key(second), id_key(third))

    def test_offsets_are_fenced_and_never_go_backwards(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._fencing())
