"""qdo's configuration, job resolution, and the partition loop against Queuey in memory."""

from __future__ import annotations

import gc
import os
import threading
import weakref
from typing import Any

import orjson
from twisted.internet import defer, reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from qdo import worker as qw
from qdo.offsets import FileOffsets
from qdo.runner import Gate, PartitionRunner
from qdo.assign import Partition
from qdo.config import ConfigError, parse_config, resolve, split_zookeeper
from queuey.client import QueueyClient
from queuey.testing import MemoryQueuey
from tests.qdo_harness import ids

MINIMAL = """
[qdo-worker]
job = tests.qdo_journal:journal_job
name = w1
[queuey]
connection = http://127.0.0.1:5000/v1/queuey
app_key = ${KEY}
"""

ORIGINAL = """
[qdo-worker]
job = myjob
job_context = qdo.worker:dict_context
job_failure = qdo.worker:save_failed_message
name = worker-a
wait_interval = 5
concurrency = 4

[partitions]
policy = automatic
ids = jobs-1 my-queue-2

[queuey]
connection = http://127.0.0.1:5000/v1/queuey http://10.0.0.2:5000/v1/queuey
app_key = secret

[zookeeper]
connection = 127.0.0.1:2181,127.0.0.2:2181/qdo
group = default
party_wait = 2
session_timeout = 10
"""


class ConfigTests(SynchronousTestCase):

    def test_original_sections(self) -> None:
        config = parse_config(ORIGINAL)
        self.assertEqual((config.name, config.concurrency, config.wait_interval), ("worker-a", 4, 5.0))
        self.assertEqual(config.ids, (Partition("queuey", "jobs", 1), Partition("queuey", "my-queue", 2)))
        self.assertEqual(config.application, "queuey")
        self.assertEqual(len(config.queuey_connection), 2)
        self.assertEqual((config.zookeeper.hosts, config.zookeeper.root), ("127.0.0.1:2181,127.0.0.2:2181", "/qdo"))
        self.assertEqual((config.zookeeper.party_wait, config.zookeeper.session_timeout), (2.0, 10.0))
        self.assertEqual(config.warnings, ())

    def test_defaults_and_environment(self) -> None:
        config = parse_config(MINIMAL, environ={"KEY": "k"})
        self.assertEqual(config.app_key, "k")
        self.assertEqual((config.policy, config.job_context, config.job_failure),
                         ("automatic", "qdo.worker:dict_context", "qdo.worker:log_failure"))
        self.assertEqual(config.exclude, ("qdo_error",))
        self.assertRaises(ConfigError, parse_config, MINIMAL, environ={})

    def test_errors_name_the_setting(self) -> None:
        bad = {
            "policy = sometimes": "[partitions] policy",
            "ids = nonumber": "[partitions] ids",
        }
        for line, where in bad.items():
            with self.assertRaises(ConfigError) as caught:
                parse_config(MINIMAL.replace("[queuey]", f"[partitions]\n{line}\n[queuey]"), environ={"KEY": "k"})
            self.assertIn(where, str(caught.exception))
        with self.assertRaises(ConfigError):
            parse_config(MINIMAL.replace("name = w1", "name = w1\nconcurrency = 0"), environ={"KEY": "k"})
        with self.assertRaises(ConfigError):
            parse_config(MINIMAL.replace("/v1/queuey", ""), environ={"KEY": "k"})

    def test_unknown_settings_warn(self) -> None:
        config = parse_config(MINIMAL + "\n[extra]\nx = 1\n", environ={"KEY": "k"})
        self.assertIn("[extra]: unknown section, ignored", config.warnings)

    def test_zookeeper_connection(self) -> None:
        self.assertEqual(split_zookeeper("h:1"), ("h:1", "/qdo"))
        self.assertEqual(split_zookeeper("h:1,h:2/a/b/"), ("h:1,h:2", "/a/b"))

    def test_resolve_module_callable(self) -> None:
        self.assertIs(resolve("qdo.worker:log_failure"), qw.log_failure)
        self.assertIs(resolve("qdo.worker:Jobs.run"), qw.Jobs.run)
        for spec in ("nope.nothing:x", "qdo.worker:nothing", "qdo.worker:ERROR_TTL"):
            self.assertRaises(ConfigError, resolve, spec)

    def test_resolve_entry_point(self) -> None:
        class EntryPoint:
            value = "qdo.worker:dict_context"

            def load(self) -> Any:
                return qw.dict_context

        def entry_points(group: str, name: str) -> list[Any]:
            return [EntryPoint()] if (group, name) == ("qdo.jobs", "resize") else []

        self.assertIs(resolve("resize", entry_points=entry_points), qw.dict_context)
        self.assertRaises(ConfigError, resolve, "missing", entry_points=entry_points)
        self.assertRaises(ConfigError, resolve, "resize", group=None)

    def test_where_jobs_run(self) -> None:
        async def coroutine(message: Any, context: Any) -> None:
            pass

        @defer.inlineCallbacks
        def inline(message: Any, context: Any) -> Any:
            yield None

        @qw.reactor_job
        def marked(message: Any, context: Any) -> Any:
            return defer.succeed(None)

        def blocking(message: Any, context: Any) -> None:
            pass

        self.assertEqual([qw.runs_on_reactor(f) for f in (coroutine, inline, marked, blocking)],
                         [True, True, True, False])


