"""queuey.client against the whole app in memory (MemoryQueuey), and its fail-over and retries."""

from __future__ import annotations

import random
from typing import Any

from twisted.internet import defer, endpoints, error as net_error, protocol, reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web import client as web_client, resource, server

from queuey import client as qc
from queuey.config import Config
from queuey.storage.sqlite import SQLiteStore
from queuey.testing import DEFAULT_KEYS, MemoryQueuey
from tests.served import ServedQueuey


class MemoryClientTests(TestCase):
    """Every call of the client, through the real routes and store."""

    def setUp(self) -> None:
        self.memory = MemoryQueuey()
        self.addCleanup(self.memory.close)
        self.client = qc.QueueyClient(self.memory.url("/v1/queuey"), "queuey-key", reactor=self.memory.clock,
                                      http=self.memory.treq)

    def run_(self, d: defer.Deferred) -> Any:
        self.memory.treq.flush()
        return self.successResultOf(d)

    def fail_(self, d: defer.Deferred, kind: type) -> qc.QueueyClientError:
        self.memory.treq.flush()
        return self.failureResultOf(d, kind).value

    def test_queue_lifecycle(self) -> None:
        created = self.run_(self.client.create_queue("jobs", partitions=3, consistency="weak"))
        self.assertEqual((created["queue_name"], created["partitions"], created["consistency"]), ("jobs", 3, "weak"))
        error = self.fail_(self.client.create_queue("jobs"), qc.Conflict)
        self.assertEqual(error.status, 409)
        self.assertEqual(self.run_(self.client.ensure_queue("jobs"))["created"], False)
        self.assertEqual(self.run_(self.client.ensure_queue("other"))["created"], True)
        names = [q["queue_name"] for q in self.run_(self.client.list_queues())]
        self.assertEqual(sorted(names), ["jobs", "other"])
        detailed = {q["queue_name"]: q for q in self.run_(self.client.all_queues(page=1))}
        self.assertEqual(detailed["jobs"]["partitions"], 3)
        updated = self.run_(self.client.update_queue("jobs", partitions=5, principles=["app:queuey"]))
        self.assertEqual((updated["partitions"], updated["principles"]), (5, ["app:queuey"]))
        error = self.fail_(self.client.update_queue("jobs", partitions=2), qc.BadRequest)
        self.assertIn("partitions", error.errors)
        self.run_(self.client.delete_queue("jobs"))
        self.fail_(self.client.read_messages("jobs"), qc.NotFound)

    def test_messages(self) -> None:
        self.run_(self.client.create_queue("q", partitions=2))
        single = self.run_(self.client.post_message("q", "one", ttl=60, partition=2))
        self.assertEqual(single["partition"], 2)
        batch = self.run_(self.client.post_messages("q", [{"body": "two", "partition": 2}, "three"]))
        self.assertEqual(len(batch), 2)
        read = self.run_(self.client.read_messages("q", partitions=[2]))
        self.assertEqual([m["body"] for m in read][:2], ["one", "two"])
        after = self.run_(self.client.read_messages("q", partitions=2, after=single["key"]))
        self.assertEqual([m["body"] for m in after], ["two"] if batch[1]["partition"] == 1 else ["two", "three"])
        everything = self.run_(self.client.read_messages("q", partitions="all", limit=10))
        self.assertEqual(len(everything), 3)
        got = self.run_(self.client.get_messages("q", [f"2:{single['key']}"]))
        self.assertEqual([m["body"] for m in got], ["one"])
        self.run_(self.client.replace_messages("q", f"2:{single['key']}", "uno"))
        got = self.run_(self.client.get_messages("q", f"2:{single['key']}"))
        self.assertEqual(got[0]["body"], "uno")
        self.run_(self.client.delete_messages("q", [f"2:{single['key']}"]))
        self.assertEqual(self.run_(self.client.get_messages("q", f"2:{single['key']}")), [])
        error = self.fail_(self.client.post_messages("q", [{"body": ""}]), qc.BadRequest)
        self.assertIn("0.body", error.errors)

    def test_long_poll(self) -> None:
        self.run_(self.client.create_queue("lp"))
        d = self.client.read_messages("lp", wait=5)
        self.memory.treq.flush()
        self.assertNoResult(d)
        self.run_(self.client.post_message("lp", "late"))
        self.memory.advance(1.5)
        self.assertEqual([m["body"] for m in self.successResultOf(d)], ["late"])

    def test_bad_key_is_unauthorized(self) -> None:
        bad = qc.QueueyClient(self.memory.url("/v1/queuey"), "nope", reactor=self.memory.clock,
                              http=self.memory.treq)
        error = self.fail_(bad.list_queues(), qc.Unauthorized)
        self.assertEqual((error.status, error.errors), (401, {"InvalidApplicationKey": "The application key is not valid."}))
        self.assertEqual(str(error), "HTTP 401: InvalidApplicationKey: The application key is not valid.")

    def test_other_application_is_forbidden(self) -> None:
        other = qc.QueueyClient(self.memory.url("/v1/queuey"), "other-key", reactor=self.memory.clock,
                                http=self.memory.treq)
        error = self.fail_(other.create_queue("x"), qc.Forbidden)
        self.assertEqual((error.status, list(error.errors)), (403, ["AccessDenied"]))
        self.assertIn("'queuey'", error.errors["AccessDenied"])
        self.assertEqual(self.run_(self.client.list_queues()), [])  # and nothing was created

    def test_heartbeat(self) -> None:
        self.assertEqual(self.run_(self.client.heartbeat())["status"], "ok")


