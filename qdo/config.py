"""qdo's ini configuration (compatible with the original qdo sections) and job resolution."""

from __future__ import annotations

import importlib
import os
import re
import socket
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping

from qdo.assign import Partition
from queuey.ini import ConfigError, IniFile, read_text

JOB_GROUP = "qdo.jobs"
ERROR_QUEUE = "qdo_error"
POLICIES = ("automatic", "manual")

KNOWN = {
    "qdo-worker": {"job", "job_context", "job_failure", "name", "wait_interval", "concurrency", "long_poll",
                   "batch_size", "job_threads", "lag_interval", "max_wait_interval", "commit_interval",
                   "metrics"},
    "partitions": {"policy", "ids", "queues", "discover_interval", "offsets_file", "exclude"},
    "queuey": {"connection", "app_key", "timeout"},
    "zookeeper": {"connection", "group", "party_wait", "session_timeout", "max_party_wait"},
}


@dataclass(frozen=True)
class ZooKeeperConfig:
    hosts: str = "127.0.0.1:2181"
    root: str = "/qdo"
    group: str = "default"
    party_wait: float = 2.0
    max_party_wait: float = 10.0
    session_timeout: float = 10.0


@dataclass(frozen=True)
class WorkerConfig:
    job: str
    queuey_connection: tuple[str, ...]
    app_key: str | None
    application: str
    job_context: str = "qdo.worker:dict_context"
    job_failure: str = "qdo.worker:log_failure"
    name: str = ""
    wait_interval: float = 5.0
    max_wait_interval: float = 20.0
    long_poll: int = 0
    concurrency: int = 4
    job_threads: int = 4
    batch_size: int = 100
    lag_interval: float = 60.0
    commit_interval: float = 1.0
    metrics: str = ""
    policy: str = "automatic"
    ids: tuple[Partition, ...] = ()
    queues: tuple[str, ...] = ()
    exclude: tuple[str, ...] = (ERROR_QUEUE,)
    discover_interval: float = 30.0
    offsets_file: str = ""
    queuey_timeout: float = 30.0
    zookeeper: ZooKeeperConfig = field(default_factory=ZooKeeperConfig)
    warnings: tuple[str, ...] = ()
    source: str = "<string>"

    @property
    def worker_id(self) -> str:
        return self.name


def split_zookeeper(connection: str) -> tuple[str, str]:
    """``host:port[,host:port...][/chroot]`` -> (hosts, root path, default ``/qdo``)."""
    connection = connection.strip()
    hosts, slash, root = connection.partition("/")
    root = "/" + root.strip("/") if slash and root.strip("/") else "/qdo"
    if not hosts:
        raise ConfigError("[zookeeper] connection: no host given")
    return hosts, root


def load_config(path: str, environ: Mapping[str, str] | None = None) -> WorkerConfig:
    return parse_config(read_text(path), source=path, environ=os.environ if environ is None else environ)


