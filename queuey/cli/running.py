"""How a ``queuey`` client command runs: its connection options, the reactor, and its exit code.

Every client command takes the same options (:func:`client_options`), runs
one coroutine on Twisted's reactor with a :class:`queuey.client.QueueyClient`
(:func:`run_client`), and turns whatever went wrong into one clear line on
stderr and an :class:`ExitCode`.
"""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, TypeVar

from typing import TYPE_CHECKING

import click
from twisted.internet import defer
from twisted.python.failure import Failure

if TYPE_CHECKING:  # imported when a command talks to a server: ``--help`` and completion stay quick
    from queuey import client as qc

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_URL = "http://127.0.0.1:5000"


class ExitCode(enum.IntEnum):
    """What a ``queuey`` command's exit status means (README.rst lists them)."""

    OK = 0
    FAILED = 1          # the server failed (5xx), or something unexpected
    USAGE = 2           # a bad command line, or a bad configuration file
    REFUSED = 3         # the server refused what was sent: 400, 405, 413
    NOT_ALLOWED = 4     # no key, a key that is not valid, or not this key's to do: 401, 403
    NOT_FOUND = 5       # no such application, queue or message: 404
    CONFLICT = 6        # the queue exists: 409
    UNAVAILABLE = 7     # no server answered, or it answered 503 after the retries
    INTERRUPTED = 130   # stopped by Ctrl-C (SIGINT) or SIGTERM


_BY_STATUS = {400: ExitCode.REFUSED, 405: ExitCode.REFUSED, 413: ExitCode.REFUSED, 401: ExitCode.NOT_ALLOWED,
              403: ExitCode.NOT_ALLOWED, 404: ExitCode.NOT_FOUND, 409: ExitCode.CONFLICT,
              503: ExitCode.UNAVAILABLE}


class CommandFailed(click.ClickException):
    """Ends a command with one message (or several lines) on stderr and ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.exit_code = int(code)


class Interrupted(Exception):
    """The reactor was stopped (SIGINT, SIGTERM) before the command's work finished."""


def failed(error: qc.QueueyClientError) -> CommandFailed:
    """The message and exit code of a client error: each of the server's ``error_msg`` on its own line."""
    from queuey import client as qc
    if isinstance(error, qc.ConnectionFailed):
        return CommandFailed(f"no answer: {error}", ExitCode.UNAVAILABLE)
    status = error.status or 0
    lines = [f"{key}: {text}" for key, text in error.errors.items()] or [str(error)]
    code = _BY_STATUS.get(status, ExitCode.FAILED)
    return CommandFailed(f"{status} " + "\n  ".join(lines), code)


def run(work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(reactor)`` run on Twisted's reactor to its end; :class:`Interrupted` when a signal
    stopped the reactor first.  One reactor per process: a command runs once."""
    from twisted.internet import reactor
    outcome: list[Any] = []

    def start() -> None:
        done = defer.ensureDeferred(work(reactor))
        done.addBoth(outcome.append)
        done.addBoth(lambda _: reactor.stop())  # type: ignore[attr-defined]

    reactor.callWhenRunning(start)  # type: ignore[attr-defined]
    reactor.run()  # type: ignore[attr-defined]
    if not outcome:
        raise Interrupted()
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result


@dataclass(frozen=True)
class Connection:
    """Where and as whom a client command talks to Queuey, and how it prints."""

    url: str
    application: str
    key: str | None
    timeout: float
    retries: int
    json: bool

    def client(self, reactor: Any) -> qc.QueueyClient:
        from queuey import client as qc
        return qc.QueueyClient(self.url, self.key, reactor=reactor, application=self.application,
                               timeout=self.timeout, retries=self.retries, backoff=0.2, max_backoff=2.0)


def connection(url: str, application: str | None, key: str | None, timeout: float, retries: int,
               as_json: bool) -> Connection:
    """The connection the options name; the application from ``--app`` or else from the URL."""
    from queuey import client as qc
    try:
        base, from_url = qc.parse_connection(url)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--url / QUEUEY_URL") from None
    application = application or from_url
    if not application:
        raise click.UsageError("name the application: --app, QUEUEY_APP, or a URL ending in /v1/<application>")
    return Connection(base, application, key or None, timeout, retries, as_json)


def client_options(command: F) -> F:
    """The options every client command takes; the command gets them as one ``Connection``, ``conn``."""
    options = [
        click.option("--url", envvar="QUEUEY_URL", default=DEFAULT_URL, show_default=True, show_envvar=True,
                     help="Queuey's base URL (or .../v1/<application>)."),
        click.option("--app", "application", envvar="QUEUEY_APP", show_envvar=True,
                     help="The application whose queues these are."),
        click.option("--key", envvar="QUEUEY_KEY", show_envvar=True,
                     help="An application key (none: only public queues can be read)."),
        click.option("--json", "as_json", is_flag=True, help="JSON on stdout, for scripts."),
        click.option("--timeout", type=click.FloatRange(0.1), default=30.0, show_default=True,
                     help="Seconds to wait for one answer."),
        click.option("--retries", type=click.IntRange(0, 20), default=2, show_default=True,
                     help="Tries again on no answer or 503, with back-off."),
    ]

    @functools.wraps(command)
    def wrapper(url: str, application: str | None, key: str | None, as_json: bool, timeout: float,
                retries: int, **kwargs: Any) -> Any:
        return command(conn=connection(url, application, key, timeout, retries, as_json), **kwargs)

    for option in reversed(options):
        wrapper = option(wrapper)
    return wrapper  # type: ignore[return-value]


def run_client(conn: Connection, work: Callable[[qc.QueueyClient, Any], Awaitable[T]],
               stopped: Callable[[], str] | None = None) -> T:
    """``work(client, reactor)`` with a client of ``conn``; client errors become CommandFailed, and so
    does a signal that stops it (``stopped`` says how far it got)."""
    from queuey import client as qc

    async def session(reactor: Any) -> T:
        client = conn.client(reactor)
        try:
            return await work(client, reactor)
        finally:
            await client.close()

    try:
        return run(session)
    except qc.QueueyClientError as e:
        raise failed(e) from None
    except Interrupted:
        raise interrupted(stopped() if stopped is not None else "") from None


def interrupted(message: str = "") -> CommandFailed:
    if message:
        click.echo(message, err=True)
    return CommandFailed("interrupted", ExitCode.INTERRUPTED)
