"""Queuey's typed settings, read from its ini configuration once, at load.

:func:`load_config` checks every key of the file and reports every problem at
once, as one :class:`ConfigError` whose lines each name ``[section] key``;
what it returns is typed and checked, so nothing after it parses a setting
or raises ConfigError.  The storage section becomes the settings of its
backend (:class:`SQLiteSettings` or :class:`CassandraSettings`), which the
backend receives as they are.  ``twistd queuey``, ``queuey serve`` and
``queuey check-config`` all load through here, so they report the same errors.
"""

from __future__ import annotations

import enum
import importlib.util
import os
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Union

from queuey.ini import (REQUIRED, ConfigError, IniFile, boolean, decimal, one_of, read_text, text,
                        whole)
from queuey.interfaces import CONSISTENCY_LEVELS

__all__ = ["Config", "ConfigError", "SQLiteSettings", "CassandraSettings", "StorageSettings", "DEFAULT_PORT",
           "describe_problems", "development_config", "load_config", "parse_config", "read_text"]

#: A listen backlog of 4096 (Twisted's default is 50) lets a burst of connects wait in the
#: kernel instead of being retried by the clients a second later.  Linux caps it at
#: net.core.somaxconn.  Give ``backlog=N`` in --port to choose another.
DEFAULT_PORT = "tcp:5000:interface=127.0.0.1:backlog=4096"
BACKENDS = ("sqlite", "cassandra")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")
_KEYSPACE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,47}$")
_DC = re.compile(r"^[A-Za-z0-9_.-]+$")
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")
#: The development configuration signs URLs with this (never use it elsewhere).
DEVELOPMENT_SIGNING_SECRET = b"queuey-development-signing-secret"
MIN_SECRET_BYTES = 16
#: A delayed message plus its longest TTL must fit Cassandra's TTL limit (20 years).
MAX_DELAY = 10 * 365 * 86400


class Synchronous(enum.Enum):
    """SQLite's ``PRAGMA synchronous``: what a 201 survives."""

    NORMAL = "NORMAL"  # a crash of the process, not of the machine
    FULL = "FULL"      # a crash or a power loss
    EXTRA = "EXTRA"


@dataclass(frozen=True)
class SQLiteSettings:
    """``[storage]`` of the embedded store."""

    backend: ClassVar[str] = "sqlite"
    path: str
    synchronous: Synchronous = Synchronous.FULL
    readers: int = 4
    #: Seconds between the sweeps that reclaim expired messages and deleted queues.
    expiry_interval: float = 60.0


@dataclass(frozen=True)
class CassandraSettings:
    """``[storage]`` of the Cassandra backend (docs/cassandra.rst)."""

    backend: ClassVar[str] = "cassandra"
    hosts: tuple[tuple[str, int], ...] = (("127.0.0.1", 9042),)
    keyspace: str = "queuey"
    replication: Mapping[str, Any] = field(
        default_factory=lambda: {"class": "SimpleStrategy", "replication_factor": 1})
    multi_dc: bool = False
    create_schema: bool = True
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    local_dc: str | None = None
    connect_timeout: float = 5.0
    request_timeout: float = 10.0
    max_in_flight: int = 256
    bucket_seconds: int = 3600


StorageSettings = Union[SQLiteSettings, CassandraSettings]


