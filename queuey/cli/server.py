"""``queuey serve`` (what ``twistd -n queuey`` does) and ``queuey check-config`` (the same checks, no server)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import click

from queuey.cli import output
from queuey.cli.running import CommandFailed, ExitCode
from queuey.config import DEFAULT_PORT, Config, ConfigError, describe_problems, load_config

#: Config fields that check-config's summary shows in their own way (or not at all).
_OWN_WAY = {"application_keys", "storage", "delays", "source", "warnings"}
#: Settings never shown, whatever their section.
_SECRET = re.compile(r"secret|password|key", re.IGNORECASE)


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.option("--config", "-c", type=click.Path(dir_okay=False),
              help="The ini configuration file (default: the development configuration).")
@click.option("--port", "-p", metavar="ENDPOINT", help=f"Server endpoint string (default {DEFAULT_PORT}).")
@click.argument("server_options", nargs=-1, type=click.UNPROCESSED)
def serve(config: str | None, port: str | None, server_options: tuple[str, ...]) -> None:
    """Run the Queuey server in the foreground, logging to stdout, until SIGTERM or Ctrl-C.

    This is 'twistd -n queuey': SERVER_OPTIONS after the known ones go to it as they are
    ('queuey serve -- --help' lists them).  A bad configuration is reported as
    'queuey check-config' reports it, and exits 2."""
    from queuey.tap import configuration  # the server's modules: only when serving
    configuration(config, "queuey serve")  # said here, before twistd's own start-up lines
    from twisted.application.service import IServiceMaker
    from twisted.plugin import getPlugins
    from twisted.python import usage
    from twisted.scripts.twistd import ServerOptions, runApp

    argv = ["--nodaemon", "--pidfile=", "queuey", *(["--config", config] if config else []),
            *(["--port", port] if port else []), *server_options]
    options = ServerOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        if "queuey" not in {plugin.tapname for plugin in getPlugins(IServiceMaker)}:
            raise CommandFailed("twistd does not find the queuey plugin (twisted/plugins/queuey_plugin.py): "
                                "is queuey installed in this Python?", ExitCode.FAILED) from None
        raise click.UsageError(str(e)) from None
    runApp(options)


@click.command("check-config")
@click.argument("path", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="The result as one JSON document.")
def check_config(path: str, as_json: bool) -> None:
    """Check the configuration file at PATH as 'queuey serve' would: every problem at once
    (exit 2), or "ok" and what it configures (exit 0).  Settings nothing reads are warnings."""
    try:
        config = load_config(path)
    except ConfigError as e:
        if as_json:
            output.emit_json({"ok": False, "errors": list(e.problems)})
        else:
            click.echo(describe_problems("queuey check-config", e), err=True, nl=False)
        raise click.exceptions.Exit(int(ExitCode.USAGE)) from None
    summary = summarize(config)
    if as_json:
        output.emit_json({"ok": True, "summary": summary, "warnings": list(config.warnings)})
        return
    click.echo(f"{path}: ok")
    settings = summary.pop("settings")
    summary["applications"] = {app: f"({n} key{'' if n == 1 else 's'})" for app, n in summary["applications"].items()}
    for section, values in summary.items():
        click.echo(f"  {section + ':':<14} " + ", ".join(f"{k} {_shown(v)}" for k, v in values.items()))
    for key, value in settings.items():
        click.echo(f"  {key} = {_shown(value)}")
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)


def summarize(config: Config) -> dict[str, Any]:
    """What a configuration sets, secrets left out: applications and their number of keys, the backend's
    settings, the read delays, and every other setting."""
    storage = {field.name: _plain(getattr(config.storage, field.name)) for field in dataclasses.fields(config.storage)
               if not _SECRET.search(field.name)}
    if "hosts" in storage:
        storage["hosts"] = [f"{host}:{port}" for host, port in storage["hosts"]]
    return {
        "applications": {app: len(keys) for app, keys in config.application_keys.items()},
        "storage": {"backend": config.backend, **storage},
        "delays": dict(config.delays),
        "settings": {field.name: _plain(getattr(config, field.name)) for field in dataclasses.fields(config)
                     if field.name not in _OWN_WAY and not _SECRET.search(field.name)},
    }


def _shown(value: Any) -> str:
    """A setting as a person reads it."""
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list):
        return " ".join(_shown(v) for v in value) or "-"
    if isinstance(value, dict):
        return " ".join(f"{k}={_shown(v)}" for k, v in value.items())
    return "-" if value is None else str(value)


def _plain(value: Any) -> Any:
    """A setting as JSON can hold it."""
    if hasattr(value, "value"):  # an enum
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict) or hasattr(value, "items"):
        return dict(value)
    return value
