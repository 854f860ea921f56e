"""The HTTP suite (tests/test_http.py) again, over a real socket, on a real Cassandra.

Each HTTP test class gets a Cassandra twin: the same tests, the same Klein app
and core, but the store is a CassandraStore and requests travel over loopback
TCP, because the driver answers from its own threads and only a running
reactor delivers that.  The app's clock stays a ``task.Clock`` (ids, read
delays, long-poll timeouts), so the suite's time-based checks still hold;
Cassandra expires by its own clock, so the few tests that move time past a TTL
are left to the contract suite, which waits for real.
"""

from __future__ import annotations

from typing import Any, Callable

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest
from twisted.web.client import Agent, HTTPConnectionPool

import tests.test_delayed as delayed_tests
import tests.test_http as http_tests
from queuey.app import QueueyApp
from queuey.config import Config
from queuey.core import Queuey
from tests.test_cassandra_store import cassandra_settings

KEYSPACE = "queuey_test_http"
TTL_BY_FAKE_CLOCK = ("This test moves the app's fake clock past a TTL; Cassandra expires by its own "
                     "clock (CassandraContract.test_expired_messages_never_returned covers expiry)")


class CassandraQueuey:
    """MemoryQueuey's face (treq, url, auth, advance, clock, store, core), served over loopback TCP
    by the full app on a CassandraStore.  Requests wait until the store is open and the
    applications' queues of earlier tests are gone."""

    def __init__(self, config: Config, start: float = 1_700_000_000.0) -> None:
        from queuey.storage.cassandra import CassandraStore
        self.clock = Clock()
        self.clock.advance(start)
        self.config = config
        self.store = CassandraStore(cassandra_settings(keyspace=KEYSPACE), reactor)
        self.core = Queuey(config, self.store, self.clock)
        self.app = QueueyApp(self.core)
        self.port: Any = None
        self._waiting: list[defer.Deferred[None]] = []
        self._ready: Any = None
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._client = HTTPClient(Agent(reactor, pool=pool))
        self.treq = _WhenReady(self._when_ready, self._client)
        self.opened = self._open()

    @defer.inlineCallbacks
    def _open(self) -> Any:
        try:
            yield self.store.open()
            for application in self.config.application_keys:
                while True:
                    queues = yield self.store.list_queues(application, None, 100)
                    if not queues:
                        break
                    for queue in queues:
                        yield self.store.delete_queue(application, queue.queue_name)
            site = self.app.site(reactor)
            self.port = reactor.listenTCP(0, site, interface="127.0.0.1")
            self.base = f"http://127.0.0.1:{self.port.getHost().port}"
            self._ready = True
        except Exception as e:
            self._ready = e
        for waiting in self._waiting:
            waiting.callback(None)
        self._waiting = []

    def _when_ready(self) -> defer.Deferred[None]:
        if self._ready is None:
            waiting: defer.Deferred[None] = defer.Deferred()
            self._waiting.append(waiting)
            return waiting.addCallback(lambda _: self._when_ready())
        if isinstance(self._ready, Exception):
            return defer.fail(self._ready)
        return defer.succeed(None)

    def url(self, path: str) -> str:
        return "http://queuey.test" + path  # rewritten to the real port by _WhenReady

    def auth(self, app: str = "queuey") -> dict[str, str]:
        return {"Authorization": f"Application {self.config.application_keys[app][0]}"}

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @defer.inlineCallbacks
    def close(self) -> Any:
        yield self.opened
        self.core.stop()
        if self.port is not None:
            yield self.port.stopListening()
        yield self.store.close()


class _WhenReady:
    """A treq client whose requests go out once the server is ready, to its real address."""

    def __init__(self, when_ready: Callable[[], defer.Deferred[None]], client: HTTPClient) -> None:
        self._when_ready = when_ready
        self._client = client
        self.server: CassandraQueuey | None = None

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        def send(_: object) -> Any:
            assert self.server is not None
            return self._client.request(method, url.replace("http://queuey.test", self.server.base), **kwargs)
        return self._when_ready().addCallback(send)


class CassandraHTTPCase(http_tests.HTTPCase):
    """HTTPCase with the app on Cassandra, over a real socket."""

    timeout = 60

    def setUp(self) -> None:
        memory = CassandraQueuey(self.config)
        memory.treq.server = memory
        self.memory: Any = memory
        self.addCleanup(memory.close)


def _skip(reason: str) -> Callable[..., Any]:
    def skipped(self: Any) -> None:
        raise SkipTest(reason)
    return skipped


class CassandraQueueTests(http_tests.QueueTests, CassandraHTTPCase):
    test_list_include_count = _skip(TTL_BY_FAKE_CLOCK)


class CassandraAccessTests(http_tests.AccessTests, CassandraHTTPCase):
    pass


class CassandraPostTests(http_tests.PostTests, CassandraHTTPCase):
    pass


class CassandraReadTests(http_tests.ReadTests, CassandraHTTPCase):
    test_expired_not_returned = _skip(TTL_BY_FAKE_CLOCK)


class CassandraReadDelayTests(http_tests.ReadDelayTests, CassandraHTTPCase):
    pass


class CassandraByIdTests(http_tests.ByIdTests, CassandraHTTPCase):
    test_put_replaces_and_creates = _skip(TTL_BY_FAKE_CLOCK)


class CassandraRoutingAndOperationsTests(http_tests.RoutingAndOperationsTests, CassandraHTTPCase):
    pass


class CassandraQueueInfoTests(http_tests.QueueInfoTests, CassandraHTTPCase):
    pass


class CassandraDelayTests(delayed_tests.DelayTests, CassandraHTTPCase):
    pass