class FakeResponse:
    def __init__(self, code: int, body: bytes, headers: dict[bytes, list[bytes]] | None = None) -> None:
        from twisted.web.http_headers import Headers
        self.code = code
        self.length = len(body)
        self._body = body
        self.headers = Headers(headers or {})

    def deliverBody(self, protocol: Any) -> None:
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseDone
        protocol.dataReceived(self._body)
        protocol.connectionLost(Failure(ResponseDone()))


class ScriptedHTTP:
    """An HTTP client whose answers per host are scripted: exceptions or (code, body)."""

    def __init__(self, script: dict[str, list[Any]]) -> None:
        self.script = script
        self.calls: list[tuple[str, str]] = []

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred:
        from urllib.parse import urlsplit
        host = urlsplit(url).hostname
        self.calls.append((method, host))
        steps = self.script[host]
        step = steps.pop(0) if len(steps) > 1 else steps[0]
        if step is HANG:
            return defer.Deferred()  # a server that never answers
        if isinstance(step, Exception):
            return defer.fail(step)
        code, body, *headers = step
        return defer.succeed(FakeResponse(code, body, headers[0] if headers else None))


HANG = object()
OK = (200, b'{"status":"ok","queues":[]}')
UNAVAILABLE = (503, b'{"status":"error","error_msg":{"StorageUnavailable":"down"}}', {b"Retry-After": [b"1"]})


