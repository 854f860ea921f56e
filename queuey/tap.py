"""``twistd queuey``: options and the service that runs Queuey."""

from __future__ import annotations

import atexit
import os
import resource
import sys
from typing import Any

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from queuey.app import QueueyApp
from queuey.channel import QueueySite
from queuey.connections import connection_cap
from queuey.config import DEFAULT_PORT, Config, ConfigError, development_config, describe_problems, load_config
from queuey.core import Queuey
from queuey.storage import make_store
from queuey.streams import Streams

log = Logger()


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the Queuey message store. Without --config, a development configuration is used."
    optParameters = [
        ["config", "c", None, "Path of the ini configuration file."],
        ["port", "p", DEFAULT_PORT, "Server endpoint string to listen on (e.g. tcp:5000, unix:/tmp/q.sock)."],
    ]

    def postOptions(self) -> None:
        self.config = configuration(self["config"], "twistd queuey")


class QueueyService(service.MultiService):
    """Opens the store, then starts listening; at shutdown stops listening, then closes it."""

    def __init__(self, core: Queuey, reactor: Any, streams: Streams | None = None) -> None:
        super().__init__()
        self.core = core
        self._reactor = reactor
        self._streams = streams

    def privilegedStartService(self) -> None:
        """Listen only after the store is open (in startService), not before."""

    def startService(self) -> None:
        service.Service.startService(self)  # children start once the store is open
        store = self.core.store
        log.info("Opening the {backend} store", backend=store.name)

        def opened(_: object) -> None:
            log.info("The {backend} store is ready", backend=store.name)
            for child in self:
                child.startService()

        def failed(failure: Any) -> None:
            log.critical("Could not open the {backend} store: {error}", backend=store.name,
                         error=failure.getErrorMessage())
            atexit.register(_exit_failed)  # once twistd has shut down: a supervisor sees a failure
            self._reactor.stop()

        store.open().addCallbacks(opened, failed)

    @defer.inlineCallbacks
    def stopService(self) -> Any:
        if self._streams is not None:  # before the hub stops: they end instead of waiting again
            yield self._streams.close_all()
        self.core.stop()
        yield super().stopService()
        yield self.core.store.close()


def _exit_failed() -> None:
    """End the process with status 1 (twistd itself always exits 0 after a reactor.stop())."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


class ListeningService(service.Service):
    """Listens on an endpoint string with Queuey's site, whose connection cap may pause accepting."""

    def __init__(self, description: str, site: QueueySite, reactor: Any) -> None:
        self.endpoint = endpoints.serverFromString(reactor, description)
        self.site = site
        self._reactor = reactor
        self.port: Any = None

    def startService(self) -> None:
        super().startService()

        def listening(port: Any) -> None:
            self.port = port
            self.site.connections.watch(port)

        def failed(failure: Any) -> None:
            log.critical("Could not listen: {error}", error=failure.getErrorMessage())
            self._reactor.stop()

        self.endpoint.listen(self.site).addCallbacks(listening, failed)

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


def configuration(path: str | None, program: str) -> Config:
    """The configuration at ``path`` (the development one without); on a bad file, every problem
    on stderr, one line each, and exit 2."""
    try:
        return load_config(path) if path else development_config()
    except ConfigError as e:
        sys.stderr.write(describe_problems(program, e))
        raise SystemExit(2) from None


def make_service(config: Config, port: str, reactor: Any) -> service.MultiService:
    """The Queuey service: the store, then an HTTP site on ``port``."""
    store = make_store(config, reactor)
    core = Queuey(config, store, reactor)
    file_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if file_limit == resource.RLIM_INFINITY:
        file_limit = 1 << 30
    cap = connection_cap(config.max_connections, file_limit)
    if cap < config.max_connections:
        log.warn("[limits] max_connections = {configured} does not fit the open-file limit ({files}); "
                 "serving at most {cap} connections at once", configured=config.max_connections,
                 files=file_limit, cap=cap)
    app = QueueyApp(core)
    site = app.site(reactor, max_connections=cap)
    top = QueueyService(core, reactor, app.streams)
    ListeningService(port, site, reactor).setServiceParent(top)
    return top


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor
    config: Config = options.config
    if not options["config"]:
        (app, keys), = config.application_keys.items()
        log.warn("No --config given: running the DEVELOPMENT configuration: application {app!r}, "
                 "key {key!r} (send 'Authorization: Application {key}'), SQLite at {path}. "
                 "Do not use it in production.", app=app, key=keys[0], path=getattr(config.storage, "path", ""))
    else:
        log.info("Configuration from {path}: {backend} backend, applications {apps}",
                 path=options["config"], backend=config.backend, apps=", ".join(config.application_keys))
    for warning in config.warnings:
        log.warn("{path}: {warning}", path=options["config"], warning=warning)
    try:
        endpoints.serverFromString(reactor, options["port"])
    except ValueError as e:
        sys.stderr.write(f"twistd queuey: --port {options['port']!r} is not an endpoint string: {e}\n")
        raise SystemExit(2) from None
    return make_service(config, options["port"], reactor)
