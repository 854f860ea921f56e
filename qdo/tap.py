"""``twistd qdo``: run a qdo worker under twistd (SIGTERM hands over and leaves cleanly)."""

from __future__ import annotations

from typing import Any

from twisted.python import usage

from qdo.config import ConfigError, load_config


class Options(usage.Options):
    synopsis = "--config PATH"
    longdesc = "Run a qdo worker: it shares the partitions of Queuey queues with the other workers of its group."
    optParameters = [["config", "c", None, "Path of the worker's ini configuration (see etc/qdo-worker.conf)."]]

    def postOptions(self) -> None:
        if not self["config"]:
            raise usage.UsageError("--config is required")
        try:
            self.config = load_config(self["config"])
        except ConfigError as e:
            raise usage.UsageError(f"bad configuration: {e}") from None


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from qdo.service import QdoService
    try:
        return QdoService(options.config, reactor)
    except ConfigError as e:
        raise SystemExit(f"twistd qdo: bad configuration: {e}") from None