class FailoverTests(SynchronousTestCase):

    def make(self, script: dict[str, list[Any]], urls: str, **kwargs: Any) -> tuple[qc.QueueyClient, ScriptedHTTP]:
        from twisted.internet.task import Clock
        self.clock = Clock()
        http = ScriptedHTTP(script)
        client = qc.QueueyClient(urls, "k", reactor=self.clock, http=http, local_hosts={"me.example"},
                                 **kwargs)
        return client, http

    def settle(self, d: defer.Deferred, seconds: float = 60) -> None:
        for _ in range(int(seconds * 10)):
            if d.called:
                return
            self.clock.advance(0.1)

    def test_prefers_a_local_server(self) -> None:
        client, http = self.make({"far.example": [OK], "127.0.0.1": [OK]},
                                 "http://far.example:5000/v1/a http://127.0.0.1:5000/v1/a")
        self.assertEqual([s.base for s in client.servers], ["http://127.0.0.1:5000", "http://far.example:5000"])
        self.successResultOf(client.list_queues())
        self.assertEqual(http.calls, [("GET", "127.0.0.1")])

    def test_own_hostname_is_local(self) -> None:
        client, _ = self.make({}, "http://far.example/v1/a,http://me.example/v1/a")
        self.assertEqual(client.servers[0].base, "http://me.example")

    def test_fails_over_on_connection_refused_and_comes_back(self) -> None:
        client, http = self.make({"127.0.0.1": [net_error.ConnectionRefusedError(), OK], "far.example": [OK]},
                                 ["http://127.0.0.1:5000/v1/a", "http://far.example:5000/v1/a"], down_for=30)
        d = client.list_queues()
        self.settle(d)
        self.successResultOf(d)
        self.assertEqual(http.calls, [("GET", "127.0.0.1"), ("GET", "far.example")])
        self.successResultOf(client.list_queues())  # the local one is still set aside
        self.assertEqual(http.calls[-1], ("GET", "far.example"))
        self.clock.advance(31)
        self.successResultOf(client.list_queues())
        self.assertEqual(http.calls[-1], ("GET", "127.0.0.1"))

    def test_retries_503_with_backoff_then_gives_up(self) -> None:
        client, http = self.make({"127.0.0.1": [UNAVAILABLE]}, "http://127.0.0.1/v1/a", retries=3)
        d = client.list_queues()
        self.assertNoResult(d)
        self.settle(d, 120)
        error = self.failureResultOf(d, qc.ServiceUnavailable).value
        self.assertEqual(error.status, 503)
        self.assertEqual(len(http.calls), 4)

    def test_503_then_success(self) -> None:
        client, http = self.make({"127.0.0.1": [UNAVAILABLE, OK]}, "http://127.0.0.1/v1/a")
        d = client.list_queues()
        self.assertNoResult(d)
        self.clock.advance(0.5)
        self.assertNoResult(d)  # Retry-After: 1 is honoured
        self.settle(d)
        self.assertEqual(self.successResultOf(d), [])

    def test_client_errors_are_not_retried(self) -> None:
        client, http = self.make({"127.0.0.1": [(404, b'{"status":"error","error_msg":{"NotFound":"x"}}')]},
                                 "http://127.0.0.1/v1/a")
        error = self.failureResultOf(client.read_messages("q"), qc.NotFound).value
        self.assertEqual((error.status, error.errors), (404, {"NotFound": "x"}))
        self.assertEqual(len(http.calls), 1)

    def test_post_is_not_retried_after_a_lost_response(self) -> None:
        lost = web_client.ResponseNeverReceived([])
        client, http = self.make({"127.0.0.1": [lost, (201, b'{"status":"ok","messages":[]}')]},
                                 "http://127.0.0.1/v1/a")
        self.failureResultOf(client.post_messages("q", ["x"]), qc.ConnectionFailed)
        self.assertEqual(len(http.calls), 1)
        # ... but a GET is.
        client, http = self.make({"127.0.0.1": [lost, OK]}, "http://127.0.0.1/v1/a")
        d = client.list_queues()
        self.settle(d)
        self.successResultOf(d)

    def test_post_is_retried_when_it_never_left(self) -> None:
        client, http = self.make({"127.0.0.1": [net_error.ConnectionRefusedError(),
                                                (201, b'{"status":"ok","messages":[{"key":"k"}]}')]},
                                 "http://127.0.0.1/v1/a")
        d = client.post_messages("q", ["x"])
        self.settle(d)
        self.assertEqual(self.successResultOf(d), [{"key": "k"}])

    def test_connection_parsing(self) -> None:
        self.assertEqual(qc.parse_connection("http://h:5000/v1/app"), ("http://h:5000", "app"))
        self.assertEqual(qc.parse_connection("https://h/prefix/v1/app/"), ("https://h/prefix", "app"))
        self.assertEqual(qc.parse_connection("http://h:5000"), ("http://h:5000", None))
        self.assertRaises(ValueError, qc.parse_connection, "h:5000")
        self.assertRaises(ValueError, qc.QueueyClient, "http://h:1", reactor=None)
        self.assertRaises(ValueError, qc.QueueyClient, "http://h/v1/a http://h/v1/b", reactor=None)

    def test_error_types(self) -> None:
        """Every status of docs/client.rst's table: its class, status, errors and message."""
        table = [(400, qc.BadRequest), (401, qc.Unauthorized), (403, qc.Forbidden), (404, qc.NotFound),
                 (405, qc.MethodNotAllowed), (409, qc.Conflict), (413, qc.PayloadTooLarge), (500, qc.ServerError),
                 (502, qc.ServerError), (503, qc.ServiceUnavailable), (418, qc.QueueyClientError)]
        for status, kind in table:
            error = qc.error_for(status, {"status": "error", "error_msg": {"ttl": "Must be a number.", "x": "y"}})
            self.assertIs(type(error), kind, status)
            self.assertEqual((error.status, error.errors), (status, {"ttl": "Must be a number.", "x": "y"}))
            self.assertEqual(str(error), f"HTTP {status}: ttl: Must be a number.; x: y")
        self.assertIsInstance(qc.error_for(503, {}), qc.ServerError)
        self.assertTrue(all(issubclass(kind, qc.QueueyClientError) for _, kind in table))
        self.assertTrue(issubclass(qc.ConnectionFailed, qc.QueueyClientError))
        self.assertIsNone(qc.ConnectionFailed("no").status)
        # An answer that is not Queuey's JSON still becomes an error with something to read.
        odd = qc.error_for(502, "<html>Bad Gateway</html>")
        self.assertEqual((type(odd), odd.errors), (qc.ServerError, {"error": "<html>Bad Gateway</html>"}))

    def test_fails_over_on_503(self) -> None:
        """A server answering 503 is set aside for down_for; the request goes to the next at once."""
        client, http = self.make({"127.0.0.1": [UNAVAILABLE, OK], "far.example": [OK]},
                                 "http://127.0.0.1/v1/a http://far.example/v1/a", down_for=30)
        d = client.list_queues()
        self.settle(d)
        self.assertEqual(self.successResultOf(d), [])
        self.assertEqual(http.calls, [("GET", "127.0.0.1"), ("GET", "far.example")])
        self.successResultOf(client.list_queues())
        self.assertEqual(http.calls[-1], ("GET", "far.example"))
        self.clock.advance(31)
        self.successResultOf(client.list_queues())
        self.assertEqual(http.calls[-1], ("GET", "127.0.0.1"))

    def test_fails_over_on_a_dropped_connection(self) -> None:
        for dropped in (web_client.ResponseNeverReceived([]), net_error.ConnectionLost()):
            client, http = self.make({"127.0.0.1": [dropped, OK], "far.example": [OK]},
                                     "http://127.0.0.1/v1/a http://far.example/v1/a")
            d = client.list_queues()
            self.settle(d)
            self.successResultOf(d)
            self.assertEqual(http.calls, [("GET", "127.0.0.1"), ("GET", "far.example")], dropped)

    def test_retry_posts_repeats_a_post_whose_answer_was_lost(self) -> None:
        lost = web_client.ResponseNeverReceived([])
        stored = (201, b'{"status":"ok","messages":[{"key":"k"}]}')
        client, http = self.make({"127.0.0.1": [lost, stored]}, "http://127.0.0.1/v1/a", retry_posts=True)
        d = client.post_messages("q", ["x"])
        self.settle(d)
        self.assertEqual(self.successResultOf(d), [{"key": "k"}])
        self.assertEqual(http.calls, [("POST", "127.0.0.1")] * 2)

    def test_timeout_is_per_attempt_and_counts_the_wait(self) -> None:
        """A long-poll read may take its wait on top of the timeout; each attempt gets the whole of it."""
        client, http = self.make({"127.0.0.1": [HANG]}, "http://127.0.0.1/v1/a", timeout=5, retries=1,
                                 backoff=1, max_backoff=1)
        d = client.read_messages("q", wait=10)
        self.clock.advance(14.9)
        self.assertEqual(len(http.calls), 1)
        self.clock.advance(0.2)  # 15 s: the first attempt is given up, the retry goes out after the back-off
        self.clock.advance(1.5)
        self.assertEqual(len(http.calls), 2)
        self.clock.advance(14.8)
        self.assertNoResult(d)
        self.clock.advance(0.2)
        self.failureResultOf(d, qc.ConnectionFailed)
        quick = client.list_queues()  # no wait: 5 s an attempt
        self.clock.advance(4.9)
        self.assertNoResult(quick)

    def test_backoff_grows_and_is_capped(self) -> None:
        """backoff x 2^n with jitter, never more than max_backoff, never sooner than Retry-After."""
        class Highest(random.Random):
            def random(self) -> float:
                return 0.999  # the largest jitter

        client, http = self.make({"127.0.0.1": [net_error.ConnectionRefusedError()]}, "http://127.0.0.1/v1/a",
                                 retries=8, backoff=0.25, max_backoff=2, rng=Highest())
        times = []
        http.request = _timed(http.request, self.clock, times)
        d = client.list_queues()
        self.run_out(d)
        self.failureResultOf(d, qc.ConnectionFailed)
        gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
        self.assertEqual(gaps, [0.375, 0.749, 1.499, 2.0, 2.0, 2.0, 2.0, 2.0])
        # A 503's Retry-After is honoured, up to the cap.
        slow = (503, UNAVAILABLE[1], {b"Retry-After": [b"7"]})
        client, http = self.make({"127.0.0.1": [slow]}, "http://127.0.0.1/v1/a", retries=2, backoff=0.25,
                                 max_backoff=5)
        times = []
        http.request = _timed(http.request, self.clock, times)
        d = client.list_queues()
        self.run_out(d)
        self.failureResultOf(d, qc.ServiceUnavailable)
        self.assertEqual([round(b - a, 3) for a, b in zip(times, times[1:])], [5.0, 5.0])

    def run_out(self, d: defer.Deferred) -> None:
        """Move the clock from one scheduled call to the next until ``d`` has fired."""
        while not d.called:
            self.clock.advance(min(c.getTime() for c in self.clock.getDelayedCalls()) - self.clock.seconds())


