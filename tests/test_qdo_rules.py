"""qdo's coordination rules, each on its own, fast and deterministic: an in-memory ZooKeeper on a task.Clock.

The same rules are checked against a real ZooKeeper in test_qdo_zookeeper.py and
end to end, with real processes, in test_qdo_integration.py.
"""

from __future__ import annotations

from typing import Any

import orjson
from kazoo.exceptions import BadVersionError, ConnectionLoss, NodeExistsError, NoNodeError
from kazoo.protocol.states import EventType
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from qdo.assign import Partition, minimal_moves
from qdo.claims import SlotState
from qdo.layout import GroupPaths
from qdo.offsets import FileOffsets, Fenced, IOffsetStore, ZooKeeperOffsets
from qdo.session import Session
from qdo.testing import FakeZooKeeperServer
from qdo.zk import CONNECTED, LOST, SUSPENDED, IZooKeeper, SessionLost, ZooKeeper
from tests.qdo_harness import ids
from tests.qdo_world import World


def result(server: FakeZooKeeperServer, d: defer.Deferred[Any]) -> Any:
    """Settle the fake and return what ``d`` fired with (raising its failure)."""
    server.settle()
    outcome: list[Any] = []
    d.addBoth(outcome.append)
    assert outcome, "not fired"
    if hasattr(outcome[0], "raiseException"):
        outcome[0].raiseException()
    return outcome[0]


class FakeZooKeeperTests(SynchronousTestCase):
    """The fake behaves as ZooKeeper does in what qdo relies on."""

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)
        self.server = self.world.zookeeper
        self.a, self.b = self.server.client(4), self.server.client(4)
        for zk in (self.a, self.b):
            zk.start()
        self.server.settle()

    def test_both_implementations_provide_the_interface(self) -> None:
        self.assertTrue(verifyObject(IZooKeeper, self.a))
        self.assertTrue(verifyObject(IZooKeeper, ZooKeeper("127.0.0.1:1", reactor)))

    def test_versions(self) -> None:
        s = self.server
        self.assertEqual(result(s, self.a.create("/x", b"1")), "/x")
        self.assertRaises(NodeExistsError, result, s, self.b.create("/x"))
        self.assertRaises(NoNodeError, result, s, self.a.create("/y/z"))
        self.assertEqual(result(s, self.a.create("/y/z", makepath=True)), "/y/z")
        stat = result(s, self.a.set("/x", b"2", version=0))
        self.assertEqual(stat.version, 1)
        self.assertRaises(BadVersionError, result, s, self.b.set("/x", b"3", version=0))
        self.assertRaises(BadVersionError, result, s, self.b.delete("/x", version=0))
        self.assertEqual(result(s, self.a.get("/x"))[0], b"2")
        self.assertEqual(result(s, self.a.children("/")), ["x", "y"])
        first = result(s, self.a.create("/y/n_", sequence=True))
        second = result(s, self.b.create("/y/n_", sequence=True))
        self.assertLess(first, second)
        self.assertTrue(first.startswith("/y/n_0"))

    def test_ephemeral_nodes_go_with_their_session_and_watches_fire_once(self) -> None:
        s = self.server
        result(s, self.a.create("/e", b"", ephemeral=True))
        events: list[Any] = []
        _, stat = result(s, self.b.get("/e", watch=events.append))
        self.assertEqual(stat.ephemeralOwner, self.a.session_id)
        children: list[Any] = []
        result(s, self.b.children("/", watch=children.append))
        s.expire(self.a.session_id)  # as a timeout would
        s.settle()
        self.assertEqual([e.type for e in events], [EventType.DELETED])
        self.assertEqual([e.type for e in children], [EventType.CHILD])
        self.assertIsNone(result(s, self.b.exists("/e")))
        self.assertEqual(self.a.state, CONNECTED, "the client was told, and has a new session")
        result(s, self.b.create("/e"))
        self.assertEqual(len(events), 1, "a watch fires once")

    def test_a_lost_answer_may_have_been_applied(self) -> None:
        d = self.a.create("/lost", b"")
        self.a.disconnect()
        self.assertRaises(ConnectionLoss, result, self.server, d)
        self.assertIn("/lost", self.server.nodes)

    def test_suspension_fires_watches_with_none_and_expiry_follows_the_timeout(self) -> None:
        s = self.server
        result(s, self.a.create("/e", ephemeral=True))
        events: list[Any] = []
        result(s, self.a.exists("/e", watch=events.append))
        states: list[Any] = []
        self.a.add_listener(lambda state, session: states.append(state))
        old = self.a.session_id
        self.a.disconnect()
        s.settle()
        self.assertEqual([e.type for e in events], [EventType.NONE])
        self.assertRaises(ConnectionLoss, result, s, self.a.get("/e"))
        self.world.advance(3.9)
        self.a.reconnect()  # within the session timeout: the same session, its node still there
        self.assertEqual((self.a.session_id, states), (old, [SUSPENDED, CONNECTED]))
        self.assertIn("/e", s.nodes)
        self.a.disconnect()
        self.world.advance(4.1)
        self.assertNotIn("/e", s.nodes, "expired on the server")
        self.a.reconnect()
        self.assertEqual(states[-3:], [SUSPENDED, LOST, CONNECTED])
        self.assertNotEqual(self.a.session_id, old)


