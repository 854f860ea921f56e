"""A queue directory spread over shards: which shard holds a queue, and how a listing page merges them.

A store that keeps an application's queues in ``shards`` partitions (the
Cassandra store's ``queue_directory``) finds a queue by name in the one
partition :func:`shard_of` names, and lists the application's queues in name
order with :func:`merged_page`:

1. every shard is asked for its first names after the offset, in one request
   (Cassandra reads the partitions concurrently): the page's share of them
   plus three standard deviations (:func:`first_round_size`), since names
   hash uniformly over the shards;
2. the smallest ``limit`` names of all answers give a cut-off; a shard that
   answered in full with a last name below it may hold more names that belong
   on the page, so it is asked once more, for its names up to the cut-off
   and no more than could still make the page (:func:`second_round`); these
   reads, rare with uniform names, run concurrently;
3. the page is the smallest ``limit`` names of both rounds.

Two rounds at most, reading at most ``first_round_size`` names of every shard
and then at most ``limit`` of some: the work of a page is bounded whatever the
offset, and the page is exactly the names after the offset in order, so pages
are stable.  Nothing here does I/O: the caller passes the functions that read
the shards.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Sequence, TypeVar

from twisted.internet import defer

T = TypeVar("T")


def shard_of(queue_name: str, shards: int) -> int:
    """The shard (0 .. shards-1) of a queue name: its BLAKE2b-64 digest modulo ``shards``.

    Part of the stored format: a different function would hide every queue.
    """
    digest = hashlib.blake2b(queue_name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


def first_round_size(limit: int, shards: int) -> int:
    """Names to ask of each shard first: its expected share of the page plus three standard deviations."""
    share = limit / shards
    return max(1, min(limit, math.ceil(share + 3 * math.sqrt(share)) + 1))


@dataclass(frozen=True)
class ShardRead:
    """Read one shard's names in (``after``, ``upto``] in name order, at most ``limit`` of them.

    ``upto`` None means no upper bound; ``after`` "" means from the first name.
    """

    shard: int
    after: str
    upto: str | None
    limit: int


def second_round(first: Mapping[int, Sequence[T]], asked: int, limit: int,
                 name: Callable[[T], str]) -> list[ShardRead]:
    """The shards to read again after a first round that asked ``asked`` names of each.

    A shard that answered fewer than ``asked`` has nothing more after the
    offset.  One whose last name is at or past the cut-off (the ``limit``-th
    smallest name seen) has nothing more that fits on the page.  The others
    are read after their last name, up to the cut-off, for at most ``limit``
    minus the names already seen before that last name: any name of theirs
    after those has ``limit`` names before it.
    """
    seen = sorted(name(row) for rows in first.values() for row in rows)
    cutoff = seen[limit - 1] if len(seen) >= limit else None
    reads = []
    for shard, rows in sorted(first.items()):
        if len(rows) < asked:
            continue
        last = name(rows[-1])
        if cutoff is not None and last >= cutoff:
            continue
        reads.append(ShardRead(shard, last, cutoff, limit - bisect.bisect_right(seen, last)))
    return reads


FirstRound = Callable[[str, int], Awaitable[Mapping[int, Sequence[T]]]]


async def merged_page(read_all: FirstRound[T], read: Callable[[ShardRead], Awaitable[Sequence[T]]], shards: int,
                      after: str | None, limit: int, name: Callable[[T], str], concurrency: int = 32) -> list[T]:
    """The first ``limit`` rows after ``after`` over all ``shards``, in name order.

    ``read_all(after, n)`` answers the first round: {shard: its first ``n``
    rows after ``after``, in name order} (shards without any may be left
    out).  ``read`` answers one :class:`ShardRead` of the second round; at
    most ``concurrency`` of those run at once.
    """
    if limit < 1:
        return []
    semaphore = defer.DeferredSemaphore(concurrency)

    async def one(request: ShardRead) -> Sequence[T]:
        await semaphore.acquire()
        try:
            return await read(request)
        finally:
            semaphore.release()

    async def round_of(requests: Sequence[ShardRead]) -> dict[int, Sequence[T]]:
        results = await gather([defer.ensureDeferred(one(r)) for r in requests])
        return {r.shard: rows for r, rows in zip(requests, results)}

    asked = first_round_size(limit, shards)
    first = await read_all(after or "", asked)
    more = await round_of(second_round(first, asked, limit, name))
    runs = [list(rows) for rows in first.values()] + [list(rows) for rows in more.values()]
    return list(itertools.islice(heapq.merge(*runs, key=name), limit))


def gather(deferreds: Sequence[defer.Deferred[T]]) -> defer.Deferred[list[T]]:
    """All results in order, or the first failure itself (not wrapped in FirstError, so that a
    cancellation stays a CancelledError)."""
    return defer.gatherResults(list(deferreds), consumeErrors=True).addErrback(
        lambda failure: failure.value.subFailure if failure.check(defer.FirstError) else failure)
