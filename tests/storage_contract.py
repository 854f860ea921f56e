"""The storage contract, written once, run against every backend.

A backend's test case mixes in :class:`StoreContract` and provides
``make_store()`` (a store not yet opened) and ``clock`` (what the store uses
for expiry) plus ``advance(seconds)`` to move that clock past a TTL.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from zope.interface.verify import verifyObject

from queuey import timeuuid
from queuey.errors import NotFound, QueueExists, StorageUnavailable
from queuey.interfaces import IMessageStore, MessageRange, MessageRef, NewMessage, QueueSettings
from queuey.rendering import parse_rendered

APP = "contract"


class StoreContract:
    """Mix into a twisted.trial TestCase."""

    store: Any
    #: TTL of the message that test_expired_messages_never_returned sees expire.  A store on a
    #: real clock needs room: Cassandra counts TTLs in whole seconds from the second of the
    #: write, so a message of TTL n may be gone n - 1 seconds and a bit after it was written.
    short_ttl = 2
    #: Whether a put to a queue deleted since it was looked up fails with NotFound.  Cassandra
    #: acknowledges it instead, into the deleted incarnation that no queue of that name reads.
    put_after_delete_refused = True

    def make_store(self) -> Any:
        raise NotImplementedError

    def now_ticks(self) -> int:
        raise NotImplementedError

    def advance(self, seconds: float) -> Any:
        raise NotImplementedError

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.store = self.make_store()
        yield self.store.open()
        self.addCleanup(self.store.close)
        self._seq = 0
        self.generator = timeuuid.TimeUUIDGenerator(self.now_ticks)

    def queue(self, name: str = "q", partitions: int = 2, **kwargs: Any) -> QueueSettings:
        return QueueSettings(APP, name, partitions=partitions, created=self.now_ticks(), **kwargs)

    def message(self, partition: int = 1, body: bytes = b"hello", ttl: int = 3600,
                content_type: str = "text/plain") -> NewMessage:
        return NewMessage(self.generator.next(), partition, body, content_type, ttl)

    @defer.inlineCallbacks
    def created(self, name: str = "q", **kwargs: Any) -> Any:
        queue = self.queue(name, **kwargs)
        yield self.store.create_queue(queue)
        return queue

    # -- the contract ---------------------------------------------------

    @defer.inlineCallbacks
    def test_interface(self) -> Any:
        """The methods are there, and every one of them answers with a Deferred."""
        self.assertTrue(verifyObject(IMessageStore, self.store))
        self.assertIsInstance(self.store.name, str)
        queue = self.queue("iface")
        calls = [("check", ()), ("create_queue", (queue,)), ("get_queue", (APP, "iface")),
                 ("update_queue", (queue,)), ("list_queues", (APP, None, 10)), ("count_messages", (queue,)),
                 ("put_messages", (queue, [self.message()])), ("read_messages", (queue, 1, MessageRange())),
                 ("read_rendered", (queue, (1,), MessageRange())), ("get_messages", (queue, [])), ("delete_messages", (queue, [])),
                 ("newest_message_ids", (queue, [1])), ("delete_queue", (APP, "iface"))]
        self.assertEqual({name for name, _ in calls} | {"open", "close"},
                         {name for name in IMessageStore.names() if callable(IMessageStore[name])})
        for name, args in calls:
            result = getattr(self.store, name)(*args)
            self.assertIsInstance(result, defer.Deferred, name)
            yield result

    @defer.inlineCallbacks
    def test_check(self) -> Any:
        """check() answers while the store is open, and fails with StorageUnavailable once it is closed."""
        result = yield self.store.check()
        self.assertIsNone(result)
        yield self.store.close()
        yield self.assertFailure(self.store.check(), StorageUnavailable)

    @defer.inlineCallbacks
    def test_create_get_queue(self) -> Any:
        queue = self.queue("q1", partitions=3, type="public", consistency="weak",
                           principles=("app:a", "app:b"))
        stored = yield self.store.create_queue(queue)
        self.assertEqual(stored, queue)
        fetched = yield self.store.get_queue(APP, "q1")
        self.assertEqual(fetched, queue)
        missing = yield self.store.get_queue(APP, "nope")
        self.assertIsNone(missing)
        other_app = yield self.store.get_queue("elsewhere", "q1")
        self.assertIsNone(other_app)

    @defer.inlineCallbacks
    def test_create_existing_queue(self) -> Any:
        yield self.created("q1")
        with self.assertRaises(QueueExists):
            yield self.store.create_queue(self.queue("q1", partitions=5))
        kept = yield self.store.get_queue(APP, "q1")
        self.assertEqual(kept.partitions, 2)

    @defer.inlineCallbacks
    def test_update_queue(self) -> Any:
        queue = yield self.created("q1")
        changed = QueueSettings(APP, "q1", 4, "public", "very_strong", ("app:x",), queue.created)
        result = yield self.store.update_queue(changed)
        self.assertEqual(result, changed)
        fetched = yield self.store.get_queue(APP, "q1")
        self.assertEqual(fetched, changed)
        gone = yield self.store.update_queue(self.queue("absent"))
        self.assertIsNone(gone)

    @defer.inlineCallbacks
    def test_list_queues_pages(self) -> Any:
        names = [f"q{i:03d}" for i in range(25)]
        for name in reversed(names):
            yield self.created(name)
        yield self.store.create_queue(QueueSettings("elsewhere", "q000"))
        seen: list[str] = []
        after = None
        while True:
            page = yield self.store.list_queues(APP, after, 10)
            if not page:
                break
            seen.extend(q.queue_name for q in page)
            after = page[-1].queue_name
        self.assertEqual(seen, names)

    @defer.inlineCallbacks
    def test_delete_queue(self) -> Any:
        queue = yield self.created("q1")
        yield self.store.put_messages(queue, [self.message()])
        existed = yield self.store.delete_queue(APP, "q1")
        self.assertTrue(existed)
        self.assertIsNone((yield self.store.get_queue(APP, "q1")))
        again = yield self.store.delete_queue(APP, "q1")
        self.assertFalse(again)
        # A new queue of the same name starts empty.
        fresh = yield self.created("q1")
        messages = yield self.store.read_messages(fresh, 1, MessageRange())
        self.assertEqual(messages, [])

    @defer.inlineCallbacks
    def test_put_to_deleted_queue_is_refused_or_unseen(self) -> Any:
        """A put racing the queue's deletion is refused (NotFound), or, where the store says it
        acknowledges it (put_after_delete_refused), lands where a new queue of that name never looks."""
        queue = yield self.created("gone")
        yield self.store.delete_queue(APP, "gone")
        put = self.store.put_messages(queue, [self.message()])
        if self.put_after_delete_refused:
            yield self.assertFailure(put, NotFound)
        else:
            yield put
        fresh = yield self.created("gone")
        self.assertEqual((yield self.store.read_messages(fresh, 1, MessageRange())), [])
        self.assertEqual((yield self.store.count_messages(fresh)), 0)
        self.assertEqual((yield self.store.newest_message_ids(fresh, [1])), {})

    @defer.inlineCallbacks
    def test_put_and_read_in_order(self) -> Any:
        queue = yield self.created()
        sent = [self.message(body=f"m{i}".encode()) for i in range(5)]
        yield self.store.put_messages(queue, sent[:2])
        yield self.store.put_messages(queue, sent[2:])
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual([m.id for m in read], [m.id for m in sent])
        self.assertEqual([m.body for m in read], [m.body for m in sent])
        self.assertEqual({m.content_type for m in read}, {"text/plain"})
        backwards = yield self.store.read_messages(queue, 1, MessageRange(descending=True, limit=2))
        self.assertEqual([m.id for m in backwards], [sent[4].id, sent[3].id])

    @defer.inlineCallbacks
    def test_partitions_are_separate(self) -> Any:
        queue = yield self.created(partitions=2)
        one, two = self.message(1, b"one"), self.message(2, b"two")
        yield self.store.put_messages(queue, [one, two])
        first = yield self.store.read_messages(queue, 1, MessageRange())
        second = yield self.store.read_messages(queue, 2, MessageRange())
        self.assertEqual([(m.id, m.partition) for m in first], [(one.id, 1)])
        self.assertEqual([(m.id, m.partition) for m in second], [(two.id, 2)])

    @defer.inlineCallbacks
    def test_range_bounds(self) -> Any:
        queue = yield self.created()
        sent = [self.message() for _ in range(6)]
        yield self.store.put_messages(queue, sent)
        ids = [m.id for m in sent]
        since = yield self.store.read_messages(queue, 1, MessageRange(lower=ids[2]))
        self.assertEqual([m.id for m in since], ids[2:])
        after = yield self.store.read_messages(queue, 1, MessageRange(lower=ids[2], lower_inclusive=False))
        self.assertEqual([m.id for m in after], ids[3:])
        upto = yield self.store.read_messages(queue, 1, MessageRange(lower=ids[1], upper=ids[3]))
        self.assertEqual([m.id for m in upto], ids[1:4])
        limited = yield self.store.read_messages(queue, 1, MessageRange(lower=ids[1], limit=2))
        self.assertEqual([m.id for m in limited], ids[1:3])
        by_time = yield self.store.read_messages(
            queue, 1, MessageRange(lower=timeuuid.lowest_uuid_at(timeuuid.ticks_from_uuid(ids[4]))))
        self.assertEqual([m.id for m in by_time], ids[4:])

    @defer.inlineCallbacks
    def test_order_is_timeuuid_order(self) -> Any:
        """Same time, different tails: the store orders by signed tail bytes, as Cassandra does."""
        queue = yield self.created()
        ticks = self.now_ticks()
        nodes = [0x7F0000000000, 0x800000000000, 0x000000000001, 0xFF0000000000]
        messages = [NewMessage(timeuuid.make_uuid(ticks, 0x1234, n), 1, b"x", "text/plain", 3600) for n in nodes]
        yield self.store.put_messages(queue, messages)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        expected = sorted((m.id for m in messages), key=timeuuid.sort_key)
        self.assertEqual([m.id for m in read], expected)
        self.assertEqual([m.id.node for m in read], [0x800000000000, 0xFF0000000000, 0x000000000001, 0x7F0000000000])

    @defer.inlineCallbacks
    def test_replace_keeps_id(self) -> Any:
        queue = yield self.created()
        original = self.message(body=b"before")
        yield self.store.put_messages(queue, [original])
        yield self.store.put_messages(queue, [NewMessage(original.id, 1, b"after", "application/x-new", 60)])
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual([(m.id, m.body, m.content_type) for m in read],
                         [(original.id, b"after", "application/x-new")])

    @defer.inlineCallbacks
    def test_get_and_delete_by_id(self) -> Any:
        queue = yield self.created(partitions=2)
        a, b = self.message(1, b"a"), self.message(2, b"b")
        yield self.store.put_messages(queue, [a, b])
        missing = MessageRef(1, self.generator.next())
        wrong_partition = MessageRef(1, b.id)
        found = yield self.store.get_messages(queue, [MessageRef(2, b.id), missing, wrong_partition,
                                                      MessageRef(1, a.id)])
        self.assertEqual([(m.id, m.partition, m.body) for m in found], [(b.id, 2, b"b"), (a.id, 1, b"a")])
        yield self.store.delete_messages(queue, [MessageRef(1, a.id), missing])
        left = yield self.store.get_messages(queue, [MessageRef(1, a.id), MessageRef(2, b.id)])
        self.assertEqual([m.id for m in left], [b.id])

    @defer.inlineCallbacks
    def test_binary_body(self) -> Any:
        queue = yield self.created()
        body = bytes(range(256)) * 4
        message = self.message(body=body, content_type="application/octet-stream")
        yield self.store.put_messages(queue, [message])
        [read] = yield self.store.get_messages(queue, [MessageRef(1, message.id)])
        self.assertEqual(read.body, body)

    @defer.inlineCallbacks
    def test_rendered_pages_keep_every_message_whole_in_order_within_budget(self) -> Any:
        """Bodies that look like the JSON around them come back whole, in order, cut by the budget."""
        queue = yield self.created()
        bodies = [b',{"message_id":"' + b"0" * 32 + b'"}', b'"},{"', b"\xff\xfe\x00 not utf-8", b"x" * 50,
                  b"plain", b'{"message_id":"nested"}']
        messages = [self.message(body=body) for body in bodies]
        yield self.store.put_messages(queue, messages)
        for descending in (False, True):
            expected = [(m.id, m.body) for m in (reversed(messages) if descending else messages)]
            for max_bytes, kept in ((None, len(bodies)), (1, 1), (sum(map(len, bodies)), len(bodies)),
                                    (len(bodies[0]) + 1, 2)):
                if descending and max_bytes == len(bodies[0]) + 1:
                    max_bytes = len(bodies[-1]) + 1
                wanted = MessageRange(descending=descending, max_bytes=max_bytes)
                (rows,) = yield self.store.read_rendered(queue, (1,), wanted)
                self.assertEqual([(m.id, m.body) for m in map(parse_rendered, (row[1] for row in rows))],
                                 expected[:kept], (descending, max_bytes))
                self.assertEqual([row[0] for row in rows], [len(body) for _, body in expected[:kept]])

    @defer.inlineCallbacks
    def test_expired_messages_never_returned(self) -> Any:
        queue = yield self.created()
        short, long = self.message(ttl=self.short_ttl), self.message(ttl=3600)
        written = self.now_ticks()
        yield self.store.put_messages(queue, [short, long])
        count = yield self.store.count_messages(queue)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        took = f"{(self.now_ticks() - written) / timeuuid.TICKS_PER_SECOND:.1f} s after the write"
        self.assertEqual(count, 2, took)
        self.assertEqual([m.id for m in read], [short.id, long.id], took)
        yield self.advance(self.short_ttl + 1)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual([m.id for m in read], [long.id])
        by_id = yield self.store.get_messages(queue, [MessageRef(1, short.id)])
        self.assertEqual(by_id, [])
        count = yield self.store.count_messages(queue)
        self.assertEqual(count, 1)

    @defer.inlineCallbacks
    def test_count_over_partitions(self) -> Any:
        queue = yield self.created(partitions=3)
        yield self.store.put_messages(queue, [self.message(p) for p in (1, 2, 2, 3, 3, 3)])
        count = yield self.store.count_messages(queue)
        self.assertEqual(count, 6)

    @defer.inlineCallbacks
    def test_newest_message_ids(self) -> Any:
        queue = yield self.created(partitions=3)
        first, second, third = self.message(1), self.message(1), self.message(3)
        yield self.store.put_messages(queue, [first, second, third])
        newest = yield self.store.newest_message_ids(queue, [1, 2, 3])
        self.assertEqual(newest, {1: second.id, 3: third.id})

    @defer.inlineCallbacks
    def test_newest_message_ids_up_to_a_time(self) -> Any:
        """A message dated ahead (delayed) is not the newest "up to now" until its time."""
        queue = yield self.created(partitions=2)
        now = self.now_ticks()
        first = self.message(1)
        later = NewMessage(timeuuid.LaterIds().at(now + 3600 * timeuuid.TICKS_PER_SECOND), 1, b"later",
                           "text/plain", 60)
        only_later = NewMessage(timeuuid.LaterIds().at(now + 60 * timeuuid.TICKS_PER_SECOND), 2, b"later",
                                "text/plain", 60)
        yield self.store.put_messages(queue, [first, later, only_later])
        newest = yield self.store.newest_message_ids(queue, [1, 2])
        self.assertEqual(newest, {1: later.id, 2: only_later.id})
        upto = timeuuid.highest_uuid_at(now + timeuuid.TICKS_PER_SECOND)
        newest = yield self.store.newest_message_ids(queue, [1, 2], upto)
        self.assertEqual(newest, {1: first.id})
        read = yield self.store.read_messages(queue, 1, MessageRange(upper=upto))
        self.assertEqual([m.id for m in read], [first.id])

    @defer.inlineCallbacks
    def test_ttl_counts_from_a_later_id(self) -> Any:
        """A message dated 3 s ahead with a TTL of 2 s lives 5 s; one dated now, 2 s."""
        queue = yield self.created()
        now = self.now_ticks()
        short = self.message(ttl=2)
        later = NewMessage(timeuuid.LaterIds().at(now + 3 * timeuuid.TICKS_PER_SECOND), 1, b"later",
                           "text/plain", 2)
        yield self.store.put_messages(queue, [short, later])
        yield self.advance(3.5)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual([m.id for m in read], [later.id])
        yield self.advance(2)
        read = yield self.store.read_messages(queue, 1, MessageRange())
        self.assertEqual(read, [])

    @defer.inlineCallbacks
    def test_many_concurrent_writes(self) -> Any:
        queue = yield self.created()
        sent = [self.message(body=str(i).encode()) for i in range(50)]
        yield defer.gatherResults([self.store.put_messages(queue, [m]) for m in sent])
        read = yield self.store.read_messages(queue, 1, MessageRange(limit=1000))
        self.assertEqual(sorted(m.id for m in read), sorted(m.id for m in sent))

    @defer.inlineCallbacks
    def test_ids_unique_across_generators(self) -> Any:
        """Two processes' generators at the same instant never make the same id."""
        queue = yield self.created()
        other = timeuuid.TimeUUIDGenerator(self.now_ticks)
        messages = [NewMessage(g.next(), 1, b"x", "text/plain", 60)
                    for _ in range(20) for g in (self.generator, other)]
        self.assertEqual(len({m.id for m in messages}), len(messages))
        yield self.store.put_messages(queue, messages)
        count = yield self.store.count_messages(queue)
        self.assertEqual(count, len(messages))
