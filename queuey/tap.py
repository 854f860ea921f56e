"""``twistd queuey``: options and the service that runs Queuey."""

from __future__ import annotations

import atexit
import os
import sys
from typing import Any

from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python import usage

from queuey.app import QueueyApp, QueueySite
from queuey.config import Config, ConfigError, development_config, load_config
from queuey.core import Queuey
from queuey.storage import make_store

log = Logger()
DEFAULT_PORT = "tcp:5000:interface=127.0.0.1"


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the Queuey message store. Without --config, a development configuration is used."
    optParameters = [
        ["config", "c", None, "Path of the ini configuration file."],
        ["port", "p", DEFAULT_PORT, "Server endpoint string to listen on (e.g. tcp:5000, unix:/tmp/q.sock)."],
    ]

    def postOptions(self) -> None:
        try:
            self.config = load_config(self["config"]) if self["config"] else development_config()
        except ConfigError as e:
            sys.stderr.write(f"twistd queuey: bad configuration: {e}\n")
            raise SystemExit(2) from None


class QueueyService(service.MultiService):
    """Opens the store, then starts listening; at shutdown stops listening, then closes it."""

    def __init__(self, core: Queuey, reactor: Any) -> None:
        super().__init__()
        self.core = core
        self._reactor = reactor

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
        self.core.hub.stop()
        yield super().stopService()
        yield self.core.store.close()


def _exit_failed() -> None:
    """End the process with status 1 (twistd itself always exits 0 after a reactor.stop())."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)


def make_service(config: Config, port: str, reactor: Any) -> service.MultiService:
    """The Queuey service: the store, then an HTTP site on ``port``."""
    store = make_store(config, reactor)
    core = Queuey(config, store, reactor)
    site = QueueySite(QueueyApp(core).resource(), config.max_request_bytes)
    site.displayTracebacks = False
    top = QueueyService(core, reactor)
    strports.service(port, site, reactor=reactor).setServiceParent(top)
    return top


def makeService(options: Options) -> service.MultiService:
    from twisted.internet import reactor
    config: Config = options.config
    if not options["config"]:
        log.warn("No --config given: running the DEVELOPMENT configuration (application 'queuey', "
                 "the development key from README.rst, SQLite at {path}). Do not use it in production.",
                 path=config.storage["path"])
    else:
        log.info("Configuration from {path}: {backend} backend, applications {apps}",
                 path=options["config"], backend=config.backend, apps=", ".join(config.application_keys))
    try:
        return make_service(config, options["port"], reactor)
    except ConfigError as e:
        sys.stderr.write(f"twistd queuey: bad configuration: {e}\n")
        raise SystemExit(2) from None