def parse_config(text: str, source: str = "<string>", environ: Mapping[str, str] | None = None) -> WorkerConfig:
    """Parse and check a qdo worker configuration; ``${VAR}`` comes from ``environ``."""
    ini = IniFile(text, source, environ)
    parser, get, number = ini.parser, ini.get, ini.number
    warnings = []
    for section in parser.sections():
        if section not in KNOWN:
            warnings.append(f"[{section}]: unknown section, ignored")
            continue
        for key in parser.options(section):
            if key not in KNOWN[section]:
                warnings.append(f"[{section}] {key}: unknown setting, ignored")

    from queuey.client import parse_connection, split_connections
    connections = tuple(split_connections(get("queuey", "connection", "http://127.0.0.1:5000/v1/queuey")))
    if not connections:
        raise ConfigError("[queuey] connection: no URL given")
    applications = set()
    for url in connections:
        try:
            applications.add(parse_connection(url)[1])
        except ValueError as e:
            raise ConfigError(f"[queuey] connection: {e}") from None
    if len(applications) != 1 or None in applications:
        raise ConfigError("[queuey] connection: every URL must end in /v1/<application>, the same application")
    application = applications.pop()

    policy = get("partitions", "policy", "automatic")
    if policy not in POLICIES:
        raise ConfigError(f"[partitions] policy: must be automatic or manual, not {policy!r}")
    ids = []
    for item in get("partitions", "ids", "").replace(",", " ").split():
        try:
            ids.append(Partition.from_name(application, item))
        except ValueError as e:
            raise ConfigError(f"[partitions] ids: {e}") from None
    exclude = tuple(get("partitions", "exclude", ERROR_QUEUE).replace(",", " ").split())
    queues = tuple(dict.fromkeys(get("partitions", "queues", "").replace(",", " ").split()))
    for queue in queues:
        if not re.match(r"^[A-Za-z0-9_-]{1,50}$", queue):
            raise ConfigError(f"[partitions] queues: {queue!r} is not a queue name (1-50 of A-Z a-z 0-9 _ -)")

    name = get("qdo-worker", "name", "")
    if not name:
        name = f"{socket.gethostname()}-{os.getpid()}"
        warnings.append("[qdo-worker] name: not set; this worker's id is host-pid, so a restart is a new "
                        "worker to the group (set a stable name)")
    if not re.match(r"^[A-Za-z0-9_.@:-]{1,100}$", name):
        raise ConfigError(f"[qdo-worker] name: {name!r}: use 1-100 of A-Z a-z 0-9 _ . @ : -")
    concurrency = int(number("qdo-worker", "concurrency", "4", int, 1))
    wait_interval = float(number("qdo-worker", "wait_interval", "5", float, 0.01))
    hosts, root = split_zookeeper(get("zookeeper", "connection", "127.0.0.1:2181/qdo"))
    group = get("zookeeper", "group", "default")
    if not re.match(r"^[A-Za-z0-9_.-]{1,100}$", group):
        raise ConfigError(f"[zookeeper] group: {group!r}: use 1-100 of A-Z a-z 0-9 _ . -")
    party_wait = float(number("zookeeper", "party_wait", "2"))
    zookeeper = ZooKeeperConfig(
        hosts=hosts, root=root, group=group, party_wait=party_wait,
        max_party_wait=float(number("zookeeper", "max_party_wait", str(max(10.0, party_wait * 5)))),
        session_timeout=float(number("zookeeper", "session_timeout", "10", float, 1)))
    long_poll = int(number("qdo-worker", "long_poll", "0", int, 0))
    if long_poll > 60:
        raise ConfigError("[qdo-worker] long_poll: at most 60 seconds")
    batch_size = int(number("qdo-worker", "batch_size", "100", int, 1))
    if batch_size > 1000:
        raise ConfigError("[qdo-worker] batch_size: at most 1000")
    return WorkerConfig(
        job=get("qdo-worker", "job"),
        job_context=get("qdo-worker", "job_context", "qdo.worker:dict_context"),
        job_failure=get("qdo-worker", "job_failure", "qdo.worker:log_failure"),
        name=name,
        wait_interval=wait_interval,
        max_wait_interval=float(number("qdo-worker", "max_wait_interval", str(wait_interval * 4), float, wait_interval)),
        long_poll=long_poll,
        concurrency=concurrency,
        job_threads=int(number("qdo-worker", "job_threads", str(concurrency), int, 1)),
        batch_size=batch_size,
        lag_interval=float(number("qdo-worker", "lag_interval", "60", float, 0)),
        commit_interval=float(number("qdo-worker", "commit_interval", "1", float, 0)),
        metrics=get("qdo-worker", "metrics", ""),
        policy=policy,
        ids=tuple(dict.fromkeys(ids)),
        queues=queues,
        exclude=exclude,
        discover_interval=float(number("partitions", "discover_interval", "30", float, 0.1)),
        offsets_file=get("partitions", "offsets_file", f"qdo-offsets-{name}.json"),
        queuey_connection=connections,
        app_key=get("queuey", "app_key", "") or None,
        application=application,
        queuey_timeout=float(number("queuey", "timeout", "30", float, 1)),
        zookeeper=zookeeper,
        warnings=tuple(warnings),
        source=source,
    )


EntryPoints = Callable[..., Any]


def resolve(spec: str, group: str | None = JOB_GROUP, entry_points: EntryPoints | None = None) -> Callable[..., Any]:
    """``module:callable`` (the callable may be dotted), or an entry point name in ``group``."""
    spec = spec.strip()
    if ":" in spec:
        module_name, _, attribute = spec.partition(":")
        try:
            target: Any = importlib.import_module(module_name)
        except ImportError as e:
            raise ConfigError(f"{spec}: cannot import {module_name}: {e}") from None
        for part in attribute.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ConfigError(f"{spec}: {module_name} has no {attribute}") from None
    else:
        if group is None:
            raise ConfigError(f"{spec!r}: expected module:callable")
        found = list((entry_points or metadata.entry_points)(group=group, name=spec))
        if not found:
            raise ConfigError(f"{spec!r}: not module:callable, and no entry point of that name in group {group}")
        try:
            target = found[0].load()
        except Exception as e:
            raise ConfigError(f"{spec}: entry point {found[0].value} does not load: {e}") from None
    if not callable(target):
        raise ConfigError(f"{spec}: not callable")
    return target