class SessionTests(SynchronousTestCase):

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)
        self.server = self.world.zookeeper
        self.zk = self.server.client(4)
        self.zk.start()
        self.server.settle()
        self.session = Session(self.zk, self.world.clock, 4)

    def test_retry_after_a_lost_answer(self) -> None:
        """The create went through, its answer was lost: the repeat says NodeExists, which the caller reads."""
        d = defer.ensureDeferred(self.session.retry(lambda: self.zk.create("/n", b"")))
        self.zk.disconnect()
        self.server.settle()
        self.assertNoResult(d)
        self.zk.reconnect()
        self.assertRaises(NodeExistsError, result, self.server, d)

    def test_recover_tells_a_lost_answer(self) -> None:
        d = defer.ensureDeferred(self.session.retry(lambda: self.zk.create("/s_", sequence=True),
                                                    recover=lambda: self.zk.children("/").addCallback(
                                                        lambda c: "/" + c[0] if c[:1] else None)))
        self.zk.disconnect()
        self.zk.reconnect()
        self.assertEqual(result(self.server, d), "/s_0000000000")
        self.assertEqual(result(self.server, self.zk.children("/")), ["s_0000000000"], "created once")

    def test_retry_gives_up_when_the_session_ends(self) -> None:
        d = defer.ensureDeferred(self.session.retry(lambda: self.zk.get("/")))
        self.zk.disconnect()
        self.world.advance(5)
        self.zk.reconnect()
        self.assertRaises(SessionLost, result, self.server, d)

    def test_the_lease(self) -> None:
        self.session.joined = True
        self.session.heard()
        self.assertTrue(self.session.may_work())
        self.world.advance(1.9)
        self.assertTrue(self.session.may_work())
        self.world.advance(0.2)
        self.assertFalse(self.session.may_work(), "not heard from for half the session timeout")
        self.session.heard()
        self.zk.disconnect()
        self.assertFalse(self.session.may_work(), "suspended")