class JobThreadsTests(TestCase):
    """Blocking jobs run in the worker's threads; results and errors come back on the reactor thread."""

    async def _results_and_errors(self) -> None:
        threads = qw.JobThreads(reactor, 2)
        threads.start()
        self.addCleanup(threads.stop)
        ran_in: list[int] = []
        delivered_in: list[int] = []

        def job(value: int) -> int:
            ran_in.append(threading.get_ident())
            return value * 2

        d = threads.run(job, 21).addCallback(lambda r: (delivered_in.append(threading.get_ident()), r)[1])
        self.assertEqual(await d, 42)
        self.assertNotIn(threading.get_ident(), ran_in)
        self.assertEqual(delivered_in, [threading.get_ident()])

        def fails() -> None:
            raise KeyError("lost")
        with self.assertRaises(KeyError):
            await threads.run(fails)

    def test_results_and_errors(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._results_and_errors())

    def test_stop_waits_for_the_jobs_running(self) -> None:
        threads = qw.JobThreads(reactor, 2)
        threads.start()
        release, finished = threading.Event(), []

        def job() -> None:
            release.wait()
            finished.append(True)
        threads.run(job)
        threading.Thread(target=release.set).start()
        threads.stop()
        self.assertEqual(finished, [True])
        self.failureResultOf(threads.run(job), RuntimeError)


