"""Where the real services for integration tests are, from the environment.

``scripts/run-tests.sh`` (``make test``) starts them and exports their
addresses.  Run by hand without them, the tests that need one skip; under
``CI=true`` a missing service is a failure, never a skip.
"""

from __future__ import annotations

import os

from twisted.trial.unittest import SkipTest

CASSANDRA = "QUEUEY_TEST_CASSANDRA"
ZOOKEEPER = "QUEUEY_TEST_ZOOKEEPER"


def require(variable: str, what: str) -> str:
    """The address in ``variable``; skip (or, in CI, fail) when it is not set."""
    address = os.environ.get(variable, "").strip()
    if address:
        return address
    message = f"{what} is not available: set {variable} (scripts/run-tests.sh does)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise AssertionError(f"{message}; under CI this is a failure")
    raise SkipTest(message)
