"""``python -m queuey.cli``: the ``queuey`` command."""

from queuey.cli import main

main()
