"""The ``qdo`` command: run a worker, or look at a group and its failed messages.

- ``qdo -c worker.conf`` (or ``qdo run -c worker.conf``): one worker in the
  foreground until SIGTERM or SIGINT; then it finishes the message in hand,
  commits, releases its partitions, leaves the group and exits 0. Exit 2 on a
  bad configuration, 1 when it cannot start.
- ``qdo status``: the group's members, leader, assignment, and per partition
  owner, offset and messages behind (see :mod:`qdo.status`). ``--json``.
- ``qdo errors list`` / ``qdo errors replay``: the ``qdo_error`` queue (see
  :mod:`qdo.errors`).

``status`` and ``errors`` take the worker's configuration (``-c``) or the
addresses themselves. They exit 0, 2 on bad arguments, 1 when ZooKeeper or
Queuey cannot be reached.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Sequence

import orjson
from twisted.internet import defer, task
from twisted.logger import (FilteringLogObserver, LogLevel, LogLevelFilterPredicate, PredicateResult,
                            globalLogBeginner, textFileLogObserver)

from qdo.config import ConfigError, load_config, split_zookeeper

CONNECT_TIMEOUT = 10.0


def quiet_http_pool(event: dict) -> PredicateResult:
    """Drop the "Starting factory"/"Stopping factory" lines of every pooled HTTP connection."""
    if event.get("log_namespace", "").startswith("twisted.web.client._HTTP11ClientFactory"):
        return PredicateResult.no
    return PredicateResult.maybe


def run_worker(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        sys.stderr.write(f"qdo: bad configuration: {e}\n")
        return 2

    predicate = LogLevelFilterPredicate(defaultLogLevel=LogLevel.levelWithName(args.log_level))
    globalLogBeginner.beginLoggingTo(
        [FilteringLogObserver(textFileLogObserver(sys.stderr), [predicate, quiet_http_pool])],
        redirectStandardIO=False)
    # kazoo logs through the standard library: its warnings and errors go to stderr too
    # (its connection attempts are summed up by qdo.zk.ConnectionNotices).
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


class Unreachable(Exception):
    """ZooKeeper or Queuey did not answer."""


def _addresses(args: argparse.Namespace, need_zookeeper: bool) -> dict[str, Any]:
    """Where to look: from the worker's configuration, or from the command line (which wins)."""
    found: dict[str, Any] = {"hosts": None, "root": "/qdo", "group": "default", "queuey": None, "app_key": None}
    if args.config:
        config = load_config(args.config)
        zc = config.zookeeper
        found.update(hosts=zc.hosts, root=zc.root, group=zc.group, queuey=list(config.queuey_connection),
                     app_key=config.app_key)
    if getattr(args, "zookeeper", None):
        found["hosts"], found["root"] = split_zookeeper(args.zookeeper)
    if getattr(args, "group", None):
        found["group"] = args.group
    if args.queuey:
        found["queuey"] = [args.queuey]
    if args.app_key:
        found["app_key"] = args.app_key
    if need_zookeeper and not found["hosts"]:
        raise ConfigError("give -c worker.conf, or --zookeeper host:port[/chroot]")
    if not found["queuey"]:
        raise ConfigError("give -c worker.conf, or --queuey http://host:port/v1/<application>")
    return found


def _client(reactor: Any, where: dict[str, Any]) -> Any:
    from queuey.client import QueueyClient
    try:
        return QueueyClient(where["queuey"], where["app_key"], reactor=reactor, retries=1, timeout=CONNECT_TIMEOUT)
    except ValueError as e:
        raise ConfigError(f"--queuey: {e}") from None


async def _status(reactor: Any, args: argparse.Namespace, where: dict[str, Any]) -> None:
    from qdo.layout import GroupPaths
    from qdo.session import Session
    from qdo.status import group_status, render
    from qdo.zk import ZooKeeper

    zk = ZooKeeper(where["hosts"], reactor, session_timeout=10)
    client = _client(reactor, where)
    try:
        connecting = zk.start()
        connecting.addTimeout(CONNECT_TIMEOUT, reactor)
        try:
            await connecting
        except defer.TimeoutError:
            raise Unreachable(f"ZooKeeper at {where['hosts']} did not answer within {CONNECT_TIMEOUT:.0f}s") from None
        status = await group_status(Session(zk, reactor, 10), GroupPaths.of(where["root"], where["group"]), client,
                                    reactor.seconds())
        sys.stdout.write(status.as_json().decode() + "\n" if args.json else render(status))
    finally:
        await zk.stop()
        await client.close()