class MembershipTests(SynchronousTestCase):
    """Rule 1."""

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)

    def test_waits_for_an_earlier_session_then_joins(self) -> None:
        earlier = self.world.zookeeper.client(4)
        earlier.start()
        self.world.settle()
        path = GroupPaths.of("/qdo", "g").worker("w1")
        result(self.world.zookeeper, earlier.create(path, orjson.dumps({"worker": "w1"}), ephemeral=True,
                                                    makepath=True))
        earlier.disconnect()  # the process died: its session lingers until it expires
        w1 = self.world.worker("w1")
        self.world.advance(3.5)
        self.assertFalse(w1.session.joined, "it did not take the node of another session")
        self.assertEqual(self.world.zookeeper.nodes[path].owner, earlier.session.id)
        self.world.advance(1)
        self.assertTrue(w1.session.joined)
        self.assertEqual(self.world.zookeeper.nodes[path].owner, w1.zk.session_id)

    def test_a_node_of_its_own_session_is_its_own(self) -> None:
        w1 = self.world.worker("w1", start=False)
        d = defer.ensureDeferred(w1.start())
        self.world.wait(d)
        node = self.world.zookeeper.nodes[w1.paths.worker("w1")]
        # Registering again in the same session (a create retried after a lost answer) keeps that node.
        self.world.wait(defer.ensureDeferred(w1.membership.register(w1.session.epoch)))
        self.assertIs(self.world.zookeeper.nodes[w1.paths.worker("w1")], node)


class LeaderTests(SynchronousTestCase):
    """Rules 2 and 5."""

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)
        self.world.queue("jobs", 12)

    def assignment(self) -> dict[str, Any]:
        return orjson.loads(self.world.zookeeper.nodes["/qdo/g/assignment"].data)

    def test_one_leader_a_quiet_period_then_a_balanced_sticky_assignment(self) -> None:
        for name in ("a", "b", "c"):
            self.world.worker(name)
        self.world.advance(0.3)
        self.assertNotIn("/qdo/g/assignment", self.world.zookeeper.nodes, "party_wait not over yet")
        self.world.advance(1)
        self.assertEqual(sum(w.leader.leading for w in self.world.workers.values()), 1)
        first = self.assignment()
        self.assertEqual(first["generation"], 1, "three joins at once: one assignment")
        counts = sorted(list(first["assignment"].values()).count(n) for n in "abc")
        self.assertEqual(counts, [4, 4, 4])
        self.world.worker("d")
        self.world.advance(1.5)
        second = self.assignment()
        previous = {Partition.from_key(k): w for k, w in first["assignment"].items()}
        moves = [k for k, w in second["assignment"].items() if first["assignment"][k] != w]
        self.assertEqual(len(moves), minimal_moves(previous, list("abcd"), previous))
        self.assertEqual(len(moves), 3)

    def test_the_leader_dies_another_leads_and_reassigns(self) -> None:
        for name in ("a", "b"):
            self.world.worker(name)
        self.world.advance(1.5)
        leader = next(n for n, w in self.world.workers.items() if w.leader.leading)
        other = "b" if leader == "a" else "a"
        self.world.workers[leader].zk.disconnect()  # a kill -9: the session lingers, then expires
        self.world.advance(10.5)
        self.assertTrue(self.world.workers[other].leader.leading)
        self.world.advance(1)
        self.assertEqual(set(self.assignment()["assignment"].values()), {other})

    def test_new_partitions_are_assigned_without_moving_the_others(self) -> None:
        for name in ("a", "b"):
            self.world.worker(name, discover_interval=1)
        self.world.advance(2)
        before = self.assignment()["assignment"]
        self.world.wait(self.world.client.create_queue("more", partitions=3))
        self.world.advance(2)
        after = self.assignment()["assignment"]
        self.assertEqual({k: after[k] for k in before}, before)
        self.assertEqual(len(after), 15)


