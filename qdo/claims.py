"""Rule 3, ownership: follow the published assignment, claim what this worker gains, hand over what it loses.

A worker processes a partition only while it holds its owner node
``owners/<app>/<queue>/<n>``. It claims a partition by creating that node,
waiting by watch while the previous owner still holds it (and giving up the
wait, taking nothing, if the partition is assigned elsewhere meanwhile); then
it opens the partition's offset (which fences earlier owners, rule 4) and
starts a runner. It hands a partition over by stopping its runner (which
finishes the message in hand and commits) and deleting the owner node.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from kazoo.exceptions import NoNodeError
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from qdo.assign import Partition
from qdo.layout import GroupPaths, loads
from qdo.leader import names
from qdo.metrics import WorkerMetrics
from qdo.offsets import ZooKeeperOffsets
from qdo.runner import PartitionRunner
from qdo.session import Abandon, Session

log = Logger()


class SlotState(enum.Enum):
    IDLE = "idle"
    CLAIMING = "claiming"
    RUNNING = "running"
    RELEASING = "releasing"


@dataclass(eq=False)
class Slot:
    """One partition this worker has (or had, or will have) to do with."""

    partition: Partition
    desired: bool = False
    state: SlotState = SlotState.IDLE
    task: defer.Deferred[Any] | None = None
    wait: defer.Deferred[Any] | None = None
    runner: PartitionRunner | None = None


MakeRunner = Callable[[Partition, "str | None", Callable[[PartitionRunner, str], None]], PartitionRunner]


class Claims:
    """The slots of one worker, reconciled with the assignment in force."""

    def __init__(self, session: Session, paths: GroupPaths, worker: str, token: str, offsets: ZooKeeperOffsets,
                 make_runner: MakeRunner, clock: IReactorTime, retry_after: float,
                 metrics: WorkerMetrics) -> None:
        self.session = session
        self.zk = session.zk
        self.paths = paths
        self.me = worker
        self.token = token
        self.offsets = offsets
        self.make_runner = make_runner
        self.clock = clock
        self.retry_after = retry_after
        self.metrics = metrics
        self.slots: dict[Partition, Slot] = {}
        self.generation = 0

    def runners(self) -> list[PartitionRunner]:
        return [s.runner for s in self.slots.values() if s.runner is not None]

    def held(self) -> list[Partition]:
        return sorted(p for p, s in self.slots.items() if s.state == SlotState.RUNNING)

    # -- following the assignment ------------------------------------------------------

    async def follow(self, epoch: int) -> None:
        """Apply every new generation of the assignment, for as long as the epoch lasts."""
        path = self.paths.assignment
        while True:
            self.session.check(epoch)
            changed, watch = self.session.watcher()
            try:
                value, _ = await self.session.retry(lambda: self.zk.get(path, watch=watch))
            except NoNodeError:
                if await self.session.retry(lambda: self.zk.exists(path, watch=watch)) is not None:
                    continue
                await self.session.tracked(changed, epoch)
                continue
            self.session.check(epoch)
            self.apply(loads(value), epoch)
            await self.session.tracked(changed, epoch)

    def apply(self, document: dict[str, Any], epoch: int) -> None:
        generation = int(document.get("generation", 0))
        if generation <= self.generation:
            return
        self.generation = generation
        self.metrics.rebalances.inc()
        mine = {Partition.from_key(k) for k, w in document.get("assignment", {}).items() if w == self.me}
        current = {p for p, s in self.slots.items() if s.desired}
        gained, lost = mine - current, current - mine
        log.info("Assignment generation {generation}: {me} keeps {kept}, gains [{gained}], hands over [{lost}]",
                 generation=generation, me=self.me, kept=len(mine & current), gained=names(gained),
                 lost=names(lost))
        for partition in sorted(lost):
            self.want(partition, False, epoch)
        for partition in sorted(gained):
            self.want(partition, True, epoch)

    def want(self, partition: Partition, wanted: bool, epoch: int) -> None:
        slot = self.slots.get(partition)
        if slot is None:
            slot = self.slots[partition] = Slot(partition)
        slot.desired = wanted
        if not wanted and slot.wait is not None and not slot.wait.called:
            slot.wait.cancel()
        if slot.task is None:
            slot.task = self.session.spawn(self._reconcile(slot, epoch), f"managing {partition.name}")

            def finished(result: Any) -> Any:
                slot.task = None
                return result
            slot.task.addBoth(finished)

    async def _reconcile(self, slot: Slot, epoch: int) -> None:
        while True:
            self.session.check(epoch)
            if slot.desired and slot.state == SlotState.IDLE:
                await self._claim(slot, epoch)
            elif not slot.desired and slot.state == SlotState.RUNNING:
                await self.release(slot, epoch)
            else:
                break
        if not slot.desired and slot.state == SlotState.IDLE and self.slots.get(slot.partition) is slot:
            del self.slots[slot.partition]

    # -- claiming and handing over ---------------------------------------------------------

    async def _claim(self, slot: Slot, epoch: int) -> None:
        partition = slot.partition
        path = self.paths.owner(partition)
        data = orjson.dumps({"worker": self.me, "token": self.token})
        slot.state = SlotState.CLAIMING
        waited_for = None

        def held(value: bytes, stat: Any) -> None:
            """Say whom it waits for, again only when that changes."""
            nonlocal waited_for
            holder = loads(value).get("worker")
            if holder != waited_for:
                waited_for = holder
                log.info("{partition}: waiting for {holder} to hand it over", partition=partition.name,
                         holder=holder)

        async def wait(gone: defer.Deferred[Any]) -> None:
            """Cancellable through slot.wait: losing the partition meanwhile abandons the claim."""
            slot.wait = gone
            try:
                await self.session.tracked(gone, epoch)
            except defer.CancelledError:
                raise Abandon() from None
            finally:
                slot.wait = None

        try:
            await self.session.acquire_ephemeral(path, lambda: data, epoch, held=held, wait=wait,
                                                 wanted=lambda: slot.desired, makepath=True)
            offset = await self.offsets.open(partition)
            self.session.check(epoch)
            if not slot.desired:
                raise Abandon()
        except Abandon:
            await self.session.delete_own(path)
            slot.state = SlotState.IDLE
            return
        except BaseException:
            slot.state = SlotState.IDLE
            raise
        slot.runner = self.make_runner(partition, offset, lambda r, why: self._runner_ended(slot, r, why, epoch))
        slot.state = SlotState.RUNNING
        log.info("{partition}: claimed, resuming after {offset}", partition=partition.name, offset=offset or "the start")
        slot.runner.start()

    async def release(self, slot: Slot, epoch: int) -> None:
        """Stop the runner (it commits), then delete the owner node."""
        slot.state = SlotState.RELEASING
        runner, slot.runner = slot.runner, None
        offset = None
        if runner is not None:
            await runner.stop()
            offset = runner.offset
        self.offsets.close(slot.partition)
        self.session.check(epoch)
        await self.session.delete_own(self.paths.owner(slot.partition))
        slot.state = SlotState.IDLE
        log.info("{partition}: handed over at offset {offset}", partition=slot.partition.name, offset=offset or "-")

    def _runner_ended(self, slot: Slot, runner: PartitionRunner, why: str, epoch: int) -> None:
        if slot.runner is not runner or slot.state != SlotState.RUNNING or why in ("stopped", "dropped"):
            return
        # Fenced or failed on its own: give the partition up, then maybe claim it again later.
        slot.runner = None
        slot.state = SlotState.RELEASING
        self.offsets.close(slot.partition)

        async def give_up() -> None:
            await self.session.delete_own(self.paths.owner(slot.partition))
            slot.state = SlotState.IDLE
            await self.session.tracked(task.deferLater(self.clock, self.retry_after, lambda: None), epoch)
            if slot.desired and slot.task is None and self.slots.get(slot.partition) is slot:
                self.want(slot.partition, True, epoch)
        self.session.spawn(give_up(), f"giving up {slot.partition.name}")

    # -- the end of an epoch, or of the worker ------------------------------------------------

    def drop_all(self) -> list[Partition]:
        """The session is lost: every partition dropped, nothing committed. Returns what was held."""
        dropped = sorted(p for p, s in self.slots.items() if s.state != SlotState.IDLE)
        for slot in self.slots.values():
            if slot.runner is not None:
                slot.runner.drop()
                slot.runner = None
            slot.state = SlotState.IDLE
            self.offsets.close(slot.partition)
        self.slots.clear()
        self.generation = 0
        return dropped

    def release_all(self, epoch: int) -> list[defer.Deferred[None]]:
        """The worker stops: hand over everything it runs; abandon the claims under way."""
        for slot in self.slots.values():
            slot.desired = False
            if slot.wait is not None and not slot.wait.called:
                slot.wait.cancel()
        return [defer.ensureDeferred(self.release(s, epoch)) for s in list(self.slots.values())
                if s.state == SlotState.RUNNING]
