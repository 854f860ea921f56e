"""The HTTP suite (tests/test_http.py) again, on the threaded SQLite store of production.

MemoryQueuey runs SQLite inline, on the reactor thread; production runs it
in a writer thread and reader threads (queuey.storage.sqlite.ThreadedRunner),
whose answers only a running reactor delivers. Each HTTP test class gets a
twin here: the same tests, the app on a threaded store over a database file,
served on a real loopback socket (tests/served.py). The store keeps time by
the app's ``task.Clock``, so every test runs, expiry included.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

import tests.test_http as http_tests
from queuey.storage.sqlite import SQLiteStore, ThreadedRunner
from tests.served import ServedQueuey


class SQLiteHTTPCase(http_tests.HTTPCase):
    """HTTPCase with the app on a threaded SQLite store, over a real socket."""

    def setUp(self) -> None:
        path = self.mktemp() + ".sqlite"
        self.memory: Any = ServedQueuey(
            self.config, lambda clock: SQLiteStore(ThreadedRunner(path, reactor), clock, expiry_interval=0))
        self.addCleanup(self.memory.close)


class SQLiteQueueTests(http_tests.QueueTests, SQLiteHTTPCase):
    pass


class SQLiteAccessTests(http_tests.AccessTests, SQLiteHTTPCase):
    pass


class SQLitePostTests(http_tests.PostTests, SQLiteHTTPCase):
    pass


class SQLiteReadTests(http_tests.ReadTests, SQLiteHTTPCase):
    pass


class SQLiteReadDelayTests(http_tests.ReadDelayTests, SQLiteHTTPCase):
    pass


class SQLiteByIdTests(http_tests.ByIdTests, SQLiteHTTPCase):
    pass


class SQLiteRoutingAndOperationsTests(http_tests.RoutingAndOperationsTests, SQLiteHTTPCase):
    pass


class SQLiteDefaultsTests(http_tests.DefaultsTests, SQLiteHTTPCase):
    pass


class SQLiteUpperCaseIdTests(http_tests.UpperCaseIdTests, SQLiteHTTPCase):
    pass


class SQLiteAccessRuleTests(http_tests.AccessRuleTests, SQLiteHTTPCase):
    pass


class SQLitePartitionGrowthTests(http_tests.PartitionGrowthTests, SQLiteHTTPCase):
    pass