@dataclass(frozen=True)
class Config:
    """Everything the service needs to know from its configuration file."""

    application_keys: Mapping[str, tuple[str, ...]]
    storage: StorageSettings = field(default_factory=lambda: SQLiteSettings("var/queuey-dev.sqlite"))
    delays: Mapping[str, float] = field(
        default_factory=lambda: {level: 0.0 for level in CONSISTENCY_LEVELS})
    max_message_bytes: int = 262144
    max_request_bytes: int = 16 * 1024 * 1024
    #: Seconds a client has to send a whole request head (line and headers).
    request_head_timeout: float = 10.0
    #: Bytes per second a request body must keep up, on top of request_head_timeout.
    body_min_rate: int = 4096
    #: Connections served at once; past it new ones get 503 (lowered below the file limit).
    max_connections: int = 4096
    #: Bytes of message bodies one range read may return; a page cut by it says so.
    max_response_bytes: int = 8 * 1024 * 1024
    #: Request body bytes held in memory over all connections at once.
    max_body_bytes_in_flight: int = 64 * 1024 * 1024
    #: How far ahead of now the time of a message id named by PUT may be.
    max_future_id_seconds: float = 3600.0
    #: The longest X-Delay (or batch "delay") a message may be posted with, in seconds.
    max_delay: int = 7 * 86400
    poll_interval: float = 1.0
    #: Event streams: seconds of silence before a keep-alive comment, bytes of events kept
    #: for a client that does not read before its stream is cut, EventSource's retry (ms).
    stream_keepalive: float = 15.0
    stream_buffer_bytes: int = 1024 * 1024
    stream_retry_ms: int = 2000
    #: Origins whose browser pages may call the API (CORS); ("*",) for any.
    cors_allow_origins: tuple[str, ...] = ()
    #: Secrets of signed URLs: the first signs, each one verifies (rotation).  None: no signed URLs.
    signing_secrets: tuple[bytes, ...] = ()
    #: The longest a signed URL may be valid, in seconds.
    signing_max_expiry: int = 30 * 86400
    source: str = "<development defaults>"
    #: Settings in the file that nothing reads (misspelt, or of the other backend).
    warnings: tuple[str, ...] = ()

    @property
    def backend(self) -> str:
        return self.storage.backend


def describe_problems(program: str, error: ConfigError) -> str:
    """The lines that report a bad configuration: one per problem, each naming ``program``."""
    return "".join(f"{program}: bad configuration: {problem}\n" for problem in error.problems)