class ClaimTests(SynchronousTestCase):
    """Rule 3: one reader per partition, hand-overs, suspension and session loss."""

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)
        self.world.queue("jobs", 6)

    def test_work_is_shared_and_never_overlaps(self) -> None:
        posted = self.world.post("jobs", 6, 300)
        for name in ("a", "b", "c"):
            self.world.worker(name)
        self.world.until(lambda: set(posted) <= self.world.done(), what="all processed")
        self.assertEqual(self.world.overlaps(), [])
        self.assertEqual(set(self.world.owners().values()), {"a", "b", "c"})
        self.assertEqual({r.worker for r in self.world.runs}, {"a", "b", "c"})

    def test_a_claim_waits_until_the_previous_owner_hands_over(self) -> None:
        a = self.world.worker("a")
        self.world.advance(1.5)
        self.world.post("jobs", 6, 60)
        self.world.worker("b")
        self.world.until(lambda: set(self.world.owners().values()) == {"a", "b"}, what="b to claim its share")
        self.assertEqual(self.world.overlaps(), [])
        self.assertEqual(len(a.claims.held()), 3)

    def test_no_new_message_while_suspended(self) -> None:
        a = self.world.worker("a")
        self.world.advance(1.5)
        a.zk.disconnect()
        self.world.post("jobs", 6, 30)
        self.world.advance(2)
        self.assertEqual(self.world.runs, [])
        a.zk.reconnect()
        self.world.advance(2)
        self.assertEqual(len(self.world.done()), 30)

    def test_a_lost_session_drops_everything_without_committing_then_rejoins(self) -> None:
        a = self.world.worker("a", session_timeout=4)
        self.world.advance(1.5)
        self.assertEqual(len(a.claims.held()), 6)
        a.zk.disconnect()
        self.world.advance(4.5)
        writes = self.world.zookeeper.writes
        a.zk.reconnect()  # learns that its session expired
        self.assertEqual(a.claims.slots, {})
        self.assertFalse(a.session.joined)
        self.assertEqual(self.world.zookeeper.writes, writes, "nothing committed while dropping")
        self.world.advance(2)
        self.assertTrue(a.session.joined)
        self.assertEqual(len(a.claims.held()), 6)

    def test_sigterm_hands_over_at_once(self) -> None:
        posted = self.world.post("jobs", 6, 120)
        self.world.worker("a", session_timeout=30)
        self.world.worker("b", session_timeout=30)
        self.world.until(lambda: len(self.world.done()) >= 30, what="30 processed")
        self.world.stop("b")
        self.assertNotIn("b", set(self.world.owners().values()))
        self.world.until(lambda: set(posted) <= self.world.done(), limit=10, what="a to finish b's share")
        done = [r.message_id for r in self.world.runs if r.end is not None]
        self.assertEqual(len(done), len(set(done)), "a clean hand-over commits: nothing twice")

    def test_sigterm_during_long_polls_leaves_without_waiting_for_them(self) -> None:
        posted = self.world.post("jobs", 6, 30)
        a = self.world.worker("a", session_timeout=30, long_poll=20)
        self.world.until(lambda: set(posted) <= self.world.done(), what="all processed")
        self.world.advance(2)  # every runner now holds a long poll (20 s) on an empty partition
        sent = len(self.world.http.sent)
        stopped = defer.ensureDeferred(a.stop())
        self.world.wait(stopped, limit=2.0)  # clock time: far less than a long poll
        self.assertEqual(self.world.http.sent[sent:], [], "no request after the stop")
        self.assertEqual(a.claims.held(), [])


