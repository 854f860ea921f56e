"""What Queuey does, without HTTP: access rules, queues, messages (reading them: queuey.reading).

It takes checked, typed inputs (:mod:`queuey.validation`) and answers with
plain dicts; :mod:`queuey.app` decodes requests into those inputs and the
answers into JSON.
"""

from __future__ import annotations

import hmac
import random as random_module
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from twisted.internet.interfaces import IReactorTime

from queuey import timeuuid, validation
from queuey.config import Config
from queuey.errors import (AccessDenied, BodyTooLarge, InvalidApplicationKey, InvalidParameters,
                           MissingApplicationKey, NotFound, QueueMissing)
from queuey.interfaces import IMessageStore, Message, MessageRef, NewMessage, QueueSettings
from queuey.longpoll import LongPollHub
from queuey.metrics import Metrics
from queuey.pages import Page
from queuey.queuecache import QueueCache
from queuey.reading import Reader
from queuey.storage.directory import gather
from queuey.rendering import message_document, render
from queuey.signing import UrlSigner
from queuey.validation import (ListQuery, MessageInput, PostedMessages, QueueParameters, ReadQuery,
                               SigningRequest)
from queuey.visibility import VisibilityTimer

Result = dict[str, Any]


class KeyRing:
    """Maps application keys to applications, comparing every key in constant time."""

    def __init__(self, application_keys: Mapping[str, Sequence[str]]) -> None:
        self._keys = [(key.encode("utf-8"), app) for app, keys in application_keys.items() for key in keys]
        self.applications = frozenset(application_keys)

    def application_for(self, key: str) -> str | None:
        candidate = key.encode("utf-8")
        found = None
        for stored, app in self._keys:  # no early exit: timing says nothing about which key
            if hmac.compare_digest(stored, candidate):
                found = app
        return found


def queue_json(queue: QueueSettings) -> Result:
    return {"queue_name": queue.queue_name, "partitions": queue.partitions, "type": queue.type,
            "consistency": queue.consistency, "principles": list(queue.principles),
            "created": timeuuid.format_ticks(queue.created)}


def message_json(message: Message) -> Result:
    return message_document(message.id, message.partition, message.body, message.content_type)


#: Answers the reads with these tokens with this result (see Queuey.read_messages).
Answer = Callable[[Result, list[Any]], None]


@dataclass(frozen=True)
class _AnswerPage:
    """A page, as a read's result, to an ``Answer`` (equal for equal answers: one call per group)."""

    answer: Answer

    def __call__(self, page: Page, tokens: list[Any]) -> None:
        self.answer(page_result(page), tokens)


def page_result(page: Page) -> Result:
    """A read's answer: the page's messages, and where to go on when it was cut."""
    result: Result = {"status": "ok", "messages": page.encoded()}
    if page.truncated:
        result["truncated"] = True
        result["resume"] = {str(p): after for p, after in page.resume.items()}
    return result


