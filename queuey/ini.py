"""Reading ini files: values with ``${VAR}`` expanded, parsed key by key, every problem collected.

Queuey's configuration (:mod:`queuey.config`) and qdo's (:mod:`qdo.config`)
both read their files through :class:`IniFile`.  :meth:`IniFile.value` parses
one key and, when it is wrong, records the problem and goes on with the
default, so that one reading of a file can report every mistake in it at once
(:meth:`IniFile.raise_problems`).  :meth:`IniFile.get` and
:meth:`IniFile.number` raise at the first problem instead.
"""

from __future__ import annotations

import configparser
import math
import re
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class ConfigError(Exception):
    """One or more configuration problems, each worded for the person who wrote the file
    and naming its ``[section] key``."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems: tuple[str, ...] = problems


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


#: The default of a key that must be given.
REQUIRED: Any = _Required()


def read_text(path: str) -> str:
    """The file's text, or a ConfigError saying why it cannot be read."""
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as e:
        raise ConfigError(f"cannot read configuration file {path}: {e.strerror}") from None


# -- parsers of one value: text -> value, or ValueError with the sentence to report ----------

def text(raw: str) -> str:
    return raw


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    """A whole number from ``low`` to ``high`` (no upper bound when None)."""
    return _number(int, "a whole number", low, high)


def decimal(low: float, high: float | None = None) -> Callable[[str], float]:
    """A finite number from ``low`` to ``high`` (no upper bound when None)."""
    return _number(float, "a number", low, high)


def _number(kind: Callable[[str], Any], what: str, low: float, high: float | None) -> Callable[[str], Any]:
    def parse(raw: str) -> Any:
        try:
            value = kind(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not {what}") from None
        if not math.isfinite(value):
            raise ValueError(f"{raw!r} is not a finite number")
        _check_range(raw, value, low, high)
        return value
    return parse


def _check_range(raw: str, value: float, low: float, high: float | None) -> None:
    if high is not None and not low <= value <= high:
        raise ValueError(f"must be between {low:g} and {high:g}, not {raw}")
    if value < low:
        raise ValueError(f"must be at least {low:g}, not {raw}")


def boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("true", "yes", "on", "1"):
        return True
    if lowered in ("false", "no", "off", "0"):
        return False
    raise ValueError(f"{raw!r} is not true or false")


def one_of(*choices: str, fold: Callable[[str], str] = str) -> Callable[[str], str]:
    """One of ``choices``, compared after ``fold`` (e.g. ``str.upper``)."""
    def parse(raw: str) -> str:
        value = fold(raw)
        if value not in choices:
            raise ValueError(f"{raw!r}: use one of {', '.join(choices)}")
        return value
    return parse


class IniFile:
    """An ini file's values, ``${VAR}`` expanded; each problem a ConfigError naming ``[section] key``."""

    def __init__(self, text: str, source: str = "<string>", environ: Mapping[str, str] | None = None,
                 case_sensitive: bool = False) -> None:
        self.environ = {} if environ is None else environ
        self.source = source
        self.parser = configparser.ConfigParser(interpolation=None, strict=True)
        if case_sensitive:
            self.parser.optionxform = str  # type: ignore[assignment, method-assign]
        try:
            self.parser.read_string(text, source=source)
        except configparser.Error as e:
            raise ConfigError(f"{source}: {e.message.splitlines()[0]}") from None
        self.problems: list[str] = []
        self._read: set[tuple[str, str]] = set()

    def has_section(self, section: str) -> bool:
        return self.parser.has_section(section)

    def options(self, section: str) -> list[str]:
        return self.parser.options(section) if self.parser.has_section(section) else []

    def get(self, section: str, key: str, default: str | None = None) -> str:
        """The value, or ``default``; without a default a missing key is an error."""
        self._read.add((section, key))
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
        """A number of ``kind`` (int or float) of at least ``low``; raises at once when it is not."""
        parse = whole(int(low)) if kind is int else decimal(low)
        raw = self.get(section, key, default)
        try:
            return parse(raw)
        except ValueError as e:
            raise ConfigError(f"[{section}] {key}: {e}") from None

    def value(self, section: str, key: str, parse: Callable[[str], T], default: T) -> T:
        """``parse`` of the key's value; ``default`` when it is missing or empty (REQUIRED: a problem).
        A problem is recorded, and the default returned, so that reading goes on."""
        try:
            raw = self.get(section, key, "")
        except ConfigError as e:
            self.problems.extend(e.problems)
            return default
        if not raw:
            if default is REQUIRED:
                self.problem(section, key, "missing (required)")
            return default
        try:
            return parse(raw)
        except ValueError as e:
            self.problem(section, key, str(e))
            return default

    def problem(self, section: str, key: str | None, message: str) -> None:
        self.problems.append(f"[{section}]{' ' + key if key else ''}: {message}")

    def unread(self) -> list[str]:
        """``[section] key`` of every setting in the file that nothing asked for."""
        return [f"[{section}] {key}" for section in self.parser.sections() for key in self.parser.options(section)
                if (section, key) not in self._read]

    def raise_problems(self) -> None:
        """A ConfigError with every problem recorded so far, if there is any."""
        if self.problems:
            raise ConfigError(*self.problems)