def development_config(path: str = "var/queuey-dev.sqlite") -> Config:
    """The configuration used when no file is given: one application, a local file."""
    return Config(application_keys={"queuey": ("queuey-dev-key",)}, storage=SQLiteSettings(path),
                  signing_secrets=(DEVELOPMENT_SIGNING_SECRET,))


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the ini file at ``path``."""
    return parse_config(read_text(path), source=path, environ=os.environ if environ is None else environ)


def parse_config(text: str, source: str = "<string>",
                 environ: Mapping[str, str] | None = None) -> Config:
    """Parse ini ``text``; ``${VAR}`` in values comes from ``environ``.  Every problem of the
    file is in the one ConfigError raised."""
    ini = IniFile(text, source, environ, case_sensitive=True)  # application names are case-sensitive
    keys = _application_keys(ini)
    storage = _storage(ini)
    delays = {level: ini.value("delays", level, decimal(0), 0.0) for level in CONSISTENCY_LEVELS}
    limits = _limits(ini)
    poll_interval = ini.value("longpoll", "poll_interval", decimal(0.01), 1.0)
    streams = _streams(ini)
    cors_allow_origins = ini.value("cors", "allow_origins", _origins, ())
    signing = _signing(ini)
    ini.raise_problems()
    return Config(application_keys=keys, storage=storage, delays=delays, **limits,
                  poll_interval=poll_interval, **streams, cors_allow_origins=cors_allow_origins, **signing,
                  source=source,
                  warnings=tuple(f"{setting}: unknown setting, ignored" for setting in ini.unread()))


def _application_keys(ini: IniFile) -> dict[str, tuple[str, ...]]:
    if not ini.has_section("application_keys"):
        ini.problem("application_keys", None, "missing section (name at least one application)")
        return {}
    keys: dict[str, tuple[str, ...]] = {}
    for app in ini.options("application_keys"):
        known = len(ini.problems)
        app_keys = tuple(k.strip() for k in ini.value("application_keys", app, text, "").split(",") if k.strip())
        if len(ini.problems) > known:
            continue  # said already (an unset environment variable)
        if not _NAME.match(app):
            ini.problem("application_keys", app, "application names are 1-50 of A-Z a-z 0-9 _ -")
        elif not app_keys:
            ini.problem("application_keys", app, "no key given")
        else:
            keys[app] = app_keys
    if not ini.options("application_keys"):
        ini.problem("application_keys", None, "no application configured")
    return keys


def _storage(ini: IniFile) -> StorageSettings:
    backend = ini.value("storage", "backend", one_of(*BACKENDS), "sqlite")
    if backend == "cassandra":
        if importlib.util.find_spec("cassandra") is None:
            ini.problem("storage", "backend", "cassandra needs the cassandra extra (pip install 'queuey[cassandra]')")
        return _cassandra(ini)
    path = ini.value("storage", "path", text, REQUIRED)
    return SQLiteSettings(
        path="" if path is REQUIRED else path,
        synchronous=Synchronous(ini.value("storage", "synchronous", one_of(*Synchronous.__members__, fold=str.upper),
                                          "FULL")),
        readers=ini.value("storage", "readers", whole(1), 4),
        expiry_interval=ini.value("storage", "expiry_interval", decimal(0.01), 60.0))


def _cassandra(ini: IniFile) -> CassandraSettings:
    def get(key: str, parse: Any, default: Any) -> Any:
        return ini.value("storage", key, parse, default)

    defaults = CassandraSettings()
    settings = CassandraSettings(
        hosts=get("hosts", _hosts, defaults.hosts),
        keyspace=get("keyspace", _pattern(_KEYSPACE, "a keyspace name (a letter, then letters, digits, _)"),
                     defaults.keyspace),
        replication=get("replication", _replication, defaults.replication),
        multi_dc=get("multi_dc", boolean, False),
        create_schema=get("create_schema", boolean, True),
        username=get("username", text, None),
        password=get("password", text, None),
        local_dc=get("local_dc", _pattern(_DC, "a data centre name"), None),
        connect_timeout=get("connect_timeout", decimal(0.1, 600), defaults.connect_timeout),
        request_timeout=get("request_timeout", decimal(0.1, 600), defaults.request_timeout),
        max_in_flight=get("max_in_flight", whole(1, 32768), defaults.max_in_flight),
        bucket_seconds=get("bucket_seconds", whole(60, 30 * 86400), defaults.bucket_seconds))
    if settings.multi_dc and settings.replication["class"] != "NetworkTopologyStrategy":
        ini.problem("storage", "replication", "multi_dc = true needs NetworkTopologyStrategy:dc1=N,dc2=M")
    if (settings.username is None) != (settings.password is None):
        ini.problem("storage", "username" if settings.username is None else "password",
                    "username and password go together")
    return settings


def _pattern(pattern: re.Pattern[str], what: str) -> Any:
    def parse(raw: str) -> str:
        if not pattern.match(raw):
            raise ValueError(f"{raw!r} is not {what}")
        return raw
    return parse


def _hosts(raw: str) -> tuple[tuple[str, int], ...]:
    """``host[:port], [ipv6]:port, ...``; the port defaults to 9042."""
    hosts = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, port = item, "9042"
        if item.startswith("["):  # [ipv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest[1:] if rest.startswith(":") else "9042"
        elif item.count(":") == 1:
            host, port = item.split(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host[:port]")
        hosts.append((host, int(port)))
    if not hosts:
        raise ValueError("name at least one host")
    return tuple(hosts)


def _replication(raw: str) -> dict[str, Any]:
    """``SimpleStrategy:N`` or ``NetworkTopologyStrategy:dc1=N[,dc2=M...]``."""
    strategy, _, spec = raw.partition(":")
    strategy = strategy.strip()
    if strategy == "SimpleStrategy":
        if not spec.strip().isdigit() or int(spec) < 1:
            raise ValueError(f"{raw!r}: use SimpleStrategy:N with N at least 1")
        return {"class": "SimpleStrategy", "replication_factor": int(spec)}
    if strategy == "NetworkTopologyStrategy":
        result: dict[str, Any] = {"class": "NetworkTopologyStrategy"}
        for part in spec.split(","):
            dc, _, factor = part.strip().partition("=")
            if not _DC.match(dc.strip()) or not factor.strip().isdigit() or int(factor) < 1:
                raise ValueError(f"{raw!r}: use NetworkTopologyStrategy:dc1=N[,dc2=M]")
            result[dc.strip()] = int(factor)
        return result
    raise ValueError(f"{raw!r}: use SimpleStrategy:N or NetworkTopologyStrategy:dc1=N[,dc2=M]")


def _streams(ini: IniFile) -> dict[str, Any]:
    """The ``[streams]`` section (event streams), as Config keyword arguments."""
    return {"stream_keepalive": ini.value("streams", "keepalive", decimal(0.1), 15.0),
            "stream_buffer_bytes": ini.value("streams", "buffer_bytes", whole(1024), 1024 * 1024),
            "stream_retry_ms": ini.value("streams", "retry", whole(0), 2000)}


def _origins(raw: str) -> tuple[str, ...]:
    """``[cors] allow_origins``: ``*``, or origins (``scheme://host[:port]``) separated by commas or spaces."""
    origins = tuple(dict.fromkeys(o for o in re.split(r"[\s,]+", raw) if o))
    if "*" in origins:
        if len(origins) > 1:
            raise ValueError("* allows every origin; name no others with it")
        return origins
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin such as https://example.com:8443 "
                             "(scheme, host and port only, no path or trailing slash)")
    return origins


