"""``queuey``, the command for people: run and check the server, and use its API from a shell.

``queuey serve`` and ``queuey check-config`` work on a configuration file;
the client commands (``queues``, ``post``, ``read``, ``tail``, ``get``,
``delete``) talk to a server over HTTP with :mod:`queuey.client`.  README.rst
shows a session; ``queuey COMMAND --help`` says the rest.
"""

from __future__ import annotations

import os
import sys
import traceback

import click

import queuey
from queuey.cli.completion import completion
from queuey.cli.messages import delete, get, post, read
from queuey.cli.queues import queues
from queuey.cli.running import ExitCode
from queuey.cli.server import check_config, serve
from queuey.cli.tail import tail


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(queuey.__version__, prog_name="queuey")
def cli() -> None:
    """Queuey, an HTTP message store: run it, and use it from a shell.

    Client commands take --url, --app and --key, or QUEUEY_URL, QUEUEY_APP and QUEUEY_KEY;
    --json prints JSON for scripts.  'queuey completion bash' sets up shell completion.

    \b
    Exit codes:
      0    done
      1    the server failed, or something unexpected
      2    bad usage, or a bad configuration file
      3    request refused (400, 405, 413)
      4    not allowed (401, 403)
      5    not found (404)
      6    the queue exists (409)
      7    no server answered (or 503 after the retries)
      130  interrupted"""


for command in (serve, check_config, queues, post, read, tail, get, delete, completion):
    cli.add_command(command)


def main() -> None:
    """The console script: click's own errors and exits as they are, anything unexpected as one line
    (with the traceback when QUEUEY_DEBUG is set), exit 1."""
    try:
        cli.main(prog_name="queuey", complete_var="_QUEUEY_COMPLETE")
    except Exception as e:  # click handles its own; what is left is a bug or an environment problem
        if os.environ.get("QUEUEY_DEBUG"):
            traceback.print_exc()
        click.echo(f"Error: unexpected {e.__class__.__name__}: {e} (QUEUEY_DEBUG=1 shows where)", err=True)
        sys.exit(int(ExitCode.FAILED))
