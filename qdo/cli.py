"""``qdo -c etc/qdo-worker.conf``: run one worker in the foreground until SIGTERM or SIGINT.

On either signal the worker finishes the message in hand, commits it,
releases its partitions, leaves the group and exits 0. It exits 2 on a bad
configuration and 1 when it cannot start.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, PredicateResult,
                            globalLogBeginner, textFileLogObserver)

from qdo.config import ConfigError, load_config


def quiet_http_pool(event: dict) -> PredicateResult:
    """Drop the "Starting factory"/"Stopping factory" lines of every pooled HTTP connection."""
    if event.get("log_namespace", "").startswith("twisted.web.client._HTTP11ClientFactory"):
        return PredicateResult.no
    return PredicateResult.maybe


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="qdo", description="A qdo worker for Queuey's partitioned queues.")
    parser.add_argument("-c", "--config", required=True, help="the worker's ini configuration")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"],
                        help="the least important log events shown (default: info)")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write(f"qdo: bad configuration: {e}\n")
        return 2

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo([FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate, quiet_http_pool])],
                                     redirectStandardIO=False)

    # kazoo logs through the standard library: its warnings and errors go to stderr too.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s [%(name)s#%(levelname)s] %(message)s")

    from twisted.internet import reactor

    from qdo.service import QdoService
    try:
        worker = QdoService(config, reactor)
    except ConfigError as e:
        sys.stderr.write(f"qdo: bad configuration: {e}\n")
        return 2
    reactor.callWhenRunning(worker.startService)
    # The reactor's own SIGTERM/SIGINT handlers stop it; this runs first and holds the shutdown
    # until the worker has committed, handed over and left.
    reactor.addSystemEventTrigger("before", "shutdown", worker.stopService)
    reactor.run()
    return 1 if worker.failed else 0


if __name__ == "__main__":
    sys.exit(main())