def _secrets(raw: str) -> tuple[bytes, ...]:
    secrets = tuple(s.strip().encode("utf-8") for s in raw.split(",") if s.strip())
    if any(len(secret) < MIN_SECRET_BYTES for secret in secrets):
        raise ValueError(f"each secret must be at least {MIN_SECRET_BYTES} bytes long")
    return secrets


def _signing(ini: IniFile) -> dict[str, Any]:
    """``[signing]``: the secrets of signed URLs (the first signs) and their longest validity."""
    return {"signing_secrets": ini.value("signing", "secret", _secrets, ()),
            "signing_max_expiry": ini.value("signing", "max_expiry", whole(1), 30 * 86400)}


#: ``[limits]`` keys: (kind, least value).  Defaults are Config's; docs/api.rst lists them all.
LIMIT_KEYS: dict[str, tuple[type, float]] = {
    "max_message_bytes": (int, 1),
    "max_request_bytes": (int, 1),
    "request_head_timeout": (float, 0.1),
    "body_min_rate": (int, 1),
    "max_connections": (int, 1),
    "max_response_bytes": (int, 1),
    "max_body_bytes_in_flight": (int, 1),
    "max_future_id_seconds": (float, 0),
    "max_delay": (int, 0),
}


def _limits(ini: IniFile) -> dict[str, Any]:
    """The ``[limits]`` section, checked, as Config keyword arguments."""
    defaults = Config(application_keys={})
    limits = {key: ini.value("limits", key, whole(int(low)) if kind is int else decimal(low), getattr(defaults, key))
              for key, (kind, low) in LIMIT_KEYS.items()}
    if limits["max_response_bytes"] < limits["max_message_bytes"]:
        ini.problem("limits", "max_response_bytes", "must be at least max_message_bytes "
                    f"({limits['max_message_bytes']}), so that any one message can be read")
    if limits["max_delay"] > MAX_DELAY:
        ini.problem("limits", "max_delay", f"must be at most {MAX_DELAY} (10 years), not {limits['max_delay']}")
    if limits["max_body_bytes_in_flight"] < limits["max_request_bytes"]:
        ini.problem("limits", "max_body_bytes_in_flight", "must be at least max_request_bytes "
                    f"({limits['max_request_bytes']})")
    return limits