def _timed(request: Any, clock: Any, times: list[float]) -> Any:
    def timed(*args: Any, **kwargs: Any) -> Any:
        times.append(clock.seconds())
        return request(*args, **kwargs)
    return timed


class _Unavailable(resource.Resource):
    """Answers every request 503, as a queuey whose store is down does."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests = 0

    def render(self, request: Any) -> bytes:
        self.requests += 1
        request.setResponseCode(503)
        request.setHeader(b"Retry-After", b"0")
        request.setHeader(b"Content-Type", b"application/json")
        return b'{"status":"error","error_msg":{"StorageUnavailable":"down"}}'


class _Dropper(protocol.Protocol):
    """Reads a request, then closes the connection without an answer."""

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.transport.loseConnection()


class ClientOverSocketsTests(TestCase):
    """The client's own HTTP stack (treq, a connection pool) against real servers on loopback:
    a queuey, one that answers 503, one that drops every connection."""

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.queuey = ServedQueuey(Config(application_keys=DEFAULT_KEYS), SQLiteStore.in_memory)
        self.addCleanup(self.queuey.close)
        yield self.queuey.opened
        self.unavailable = _Unavailable()
        self.unavailable_base = self.listen(server.Site(self.unavailable))
        self.dropping = protocol.Factory.forProtocol(_Dropper)
        self.dropping.connections = 0
        self.dropping_base = self.listen(self.dropping)

    def listen(self, factory: Any) -> str:
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return f"http://127.0.0.1:{port.getHost().port}"

    def client(self, *bases: str, **kwargs: Any) -> qc.QueueyClient:
        client = qc.QueueyClient([f"{base}/v1/queuey" for base in bases], "queuey-key", reactor=reactor,
                                 backoff=0.01, max_backoff=0.05, **kwargs)
        self.addCleanup(client.close)
        return client

    @defer.inlineCallbacks
    def test_fails_over_on_503(self) -> Any:
        client = self.client(self.unavailable_base, self.queuey.base)
        yield client.create_queue("q")
        self.assertEqual(self.unavailable.requests, 1)
        self.assertEqual([q["queue_name"] for q in (yield client.list_queues())], ["q"])
        self.assertEqual(self.unavailable.requests, 1)  # set aside for down_for

    @defer.inlineCallbacks
    def test_fails_over_on_a_dropped_connection(self) -> Any:
        client = self.client(self.dropping_base, self.queuey.base)
        self.assertEqual((yield client.list_queues()), [])
        self.assertEqual(self.dropping.connections, 1)

    @defer.inlineCallbacks
    def test_posts_are_repeated_after_a_drop_only_with_retry_posts(self) -> Any:
        owner = self.client(self.queuey.base)
        yield owner.create_queue("q")
        yield self.assertFailure(self.client(self.dropping_base, self.queuey.base).post_message("q", "once?"),
                                 qc.ConnectionFailed)
        self.assertEqual((yield owner.read_messages("q")), [])
        yield self.client(self.dropping_base, self.queuey.base, retry_posts=True).post_message("q", "at least once")
        self.assertEqual([m["body"] for m in (yield owner.read_messages("q"))], ["at least once"])
        self.assertEqual(self.dropping.connections, 2)

    @defer.inlineCallbacks
    def test_gives_up_after_the_retries(self) -> Any:
        yield self.assertFailure(self.client(self.dropping_base, retries=2).list_queues(), qc.ConnectionFailed)
        self.assertEqual(self.dropping.connections, 3)
        yield self.assertFailure(self.client(self.unavailable_base, retries=2).list_queues(), qc.ServiceUnavailable)
        self.assertEqual(self.unavailable.requests, 3)



class HeldHTTP:
    """An HTTP client that never answers; a cancelled request fails as Twisted's Agent's does."""

    def __init__(self) -> None:
        self.calls = 0

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred:
        self.calls += 1
        return defer.Deferred(lambda d: d.errback(web_client.ResponseNeverReceived([Failure(defer.CancelledError())])))


class CancelTests(SynchronousTestCase):
    """A call the caller no longer wants (qdo stopping during a long poll) ends at once, and only it."""

    def test_a_cancelled_long_poll_fails_at_once_and_is_not_retried(self) -> None:
        from twisted.internet.task import Clock
        clock, http = Clock(), HeldHTTP()
        client = qc.QueueyClient("http://127.0.0.1:5000/v1/a", "k", reactor=clock, http=http)
        d = client.read_messages("q", partitions=[1], wait=20)
        d.cancel()
        self.failureResultOf(d, defer.CancelledError)
        clock.advance(60)
        self.assertEqual(http.calls, 1, "a cancelled call is not sent again")
        self.assertEqual(client.servers[0].down_until, 0.0, "its server is not set aside")

    def test_a_timeout_is_still_retried(self) -> None:
        from twisted.internet.task import Clock
        clock, http = Clock(), HeldHTTP()
        client = qc.QueueyClient("http://127.0.0.1:5000/v1/a", "k", reactor=clock, http=http, timeout=1, retries=1)
        d = client.read_messages("q", wait=2)
        for _ in range(100):
            clock.advance(0.1)
        error = self.failureResultOf(d, qc.ConnectionFailed).value
        self.assertIn("TimeoutError", str(error))
        self.assertEqual(http.calls, 2)


class _Silent(protocol.Protocol):
    """Takes a request and never answers."""

    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        if not self.factory.received.called:
            self.factory.received.callback(None)


class RealAgentCancelTests(TestCase):
    """What HeldHTTP assumes, on Twisted's real Agent over a loopback connection."""

    async def _test(self) -> None:
        from twisted.internet import reactor
        factory = protocol.Factory.forProtocol(_Silent)
        factory.connections, factory.received = 0, defer.Deferred()
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(port.stopListening)
        client = qc.QueueyClient(f"http://127.0.0.1:{port.getHost().port}/v1/a", "k", reactor=reactor,
                                 timeout=5, retries=1)
        self.addCleanup(client.close)
        d = client.read_messages("q", partitions=[1], wait=20)
        await factory.received
        d.cancel()
        with self.assertRaises(defer.CancelledError):
            await d
        self.assertEqual(factory.connections, 1, "no second attempt")

    def test_a_cancelled_long_poll_ends_without_another_request(self) -> defer.Deferred[None]:
        return defer.ensureDeferred(self._test())
