"""``twistd queuey --workers 2``: two real processes on one socket, long-poll woken across them."""

from __future__ import annotations

import os
from typing import Any

import treq
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from queuey import workers
from tests import rawhttp
from tests.processes import children_of, config_in_temp_dir, free_port, running, spawn_queuey

KEY = "workers-key"
# A store poll far longer than the test waits: only the workers' bus can wake a read in time.
CONFIG = f"""
[application_keys]
w = {KEY}

[storage]
backend = sqlite
path = {{path}}
queue_cache_seconds = 600

[longpoll]
poll_interval = 600
"""
AUTH = f"Authorization: Application {KEY}\r\n".encode()
HELD_READ = b"GET /v1/w/q?wait=50 HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"
STREAM = b"GET /v1/w/q HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n" + AUTH + b"\r\n"
HEADERS = {"Authorization": f"Application {KEY}"}


class BusTests(unittest.TestCase):
    def test_datagrams_round_trip(self) -> None:
        for message in [("notify", "app", "q-1", (1, 7, 200)), ("forget", "a", "b", ())]:
            self.assertEqual(workers.decode(workers.encode(*message)), message)


class WorkersTests(unittest.TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.dir, self.config = config_in_temp_dir(self, CONFIG.format(path="queuey.sqlite"))
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    @defer.inlineCallbacks
    def start(self) -> Any:
        process = spawn_queuey(self, self.dir, "--config", self.config, "--workers", "2",
                               "--port", f"tcp:{self.port}:interface=127.0.0.1:backlog=256")
        yield process.listening
        return process

    @defer.inlineCallbacks
    def held_read_on_each_worker(self, count: int, request: bytes = HELD_READ) -> Any:
        """Connections held on ``request`` (a long-poll by default), each knowing the worker that
        serves it, until both serve ``count``."""
        held: dict[int, list[rawhttp.RawConnection]] = {0: [], 1: []}
        for _ in range(600):  # worker 1 starts a few seconds after worker 0 listens
            if min(len(v) for v in held.values()) >= count:
                return held
            connection = yield rawhttp.connect(self.port)
            connection.send(b"GET /__version__ HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = yield connection.answer()
            worker = answer.json()["worker"]
            if len(held[worker]) >= count:
                connection.close()
                yield task.deferLater(reactor, 0.05, lambda: None)
                continue
            connection.received = b""
            connection.send(request)
            held[worker].append(connection)
        self.fail(f"the kernel never gave both workers connections: {[len(v) for v in held.values()]}")

    @defer.inlineCallbacks
    def test_a_post_wakes_the_held_reads_of_both_workers(self) -> Any:
        server = yield self.start()
        response = yield treq.post(self.base + "/v1/w", data={"queue_name": "q"},
                                   headers={"Authorization": f"Application {KEY}"}, persistent=False)
        self.assertEqual(response.code, 201)
        yield response.content()
        held = yield self.held_read_on_each_worker(3)
        # No pause for the reads to start waiting: a post that lands while one still reads wakes it too.
        for connections in held.values():
            for connection in connections:
                self.assertNoResult(connection.answer())
        response = yield treq.post(self.base + "/v1/w/q", data=b"to everyone", persistent=False,
                                   headers={"Authorization": f"Application {KEY}", "Content-Type": "text/plain"})
        self.assertEqual(response.code, 201)
        yield response.content()
        answers = yield defer.gatherResults([c.answer() for cs in held.values() for c in cs])
        self.assertEqual([[m["body"] for m in a.json()["messages"]] for a in answers], [["to everyone"]] * 6)
        for connections in held.values():
            for connection in connections:
                connection.close()
        pids = children_of(server.transport.pid)
        self.assertEqual(len(pids), 1)
        server.transport.signalProcess("TERM")
        yield server.ended
        for pid in pids:  # worker 0 stopped the other worker before it exited itself
            self.assertFalse(running(pid))

    @defer.inlineCallbacks
    def test_a_worker_that_dies_is_started_again(self) -> Any:
        server = yield self.start()
        parent = server.transport.pid
        for _ in range(100):
            if children_of(parent):
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        first = children_of(parent)[0]
        os.kill(first, 9)
        for _ in range(200):
            children = children_of(parent)
            if children and children[0] != first:
                break
            yield task.deferLater(reactor, 0.1, lambda: None)
        else:
            self.fail("the killed worker was not started again")
        self.assertIn(b"Worker 1 exited", server.output)
        server.transport.signalProcess("TERM")
        yield server.ended

    @defer.inlineCallbacks
    def make_queue(self) -> Any:
        response = yield treq.post(self.base + "/v1/w", data={"queue_name": "q"}, headers=HEADERS, persistent=False)
        self.assertEqual(response.code, 201)
        yield response.content()

    @defer.inlineCallbacks
    def post(self, body: bytes, **headers: str) -> Any:
        response = yield treq.post(self.base + "/v1/w/q", data=body, persistent=False,
                                   headers={**HEADERS, "Content-Type": "text/plain", **headers})
        self.assertEqual(response.code, 201)
        yield response.content()

    @defer.inlineCallbacks
    def stop(self, server: Any) -> Any:
        server.transport.signalProcess("TERM")
        yield server.ended

    @defer.inlineCallbacks
    def test_a_delayed_message_wakes_the_held_reads_of_both_workers_when_due(self) -> Any:
        """The visibility timer of the worker that took the post wakes the other worker's reads too."""
        server = yield self.start()
        yield self.make_queue()
        held = yield self.held_read_on_each_worker(2)
        yield self.post(b"later", **{"X-Delay": "1"})
        answers = yield defer.gatherResults([c.answer() for cs in held.values() for c in cs])
        self.assertEqual([[m["body"] for m in a.json()["messages"]] for a in answers], [["later"]] * 4)
        for connection in (c for cs in held.values() for c in cs):
            connection.close()
        yield self.stop(server)

    @defer.inlineCallbacks
    def test_a_post_reaches_the_event_streams_of_both_workers(self) -> Any:
        server = yield self.start()
        yield self.make_queue()
        held = yield self.held_read_on_each_worker(2, STREAM)
        yield self.post(b"to the streams")
        # Each stream's bytes until the event is in; the store poll (600 s) cannot be what brings it.
        for _ in range(400):
            if all(b"to the streams" in c.received for cs in held.values() for c in cs):
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        else:
            self.fail(f"not every stream got the post: {[c.received[-200:] for cs in held.values() for c in cs]}")
        for connection in (c for cs in held.values() for c in cs):
            connection.close()
        yield self.stop(server)

    @defer.inlineCallbacks
    def test_a_queue_changed_or_deleted_through_one_worker_is_forgotten_by_the_other(self) -> Any:
        """Each worker caches the queue (queue_cache_seconds = 600 here); a change through one reaches
        the other over the bus, long before its cache would let go."""
        server = yield self.start()
        yield self.make_queue()
        info = b"GET /v1/w/q/info HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n"
        workers_of = yield self.held_read_on_each_worker(1, info)  # a keep-alive connection to each
        for connection in (cs[0] for cs in workers_of.values()):
            answer = yield connection.answer()
            self.assertEqual(answer.json()["partitions"], 1)  # now in each worker's cache

        @defer.inlineCallbacks
        def ask(worker: int, request: bytes) -> Any:
            connection = workers_of[worker][0]
            connection.received = b""
            connection.send(request)
            answer = yield connection.answer()
            return answer

        @defer.inlineCallbacks
        def seen_by(worker: int, check: Any) -> Any:
            for _ in range(200):
                answer = yield ask(worker, info)
                if check(answer):
                    return
                yield task.deferLater(reactor, 0.05, lambda: None)
            self.fail(f"worker {worker} still answers {answer.status} {answer.body!r}")

        body = b"partitions=3"
        changed = yield ask(0, b"PUT /v1/w/q HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded"
                              b"\r\nContent-Length: %d\r\n" % len(body) + AUTH + b"\r\n" + body)
        self.assertEqual(changed.status, 200)
        yield seen_by(1, lambda a: a.status == 200 and a.json()["partitions"] == 3)
        deleted = yield ask(1, b"DELETE /v1/w/q HTTP/1.1\r\nHost: x\r\n" + AUTH + b"\r\n")
        self.assertEqual(deleted.status, 200)
        yield seen_by(0, lambda a: a.status == 404)
        for connection in (cs[0] for cs in workers_of.values()):
            connection.close()
        yield self.stop(server)