class RunnerTests(SynchronousTestCase):
    """The partition loop, against the whole Queuey app in memory, on a Clock."""

    def setUp(self) -> None:
        self.memory = MemoryQueuey()
        self.addCleanup(self.memory.close)
        self.clock = self.memory.clock
        self.client = QueueyClient(self.memory.url("/v1/queuey"), "queuey-key", reactor=self.clock,
                                   http=self.memory.treq)
        self.settle(self.client.create_queue("jobs", partitions=2))
        self.seen: list[str] = []
        self.commits: list[str] = []
        self.gate_open = True

    def settle(self, d: defer.Deferred[Any] | None = None, rounds: int = 50) -> Any:
        for _ in range(rounds):
            self.memory.treq.flush()
            self.clock.advance(0.1)
        self.memory.treq.flush()
        return self.successResultOf(d) if d is not None else None

    def runner(self, job: Any, failure: Any = qw.log_failure, partition: int = 1,
               semaphore: defer.DeferredSemaphore | None = None) -> PartitionRunner:
        jobs = qw.Jobs(job, qw.dict_context, failure, self.client, self.clock, 1)
        jobs.start()

        def commit(partition: Partition, message_id: str) -> defer.Deferred[None]:
            self.commits.append(message_id)
            return defer.succeed(None)
        return PartitionRunner(Partition("queuey", "jobs", partition), None, client=self.client, jobs=jobs,
                                  commit=commit, gate=Gate(lambda: self.gate_open),
                                  semaphore=semaphore or defer.DeferredSemaphore(1), clock=self.clock,
                                  wait_interval=0.5,
                                  max_wait_interval=1)

    @staticmethod
    def body(message: qw.Message) -> str:
        return message.body

    def test_in_order_and_committed(self) -> None:
        posted = self.settle(self.client.post_messages("jobs", [{"body": f"m{i}", "partition": 1} for i in range(5)]))

        contexts: list[dict] = []

        @qw.reactor_job
        def job(message: qw.Message, context: dict) -> None:
            context["n"] = context.get("n", 0) + 1
            contexts.append(context)
            self.seen.append(message["body"])

        runner = self.runner(job)
        runner.start()
        self.settle()
        self.assertEqual(self.seen, [f"m{i}" for i in range(5)])
        self.assertEqual(self.commits, [m["key"] for m in posted])
        # More arrive later: picked up after the idle wait, after the offset.
        self.settle(self.client.post_messages("jobs", [{"body": "late", "partition": 1}]))
        self.settle()
        self.assertEqual(self.seen[-1], "late")
        # One context for every job of the worker (dict_context), kept from one message to the next.
        self.assertEqual((len(contexts), len({id(c) for c in contexts}), contexts[0]), (6, 1, {"n": 6}))
        self.assertEqual(self.successResultOf(runner.stop()), "stopped")

    def test_closed_gate_starts_nothing(self) -> None:
        self.gate_open = False

        async def job(message: qw.Message, context: Any) -> None:
            self.seen.append(message.body)

        runner = self.runner(job)
        runner.start()
        self.settle(self.client.post_messages("jobs", [{"body": "x", "partition": 1}]))
        self.settle()
        self.assertEqual(self.seen, [])
        self.gate_open = True
        runner.gate.changed()
        self.settle()
        self.assertEqual(self.seen, ["x"])
        runner.stop()
        self.settle()

    def test_stop_finishes_the_message_in_hand(self) -> None:
        started: list[defer.Deferred[None]] = []

        @qw.reactor_job
        def job(message: qw.Message, context: Any) -> defer.Deferred[None]:
            d: defer.Deferred[None] = defer.Deferred()
            started.append(d)
            return d

        runner = self.runner(job)
        runner.start()
        self.settle(self.client.post_messages("jobs", [{"body": "a", "partition": 1}, {"body": "b", "partition": 1}]))
        self.settle()
        self.assertEqual(len(started), 1)
        stopped = runner.stop()
        self.assertNoResult(stopped)
        started[0].callback(None)
        self.assertEqual(self.successResultOf(stopped), "stopped")
        self.assertEqual(len(self.commits), 1)
        self.assertEqual(len(started), 1, "nothing new after stop")

    def test_abandoned_runners_wake_nothing_when_collected(self) -> None:
        """Runners dropped mid-job (as a test drops a "killed" worker) are garbage: collecting them runs nothing.

        The loop holding the job slot must not hand it on while the collector
        closes it: the runner waiting for the slot is garbage too, and resuming
        it starts a job from the collector or, when it was closed first, makes
        Twisted log "cannot reuse already awaited coroutine" in whatever test
        is running at the time.
        """
        started: list[str] = []

        @qw.reactor_job
        def job(message: qw.Message, context: Any) -> defer.Deferred[None]:
            started.append(message.body)
            return defer.Deferred()  # never ends

        handed_on: list[int] = []

        class Slots(defer.DeferredSemaphore):
            def release(self) -> None:
                handed_on.append(len(self.waiting))
                super().release()

        slots = Slots(1)
        holding = self.runner(job, partition=1, semaphore=slots)
        waiting = self.runner(job, partition=2, semaphore=slots)
        holding.start()
        waiting.start()
        self.settle(self.client.post_messages("jobs", [{"body": "a", "partition": 1}]))
        self.settle(self.client.post_messages("jobs", [{"body": "b", "partition": 2}]))
        self.assertEqual((started, len(slots.waiting)), (["a"], 1))
        alive = [weakref.ref(holding), weakref.ref(waiting)]
        del holding, waiting, slots
        gc.collect()
        self.assertEqual([r() for r in alive], [None, None])
        self.assertEqual((started, handed_on), (["a"], []))

    def test_drop_commits_nothing(self) -> None:
        started: list[defer.Deferred[None]] = []

        @qw.reactor_job
        def job(message: qw.Message, context: Any) -> defer.Deferred[None]:
            started.append(defer.Deferred())
            return started[-1]

        runner = self.runner(job)
        done = runner.start()
        self.settle(self.client.post_messages("jobs", [{"body": "a", "partition": 1}]))
        self.settle()
        runner.drop()
        started[0].callback(None)
        self.assertEqual(self.successResultOf(done), "dropped")
        self.assertEqual(self.commits, [])

    def test_failed_job_saved_to_the_error_queue(self) -> None:
        async def job(message: qw.Message, context: Any) -> None:
            raise ValueError("broken")

        runner = self.runner(job, qw.save_failed_message)
        runner.start()
        posted = self.settle(self.client.post_messages("jobs", [{"body": "bad", "partition": 1}]))
        self.settle()
        self.assertEqual(self.commits, [posted[0]["key"]], "a handled failure counts as done")
        saved = self.settle(self.client.read_messages("qdo_error"))
        document = orjson.loads(saved[0]["body"])
        self.assertEqual((document["body"], document["queue"], document["error"]), ("bad", "jobs", "ValueError: broken"))
        self.flushLoggedErrors(ValueError)
        runner.stop()
        self.settle()

    def test_failing_failure_handler_retries_and_does_not_commit(self) -> None:
        attempts: list[int] = []

        async def job(message: qw.Message, context: Any) -> None:
            raise ValueError("broken")

        def failure(message: Any, context: Any, queue: str, exc: BaseException, client: Any) -> None:
            attempts.append(1)
            if len(attempts) < 3:
                raise RuntimeError("error queue down")

        runner = self.runner(job, failure)
        runner.start()
        self.settle(self.client.post_messages("jobs", [{"body": "bad", "partition": 1}]))
        self.settle(rounds=100)
        self.assertEqual(len(attempts), 3)
        self.assertEqual(len(self.commits), 1)
        self.flushLoggedErrors(RuntimeError)
        runner.stop()
        self.settle()


