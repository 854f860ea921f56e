"""The HTTP suite (tests/test_http.py) again, over a real socket, on a real Cassandra.

Each HTTP test class gets a Cassandra twin: the same tests, the same Klein app
and core, but the store is a CassandraStore and requests travel over loopback
TCP (tests/served.py), because the driver answers from its own threads and
only a running reactor delivers that.  The app's clock stays a
``task.Clock`` (ids, read delays, long-poll timeouts), so the suite's
time-based checks still hold; Cassandra expires by its own clock, so the few
tests that move that clock past a TTL are left to the contract suite, which
waits for real.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor

import tests.test_delayed as delayed_tests
import tests.test_http as http_tests
from tests.cassandra_support import cassandra_settings, purge
from tests.served import ServedQueuey, skipped

KEYSPACE = "queuey_test_http"
TTL_BY_FAKE_CLOCK = skipped(
    "This test moves the app's fake clock past a TTL; Cassandra expires by its own "
    "clock (CassandraContract.test_expired_messages_never_returned covers expiry)")


class CassandraHTTPCase(http_tests.HTTPCase):
    """HTTPCase with the app on Cassandra, over a real socket; the applications' queues of earlier
    tests are deleted before the first request."""

    timeout = 60

    def setUp(self) -> None:
        from queuey.storage.cassandra import CassandraStore
        settings = cassandra_settings(keyspace=KEYSPACE)
        self.memory: Any = ServedQueuey(self.config, lambda clock: CassandraStore(settings, reactor),
                                        prepare=lambda store: purge(store, self.config.application_keys))
        self.addCleanup(self.memory.close)


class CassandraQueueTests(http_tests.QueueTests, CassandraHTTPCase):
    test_list_count_leaves_out_expired = TTL_BY_FAKE_CLOCK


class CassandraAccessTests(http_tests.AccessTests, CassandraHTTPCase):
    pass


class CassandraPostTests(http_tests.PostTests, CassandraHTTPCase):
    pass


class CassandraReadTests(http_tests.ReadTests, CassandraHTTPCase):
    test_expired_not_returned = TTL_BY_FAKE_CLOCK


class CassandraReadDelayTests(http_tests.ReadDelayTests, CassandraHTTPCase):
    pass


class CassandraByIdTests(http_tests.ByIdTests, CassandraHTTPCase):
    test_put_ttl_counts_from_now = TTL_BY_FAKE_CLOCK


class CassandraRoutingAndOperationsTests(http_tests.RoutingAndOperationsTests, CassandraHTTPCase):
    pass


class CassandraDefaultsTests(http_tests.DefaultsTests, CassandraHTTPCase):
    test_ttl_is_three_days = TTL_BY_FAKE_CLOCK


class CassandraUpperCaseIdTests(http_tests.UpperCaseIdTests, CassandraHTTPCase):
    pass


class CassandraAccessRuleTests(http_tests.AccessRuleTests, CassandraHTTPCase):
    pass


class CassandraPartitionGrowthTests(http_tests.PartitionGrowthTests, CassandraHTTPCase):
    pass


class CassandraQueueInfoTests(http_tests.QueueInfoTests, CassandraHTTPCase):
    pass


class CassandraDelayTests(delayed_tests.DelayTests, CassandraHTTPCase):
    pass