class OffsetTests(SynchronousTestCase):
    """Rule 4 and the batched commits."""

    def setUp(self) -> None:
        self.world = World()
        self.addCleanup(self.world.close)
        self.server = self.world.zookeeper
        self.paths = GroupPaths.of("/qdo", "g")
        self.partition = Partition("queuey", "jobs", 1)

    def store(self, name: str) -> ZooKeeperOffsets:
        zk = self.server.client(4)
        zk.start()
        self.server.settle()
        return ZooKeeperOffsets(Session(zk, self.world.clock, 4), self.paths, name, f"token-{name}")

    def test_both_stores_provide_the_interface(self) -> None:
        self.assertTrue(verifyObject(IOffsetStore, self.store("a")))
        self.assertTrue(verifyObject(IOffsetStore, FileOffsets(self.mktemp(), reactor)))

    def test_fenced_and_never_backwards(self) -> None:
        a, b = self.store("a"), self.store("b")
        first, second, third = ids(3)
        self.assertIsNone(self.world.wait(a.open(self.partition)))
        self.world.wait(a.commit(self.partition, first))
        self.assertEqual(self.world.wait(b.open(self.partition)), first)
        self.assertRaises(Fenced, self.world.wait, a.commit(self.partition, second))
        self.world.wait(b.commit(self.partition, third))
        self.world.wait(b.commit(self.partition, second))
        self.assertEqual(orjson.loads(self.server.nodes[self.paths.offset(self.partition)].data)["offset"], third)

    def test_a_commit_whose_answer_was_lost_is_recognised_by_its_token(self) -> None:
        a = self.store("a")
        first, = ids(1)
        self.world.wait(a.open(self.partition))
        d = a.commit(self.partition, first)
        a.zk.disconnect()
        self.server.settle()
        a.zk.reconnect()
        self.world.wait(d)
        self.assertEqual(a.held[self.partition].offset, first)

    def test_a_commit_of_an_earlier_session_is_refused(self) -> None:
        a = self.store("a")
        first, = ids(1)
        self.world.wait(a.open(self.partition))
        a.session.end_epoch()
        self.assertRaises(SessionLost, self.world.wait, a.commit(self.partition, first))

    def _writes_per_second(self, commit_interval: float) -> tuple[float, int]:
        self.world.queue("jobs", 4)
        posted = self.world.post("jobs", 4, 800)
        self.world.job_seconds = 0.002
        w = self.world.worker("a", commit_interval=commit_interval, batch_size=50)
        self.world.advance(1.5)
        writes, began = self.server.writes, self.world.clock.seconds()
        self.world.until(lambda: set(posted) <= self.world.done(), what="all processed")
        seconds = self.world.clock.seconds() - began
        self.world.stop("a")
        offsets = {p: orjson.loads(n.data)["offset"] for p, n in self.server.nodes.items() if "/offsets/" in p
                   and n.data}
        self.assertEqual(len(offsets), 4)
        self.assertLessEqual({m for m in offsets.values()}, set(posted), "at rest: the last message of each")
        del w
        return (self.server.writes - writes) / seconds, len(posted)

    def test_batched_commits_are_bounded_by_partitions_over_the_interval(self) -> None:
        rate, _ = self._writes_per_second(0.5)
        self.assertLessEqual(rate, 4 / 0.5 + 1)

    def test_per_message_commits(self) -> None:
        rate, count = self._writes_per_second(0)
        self.assertGreater(rate, 4 / 0.5 * 4, "one write per message")

    def test_a_crash_runs_again_at_most_what_was_not_committed(self) -> None:
        self.world.queue("jobs", 1)
        self.world.post("jobs", 1, 40)
        a = self.world.worker("a", session_timeout=4, commit_interval=0.5)
        self.world.until(lambda: len(self.world.done()) >= 20, what="20 done")
        a.zk.disconnect()  # kill -9
        self.world.workers.pop("a")
        done_by_a = len(self.world.done())
        committed = orjson.loads(self.server.nodes[self.paths.offset(self.partition)].data)["offset"]
        self.world.worker("b")
        self.world.advance(8)
        b_runs = [r.message_id for r in self.world.runs if r.worker == "b"]
        a_runs = [r.message_id for r in self.world.runs if r.worker == "a"]
        self.assertEqual(b_runs[0], a_runs[a_runs.index(committed) + 1], "b resumes right after the commit")
        again = set(a_runs) & set(b_runs)
        self.assertLessEqual(len(again), done_by_a - a_runs.index(committed) - 1 + 1)
        self.assertEqual(len(set(a_runs) | set(b_runs)), 40)
        self.assertIsNotNone(SlotState.RUNNING)
