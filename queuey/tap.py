"""``twistd queuey``: options and the service that runs Queuey."""

from __future__ import annotations

import atexit
import os
import resource
import socket
import sys
from typing import Any, Callable, Sequence

from twisted.application import service
from twisted.internet import endpoints
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from queuey import workers as workers_module
from queuey.app import QueueyApp
from queuey.channel import QueueySite
from queuey.connections import connection_cap
from queuey.config import DEFAULT_PORT, Config, ConfigError, describe_problems, development_config, load_config
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
        ["workers", "w", 1, "Processes serving the port together (one per core; see queuey.workers).", int],
        # Set by worker 0 for the workers it starts; not for people.
        ["listen-fd", None, None, "(internal) serve this inherited listening socket.", int],
        ["worker-index", None, 0, "(internal) this worker's number.", int],
        ["worker-bus", None, None, "(internal) the workers' bus directory."],
    ]

    def postOptions(self) -> None:
        if not 1 <= self["workers"] <= 64:
            raise usage.UsageError("--workers must be from 1 to 64")
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
    """Listens on an endpoint string with Queuey's site, whose connection cap may pause accepting.

    ``on_listening`` callables get the port once it listens.
    """

    def __init__(self, description: str, site: QueueySite, reactor: Any) -> None:
        self.endpoint = endpoints.serverFromString(reactor, description)
        self.site = site
        self._reactor = reactor
        self.port: Any = None
        self.on_listening: list[Callable[[Any], None]] = []

    def _listen(self) -> defer.Deferred[Any]:
        return self.endpoint.listen(self.site)

    def startService(self) -> None:
        super().startService()

        def listening(port: Any) -> None:
            self.port = port
            self.site.connections.watch(port)
            for call in self.on_listening:
                call(port)

        def failed(failure: Any) -> None:
            log.critical("Could not listen: {error}", error=failure.getErrorMessage())
            self._reactor.stop()

        defer.maybeDeferred(self._listen).addCallbacks(listening, failed)

    def stopService(self) -> Any:
        super().stopService()
        port, self.port = self.port, None
        return port.stopListening() if port is not None else None


class InheritedPortService(ListeningService):
    """Serves a listening socket inherited from worker 0 (``--listen-fd``)."""

    def __init__(self, fd: int, site: QueueySite, reactor: Any) -> None:
        service.Service.__init__(self)
        self.fd = fd
        self.site = site
        self._reactor = reactor
        self.port = None
        self.on_listening = []

    def _listen(self) -> Any:
        with socket.socket(fileno=os.dup(self.fd)) as probe:
            family = probe.family
        port = self._reactor.adoptStreamPort(self.fd, family, self.site)  # adopts a duplicate
        os.close(self.fd)
        return port


def configuration(path: str | None, program: str) -> Config:
    """The configuration at ``path`` (the development one without); on a bad file, every problem
    on stderr, one line each, and exit 2."""
    try:
        return load_config(path) if path else development_config()
    except ConfigError as e:
        sys.stderr.write(describe_problems(program, e))
        raise SystemExit(2) from None


def make_service(config: Config, port: str, reactor: Any, workers: int = 1, listen_fd: int | None = None,
                 worker_index: int = 0, worker_bus: str | None = None,
                 worker_arguments: Sequence[str] = ()) -> service.MultiService:
    """The Queuey service: the store, then an HTTP site on ``port`` (or on ``listen_fd``);
    with ``workers`` > 1, the workers' bus, and in worker 0 the other workers' supervisor."""
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
    app = QueueyApp(core, worker_index)
    site = app.site(reactor, max_connections=cap)
    top = QueueyService(core, reactor, app.streams)
    listener = ListeningService(port, site, reactor) if listen_fd is None else InheritedPortService(
        listen_fd, site, reactor)
    if workers > 1:
        workers_module.add_worker_services(top, listener.on_listening, core, reactor, workers, worker_index,
                                           worker_bus, worker_arguments)
    listener.setServiceParent(top)
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
    arguments = ["--config", os.path.abspath(options["config"])] if options["config"] else []
    return make_service(config, options["port"], reactor, workers=options["workers"],
                        listen_fd=options["listen-fd"], worker_index=options["worker-index"],
                        worker_bus=options["worker-bus"], worker_arguments=arguments)
