"""qdo on a 3-node ZooKeeper ensemble: the ensemble's leader killed (-9) and restarted under running workers.

Run by ``scripts/run-cluster-tests.sh zookeeper`` (``make test-cluster``), which starts the ensemble with
``scripts/zookeeper-start.sh --nodes 3`` and exports its address and data dir (``QUEUEY_TEST_ZOOKEEPER_ENSEMBLE``,
``QUEUEY_ZOOKEEPER_DATA``). Without them this test skips, also under CI: ``make test`` does not run it. The workers must keep
processing while a node is down, lose nothing, and never process a partition in two places at once.
"""

from __future__ import annotations

import os
import subprocess
import uuid

from twisted.internet import defer, threads
from twisted.trial.unittest import SkipTest, TestCase

from qdo.offsets import id_key
from tests.qdo_harness import REPO, Group, OffsetSampler, Queuey, Worker, post_spread
from tests.processes import wait_for
from tests.qdo_journal import done_ids, order_violations, overlaps, read_journals

ENSEMBLE = "QUEUEY_TEST_ZOOKEEPER_ENSEMBLE"


def script(name: str, *args: str) -> str:
    """Run one of the project's ZooKeeper scripts on the ensemble's data dir (blocking: call in a thread)."""
    result = subprocess.run([os.path.join(REPO, "scripts", name), "--data", os.environ["QUEUEY_ZOOKEEPER_DATA"],
                             *args], capture_output=True, text=True, check=True)
    return result.stdout


async def leader_of(ports: list[int]) -> int | None:
    """The position (1..) in ``ports`` of the node that says it leads, asked off the reactor thread."""
    modes = [await threads.deferToThread(mode, port) for port in ports]
    return next((n for n, m in enumerate(modes, 1) if m == "leader"), None)


def mode(port: int) -> str:
    """``srvr``'s Mode of the node serving on ``port`` (leader, follower), or "" if it does not answer."""
    import socket
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as connection:
            connection.sendall(b"srvr")
            answer = b""
            while chunk := connection.recv(4096):
                answer += chunk
    except OSError:
        return ""
    for line in answer.decode(errors="replace").splitlines():
        if line.startswith("Mode: "):
            return line.split(": ", 1)[1].strip()
    return ""


class EnsembleLeaderTests(TestCase):
    timeout = 300

    async def _test(self) -> None:
        hosts = os.environ.get(ENSEMBLE, "").strip()
        if not hosts:
            raise SkipTest(f"set {ENSEMBLE} (scripts/run-cluster-tests.sh zookeeper does)")
        ports = [int(h.rsplit(":", 1)[1]) for h in hosts.split(",")]
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        root = f"/qdo-ensemble-{uuid.uuid4().hex[:8]}"
        queuey = await Queuey.start(self, directory)
        self.addCleanup(lambda: defer.ensureDeferred(queuey.stop()))
        client = queuey.client
        group = Group(hosts, root)
        await group.start()
        self.addCleanup(lambda: defer.ensureDeferred(group.stop()))
        await client.create_queue("jobs", partitions=6)
        workers = [Worker(directory, n, queuey.url, hosts + root, job_seconds=0.005) for n in ("a", "b", "c")]
        for w in workers:
            w.start()
            self.addCleanup(lambda w=w: defer.ensureDeferred(w.stop()))
        journals = [w.journal for w in workers]

        async def owned() -> bool:
            return {w for w, _ in (await group.owners()).values()} == {"a", "b", "c"}
        await wait_for(owned, 90, "every worker to own partitions")
        sampler = OffsetSampler(group)
        sampler.start()
        self.addCleanup(sampler.stop)
        posted = await post_spread(client, "jobs", 6, 300, "before")
        await wait_for(lambda: set(posted) <= done_ids(read_journals(journals)), 90, "the first messages done")

        leader = await leader_of(ports)
        assert leader is not None, "the ensemble has a leader"
        await threads.deferToThread(script, "zookeeper-stop.sh", "--node", str(leader), "--kill")
        survivors = [p for n, p in enumerate(ports, 1) if n != leader]
        await wait_for(lambda: leader_of(survivors), 90, "a new leader among the two left")
        during = await post_spread(client, "jobs", 6, 300, "during")
        posted += during
        # Processing goes on while the old leader is down.
        await wait_for(lambda: set(during) <= done_ids(read_journals(journals)), 90, "messages done with a node down")
        self.assertEqual(await threads.deferToThread(mode, ports[leader - 1]), "", "the killed node is still down")
        await threads.deferToThread(script, "zookeeper-start.sh", "--nodes", "3")  # starts the missing node
        after = await post_spread(client, "jobs", 6, 300, "after")
        posted += after
        await wait_for(lambda: set(posted) <= done_ids(read_journals(journals)), 90, "every message done")
        sampler.stop()
        runs = read_journals(journals)
        self.assertEqual(overlaps(runs, {}), [], "a partition processed in two places at once")
        self.assertEqual(order_violations(runs, id_key), [])
        for partition, history in sampler.history.items():
            keys = [id_key(o) for o in history]
            self.assertEqual(keys, sorted(keys), f"offset of {partition} went backwards")
        lost = [w.name for w in workers if w.lost_a_session()]
        self.assertEqual(lost, [], "sessions survive the ensemble's leader election")

    def test_workers_go_on_while_the_leader_node_is_killed_and_restarted(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())
