"""A node's worker side: holds slots for the tasks its leader places here, takes their bytes from
the clients directly, runs them in the slots and answers the clients directly.

Credit-based: the worker grants the leader ``slots + prefetch`` credits (less what it holds)
when it follows it, and each ``Done`` it sends returns one, so it never holds more tasks than it
can start soon. It grants ``WORKER_PREFETCH_MAX`` beyond its slots; the leader uses that much only
for short tasks (``WorkerState.free``). For each task the leader sends a ``Task`` header (hold a slot) and tells the
client where to send the bytes; the client's ``Data`` (image + mask) comes in on the node's task
port. Whichever of the two arrives first waits for the other, ``DATA_WAIT`` at most (a hold waits
longer for a big task: ``placement.data_wait_s``, the time to move it at ``DATA_MIN_RATE`` more):

- a slot held with no bytes is freed and the leader told (``Done`` with ``no_data``, so it
  places the task again);
- bytes with no slot held (the leader died between placing and telling us, or a stray client)
  are dropped and their client told ``retry`` (it submits the task to the leader again).

Each task runs in a slot process (``slots.SlotPool``), never on the event loop. The ``Result``
goes to the client on the connection its bytes came by; the ``Done`` to the leader carries no
bytes, only the outcome, the time in the slot and how long the bytes took to come.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mesh import const
from mesh.control.placement import data_wait_s, ewma, service_key
from mesh.execute.slots import Executor, SlotResult
from mesh.wire.protocol import (
    HUNG,
    NO_DATA,
    RETRY,
    WITHDRAWN,
    Bye,
    Data,
    Direct,
    Done,
    Message,
    Ready,
    Result,
    Task,
    task_of,
)
from mesh.wire.transport import Context, Dealer

log = logging.getLogger("lamamesh.worker")
LOCAL = "local"  # Worker.follow's endpoint for its own node's scheduler

Reply = Callable[[bytes, Message, list[Any]], Awaitable[None]]  # (client identity, message, frames)


@dataclass
class _Bytes:
    """A task's bytes that came before the leader's Task."""

    client: bytes
    blobs: list[Any]
    since: float
    withdrawn: bool = False  # not bytes: the client withdrew the task before its Task came
    direct: Direct | None = None  # a ticket's task that came before the ticket's hold (kept under "~ticket")

    def task_id(self, key: str) -> str:
        return self.direct.task_id if self.direct is not None else key


class Worker:
    def __init__(
        self,
        ctx: Context,
        node_id: str,
        host: str,
        pool: Executor,
        *,
        task_port: int = 0,
        prefetch: int = const.WORKER_PREFETCH_MAX,
        vram_mb: int = 0,
        models: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.task_port = task_port
        self.pool = pool
        self.prefetch = prefetch
        self.vram_mb = vram_mb
        self.models = models or []
        self.identity = node_id.encode()
        self.dealer: Dealer = ctx.dealer(identity=self.identity)
        self.running: set[asyncio.Task[None]] = set()
        self.held: dict[str, tuple[Task, float]] = {}  # slots held for tasks whose bytes have not come
        self.tickets: dict[str, tuple[Task, float]] = {}  # slots held for a client's next task (a ticket)
        # tickets whose hold ended unused, kept DATA_WAIT (at most TICKETS_LAPSED_KEPT): their task's bytes
        # may still come, late on a busy link, and then run at once (see ``direct``)
        self.lapsed: OrderedDict[str, tuple[Task, float]] = OrderedDict()
        self.early: OrderedDict[str, _Bytes] = OrderedDict()  # bytes that came before their Task
        self.early_bytes = 0  # their size: bounded by DATA_STAGED_BYTES as well as by count
        self.done = 0
        self.failed = 0
        self.outcomes: Counter[str] = Counter()  # finished tasks by outcome ("ok" or the error code)
        # its slots' times per "model@size-class" (EWMA), sent with each Ready: a leader elected later
        # places by them from its first task instead of taking every worker for the fleet's mean
        self.measured: dict[str, float] = {}
        self.on_finished: Callable[[str, bool, float], None] | None = None  # (model, ok, ms in the slot)
        self.following = ""  # the endpoint of the leader's backend it follows ("local": its own node's)
        # its own node's scheduler, reached by a call instead of a socket while this node leads
        # (no copy, encode, decode or loop wake-up per message); set by the node
        self.local: Callable[[bytes, Message, list[Any]], Awaitable[None]] | None = None
        # answers a client on the node's task port (the connection the task's bytes came by); set by the node
        self.reply: Reply | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.leaving = False
        self.last_ready = 0.0
        self.started = time.monotonic()
        self._finished: deque[float] = deque()  # monotonic times of the tasks finished in the rate window
        self.in_hand = 0  # tasks whose bytes are here, running or waiting for a slot
        self._deferred: list[Message] = []  # Dones held back while the slots have work in hand (see _report)
        self._flush_timer: asyncio.TimerHandle | None = None

    def rate(self, now: float | None = None) -> float:
        """Tasks/s finished over the last ``RATE_WINDOW`` seconds (or since the start, if sooner)."""
        now = time.monotonic() if now is None else now
        while self._finished and now - self._finished[0] > const.RATE_WINDOW:
            self._finished.popleft()
        span = min(const.RATE_WINDOW, max(1.0, now - self.started))
        return len(self._finished) / span

    async def follow(self, endpoint: str) -> None:
        """Follow a leader (leaving any previous one) and grant it our free capacity.
        ``endpoint``: its backend's ``tcp://host:port``, or ``local`` for this node's own scheduler."""
        if endpoint == self.following or self.leaving:
            return
        await self.flush()  # the Dones held back belong to the leader followed so far
        self.dealer.disconnect()
        if endpoint != LOCAL:
            self.dealer.connect_endpoint(endpoint)
        self.following = endpoint  # slots held for the old leader stay held: their bytes may still come
        await self.send_ready()

    async def _send(self, msg: Message) -> None:
        if self.following == LOCAL and self.local is not None:
            await self.local(self.identity, msg, [])
        else:
            await self.dealer.send(msg)

    async def _report(self, done: Done) -> None:
        """Tell the leader a task is over. While more tasks than slots are in hand (every slot has its
        next task here already), the credit this returns is not needed soon: the ``Done`` waits, and
        goes with the next ones as one message (``DONE_HOLD_MAX`` at most), so the leader places their
        successors in one pass, one message to this worker and one to each client. Under a stream of
        short tasks a message per task each way cost more than the tasks (64 KiB on loopback)."""
        self._deferred.append(done)
        if self.in_hand > self.pool.size and len(self._deferred) < const.BUNDLE_MAX:
            if self._flush_timer is None:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(const.DONE_HOLD_MAX, lambda: self._spawn(self.flush()))
            return
        await self.flush()

    async def flush(self) -> None:
        """Send the ``Done``s held back (see ``_report``)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if not self._deferred:
            return
        out, self._deferred = self._deferred, []
        if self.following == LOCAL and self.local is not None:
            for msg in out:
                await self.local(self.identity, msg, [])
        else:
            await self.dealer.send_bundle(out)

    # ---- a task's two halves: the leader's hold, the client's bytes ------------------------------
    def reserve(self, task: Task) -> None:
        """The leader placed ``task`` here: hold a slot until its bytes come (or start it: they came).
        A ticket (no task id): hold a slot for the client's next task, which comes as ``Direct``."""
        if task.ticket and not task.task_id:
            came = self._take_early("~" + task.ticket)
            if came is not None and came.direct is not None:  # the client was quicker than the leader
                run = task_of(came.direct, deadline_s=task.deadline_s, ticket=task.ticket)
                self._start(run, came.client, came.blobs, 0.0)
            else:
                self.tickets[task.ticket] = (task, time.monotonic())
            return
        early = self._take_early(task.task_id)
        if early is None:
            self.held[task.task_id] = (task, time.monotonic())
        elif early.withdrawn:
            self._spawn(self._withdrawn(task.task_id))
        else:
            self._start(task, early.client, early.blobs, 0.0)

    def data(self, client: bytes, msg: Data, blobs: list[Any]) -> None:
        """A client's bytes for a task placed here (by the node's task port), or its withdrawal."""
        held = self.held.pop(msg.task_id, None)
        if held is not None:
            task, since = held
            if msg.withdrawn:
                self._spawn(self._withdrawn(msg.task_id))
            else:
                self._start(task, client, blobs, (time.monotonic() - since) * 1000)
            return
        self._stage(msg.task_id, _Bytes(client, [] if msg.withdrawn else blobs, time.monotonic(), msg.withdrawn))

    def _stage(self, key: str, came: _Bytes) -> None:
        """Keep bytes that came before their hold, within ``DATA_STAGED_MAX`` and ``DATA_STAGED_BYTES``."""
        self._take_early(key)
        self.early[key] = came
        self.early_bytes += sum(len(b) for b in came.blobs)
        while len(self.early) > const.DATA_STAGED_MAX or (
            len(self.early) > 1 and self.early_bytes > const.DATA_STAGED_BYTES
        ):
            key, old = self.early.popitem(last=False)
            self.early_bytes -= sum(len(b) for b in old.blobs)
            if not old.withdrawn:
                why = "too many tasks' bytes came before their placement"
                self._spawn(self._retry(old.client, old.task_id(key), why))

    def direct(self, client: bytes, msg: Direct, blobs: list[Any]) -> None:
        """A task sent straight here under a ticket: run it in the slot the ticket holds. One whose hold
        has not come is kept like early bytes (the leader sends the hold before the client hears of the
        ticket, but on another connection); never claimed, it is answered ``retry`` after ``DATA_WAIT``
        and the client submits it plainly. One whose hold ended unused (``lapsed``, within ``DATA_WAIT``)
        runs at once, once."""
        held = self.tickets.pop(msg.ticket, None)
        late = self.lapsed.pop(msg.ticket, None) if held is None else None
        if not msg.task_id:  # the client let it go: the slot and the leader's credit come back now
            if held is not None:
                let_go = Done("", False, NO_DATA, "the client let the ticket go", self.node_id, ticket=msg.ticket)
                self._spawn(self._send(let_go))
            return
        if late is not None:
            # its hold ended before the bytes came (they queued behind others on the client's busy link).
            # The leader recorded the task here when its Submit came, so it runs here now; kept for a hold
            # that might still come, it waited DATA_WAIT (10 s) for nothing and was then sent again
            log.info("task %s came %.1f s after its ticket's hold ended; running it", msg.task_id[:12],
                     time.monotonic() - late[1])  # fmt: skip
            self._start(task_of(msg, deadline_s=late[0].deadline_s, ticket=msg.ticket), client, blobs, 0.0)
            return
        if held is None:  # its hold may still be on its way from the leader: kept like early bytes
            self._stage("~" + msg.ticket, _Bytes(client, blobs, time.monotonic(), direct=msg))
            return
        self._start(task_of(msg, deadline_s=held[0].deadline_s, ticket=msg.ticket), client, blobs, 0.0)

    def _take_early(self, task_id: str) -> _Bytes | None:
        got = self.early.pop(task_id, None)
        if got is not None:
            self.early_bytes -= sum(len(b) for b in got.blobs)
        return got

    async def _withdrawn(self, task_id: str) -> None:
        """Its client has the answer already: the slot held for it is free, and the leader drops it."""
        log.debug("task %s withdrawn by its client", task_id[:12])
        await self._send(Done(task_id, False, WITHDRAWN, "the client has its answer already", self.node_id))

    def _start(self, task: Task, client: bytes, blobs: list[Any], fetch_ms: float) -> None:
        self.in_hand += 1
        self._spawn(self._run_one(task, client, blobs, fetch_ms))

    def _spawn(self, coro: Any) -> None:
        t = self._tg.create_task(coro) if self._tg is not None else asyncio.get_running_loop().create_task(coro)
        self.running.add(t)
        t.add_done_callback(self.running.discard)

    async def _retry(self, client: bytes, task_id: str, why: str) -> None:
        if self.reply is not None:
            await self.reply(client, Result(task_id, False, RETRY, why, self.node_id), [])

    async def sweep(self, now: float) -> None:
        """Free the slots held too long without bytes (the leader places those tasks again) and drop
        bytes that no placement claimed (their clients submit again)."""
        for task_id, (task, since) in list(self.held.items()):
            wait = data_wait_s(task.size)  # DATA_WAIT, longer for a big photo on a slow link
            if now - since >= wait:
                del self.held[task_id]
                log.info("task %s: its bytes did not come within %.3g s; slot freed", task_id[:12], wait)
                await self._send(Done(task_id, False, NO_DATA, "the bytes never came", self.node_id))
        for ticket, (hold, since) in list(self.tickets.items()):
            if now - since >= (hold.ttl_s or const.TICKET_TTL):
                del self.tickets[ticket]
                self.lapsed[ticket] = (hold, now)
                while len(self.lapsed) > const.TICKETS_LAPSED_KEPT:
                    self.lapsed.popitem(last=False)
                await self._send(Done("", False, NO_DATA, "the ticket was not used", self.node_id, ticket=ticket))
        while self.lapsed and now - next(iter(self.lapsed.values()))[1] >= const.DATA_WAIT:
            self.lapsed.popitem(last=False)
        while self.early:
            key, early = next(iter(self.early.items()))
            if now - early.since < const.DATA_WAIT:
                break
            self._take_early(key)
            if not early.withdrawn:
                await self._retry(
                    early.client, early.task_id(key), f"no placement here for this task within {const.DATA_WAIT:g} s"
                )

    async def _sweeper(self) -> None:
        while True:
            await asyncio.sleep(const.WORKER_SWEEP)
            await self.sweep(time.monotonic())

    async def send_ready(self) -> None:
        """(Re)grant the leader our whole free capacity; also sent again when the leader's heartbeat
        does not list us (a Ready that arrived before it knew it leads is lost)."""
        if not self.following or self.leaving:
            return
        self.last_ready = time.monotonic()
        held = len(self.held) + len(self.tickets)
        credits = max(0, self.pool.size + self.prefetch - len(self.running) - held)
        ready = Ready(
            node_id=self.node_id,
            credits=credits,
            slots=self.pool.size,
            provider=self.pool.provider,
            host=self.host,
            vram_mb=self.vram_mb,
            models=tuple(self.models),
            task_port=self.task_port,
            measured=dict(self.measured),
        )
        await self._send(ready)

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            tg.create_task(self._sweeper(), name="worker-sweep")
            while True:
                msg, _ = await self.dealer.recv()
                if isinstance(msg, Task):
                    self.reserve(msg)

    async def _run_one(self, task: Task, client: bytes, blobs: list[Any], fetch_ms: float) -> None:
        try:
            done = await self._run(task, client, blobs, fetch_ms)
        finally:
            self.in_hand -= 1
        await self._report(done)

    async def _run(self, task: Task, client: bytes, blobs: list[Any], fetch_ms: float) -> Done:
        """Run it in a slot and answer the client; the ``Done`` for the leader is returned."""
        size = sum(len(b) for b in blobs)
        if len(blobs) != 2:
            res = SlotResult(False, error_code="input", error="a task needs two frames: image and mask")
        else:
            try:
                timeout = task.deadline_s or None
                res = await self.pool.run(task, blobs[0], blobs[1], timeout)  # frames: buffers, resent without a copy
            except Exception as exc:  # never lose a task to a bug: answer it with the error
                log.exception("task %s raised", task.task_id)
                res = SlotResult(False, error_code="failed", error=f"{type(exc).__name__}: {exc}")
        self._finished.append(time.monotonic())
        self.outcomes["ok" if res.ok else res.error_code or "failed"] += 1
        if self.on_finished is not None:
            self.on_finished(task.model, res.ok, res.total_ms)
        if res.ok:
            self.done += 1
            key = service_key(task.model, task.pixels)
            if key in self.measured or len(self.measured) < const.READY_MEASURED_MAX:
                self.measured[key] = ewma(self.measured.get(key), res.total_ms)
        else:
            self.failed += 1
            if res.error_code == "failed":
                log.warning("task %s failed: %s", task.task_id, res.error)
        result = Result(
            task.task_id, res.ok, res.error_code, res.error, self.node_id, res.out_format, res.total_ms, res.notes
        )
        if self.reply is not None and res.error_code != HUNG:  # hung: the leader places it elsewhere, not an answer
            await self.reply(client, result, [res.data] if res.ok else [])
        return Done(
            task.task_id,
            res.ok,
            res.error_code,
            res.error,
            self.node_id,
            res.out_format,
            res.total_ms,
            fetch_ms=fetch_ms,
            size=0 if task.ticket else size,  # a ticket's bytes came when the client had them: nothing to learn
            ticket=task.ticket,
        )

    async def leave(self) -> None:
        """Tell the leader to give our queued tasks to others; the running ones still answer."""
        self.leaving = True
        await self.flush()
        if self.following:
            await self._send(Bye(self.node_id))

    def close(self) -> None:
        self.dealer.close()
