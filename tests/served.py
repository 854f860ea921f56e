"""The whole app served on a real loopback socket, with MemoryQueuey's face, for the HTTP suite's twins.

:class:`ServedQueuey` is what ``tests/test_http.py``'s cases need from
``self.memory`` (``treq``, ``url``, ``auth``, ``advance``, ``clock``,
``store``, ``opened``, ``close``), but the app is wired by
:class:`queuey.testing.MemoryQueuey` around any store and answers over TCP:
a store that answers from its own threads (threaded SQLite, Cassandra) is
only heard through a running reactor. The app's clock stays a
``task.Clock``, so ids, read delays, long-poll timeouts and SQLite's expiry
follow the test's ``advance``.
"""

from __future__ import annotations

from typing import Any, Callable

from treq.client import HTTPClient
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest
from twisted.web.client import Agent, HTTPConnectionPool

from queuey.config import Config
from queuey.testing import MemoryQueuey

StoreFactory = Callable[[Clock], Any]


class ServedQueuey:
    """The app on ``make_store(clock)``, on a loopback port once the store is open and ``prepare``d.

    Requests sent before that wait for it; if opening failed, they fail with its error.
    """

    def __init__(self, config: Config, make_store: StoreFactory,
                 prepare: Callable[[Any], defer.Deferred[Any]] | None = None, start: float = 1_700_000_000.0) -> None:
        self.clock = Clock()
        self.clock.advance(start)
        self.memory = MemoryQueuey(config, clock=self.clock, store=make_store(self.clock))
        self.config, self.store, self.core = config, self.memory.store, self.memory.core
        self.base = ""
        self.port: Any = None
        self._error: Exception | None = None
        self._waiting: list[defer.Deferred[None]] | None = []  # None once open, or failed to
        self.treq = _WhenReady(self)
        self.opened = self._open(prepare)

    @defer.inlineCallbacks
    def _open(self, prepare: Callable[[Any], defer.Deferred[Any]] | None) -> Any:
        try:
            yield self.memory.opened
            if prepare is not None:
                yield prepare(self.store)
            self.port = reactor.listenTCP(0, self.memory.site, interface="127.0.0.1")
            self.base = f"http://127.0.0.1:{self.port.getHost().port}"
        except Exception as e:
            self._error = e
        waiting, self._waiting = self._waiting or [], None
        for request in waiting:
            self._release(request)

    def ready(self) -> defer.Deferred[None]:
        """Fires once requests can go out (or fails like opening did)."""
        request: defer.Deferred[None] = defer.Deferred()
        if self._waiting is not None:
            self._waiting.append(request)
        else:
            self._release(request)
        return request

    def _release(self, request: defer.Deferred[None]) -> None:
        if self._error is not None:
            request.errback(self._error)
        else:
            request.callback(None)

    def url(self, path: str) -> str:
        return MemoryQueuey.base + path  # rewritten to the real port by _WhenReady

    def auth(self, app: str = "queuey") -> dict[str, str]:
        return self.memory.auth(app)

    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @defer.inlineCallbacks
    def close(self) -> Any:
        yield self.opened
        self.core.hub.stop()  # held reads answer, so their connections close
        if self.port is not None:
            yield self.port.stopListening()
        yield self.store.close()


class _WhenReady:
    """A treq client whose requests go out once the server is ready, to its real address."""

    def __init__(self, server: ServedQueuey) -> None:
        self._server = server
        self._client = HTTPClient(Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False)))

    def request(self, method: str, url: str, **kwargs: Any) -> defer.Deferred[Any]:
        def send(_: object) -> Any:
            return self._client.request(method, url.replace(MemoryQueuey.base, self._server.base), **kwargs)
        return self._server.ready().addCallback(send)


def skipped(reason: str) -> Callable[..., Any]:
    """A test method that skips: for the tests a twin cannot run (e.g. a fake clock past a real TTL)."""
    def skip(self: Any) -> None:
        raise SkipTest(reason)
    return skip
