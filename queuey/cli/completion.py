"""Shell completion: ``queuey completion bash|zsh|fish`` prints the script; queue names come from the server.

Click completes commands, options and files by itself, driven by the
``_QUEUEY_COMPLETE`` environment variable the script sets.  A QUEUE argument
is completed with the application's queue names, listed with the URL,
application and key already on the command line (or in QUEUEY_URL,
QUEUEY_APP, QUEUEY_KEY); when that fails, quickly, nothing is offered.
"""

from __future__ import annotations

from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

SHELLS = ("bash", "zsh", "fish")
#: Seconds a completion may wait for the server.
COMPLETION_TIMEOUT = 2.0


def complete_queue(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """Queue names of the application that start with ``incomplete``."""
    from queuey import client as qc
    from queuey.cli.running import DEFAULT_URL, run

    params = ctx.params
    try:
        base, from_url = qc.parse_connection(params.get("url") or DEFAULT_URL)
    except ValueError:
        return []
    application = params.get("application") or from_url
    if not application:
        return []

    async def names(reactor: Any) -> list[str]:
        client = qc.QueueyClient(base, params.get("key"), reactor=reactor, application=application,
                                 timeout=COMPLETION_TIMEOUT, retries=0)
        try:
            return [q["queue_name"] for q in await client.list_queues(limit=1000, offset=None)]
        finally:
            await client.close()

    try:
        found = run(names)
    except Exception:
        return []
    return [CompletionItem(name) for name in found if name.startswith(incomplete)]


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL.

    \b
    bash:  eval "$(queuey completion bash)"     (in ~/.bashrc)
    zsh:   eval "$(queuey completion zsh)"      (in ~/.zshrc)
    fish:  queuey completion fish > ~/.config/fish/completions/queuey.fish
    """
    root = click.get_current_context().find_root()
    kind = get_completion_class(shell)
    assert kind is not None
    click.echo(kind(root.command, {}, "queuey", "_QUEUEY_COMPLETE").source())