class Queuey:
    """The message store's rules over an IMessageStore."""

    def __init__(self, config: Config, store: IMessageStore, clock: IReactorTime,
                 metrics: Metrics | None = None, rng: random_module.Random | None = None) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.keys = KeyRing(config.application_keys)
        self.signer = UrlSigner(config.signing_secrets)
        self.metrics = metrics or Metrics()
        self.hub = LongPollHub(clock, store, config.poll_interval)
        self.metrics.watch_held(lambda: self.reads_held)
        self.queues = QueueCache(clock, config.queue_cache_seconds)
        #: Called with (application, queue_name) when this process changed or deleted a queue,
        #: so that sibling workers forget it too (see queuey.workers).
        self.on_queue_changed: Any = None
        self.visibility = VisibilityTimer(clock, self.hub.notify)
        self._ids = timeuuid.TimeUUIDGenerator(self._now_ticks)
        self._later_ids = timeuuid.LaterIds()
        self.reader = Reader(config, store, self.hub, clock, self._ids, self.metrics)
        self._random = rng or random_module.Random()

    def _now_ticks(self) -> int:
        return round(self.clock.seconds() * timeuuid.TICKS_PER_SECOND)

    def stop(self) -> None:
        """Release held reads and forget pending wakes (the service stops)."""
        self.visibility.stop()
        self.hub.stop()

    # -- access -------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> str | None:
        """The application an ``Authorization`` header speaks for; None without one."""
        if authorization is None:
            return None
        scheme, _, key = authorization.strip().partition(" ")
        app = self.keys.application_for(key.strip()) if scheme.lower() == "application" else None
        if app is None:
            raise InvalidApplicationKey("The application key is not valid.")
        return app

    def check_application(self, application: str) -> None:
        """NotFound unless ``application`` is configured."""
        if application not in self.keys.applications:
            raise NotFound(f"No application {application!r}.")

    def require_owner(self, principal: str | None, application: str) -> None:
        """What managing queues and posting need: the application's own key."""
        self.check_application(application)
        if principal is None:
            raise MissingApplicationKey("This needs an Authorization: Application <key> header.")
        if principal != application:
            raise AccessDenied(f"This key may not manage the queues of {application!r}.")

    async def _queue(self, application: str, queue_name: str, fresh: bool = False) -> QueueSettings:
        """The queue's settings: from the cache unless ``fresh``, else from the store."""
        self.check_application(application)
        queue = None if fresh else self.queues.get(application, queue_name)
        if queue is not None:
            return queue
        if validation.is_valid_name(queue_name):
            queue = await self.store.get_queue(application, queue_name)
        if queue is None:
            raise NotFound(f"No queue {queue_name!r} in application {application!r}.")
        self.queues.put(queue)
        return queue

    async def _owned_queue(self, principal: str | None, application: str, queue_name: str,
                           fresh: bool = False) -> QueueSettings:
        self.require_owner(principal, application)
        return await self._queue(application, queue_name, fresh)

    def _forget_queue(self, application: str, queue_name: str) -> None:
        self.queues.forget(application, queue_name)
        if self.on_queue_changed is not None:
            self.on_queue_changed(application, queue_name)

    async def _consumable_queue(self, principal: str | None, application: str, queue_name: str,
                                reading: bool) -> QueueSettings:
        """A queue whose messages ``principal`` may read (or, not ``reading``, delete)."""
        queue = await self._queue(application, queue_name)
        if reading and queue.type == "public":
            return queue
        if principal is None:
            raise MissingApplicationKey("This queue needs an Authorization: Application <key> header.")
        allowed = (f"app:{principal}" in queue.principles) if queue.principles else principal == application
        if not allowed:
            raise AccessDenied(f"This key may not {'read' if reading else 'delete'} messages of this queue.")
        return queue

    # -- queues -------------------------------------------------------------

    async def list_queues(self, principal: str | None, application: str, query: ListQuery) -> Result:
        self.require_owner(principal, application)
        queues = await self.store.list_queues(application, query.offset, query.limit)
        listed = [queue_json(q) if query.details else {"queue_name": q.queue_name} for q in queues]
        if query.include_count:
            counts = await gather([self.store.count_messages(q) for q in queues])
            for entry, count in zip(listed, counts):
                entry["count"] = count
        return {"status": "ok", "queues": listed}

    async def create_queue(self, principal: str | None, application: str, wanted: QueueParameters) -> Result:
        self.require_owner(principal, application)
        settings = QueueSettings(
            application=application,
            queue_name=wanted.queue_name or uuid.uuid4().hex,
            partitions=wanted.partitions or 1,
            type=wanted.type or "user",
            consistency=wanted.consistency or "strong",
            principles=wanted.principles or (),
            created=self._now_ticks(),
        )
        stored = await self.store.create_queue(settings)
        return {"status": "ok", **queue_json(stored)}

    async def update_queue(self, principal: str | None, application: str, queue_name: str,
                           wanted: QueueParameters) -> Result:
        queue = await self._owned_queue(principal, application, queue_name, fresh=True)
        if wanted.partitions is not None and wanted.partitions < queue.partitions:
            raise InvalidParameters({"partitions": f"Partitions may only grow (now {queue.partitions})."})
        updated = QueueSettings(
            application, queue.queue_name,
            partitions=wanted.partitions or queue.partitions,
            type=wanted.type or queue.type,
            consistency=wanted.consistency or queue.consistency,
            principles=queue.principles if wanted.principles is None else wanted.principles,
            created=queue.created,
        )
        stored = await self.store.update_queue(updated)
        self._forget_queue(application, queue.queue_name)
        if stored is None:
            raise NotFound(f"No queue {queue_name!r} in application {application!r}.")
        return {"status": "ok", **queue_json(stored)}

    async def queue_info(self, principal: str | None, application: str, queue_name: str) -> Result:
        """What a reader needs to read a queue (partitions, type, consistency), for whoever may read it."""
        queue = await self._consumable_queue(principal, application, queue_name, reading=True)
        return {"status": "ok", "queue_name": queue.queue_name, "partitions": queue.partitions,
                "type": queue.type, "consistency": queue.consistency}

    async def delete_queue(self, principal: str | None, application: str, queue_name: str) -> Result:
        await self._owned_queue(principal, application, queue_name, fresh=True)
        deleted = await self.store.delete_queue(application, queue_name)
        self._forget_queue(application, queue_name)
        if not deleted:
            raise NotFound(f"No queue {queue_name!r} in application {application!r}.")
        return {"status": "ok"}

    async def sign_url(self, principal: str | None, application: str, queue_name: str,
                       wanted: SigningRequest) -> Result:
        """A URL of the queue granting ``wanted.methods`` to whoever holds it, until it expires."""
        queue = await self._owned_queue(principal, application, queue_name)
        expires = int(self.clock.seconds()) + wanted.expires_in
        signed = self.signer.sign(queue.application, queue.queue_name, wanted.methods, expires)
        return {"status": "ok", "url": signed.url, "methods": list(signed.methods), "expires": signed.expires}

    def check_signature(self, application: str, queue_name: str, method: str, params: Mapping[str, str]) -> str:
        """The application a signed URL speaks for (the queue's owner); AccessDenied if it does not hold."""
        self.check_application(application)
        if not self.signer.enabled:
            raise AccessDenied("Signed URLs are off on this server (no [signing] secret).")
        self.signer.check(application, queue_name, method, params, self.clock.seconds())
        return application

    # -- messages -----------------------------------------------------------

    def _check_messages(self, queue: QueueSettings, posted: PostedMessages) -> None:
        """Each message fits the size limit (body and content type), names a partition of ``queue``
        and is delayed at most ``max_delay``."""
        limit = self.config.max_message_bytes
        for index, message in enumerate(posted.messages):
            prefix = f"{index}." if posted.batch else ""
            if message.delay > self.config.max_delay:
                raise InvalidParameters({f"{prefix}delay": f"Must be a number of seconds from 0 to "
                                                           f"{self.config.max_delay}, not {message.delay}."})
            if message.partition is not None and message.partition > queue.partitions:
                raise InvalidParameters({f"{prefix}partition": f"Must be a partition number from 1 to "
                                                               f"{queue.partitions}, not {message.partition}."})
            if len(message.body) + len(message.content_type) > limit:
                where = f"{prefix}body"
                raise BodyTooLarge(f"{where}: a message (body and content type) may hold at most {limit} bytes.",
                                   {where: f"A message (body and content type) may hold at most {limit} bytes."})

    async def post_messages(self, principal: str | None, application: str, queue_name: str,
                            posted: PostedMessages) -> Result:
        """Store one message or a batch, all or nothing."""
        queue = await self._writable_queue(principal, application, queue_name)
        self._check_messages(queue, posted)
        messages = []
        answers = []
        for m, (message_id, ticks) in zip(posted.messages, self._new_ids(posted)):
            partition = m.partition or (1 if queue.partitions == 1 else self._random.randint(1, queue.partitions))
            hex_id, timestamp = f"{message_id.int:032x}", timeuuid.format_ticks(ticks)
            messages.append(NewMessage(message_id, partition, m.body, m.content_type, m.ttl,
                                       render(message_id, partition, m.body, m.content_type, hex_id, timestamp)))
            answers.append({"key": hex_id, "timestamp": timestamp, "partition": partition})
        await self._store_messages(queue, messages)
        return {"status": "ok", "messages": answers}

    async def _writable_queue(self, principal: str | None, application: str, queue_name: str) -> QueueSettings:
        """The queue a write goes to: cached only where the store's write rechecks it."""
        return await self._owned_queue(principal, application, queue_name,
                                       fresh=not self.store.rechecks_queue_on_write)

    def _new_ids(self, posted: PostedMessages) -> list[tuple[uuid.UUID, int]]:
        """One id per message and its time in ticks, dated when it becomes visible: now, or
        ``delay`` seconds on.

        Delayed messages of one batch due at the same time are dated one tick
        (100 ns) apart, so that they keep the batch's order.  A batch without
        delays (the usual one) gets its ids in one go.
        """
        if not any(message.delay for message in posted.messages):
            return self._ids.next_many(len(posted.messages))
        now = self._now_ticks()
        last: dict[int, int] = {}
        ids = []
        for message in posted.messages:
            if not message.delay:
                ids.append(self._ids.next_with_ticks())
                continue
            due = now + message.delay * timeuuid.TICKS_PER_SECOND
            ticks = last[due] = max(due, last.get(due, due - 1) + 1)
            ids.append((self._later_ids.at(ticks), ticks))
        return ids

    async def _store_messages(self, queue: QueueSettings, messages: Sequence[NewMessage]) -> None:
        """Store, then wake the readers of the partitions that got a visible message; a delayed
        message wakes them when its time comes."""
        try:
            await self.store.put_messages(queue, messages)
        except QueueMissing:
            self._forget_queue(queue.application, queue.queue_name)
            raise
        self.metrics.messages_posted.inc(len(messages))
        now = self._ids.now_ticks()
        visible = set()
        for message in messages:
            ticks = timeuuid.ticks_from_uuid(message.id)
            if ticks <= now:
                visible.add(message.partition)
            else:
                self.visibility.schedule(queue.application, queue.queue_name, message.partition, ticks)
        if visible:
            self.hub.notify(queue.application, queue.queue_name, visible)

    async def followable(self, principal: str | None, application: str, queue_name: str,
                         query: ReadQuery) -> tuple[QueueSettings, ReadQuery]:
        """The queue and query of a stream, checked like a range read's (a stream reads forward)."""
        queue = await self._consumable_queue(principal, application, queue_name, reading=True)
        errors = {}
        if query.descending:
            errors["order"] = "A stream reads in ascending order."
        if query.wait:
            errors["wait"] = "A stream waits by itself; it takes no wait."
        if errors:
            raise InvalidParameters(errors)
        return queue, query.for_partitions(queue.partitions)

    @property
    def reads_held(self) -> int:
        """Range reads and streams waiting for messages."""
        return self.hub.held + self.reader.held_reads.held

    async def read_messages(self, principal: str | None, application: str, queue_name: str,
                            query: ReadQuery, answer: Answer | None = None, token: Any = None) -> Result:
        """A range read, held up to ``query.wait`` seconds while nothing matches.

        When a wake-up ends the wait, ``answer`` gets the result first, with ``token`` among
        the tokens of the reads the same wake-up ended with the same ``answer`` (see
        :mod:`queuey.holding`), before this returns it.
        """
        queue = await self._consumable_queue(principal, application, queue_name, reading=True)
        deliver = None if answer is None else _AnswerPage(answer)
        return page_result(await self.reader.held(queue, query.for_partitions(queue.partitions), deliver, token))

    async def get_messages(self, principal: str | None, application: str, queue_name: str,
                           refs: Sequence[MessageRef]) -> Result:
        queue = await self._consumable_queue(principal, application, queue_name, reading=True)
        messages = await self.store.get_messages(queue, self._refs(queue, refs))
        self.metrics.messages_read.inc(len(messages))
        return {"status": "ok", "messages": [message_json(m) for m in messages]}

    async def replace_messages(self, principal: str | None, application: str, queue_name: str,
                               refs: Sequence[MessageRef], message: MessageInput) -> Result:
        """PUT: each listed message gets this body (and TTL), keeping id and timestamp."""
        queue = await self._writable_queue(principal, application, queue_name)
        refs = self._refs(queue, refs)
        self._check_messages(queue, PostedMessages((message,), batch=False))
        ahead = self._now_ticks() + round(self.config.max_future_id_seconds * timeuuid.TICKS_PER_SECOND)
        if any(timeuuid.ticks_from_uuid(ref.id) > ahead for ref in refs):
            raise InvalidParameters({"messages": f"A message id may be at most "
                                                 f"{self.config.max_future_id_seconds:g} seconds ahead of now."})
        await self._store_messages(queue, [NewMessage(ref.id, ref.partition, message.body,
                                                      message.content_type, message.ttl) for ref in refs])
        return {"status": "ok"}

    async def delete_messages(self, principal: str | None, application: str, queue_name: str,
                              refs: Sequence[MessageRef]) -> Result:
        queue = await self._consumable_queue(principal, application, queue_name, reading=False)
        await self.store.delete_messages(queue, self._refs(queue, refs))
        return {"status": "ok"}

    @staticmethod
    def _refs(queue: QueueSettings, refs: Sequence[MessageRef]) -> tuple[MessageRef, ...]:
        for ref in refs:
            if ref.partition > queue.partitions:
                raise InvalidParameters({"messages": f"Partition {ref.partition} is more than the "
                                                     f"queue's {queue.partitions}."})
        return tuple(refs)
