import sys

from qdo.cli import main

sys.exit(main())
