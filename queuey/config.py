"""Reading Queuey's ini configuration into a checked, immutable Config.

Every problem is reported as one ConfigError naming the section and key, so
start-up can print a single clear line instead of a traceback.
"""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from queuey.interfaces import CONSISTENCY_LEVELS

BACKENDS = ("sqlite", "cassandra")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,50}$")


class ConfigError(Exception):
    """A configuration problem, worded for the person who wrote the file."""


@dataclass(frozen=True)
class Config:
    """Everything the service needs to know from its configuration file."""

    application_keys: Mapping[str, tuple[str, ...]]
    backend: str = "sqlite"
    storage: Mapping[str, str] = field(default_factory=dict)
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
    poll_interval: float = 1.0
    expiry_interval: float = 60.0
    #: Seconds a looked-up queue's settings serve other requests (see queuey.queuecache); 0: none.
    queue_cache_seconds: float = 1.0
    source: str = "<development defaults>"


def development_config(path: str = "var/queuey-dev.sqlite") -> Config:
    """The configuration used when no file is given: one application, a local file."""
    return Config(application_keys={"queuey": ("queuey-dev-key",)},
                  storage={"path": path})


def read_text(path: str) -> str:
    """The file's text, or a ConfigError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None


class IniFile:
    """An ini file's values, ``${VAR}`` expanded; each problem a ConfigError naming ``[section] key``."""

    def __init__(self, text: str, source: str = "<string>", environ: Mapping[str, str] | None = None,
                 case_sensitive: bool = False) -> None:
        self.environ = {} if environ is None else environ
        self.parser = configparser.ConfigParser(interpolation=None, strict=True)
        if case_sensitive:
            self.parser.optionxform = str  # type: ignore[assignment, method-assign]
        try:
            self.parser.read_string(text, source=source)
        except configparser.Error as e:
            raise ConfigError(f"{source}: {e.message.splitlines()[0]}") from None

    def options(self, section: str) -> list[str]:
        return self.parser.options(section) if self.parser.has_section(section) else []

    def get(self, section: str, key: str, default: str | None = None) -> str:
        """The value, or ``default``; without a default a missing key is an error."""
        if not self.parser.has_option(section, key):
            if default is None:
                raise ConfigError(f"[{section}] {key}: missing (required)")
            return default

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in self.environ:
                raise ConfigError(f"[{section}] {key}: environment variable {name} is not set")
            return self.environ[name]

        return _ENV_REFERENCE.sub(substitute, self.parser.get(section, key)).strip()

    def number(self, section: str, key: str, default: str, kind: type = float, low: float = 0) -> Any:
        """A number of ``kind`` (int or float) of at least ``low``."""
        raw = self.get(section, key, default)
        try:
            value = kind(raw)
        except ValueError:
            raise ConfigError(f"[{section}] {key}: {raw!r} is not a {'whole ' if kind is int else ''}number") from None
        if value < low:
            raise ConfigError(f"[{section}] {key}: must be at least {low}, not {raw}")
        return value


def load_config(path: str, environ: Mapping[str, str] | None = None) -> Config:
    """Read and check the ini file at ``path``."""
    return parse_config(read_text(path), source=path, environ=os.environ if environ is None else environ)


def parse_config(text: str, source: str = "<string>",
                 environ: Mapping[str, str] | None = None) -> Config:
    """Parse ini ``text``; ``${VAR}`` in values comes from ``environ``."""
    ini = IniFile(text, source, environ, case_sensitive=True)  # application names are case-sensitive
    parser, get, number = ini.parser, ini.get, ini.number

    if not parser.has_section("application_keys"):
        raise ConfigError("[application_keys]: missing section (name at least one application)")
    keys: dict[str, tuple[str, ...]] = {}
    for app in parser.options("application_keys"):
        if not _NAME.match(app):
            raise ConfigError(f"[application_keys] {app}: application names are 1-50 of A-Z a-z 0-9 _ -")
        app_keys = tuple(k.strip() for k in get("application_keys", app).split(",") if k.strip())
        if not app_keys:
            raise ConfigError(f"[application_keys] {app}: no key given")
        keys[app] = app_keys
    if not keys:
        raise ConfigError("[application_keys]: no application configured")

    backend = get("storage", "backend", "sqlite")
    if backend not in BACKENDS:
        raise ConfigError(f"[storage] backend: unknown backend {backend!r} (use one of {', '.join(BACKENDS)})")
    storage = {key: get("storage", key) for key in ini.options("storage")}
    if backend == "sqlite":
        get("storage", "path")  # required for the embedded store

    delays = {level: float(number("delays", level, "0", float, 0)) for level in CONSISTENCY_LEVELS}
    limits = parse_limits(number)
    return Config(
        application_keys=keys,
        backend=backend,
        storage=storage,
        delays=delays,
        **limits,
        poll_interval=float(number("longpoll", "poll_interval", "1", float, 0.01)),
        expiry_interval=float(number("storage", "expiry_interval", "60", float, 0.01)),
        queue_cache_seconds=float(number("storage", "queue_cache_seconds", "1", float, 0)),
        source=source,
    )


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
}


def parse_limits(number: Any) -> dict[str, Any]:
    """The ``[limits]`` section, checked, as Config keyword arguments."""
    defaults = Config(application_keys={})
    limits = {key: kind(number("limits", key, str(getattr(defaults, key)), kind, low))
              for key, (kind, low) in LIMIT_KEYS.items()}
    if limits["max_response_bytes"] < limits["max_message_bytes"]:
        raise ConfigError("[limits] max_response_bytes: must be at least max_message_bytes "
                          f"({limits['max_message_bytes']}), so that any one message can be read")
    if limits["max_body_bytes_in_flight"] < limits["max_request_bytes"]:
        raise ConfigError("[limits] max_body_bytes_in_flight: must be at least max_request_bytes "
                          f"({limits['max_request_bytes']})")
    return limits