async def _errors(reactor: Any, args: argparse.Namespace, where: dict[str, Any]) -> None:
    from qdo import errors
    from queuey.client import QueueyClientError

    client = _client(reactor, where)
    try:
        try:
            failures = errors.select(await errors.saved_failures(client, args.limit), args.queue, args.entries)
        except QueueyClientError as e:
            raise Unreachable(f"Queuey: {e}") from None
        if args.action == "list":
            if args.json:
                sys.stdout.write(orjson.dumps([f.as_dict() for f in failures], option=orjson.OPT_INDENT_2).decode()
                                 + "\n")
            else:
                sys.stdout.write(errors.render(failures))
            return
        if not (args.all or args.queue or args.entries):
            raise ConfigError("replay what? name entries, or --queue Q, or --all")
        for failure in failures:
            posted = await errors.replay(client, failure)
            sys.stdout.write(f"replayed {failure.entry} onto {failure.queue}-{failure.partition} "
                             f"as {posted['key']}\n")
        sys.stdout.write(f"{len(failures)} message(s) replayed\n")
    finally:
        await client.close()


def _react(function: Any, args: argparse.Namespace, need_zookeeper: bool) -> int:
    try:
        where = _addresses(args, need_zookeeper)
    except ConfigError as e:
        sys.stderr.write(f"qdo {args.command}: {e}\n")
        return 2
    logging.basicConfig(level=logging.CRITICAL)  # kazoo's connection attempts: the timeout says it once
    outcome: list[int] = []

    async def main(reactor: Any) -> None:
        try:
            await function(reactor, args, where)
            outcome.append(0)
        except ConfigError as e:
            sys.stderr.write(f"qdo {args.command}: {e}\n")
            outcome.append(2)
        except Unreachable as e:
            sys.stderr.write(f"qdo {args.command}: {e}\n")
            outcome.append(1)

    try:
        task.react(lambda reactor: defer.ensureDeferred(main(reactor)))
    except SystemExit:
        pass
    return outcome[0] if outcome else 1


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="qdo", description="qdo workers for Queuey's partitioned queues.")
    commands = top.add_subparsers(dest="command")
    run = commands.add_parser("run", help="run one worker (the default: qdo -c worker.conf)")
    run.add_argument("-c", "--config", required=True, help="the worker's ini configuration")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warn", "error"],
                     help="the least important log events shown (default: info)")

    def where(command: argparse.ArgumentParser, zookeeper: bool) -> None:
        command.add_argument("-c", "--config", help="a worker's configuration: where its group and Queuey are")
        if zookeeper:
            command.add_argument("--zookeeper", help="host:port[,host:port...][/chroot] (default chroot /qdo)")
            command.add_argument("--group", help="the group (default: the configuration's, or 'default')")
        command.add_argument("--queuey", help="http://host:port/v1/<application>")
        command.add_argument("--app-key", help="the application's key")
        command.add_argument("--json", action="store_true", help="JSON for scripts instead of a table")

    status = commands.add_parser("status", help="the group's members, leader, assignment, offsets and lag")
    where(status, zookeeper=True)
    errors = commands.add_parser("errors", help="the failed messages kept in the qdo_error queue")
    actions = errors.add_subparsers(dest="action", required=True)
    for action, text in (("list", "list them"), ("replay", "post them back onto their queue and partition")):
        command = actions.add_parser(action, help=text)
        where(command, zookeeper=False)
        command.add_argument("--queue", help="only those of this queue")
        command.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
        command.add_argument("entries", nargs="*", help="only these entries (ids, as listed)")
        if action == "replay":
            command.add_argument("--all", action="store_true", help="every saved failure")
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "status", "errors", "-h", "--help"):
        argv = ["run", *argv]  # the first edition's form: qdo -c worker.conf
    args = parser().parse_args(argv)
    if args.command == "run":
        return run_worker(args)
    if args.command == "status":
        return _react(_status, args, need_zookeeper=True)
    return _react(_errors, args, need_zookeeper=False)


if __name__ == "__main__":
    sys.exit(main())