class FileOffsetsTests(TestCase):

    async def _roundtrip(self) -> None:
        path = os.path.join(os.path.abspath(self.mktemp()), "offsets.json")
        offsets = FileOffsets(path, reactor)
        await offsets.load()
        p = Partition("a", "q", 1)
        first, second = ids(2)
        await defer.gatherResults([offsets.commit(p, first), offsets.commit(p, second)])
        await offsets.commit(p, first)  # never backwards
        again = FileOffsets(path, reactor)
        await again.load()
        self.assertEqual(again.get(p), second)

    def test_durable_and_monotonic(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._roundtrip())


class NamedQueuesTests(SynchronousTestCase):
    """``[partitions] queues``: a principal's key finds the partitions of another application's queue."""

    def setUp(self) -> None:
        self.memory = MemoryQueuey()
        self.addCleanup(self.memory.close)
        self.owner = self.client("queuey-key")
        self.settle(self.owner.create_queue("jobs", partitions=3, principles=["app:other"]))
        self.settle(self.owner.create_queue("private", partitions=2))

    def client(self, key: str) -> QueueyClient:
        return QueueyClient(self.memory.url("/v1/queuey"), key, reactor=self.memory.clock, http=self.memory.treq,
                            retries=0)

    def settle(self, d: defer.Deferred[Any]) -> Any:
        self.memory.treq.flush()
        return self.successResultOf(d)

    def discover(self, queues: str) -> set[str]:
        from qdo.coordinator import discover
        config = parse_config(MINIMAL.replace("[queuey]", f"[partitions]\nqueues = {queues}\n[queuey]"),
                              environ={"KEY": "other-key"})
        found = self.settle(defer.ensureDeferred(discover(self.client("other-key"), config)))
        return {p.name for p in found}

    def test_partitions_of_listed_queues_only(self) -> None:
        self.assertEqual(self.discover("jobs, private, missing"), {"jobs-1", "jobs-2", "jobs-3"})
        self.failureResultOf(self.client("other-key").all_queues(), Exception)  # listing is the owner's
        self.settle(self.owner.update_queue("jobs", partitions=4))
        self.assertEqual(self.discover("jobs"), {"jobs-1", "jobs-2", "jobs-3", "jobs-4"})

    def test_queue_names_checked(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            parse_config(MINIMAL.replace("[queuey]", "[partitions]\nqueues = a/b\n[queuey]"), environ={"KEY": "k"})
        self.assertIn("[partitions] queues", str(caught.exception))
