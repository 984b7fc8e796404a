"""The scheduler every node runs: it decides only while its node leads, and never carries bytes.

Front: the node's task ROUTER (clients' ``Submit``, ``Ping``, ``StatusRequest``; and the
``Data`` a client sends to this node as a worker, handed to ``on_data``). Back: a ROUTER the
workers of every node connect their DEALER to while this node leads. The leader queues task
headers (interactive ahead of batch, FIFO within each) and ``placement.plan`` places each on
the worker expected to finish it soonest, never beyond the credits that worker granted: it
sends the worker a ``Task`` (hold a slot) and the client a ``Place`` (send the bytes there).
The worker answers the client directly and reports ``Done`` here without the bytes; a task
whose bytes never reached its worker (``no_data``) is placed again, ``DATA_TRIES`` times at most;
one its client withdrew (``withdrawn``: the client had its answer already) is dropped.

While the node does not lead, a ``Submit`` is answered ``moved`` with the leader's
address, and the client resubmits there. A leader that steps down (a partition healed
and a higher term won) or leaves hands every task it holds back the same way.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import statistics
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from mesh import const
from mesh.cluster.tickets import Tickets
from mesh.control import placement
from mesh.errors import Overloaded
from mesh.frozen import evolve
from mesh.kinds import Policy, Priority, Role
from mesh.wire.protocol import (
    HUNG,
    MOVED,
    NO_DATA,
    WITHDRAWN,
    Bye,
    Cancel,
    Data,
    Direct,
    Done,
    Message,
    ModelPart,
    ModelWant,
    NodeRow,
    Ping,
    Place,
    Pong,
    Ready,
    Result,
    Status,
    StatusRequest,
    Submit,
    Task,
    encode,
    submit_of,
    task_of,
)
from mesh.wire.transport import Router

log = logging.getLogger("lamamesh.scheduler")
PRIORITY: dict[str, int] = {Priority.INTERACTIVE: 0, Priority.BATCH: 1}
AHEAD_FRESH = 1.0  # s a lone client's next ticket planned ahead stays usable (idle estimates go stale in 2)


@dataclass(frozen=True)
class Ahead:
    """A lone client's next ticket, planned once its last task was done (``Scheduler._plan_ahead``): used
    when its next task comes if nothing else happened in the scheduler since (``gen``), for a task like
    the one it was planned for."""

    client: bytes
    gen: int
    until: float  # monotonic: the plan is not used after (``AHEAD_FRESH``, or an idle worker's figures going stale)
    needs: placement.TaskNeeds
    chosen: placement.Placement | None
    measured: bool
    estimate_ms: float  # the task's slot time on this node's worker, to charge it there


_HOLD, _OFFER = Task(), Place()  # a ticket's hold and offer are these with their fields set (``evolve``: per task)
_LOAD = placement.WorkerLoad(node_id="", credits=0, slots=1)  # WorkerState.load's, the same way
ABANDONED = "abandoned"  # the outcome of a task dropped because its client went silent
CANCELLED = "cancelled"  # the outcome of a task its client cancelled (it stopped)


@dataclass
class Pending:
    task: Task
    client: bytes
    seq: int
    submitted: float
    worker: bytes | None = None
    deadline: float = 0.0  # monotonic: past it, placed elsewhere (or failed after TASK_TRIES)
    expired: int = 0  # placements that went past their deadline
    avoid: str = ""  # node id of the worker its last placement expired on
    turn: int = 0  # its client's fair-share round (see Scheduler._turn_of)
    by_ticket: bool = False  # placed by its client's ticket: its bytes went straight to the worker
    lone: bool = False  # came with its bytes to this node's worker (Direct(submit)): its next ticket rides on it
    placed: float = 0.0  # monotonic time it was last sent to a worker
    _needs: placement.TaskNeeds | None = None

    @property
    def key(self) -> tuple[int, int, int]:
        return (PRIORITY.get(self.task.priority, 1), self.turn, self.seq)

    def needs(self) -> placement.TaskNeeds:
        if self._needs is None:  # built once: a placement pass asks for it per worker
            t = self.task
            self._needs = placement.TaskNeeds(t.model, t.pixels, t.session, t.requires, t.size, self.avoid, self.client)
        return self._needs


@dataclass
class ClientLink:
    """What one client's tasks show of its link: the times between two of its tasks' bytes reaching the
    same worker (back to back on one connection, that is the time one task's bytes take on the
    client's link), the least time from placement to bytes, and its tasks' model time; so how many
    workers its link can keep busy."""

    last: dict[str, float] = field(default_factory=dict)  # node id -> monotonic time its last bytes came
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=8))  # ms between two arrivals there
    fetch_ms: float | None = None  # the least time from a task's placement to its bytes being there
    model_ms: float | None = None

    def feeds(self) -> int:
        """Workers it can keep busy (0: not known yet): its model time over its bytes' time, with headroom.
        Its bytes' time: the median gap, or the least fetch while no worker has had two (both are at
        least what one task's bytes take on its link, so this never counts more workers than it feeds)."""
        if self.model_ms is None or self.fetch_ms is None:
            return 0
        took = min(statistics.median(self.gaps), self.fetch_ms) if self.gaps else self.fetch_ms
        return placement.workers_fed(self.model_ms, max(1.0, took))


@dataclass
class _Outgoing:
    """What one placement pass sends: ``Task``s per worker, ``Place``s per client (a bundle each)."""

    tasks: dict[bytes, list[Message]] = field(default_factory=dict)
    places: dict[bytes, list[Message]] = field(default_factory=dict)

    async def send(self, back: Router, front: Router) -> None:
        for ident, msgs in self.tasks.items():
            await back.send_bundle(ident, msgs)
        for client, msgs in self.places.items():
            await front.send_bundle(client, msgs)


@dataclass
class WorkerState:
    identity: bytes
    node_id: str
    slots: int
    credits: int
    provider: str = ""
    host: str = ""
    vram_mb: int = 0
    models: frozenset[str] | None = None
    assigned: dict[str, float] = field(default_factory=dict)  # task id -> expected ms
    service_ms: dict[str, float] = field(default_factory=dict)
    done: int = 0
    local: bool = False  # this node's own worker, reached by a call (Scheduler.local_worker)
    addr: str = ""  # host:task_port where clients send it the bytes
    ms_per_mib: float | None = None  # EWMA: ms from its slot being held to the bytes being there, per MiB
    rates: dict[str, float] = field(default_factory=dict)  # the same per placement.bytes_class
    measured_at: float = 0.0  # monotonic time ms_per_mib last learned something
    floor_ms: float | None = None  # EWMA of ms between its answers while all its slots were busy, x slots
    floor_at: float = 0.0  # monotonic time floor_ms last learned something
    last_done: float = 0.0  # monotonic time of its last answer, or of the work that ended its idling
    busy: float | None = None  # EWMA: share of its slots' time spent running tasks (model ms over answers' gaps)
    waits: float | None = None  # EWMA: how long a task's bytes waited there for a slot, in its model times
    model_ms: float | None = None  # EWMA of its tasks' time in a slot, any model (for prefetch)
    fetch_low_ms: float | None = None  # its tasks' bytes' time to come when nothing queued ahead (for prefetch)
    headroom: int = const.WORKER_PREFETCH_MAX  # how far beyond its slots its grant goes (Worker.send_ready)

    def charge(self, task_id: str, estimate_ms: float, now: float) -> None:
        """``task_id`` sent to it, expected to take ``estimate_ms``. A turn is timed from its last
        answer, or from now when it was idle: the idle time before is no part of any task's turn (a
        worker idle for 100 ms, then given two tasks, measured a 100 ms turn and got no work again)."""
        if not self.assigned:
            self.last_done = now
        self.assigned[task_id] = estimate_ms

    def prefetch(self) -> int:
        """How many tasks it holds beyond its slots: ``WORKER_PREFETCH`` (enough that bytes on their way
        keep its slots fed on a LAN), more when its tasks are short, as many as ``PREFETCH_COVER_MS`` of
        its slots' work (its whole headroom at most). Short tasks cost more in control messages than in
        their slots: a deeper pipeline takes their bytes in bursts and returns their ``Done``s together
        (``Worker._report``), so a pass places several at a time. Unmeasured: the least."""
        least = min(const.WORKER_PREFETCH, self.headroom)
        if self.model_ms is None or self.fetch_low_ms is None:
            return least
        turn = max(1e-3, self.model_ms + self.fetch_low_ms)
        return max(least, min(self.headroom, int(const.PREFETCH_COVER_MS * self.slots / turn)))

    def free(self) -> int:
        """Tasks it may be sent now: its credits less the part of its grant kept back while its tasks are
        not short. The worker's grant counts everything it has in hand (tasks, tickets' holds, a hung
        slot's task), and every task or hold sent spends a credit, so this is exact: never more in hand
        than its slots and ``prefetch()``."""
        return self.credits - (self.headroom - self.prefetch())

    def finish_ms(self, estimate_ms: float) -> float:
        """When a task of ``estimate_ms`` sent now would be done: its slots work off what is assigned first."""
        return sum(self.assigned.values()) / max(1, self.slots) + estimate_ms

    def load(self, now: float | None = None) -> placement.WorkerLoad:
        """What placement sees of it. A transfer estimate that an idle worker has not refreshed for
        ``TRANSFER_ESTIMATE_STALE`` reads as unknown (the fleet's stands in): a worker judged slow once
        gets no work, so its estimate would never learn otherwise, and it would sit idle for good."""
        rate, rates, floor = self.ms_per_mib, self.rates, self.floor_ms or 0.0
        if now is not None and not self.assigned:  # idle
            if now - self.measured_at > const.TRANSFER_ESTIMATE_STALE:
                rate, rates = None, {}
            if now - self.floor_at > const.TRANSFER_ESTIMATE_STALE:
                floor = 0.0  # the same for its turn time: unknown, not what it was long ago
        return evolve(  # built like a message (``evolve``): asked per worker per task placed
            _LOAD,
            node_id=self.node_id,
            credits=self.free(),
            slots=self.slots,
            assigned_ms=sum(self.assigned.values()),
            service_ms=dict(self.service_ms),
            models=self.models,
            provider=self.provider,
            vram_mb=self.vram_mb,
            assigned=len(self.assigned),
            ms_per_mib=rate,
            rates=dict(rates),
            floor_ms=floor,
        )


def _ticket_needs(t: Task) -> placement.TaskNeeds:
    """What placement weighs for a ticket: a task like ``t`` (its model, size and kind), no crew."""
    return placement.TaskNeeds(t.model, t.pixels, t.session, t.requires, t.size)


class Scheduler:
    def __init__(
        self,
        node_id: str,
        mesh: str,
        front: Router,
        back: Router,
        advertised: str,
        policy: str = Policy.COMPLETION,
    ) -> None:
        self.node_id = node_id
        self.mesh = mesh
        self.front = front
        self.back = back
        self.advertised = advertised  # host:task_port of this node
        self.policy = policy  # completion | least-loaded (the benchmarks' contrast)
        self.leading = False
        self.term = 0
        self.leader_addr = ""  # host:task_port of the node that leads ("" none yet)
        self.leader_id = ""
        self.members: list[str] = []  # host:task_port of every live member, for clients
        self.gossip_port = 0
        self.queue: list[tuple[tuple[int, int, int], str]] = []
        self.tasks: dict[str, Pending] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.affinity: dict[str, str] = {}
        self.per_client: Counter[bytes] = Counter()  # tasks held per client
        # per client with tasks held: the workers its tasks go to, each with its answers when the crew last changed
        self.crews: dict[bytes, dict[str, int]] = {}
        self.links: dict[bytes, ClientLink] = {}  # per client with tasks held: what its link and tasks take
        # clients whose tasks, by what the mesh measured before, keep every worker busy: no crew holds them back
        self.wide: set[bytes] = set()
        self.client_seen: dict[bytes, float] = {}  # when each client holding tasks was last heard
        self.refused: Counter[str] = Counter()  # worker messages refused, by why (status, metrics)
        self._last_sweep = 0.0
        self.outcomes: Counter[str] = Counter()
        self.recent: deque[dict[str, Any]] = deque(maxlen=const.STATUS_RECENT)  # latest outcomes, for status
        self.accepting = True
        self.status_rows: Callable[[], tuple[NodeRow, ...]] | None = None  # the node's view of every member
        self.on_ping: Callable[[Ping], None] | None = None  # the node learns pinging peers
        self.on_model_want: Callable[[ModelWant], Awaitable[tuple[ModelPart, list[bytes]]]] | None = None
        self.max_queued_per_client = const.MAX_QUEUED_PER_CLIENT
        self.model_names: frozenset[str] = frozenset()  # every model name the registry knows
        # this node's worker, handed tasks by a call while it follows us (see Worker.local)
        self.local_worker: Callable[[Task], None] | None = None
        # this node's worker, given the bytes clients send here for the tasks placed on it
        self.on_data: Callable[[bytes, Data, list[Any]], None] | None = None
        self._seq = itertools.count()
        self._turns: dict[tuple[bytes, str], int] = {}  # (client, priority) -> the round of its last task queued
        self._vturn: dict[str, int] = {}  # priority -> the round of its last task placed
        self._changed = asyncio.Event()
        self._bursts = 0  # messages being handled as a burst: their placement pass waits for its end
        self._want_dispatch = False
        self._soon: asyncio.Task[None] | None = None  # a pass asked for by this node's own worker
        self.on_direct: Callable[[bytes, Direct, list[Any]], None] | None = None  # this node's worker, a ticket's task
        self.tickets = Tickets()  # slots held ahead for clients' next tasks
        # task id -> (its client, the offer of its next ticket): a lone task's ``Direct(submit)``, answered
        # by this node's worker, gets its next ticket with its ``Result``, one message (see ``answer``)
        self.riding: dict[str, tuple[bytes, Place]] = {}
        self.direct = 0  # tasks that came by a ticket (a count for the tests)
        # one more each time something placement reads may have changed (workers' loads and figures, the
        # queue, affinity, roles), where it changes: a plan made ahead (``_plan_ahead``) is good while it
        # is unchanged
        self.gen = 0
        self.ahead: Ahead | None = None
        self.planned_ahead = 0  # lone tasks whose next ticket came from a plan made ahead (a count for the tests)
        self.ticket_ttl = const.TICKET_TTL  # 0: no tickets (the unit tests of plain placement)
        # how far beyond its slots a worker's grant goes (Worker.send_ready); the unit tests of plain
        # placement set WORKER_PREFETCH: a grant is then exactly what may be sent
        self.headroom = const.WORKER_PREFETCH_MAX

    # ---- role ------------------------------------------------------------------------
    async def set_role(self, leader_id: str, leader_addr: str, term: int) -> None:
        """Told by the node after each election decision."""
        self.gen += 1
        was = self.leading
        self.leader_id, self.leader_addr, self.term = leader_id, leader_addr, term
        self.leading = leader_id == self.node_id
        if was and not self.leading:
            await self.hand_back(f"node {self.node_id} no longer leads")
        elif self.leading and not was:
            self.workers.clear()
            self.tickets.clear()
            self.riding.clear()
        self._changed.set()

    async def hand_back(self, why: str) -> None:
        """Answer every task not yet placed with ``moved`` so its client resubmits to the leader; the
        placed ones are with their workers, which answer the clients directly."""
        self.gen += 1
        n = 0
        for task_id, p in list(self.tasks.items()):
            if p.worker is None:
                n += 1
                await self.front.send(p.client, Result(task_id, False, MOVED, self.leader_addr, self.node_id))
        self.tasks.clear()
        self.queue.clear()
        self.per_client.clear()
        self.crews.clear()
        self.links.clear()
        self.wide.clear()
        self.client_seen.clear()
        self._turns.clear()
        self._vturn.clear()
        self.workers.clear()
        self.tickets.clear()
        self.riding.clear()
        if n:
            log.info("%s: handed %d tasks back to their clients", why, n)

    # ---- clients -------------------------------------------------------------------
    async def serve_front(self) -> None:
        await self._serve(self.front, self._on_front, "a client")

    async def _serve(
        self, sock: Router, handle: Callable[[bytes, Message, list[Any]], Awaitable[None]], who: str
    ) -> None:
        """Receive from ``sock`` forever, handing each message to ``handle``. The messages already
        waiting are handled as one burst (``BURST_MAX`` at most) and placed by one ``dispatch`` pass
        after it: under load a pass per message cost more than the messages (64 submits read back to
        back made 64 passes, each placing one task)."""
        while True:
            got: tuple[bytes, Message, list[Any]] | None = await sock.recv()
            handled = 0
            self._bursts += 1
            try:
                while got is not None:
                    peer, msg, blobs = got
                    try:
                        await handle(peer, msg, blobs)
                    except Exception:  # a bug handling one message must not take the node down
                        log.exception("error handling %s from %s", msg.t, who)
                    handled += 1
                    got = sock.recv_now() if handled < const.BURST_MAX else None
            finally:
                self._bursts -= 1
            if self._want_dispatch:
                await self.kick()
            await asyncio.sleep(0)  # the heartbeats and the other loop take their turn

    async def kick(self) -> None:
        """Ask for a placement pass: now, or at the end of the burst being handled."""
        if self._bursts:
            self._want_dispatch = True
            return
        self._want_dispatch = False
        await self.dispatch()

    def pong(self, nonce: int) -> Pong:
        return Pong(
            nonce=nonce,
            node_id=self.node_id,
            mesh=self.mesh,
            leader_id=self.leader_id,
            leader_addr=self.leader_addr,
            term=self.term,
            host=self.advertised.rsplit(":", 1)[0],
            gossip_port=self.gossip_port,
            members=tuple(self.members),
        )

    async def _on_front(self, client: bytes, msg: Message, blobs: list[Any]) -> None:
        if client in self.client_seen:
            self.client_seen[client] = time.monotonic()
        if isinstance(msg, Data):
            if self.on_data is not None:
                self.on_data(client, msg, blobs)
        elif isinstance(msg, Direct):
            if msg.submit and msg.task_id:  # a lone task for this node on the leader connection: its Submit first
                await self._submit(client, submit_of(msg), ride=True)
            if self.on_direct is not None:
                self.on_direct(client, msg, blobs)
        elif isinstance(msg, Submit):
            await self._submit(client, msg)
        elif isinstance(msg, Cancel):
            if client in self.per_client:
                n = self._drop_client(client, CANCELLED)
                log.info("client %s cancelled: dropped its %d tasks", client.hex(), n)
                await self.kick()
        elif isinstance(msg, Ping):
            if msg.node_id and self.on_ping is not None:
                self.on_ping(msg)
            await self.front.send(client, self.pong(msg.nonce))
        elif isinstance(msg, StatusRequest):
            await self.front.send(client, self.status())
        elif isinstance(msg, ModelWant) and self.on_model_want is not None:
            part, data = await self.on_model_want(msg)
            await self.front.send(client, part, data)
        else:
            log.debug("ignored %s from a client", msg.t)

    def _record(self, task_id: str, node_id: str, code: str, error: str, ms: float) -> None:
        log.debug("answered %s: %s", task_id[:40], code)
        error = error if len(error) <= 300 else error[:300] + "..."  # status keeps 20 of these
        self.outcomes[code] += 1
        self.recent.append(
            {
                "at": round(time.time(), 3),
                "task": task_id,
                "node": node_id,
                "outcome": code,
                "ms": round(ms, 1),
                "error": error,
            }
        )
        if code not in ("ok", "input"):
            log.warning("task %s failed on %s: %s (%s)", task_id[:12], node_id or "-", error, code)

    def _record_done(self, msg: Done) -> None:
        self._record(
            msg.task_id, msg.node_id, "ok" if msg.ok else (msg.error_code or "failed"), msg.error, msg.model_ms
        )

    async def _reject(self, client: bytes, task_id: str, code: str, error: str) -> None:
        self._record(task_id, self.node_id, code, error, 0.0)
        await self.front.send(client, Result(task_id, False, code, error, self.node_id))

    async def _submit(self, client: bytes, msg: Submit, ride: bool = False) -> None:
        """A client's task: queued for placement, or placed at once by its ticket (``_redeem``; ``ride``:
        it came as ``Direct(submit)`` to this node, whose worker answers it with the next ticket)."""
        log.debug("submit %s from %s", msg.task_id[:40], client.hex())
        if not msg.task_id:
            return await self._reject(client, "", "input", "task has no id")
        if not self.accepting:
            if self.leader_addr and self.leader_addr != self.advertised:
                return await self.front.send(client, Result(msg.task_id, False, MOVED, self.leader_addr, self.node_id))
            return await self._reject(client, msg.task_id, "no_mesh", f"node {self.node_id} is shutting down")
        if not self.leading:
            return await self.front.send(client, Result(msg.task_id, False, MOVED, self.leader_addr, self.node_id))
        if max(len(msg.model), len(msg.session)) > const.MAX_NAME_CHARS:
            return await self._reject(
                client, msg.task_id, "input", f"model and session: {const.MAX_NAME_CHARS} characters at most"
            )
        if msg.priority not in PRIORITY:
            return await self._reject(client, msg.task_id, "input", "priority must be interactive or batch")
        if msg.requires not in placement.REQUIREMENTS:
            classes = ", ".join(k for k in placement.REQUIREMENTS if k)
            return await self._reject(
                client, msg.task_id, "input", f"unknown requirement class {msg.requires!r} ({classes})"
            )
        known = self.tasks.get(msg.task_id)
        if known is not None:  # a resubmission of a task still here: answer the newest asker once
            if known.client != client:
                self._client_done(known.client)
                self.per_client[client] += 1
                self.client_seen[client] = time.monotonic()
                known.client = client
            elif known.by_ticket and known.worker is not None and not msg.ticket:
                await self._unticket(known)
            return None
        if msg.ticket and await self._redeem(client, msg, ride):
            return None
        self.tickets.lapsed(client, msg.model, msg.requires)
        self.gen += 1
        if self.per_client[client] >= self.max_queued_per_client:
            err = Overloaded(
                f"more than {self.max_queued_per_client} tasks queued from one client (max_queued_per_client); "
                "wait for results"
            )
            return await self._reject(client, msg.task_id, err.code, str(err))
        p = Pending(task_of(msg), client, next(self._seq), time.monotonic(), turn=self._turn_of(client, msg.priority))
        self.tasks[msg.task_id] = p
        self.per_client[client] += 1
        self.client_seen[client] = p.submitted
        if self.per_client[client] == 1:  # its batch's first task: its crew starts with it
            self._judge_crew(client, p)
        heapq.heappush(self.queue, (p.key, msg.task_id))
        await self.kick()
        return None

    def _judge_crew(self, client: bytes, p: Pending) -> None:
        """A new batch whose tasks, by what the mesh measured before (``keeps_busy``: model time against
        moving the bytes), keep more workers busy than there are: its crew holds every worker from the
        start. A crew that grows from ``CREW_START`` waits a model time for its first answers, and a
        compute-bound batch of slow tasks (LaMa on CPUs: seconds each) left the other workers idle that
        long. The figures are the workers' raw ones, not the ones placement stops trusting after an
        idle spell: whether the model takes much longer than its bytes does not change with idling."""
        needs = p.needs()
        loads = [w.load() for w in self.workers.values()]
        able = sum(placement.capable(w, needs) for w in loads)
        if able > const.CREW_START and placement.keeps_busy(loads, needs) >= able:
            self.wide.add(client)

    # ---- tickets: a slot held ahead for a client's next task -----------------------------------
    async def _unticket(self, p: Pending) -> None:
        """Its client sent a task again plainly that came by its ticket: the worker answered it
        ``retry`` (the bytes came after the ticket's hold had ended, on a busy link: the hold's credit
        is back already) or it went unanswered for ``CLIENT_RESEND_AFTER``. Place it like any task,
        now (before: it stayed charged to that worker until its deadline, 30-600 s)."""
        self.gen += 1
        w = self.workers.get(p.worker) if p.worker is not None else None
        if w is not None:
            w.assigned.pop(p.task.task_id, None)
        p.worker, p.by_ticket = None, False
        heapq.heappush(self.queue, (p.key, p.task.task_id))
        log.info("task %s came by a ticket and was sent again: placed anew", p.task.task_id[:12])
        await self.kick()

    async def _offer_ticket(
        self,
        client: bytes,
        like: Pending,
        loads: dict[str, placement.WorkerLoad] | None = None,
        now: float | None = None,
        ride: bool = False,
        measured: bool | None = None,
        chosen: placement.Placement | None = None,
    ) -> None:
        """Nothing waits in the queue: hold a slot, where placement would put it, for ``client``'s next
        task like ``like`` (its model and requirement), so that task's bytes go straight there with
        ``Direct`` while its ``Submit`` tells us (the leader's round trip leaves the task's path).
        The hold takes a credit; the worker gives it back when the task is done or, unused, after
        ``TICKET_TTL`` plus twice the expected finish of a task there (the client's current task must
        end before it has a next one); the client uses it within half that. One ticket per client;
        none while any task waits (they would jump the queue). ``ride``: ``like`` runs on this node's
        worker, which answers it on the connection it came by: the offer goes with that ``Result``
        (the client has no use for it sooner: nothing else of its is in flight). ``loads``, ``now`` and
        ``measured`` (``placement.measured`` for ``like``'s model): the caller's, when it has them;
        ``chosen``: the worker and estimate a plan made ahead found (``_plan_ahead``), when it holds."""
        if self.ticket_ttl <= 0 or self.queue or self.tickets.holds(client) or not self.leading or not self.accepting:
            return
        t = like.task
        if chosen is None or measured is None:
            if now is None or loads is None:  # the caller's, when it has them (a redeemed ticket's Submit)
                now = time.monotonic()
                loads = {w.node_id: w.load(now) for w in self.workers.values()}
            needs = _ticket_needs(t)
            chosen = self._plan_ticket(loads, needs)
            if chosen is None:
                return
            if measured is None:
                measured = placement.measured(loads.values(), needs)
        w = next(w for w in self.workers.values() if w.node_id == chosen.node_id)
        finish = w.finish_ms(chosen.estimate_ms)
        limit = placement.deadline_s(finish, measured, t.size)
        ticket = self.tickets.issue(client, w.identity, t.model, t.requires)
        ttl = round(min(const.TICKET_TTL_MAX, self.ticket_ttl + 2 * finish / 1000), 3)
        hold = evolve(_HOLD, model=t.model, requires=t.requires, deadline_s=round(limit, 1), ticket=ticket, ttl_s=ttl)
        w.credits -= 1
        self.gen += 1
        if self.local_worker is not None and w.local:
            self.local_worker(hold)
        else:
            await self.back.send(w.identity, hold)
        # the client's window is half the hold, so a late use still finds the slot held
        offer = evolve(
            _OFFER, node_id=w.node_id, addr=w.addr, ticket=ticket, model=t.model, requires=t.requires, ttl_s=ttl / 2
        )
        if ride:
            self.riding[t.task_id] = (client, offer)
        else:
            await self.front.send(client, offer)

    def _plan_ticket(
        self, loads: dict[str, placement.WorkerLoad], needs: placement.TaskNeeds
    ) -> placement.Placement | None:
        """Where a ticket for a task like ``needs`` goes. No crew for a ticket: a client with one task at a
        time has no link to share among workers, and a crew of one wanting a second member sent every other
        ticket to the other node (64 KiB one at a time, loopback: p50 0.45 -> 0.52 ms, tickets on the node
        that is not the leader's cost a process). Between equal workers this node's own: its hold and its
        answer go by a call, not a message."""
        own = next((w.node_id for w in self.workers.values() if w.local), "")
        return placement.plan_one(loads, needs, self.affinity, self.policy, prefer=own)

    def _plan_ahead(self, p: Pending, w: WorkerState | None) -> None:
        """A lone task (``Pending.lone``) is done on this node's worker, and its client holds the ticket
        for its next (it came with this task's answer): plan the ticket after that one now, while the
        client reads the answer and sends its next task, not when that task comes (every lone task paid
        for the loads and the placement in its own path: about half of the leader's time a task). Used by
        ``_redeem`` when nothing changed since (``gen``). Planned as ``_redeem`` would plan it then: this
        node's worker without the task that will be running (a riding ticket reaches its client with that
        task's answer, so its task comes when that one is done)."""
        self.ahead = None
        if w is None or not (p.lone and w.local and self.tickets.holds(p.client)) or p.client in self.per_client:
            return
        if self.ticket_ttl <= 0 or self.queue or not self.leading or not self.accepting:
            return
        now = time.monotonic()
        needs = _ticket_needs(p.task)
        loads = {o.node_id: o.load(now) for o in self.workers.values()}
        measured = placement.measured(loads.values(), needs)
        estimate = placement.service_estimate_ms(loads[w.node_id], needs)
        # what an idle worker shows placement changes with time alone (``WorkerState.load``): the plan is
        # what planning later would find until the first of those changes
        until = now + AHEAD_FRESH
        for o in self.workers.values():
            if not o.assigned:
                for at in (o.measured_at, o.floor_at):
                    if now <= at + const.TRANSFER_ESTIMATE_STALE < until:
                        until = at + const.TRANSFER_ESTIMATE_STALE
        chosen = self._plan_ticket(loads, needs)
        self.ahead = Ahead(p.client, self.gen, until, needs, chosen, measured, estimate)

    def _take_ahead(self, client: bytes, p: Pending, now: float) -> Ahead | None:
        """The plan made ahead for ``client``'s task ``p``, if it still holds (see ``_plan_ahead``)."""
        ahead, self.ahead = self.ahead, None
        if ahead is None or ahead.gen != self.gen or ahead.client != client or now > ahead.until:
            return None
        if ahead.needs != _ticket_needs(p.task):
            return None
        return ahead

    async def answer(self, client: bytes, result: Message, blobs: list[Any]) -> None:
        """This node's worker answers a client (on the connection the task's bytes came by), with the
        client's next ticket when one rides on this task (``_offer_ticket``): one message, not two."""
        ride = self.riding.pop(result.task_id, None) if self.riding and isinstance(result, Result) else None
        if ride is not None and ride[0] == client:
            await self.front.send_bundle(client, [ride[1], result], blobs)
        else:
            await self.front.send(client, result, blobs)

    async def _unride(self, task_id: str) -> None:
        """The task is over and its worker sent no ``Result`` (a hung slot): the offer riding on it goes alone."""
        ride = self.riding.pop(task_id, None) if self.riding else None
        if ride is not None:
            await self.front.send(*ride)

    async def _redeem(self, client: bytes, msg: Submit, ride: bool = False) -> bool:
        """A ``Submit`` whose bytes went straight to a ticket's worker: placed there, nothing to send.
        False (submitted like any task) when the ticket is not this client's, not for this kind of
        task, or gone (used, expired, its worker dead): the worker then answers the bytes ``retry``,
        or runs them if it still holds the slot (answers are deduplicated)."""
        if msg.ticket in self.tickets.spent:
            return True  # its task was done (the worker's Done came first): answered already
        held = self.tickets.take(msg.ticket, client, msg.model, msg.requires)
        w = self.workers.get(held.worker) if held is not None else None
        if w is None:
            return False
        now = time.monotonic()
        ride = ride and w.local
        p = Pending(task_of(msg), client, next(self._seq), now, by_ticket=True, lone=ride)
        ahead = self._take_ahead(client, p, now) if ride else None
        if ahead is not None:  # planned when its client's last task was done, and nothing changed since
            self._assign(p, w, ahead.estimate_ms, ahead.measured, now)
            self.planned_ahead += 1
            if ahead.chosen is None:
                self._register(client, p, now)
                return True
            loads, measured, chosen = None, ahead.measured, ahead.chosen
        else:
            needs = p.needs()
            loads = {o.node_id: o.load(now) for o in self.workers.values()}  # for this task and the next ticket
            # its deadline is measured when any worker ran this model (not only this one: a guess is 600 s)
            measured = placement.measured(loads.values(), needs)
            self._assign(p, w, placement.service_estimate_ms(loads[w.node_id], needs), measured, now)
            chosen = None
            if not ride:  # charged with this task now. A riding ticket reaches the client with this task's
                # answer, so its task comes when this one is done: planned as if it were (a 9 ms task here
                # sent a lone client's next tasks to an idle node, 205-303 of 400 at 8 MiB on loopback)
                loads[w.node_id] = w.load(now)
        self._register(client, p, now)
        await self._offer_ticket(client, p, loads, now, ride=ride, measured=measured, chosen=chosen)
        return True

    def _register(self, client: bytes, p: Pending, now: float) -> None:
        """A redeemed ticket's task is held, on its worker (charged by ``_assign``)."""
        self.gen += 1
        self.tasks[p.task.task_id] = p
        self.per_client[client] += 1
        self.client_seen[client] = now
        self.direct += 1

    # ---- workers -------------------------------------------------------------------
    async def serve_back(self) -> None:
        await self._serve(self.back, self._on_back, "a worker")

    async def from_local_worker(self, ident: bytes, msg: Message, blobs: list[Any]) -> None:
        """What this node's own worker says, by a call instead of the backend socket. Its placement
        pass runs once the loop has run what is ready (other answers, the sockets' bursts), so
        answers coming together are placed together."""
        self._bursts += 1
        try:
            await self._on_back(ident, msg, blobs, local=True)
        except Exception:  # a bug handling one message must not take the worker down
            log.exception("error handling %s from the local worker", msg.t)
        finally:
            self._bursts -= 1
        if self._want_dispatch and self._soon is None:
            self._soon = asyncio.get_running_loop().create_task(self._pass_soon())

    async def _pass_soon(self) -> None:
        try:
            while self._want_dispatch and not self._bursts:  # asked again while a pass ran: once more
                await self.kick()
        except Exception:
            log.exception("error in a placement pass")
        finally:
            self._soon = None

    async def _on_back(self, ident: bytes, msg: Message, blobs: list[Any], local: bool = False) -> None:
        self.gen += 1
        if isinstance(msg, Ready):
            if not self.leading or not self.accepting:
                return  # the worker follows the gossip and will find the leader
            if ident != msg.node_id.encode():  # a worker's connection is named by its node id (Worker.identity)
                self.refused["ready for another node"] += 1
                log.warning("refused a Ready naming node %r from connection %r", msg.node_id[:64], ident[:64])
                return
            w = self.workers.get(ident)
            if w is None:
                w = WorkerState(
                    ident,
                    msg.node_id,
                    min(max(1, msg.slots), const.MAX_WORKER_SLOTS),
                    0,
                    msg.provider,
                    msg.host,
                    msg.vram_mb,
                    frozenset(msg.models) if msg.models else None,
                    headroom=self.headroom,
                )
                self.workers[ident] = w
                log.info("worker %s joined (%d slots, %s)", msg.node_id, w.slots, msg.provider)
            elif msg.models:
                w.models = frozenset(msg.models)  # it copied or fetched a model since it joined
            self._seed(w, msg.measured)
            w.addr = self.advertised if local else f"{msg.host}:{msg.task_port}"
            w.local = local  # how to reach it: the last Ready came by a call or by the socket
            # a Ready is the worker's whole grant, not an increment; never more than its slots and prefetch
            w.credits = min(max(0, msg.credits), w.slots + w.headroom)
            await self.kick()
        elif isinstance(msg, Done):
            await self._done(ident, msg)
        elif isinstance(msg, Bye):
            await self.drop_worker(msg.node_id, "left")

    @staticmethod
    def _seed(w: WorkerState, measured: dict[str, float]) -> None:
        """The worker's own slot times (its ``Ready``), for the kinds of task this leader has not timed
        there yet: a leader elected mid-batch places by them from its first task (before, every worker
        read as the fleet's mean until it answered: a slow CPU node took its full share first). What
        this leader measures itself goes on from the seed; a peer that lies gains no more than by lying
        in its ``Done``s, and its credits bound that."""
        for key, ms in list(measured.items())[: const.READY_MEASURED_MAX]:
            if key not in w.service_ms and 0.0 < ms <= const.TASK_DEADLINE_MAX * 1000:
                w.service_ms[key] = ms

    async def _done(self, ident: bytes, msg: Done) -> None:
        w = self.workers.get(ident)
        p = self.tasks.get(msg.task_id) if msg.task_id else None
        await self._unride(msg.task_id)
        if msg.ticket and self.tickets.over(msg.ticket, ident, msg.task_id):  # done before its Submit came
            self._record_done(msg)
        if w is not None:
            w.assigned.pop(msg.task_id, None)
            # every Done returns the slot it used, whichever leader sent the task; never past its grant
            # (a worker that lies, answering tasks it never had, gets no more than slots + prefetch)
            w.credits = min(w.credits + 1, w.slots + w.headroom)
            if msg.task_id:  # not an unused ticket's hold
                self._measure(w, p, msg)
                if p is not None:
                    self._learn_link(p, w, msg)
        if p is None:
            return await self.kick()  # a second answer (the task was re-queued and ran twice): drop it
        if msg.error_code == NO_DATA:
            if p.worker == ident:  # still placed there: its bytes never came, place it again
                await self._no_data(p, msg)
            return await self.kick()
        if msg.error_code == HUNG:
            if p.worker == ident:  # its slot was restarted: place it elsewhere, as if its deadline passed
                await self._expire(p, f"its slot on {msg.node_id} hung")
            return await self.kick()
        if msg.error_code == WITHDRAWN:
            if p.worker == ident:  # its client has the answer (it ran elsewhere): nothing to send
                self._forget(p)
                log.debug("task %s withdrawn by its client", msg.task_id[:12])
            return await self.kick()
        if p.worker is not None and p.worker != ident:
            other = self.workers.get(p.worker)
            if other is not None:
                other.assigned.pop(msg.task_id, None)
        self._forget(p)
        self._record_done(msg)
        await self.kick()
        self._changed.set()
        self._plan_ahead(p, w)
        return None

    @staticmethod
    def _measure(w: WorkerState, p: Pending | None, msg: Done) -> None:
        """Learn the worker's service time (this model and size) and how fast bytes reach it."""
        now = time.monotonic()
        if len(w.assigned) >= w.slots and w.last_done:  # busy since its last answer: this gap is a turn
            w.floor_ms = placement.ewma(w.floor_ms, (now - w.last_done) * 1000 * w.slots)
            w.floor_at = now
        if msg.ok and msg.model_ms > 0:  # how busy its slots are, and whether bytes wait for them: crews grow by it
            w.model_ms = placement.ewma(w.model_ms, msg.model_ms)
            # came by a Place, the hold first (bytes that came before it say 0 ms, nothing of the path):
            # the bytes' time, its least (queued behind no other task's) drifting up as samples do
            if msg.size > 0 and msg.fetch_ms > 0:
                low = w.fetch_low_ms
                w.fetch_low_ms = msg.fetch_ms if low is None or msg.fetch_ms < low else low + (msg.fetch_ms - low) / 64
            if w.last_done:
                busy = min(1.0, msg.model_ms / max(1e-3, (now - w.last_done) * 1000 * w.slots))
                w.busy = placement.ewma(w.busy, busy, 0.5)
            if p is not None and p.placed and not p.by_ticket:
                wait_ms = (now - p.placed) * 1000 - msg.fetch_ms - msg.model_ms
                waits = min(4.0, max(0.0, wait_ms) / max(1.0, msg.model_ms))
                w.waits = placement.ewma(w.waits, waits, 0.5)
        w.last_done = now
        if msg.ok:
            w.done += 1
            if p is not None:
                key = placement.service_key(p.task.model, p.task.pixels)
                w.service_ms[key] = placement.ewma(w.service_ms.get(key), msg.model_ms)
        if msg.size > 0 and msg.error_code != NO_DATA:
            per_mib = msg.fetch_ms * placement.MIB / msg.size
            w.ms_per_mib = placement.ewma(w.ms_per_mib, per_mib)
            cls = placement.bytes_class(msg.size)
            w.rates[cls] = placement.ewma(w.rates.get(cls), per_mib)
            w.measured_at = now

    async def _no_data(self, p: Pending, msg: Done) -> None:
        t = p.task
        p.worker = None
        if t.attempt + 1 >= const.DATA_TRIES:
            self._forget(p)
            why = f"the task's bytes never reached a worker ({const.DATA_TRIES} tries; last {msg.node_id})"
            return await self._reject(p.client, t.task_id, "no_mesh", why)
        p.task = replace(t, attempt=t.attempt + 1)
        heapq.heappush(self.queue, (p.key, t.task_id))
        return None

    def _forget(self, p: Pending) -> None:
        """The leader no longer holds ``p`` (answered, withdrawn, failed); a queue entry left for it
        is skipped when popped."""
        del self.tasks[p.task.task_id]
        self._client_done(p.client)

    def _turn_of(self, client: bytes, priority: str) -> int:
        """A new task's fair-share round (start-time fair queueing, per priority): one more than its
        client's last task's of that priority, and never behind the round being placed. Within a
        priority the queue goes by round, then by arrival: two clients' batches alternate instead of
        the first window sent taking every slot until it is done, and a client that comes late starts
        level with the others, not ahead."""
        key = (client, priority)
        turn = self._turns[key] = max(self._turns.get(key, 0), self._vturn.get(priority, 0)) + 1
        return turn

    def _client_done(self, client: bytes) -> None:
        self.per_client[client] -= 1
        if self.per_client[client] <= 0:
            del self.per_client[client]
            self.crews.pop(client, None)  # its next batch starts a crew afresh
            self.links.pop(client, None)
            self.wide.discard(client)
            self.client_seen.pop(client, None)
            for prio in PRIORITY:
                self._turns.pop((client, prio), None)

    async def sweep(self, now: float) -> None:
        """Called by the node a few times a second while it leads: placed tasks past their deadline,
        clients gone silent."""
        if now - self._last_sweep < 0.5:
            return
        self._last_sweep = now
        self.gen += 1
        for p in [p for p in self.tasks.values() if p.worker is not None and now > p.deadline]:
            await self._expire(p, f"no answer within {p.task.deadline_s:g} s")
        await self.sweep_clients(now)
        await self.dispatch()

    async def _expire(self, p: Pending, why: str) -> None:
        """A placed task its worker did not answer in time (a hung slot, a worker that lies about its
        credit, a lost message): placed again, on another worker where one can run it; after
        ``TASK_TRIES`` the client gets a ``timeout`` error. The worker keeps the credit it took until
        it answers, so a hung worker is given nothing more."""
        t = p.task
        w = self.workers.get(p.worker) if p.worker is not None else None
        node = w.node_id if w is not None else "?"
        if w is not None:
            w.assigned.pop(t.task_id, None)
        p.worker = None
        p.expired += 1
        if p.expired >= const.TASK_TRIES:
            self._forget(p)
            err = f"{why} ({const.TASK_TRIES} placements; last on {node})"
            return await self._reject(p.client, t.task_id, "timeout", err)
        log.warning("task %s: %s on %s; placing it elsewhere", t.task_id[:12], why, node)
        self.crews.get(p.client, {}).pop(node, None)  # its client's tasks do not wait for it any more
        elsewhere = replace(p.needs(), avoid=node)
        if any(placement.capable(o.load(), elsewhere) for o in self.workers.values()):
            p.avoid, p._needs = node, None
        p.task = replace(t, attempt=t.attempt + 1)
        heapq.heappush(self.queue, (p.key, t.task_id))
        return None

    async def sweep_clients(self, now: float) -> None:
        """Drop the tasks of a client not heard for ``CLIENT_GONE_AFTER`` (it died, or failed over to
        another leader across a partition): nobody would take their answers, and a placed one would
        hold a worker's slot for bytes that never come. A placed task's slot comes back with the
        worker's ``Done`` (``no_data`` at worst), which then finds no task to place again."""
        gone = [c for c, seen in self.client_seen.items() if now - seen > const.CLIENT_GONE_AFTER]
        for client in gone:
            n = self._drop_client(client, ABANDONED)
            log.info("client %s silent for %g s: dropped its %d tasks", client.hex(), const.CLIENT_GONE_AFTER, n)

    def _drop_client(self, client: bytes, outcome: str) -> int:
        """Forget every task of ``client``, counted under ``outcome`` (status and /metrics, not as
        failed). A placed one's slot comes back with the worker's ``Done`` (``no_data`` at worst)."""
        self.gen += 1
        mine = [task_id for task_id, p in self.tasks.items() if p.client == client]
        for task_id in mine:
            del self.tasks[task_id]  # its queue entry is skipped when next popped
        self.per_client.pop(client, None)
        self.client_seen.pop(client, None)
        self.tickets.drop_client(client)  # its hold comes back with the worker's Done when it ends
        for task_id in [k for k, (c, _) in self.riding.items() if c == client]:
            del self.riding[task_id]
        self.outcomes[outcome] += len(mine)
        self._changed.set()
        return len(mine)

    async def drop_worker(self, node_id: str, why: str) -> None:
        """A worker died or left: re-queue every task it held."""
        self.gen += 1
        for ident, w in list(self.workers.items()):
            if w.node_id != node_id:
                continue
            del self.workers[ident]
            self.tickets.drop_worker(ident)
            requeued = 0
            for task_id in w.assigned:
                p = self.tasks.get(task_id)
                if p is not None and p.worker == ident:
                    p.worker = None
                    p.task = replace(p.task, attempt=p.task.attempt + 1)
                    heapq.heappush(self.queue, (p.key, task_id))
                    requeued += 1
            if self.affinity:
                self.affinity = {s: n for s, n in self.affinity.items() if n != node_id}
            for members in self.crews.values():
                members.pop(node_id, None)
            log.info("worker %s %s; %d of its tasks re-queued", w.node_id, why, requeued)
        await self.dispatch()

    async def dispatch(self) -> None:
        """Place queued tasks: each goes to a worker now or waits for its best worker."""
        if not self.leading or not self.queue or not self.workers:
            return
        credits = sum(max(0, w.free()) for w in self.workers.values())
        if credits == 0:
            return  # nothing can be sent before a worker returns a credit
        now = time.monotonic()
        loads = {w.node_id: w.load(now) for w in self.workers.values()}
        by_node = {w.node_id: w for w in self.workers.values()}
        # a pass needs to see only so many tasks: enough to fill every credit, plus those that
        # reserve a busy faster worker on the way (bounded, so a long queue costs O(credits))
        depth = min(const.PLAN_DEPTH, 8 * credits + 2 * len(self.workers))
        head: list[tuple[tuple[int, int, int], str]] = []
        pend: list[Pending] = []

        def queued() -> Iterator[placement.TaskNeeds]:  # popped only as far as the pass looks
            while self.queue and len(head) < depth:
                item = heapq.heappop(self.queue)
                p = self.tasks.get(item[1])
                if p is not None and p.worker is None:
                    head.append(item)
                    pend.append(p)
                    yield p.needs()

        choices = placement.plan(loads, queued(), self.affinity, self.policy, self._crew_view(by_node))
        offers: dict[bytes, Pending] = {}  # each client placed to, with its last task: offered a ticket after
        runnable: dict[tuple[str, str, str], bool] = {}  # (model, requirement, avoid) -> some live worker can run it
        measured: dict[str, bool] = {}  # model -> some worker has run it (its deadline is not a guess)
        out = _Outgoing()
        for item, p, chosen in zip(head, pend, choices, strict=True):
            if chosen is None:
                heapq.heappush(self.queue, item)
                needs = p.needs()
                kind = (needs.model, needs.requires, needs.avoid)
                if kind not in runnable:
                    runnable[kind] = any(placement.capable(w, needs) for w in loads.values())
                if not runnable[kind]:
                    await self._no_capable(p)
                continue
            model = p.task.model
            if model not in measured:
                measured[model] = placement.measured(loads.values(), p.needs())
            self._place(p, by_node[chosen.node_id], chosen.estimate_ms, measured[model], now, out)
            prio = p.task.priority
            self._vturn[prio] = max(self._vturn.get(prio, 0), p.turn)
            offers[p.client] = p
        await out.send(self.back, self.front)
        if not self.queue:
            for client, p in offers.items():
                await self._offer_ticket(client, p)

    def _crew_view(self, alive: dict[str, WorkerState]) -> dict[bytes, placement.Crew] | None:
        """Each client's crew as placement sees it: its live members, and how many more may join: as many
        again as it has when its members are busy ``CREW_BUSY`` of the time on average or its tasks'
        bytes wait ``CREW_WAITS`` model times for a slot there, judged once each member has answered
        since the crew last changed. A member with nothing assigned counts as idle whatever it measured
        before, one not measured yet too. ``alive``: the workers by node id (the pass has them)."""
        everyone = len(self.workers)
        if len(self.crews) >= len(self.per_client) and all(len(m) >= everyone for m in self.crews.values()):
            return None  # every client's crew holds every worker: nothing to keep apart (no cost per task)
        view = {client: placement.Crew(grow=everyone) for client in self.wide}  # any worker, from the start
        for client, members in self.crews.items():
            live = [alive[n] for n in members if n in alive]
            if not live or client in self.wide:
                continue
            busy = sum((w.busy or 0.0) if w.assigned else 0.0 for w in live) / len(live)
            waits = sum((w.waits or 0.0) if w.assigned else 0.0 for w in live) / len(live)
            # judged once every member has answered since the crew last changed (without one from the
            # newest, the others' figures from before it joined would grow the crew past what keeps up)
            settled = all(w.done > members[w.node_id] for w in live)
            grow = len(live) if settled and (busy >= const.CREW_BUSY or waits >= const.CREW_WAITS) else 0
            link = self.links.get(client)
            feeds = link.feeds() if link is not None else 0  # as many as its link can keep busy, at once
            grow = max(grow, feeds - len(live), const.CREW_START - len(live))
            view[client] = placement.Crew(frozenset(w.node_id for w in live), grow)
        return view

    def _learn_link(self, p: Pending, w: WorkerState, msg: Done) -> None:
        """What a task whose bytes came by ``Place`` says of its client's link, while its crew may grow."""
        if not p.placed or p.by_ticket or not msg.ok or msg.size <= 0:
            return
        if len(self.crews.get(p.client, ())) >= len(self.workers):  # its crew holds every worker already
            return
        link = self.links.setdefault(p.client, ClientLink())
        came = p.placed + msg.fetch_ms / 1000  # when its bytes reached the worker, about
        last = link.last.get(w.node_id)
        if last is not None and came > last:
            link.gaps.append((came - last) * 1000)
        link.last[w.node_id] = max(came, last or 0.0)
        link.model_ms = placement.ewma(link.model_ms, msg.model_ms)
        link.fetch_ms = msg.fetch_ms if link.fetch_ms is None else min(link.fetch_ms, msg.fetch_ms)

    def _join(self, client: bytes, w: WorkerState) -> None:
        """``w`` has a task of ``client``'s now: in its crew (a newcomer restarts every member's count)."""
        members = self.crews.setdefault(client, {})
        if w.node_id not in members:
            alive = {o.node_id: o for o in self.workers.values()}
            for n in members:
                members[n] = alive[n].done if n in alive else 0
            members[w.node_id] = w.done

    def _place(
        self, p: Pending, w: WorkerState, estimate_ms: float, measured: bool, now: float, out: _Outgoing
    ) -> None:
        """``p`` goes to ``w``: a credit of ``w`` spent, the worker told to hold a slot (``Task``; a call
        when it is this node's) and the client where to send the bytes (``Place``). The pass sends what
        ``out`` gathered as one message per worker and one per client."""
        self._assign(p, w, estimate_ms, measured, now)
        w.credits -= 1
        self.gen += 1
        self._join(p.client, w)
        if p.task.session:
            self.affinity[p.task.session] = w.node_id
        if self.local_worker is not None and w.local:
            self.local_worker(p.task)
        else:
            out.tasks.setdefault(w.identity, []).append(p.task)
        out.places.setdefault(p.client, []).append(Place(p.task.task_id, w.node_id, w.addr, p.task.attempt))

    @staticmethod
    def _assign(p: Pending, w: WorkerState, estimate_ms: float, measured: bool, now: float) -> None:
        """``p`` is ``w``'s now: its deadline set, ``w`` charged the estimate that chose it."""
        limit = placement.deadline_s(w.finish_ms(estimate_ms), measured, p.task.size)
        p.task = evolve(p.task, deadline_s=round(limit, 1))
        p.deadline = now + limit
        p.placed = now
        w.charge(p.task.task_id, estimate_ms, now)
        p.worker = w.identity

    async def _no_capable(self, p: Pending) -> None:
        """No live worker can ever run this task (model absent, requirement class unmet): fail it now."""
        t = p.task
        self.tasks.pop(t.task_id, None)
        self.queue = [q for q in self.queue if q[1] != t.task_id]
        heapq.heapify(self.queue)
        self._client_done(p.client)
        held = set().union(*(w.models or () for w in self.workers.values()))
        if self.model_names and t.model not in self.model_names and t.model not in held:
            known = ", ".join(sorted(self.model_names | held))
            return await self._reject(p.client, t.task_id, "model", f"unknown model {t.model!r}; known models: {known}")
        what = f"model {t.model!r}" + (f" with requirement {t.requires!r}" if t.requires else "")
        await self._reject(p.client, t.task_id, "no_capable_node", f"no node in the mesh can run {what}")
        return None

    # ---- shutdown and status -------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Stop taking tasks; wait for those held to finish, then answer the rest with an error."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            self._changed.clear()
            try:
                async with asyncio.timeout(max(0.01, deadline - time.monotonic())):
                    await self._changed.wait()
            except TimeoutError:
                break
        for task_id, p in list(self.tasks.items()):
            await self._reject(p.client, task_id, "no_mesh", f"node {self.node_id} shut down before the task ran")
        self.tasks.clear()
        self.queue.clear()

    def measured_ms(self) -> dict[str, dict[str, float]]:
        """Each registered worker's measured ms per task, by model and size class (for ``status``)."""
        return {w.node_id: {k: round(v, 1) for k, v in w.service_ms.items()} for w in self.workers.values()}

    def status(self) -> Status:
        rows = self.status_rows() if self.status_rows is not None else ()
        return _fit(
            Status(
                self.mesh,
                self.leader_id,
                self.term,
                tuple(r.to_wire() for r in rows),
                queued=len(self.queue),
                done=self.outcomes["ok"],
                failed=sum(v for k, v in self.outcomes.items() if k not in ("ok", ABANDONED, CANCELLED)),
                outcomes=dict(self.outcomes),
                recent=tuple(self.recent),
                node_id=self.node_id,
            )
        )


def _fit(st: Status) -> Status:
    """The status answer within ``STATUS_MAX_BYTES`` whatever the member count (a flood of fake
    members made it 200 KB, over the header limit, and ``status`` died): rows are kept leader first,
    then the workers registered with it, then the others in order, and the rest counted in ``omitted``."""
    if len(encode(st)) <= const.STATUS_MAX_BYTES:
        return st
    budget = const.STATUS_MAX_BYTES - len(encode(replace(st, nodes=(), omitted=len(st.nodes))))
    rank = sorted(
        range(len(st.nodes)), key=lambda i: (st.nodes[i].get("role") != Role.LEADER, not st.nodes[i].get("ready"), i)
    )
    keep: list[int] = []
    for i in rank:
        size = len(msgpack.packb(st.nodes[i])) + 1
        if size > budget:
            break
        budget -= size
        keep.append(i)
    kept = tuple(st.nodes[i] for i in sorted(keep))
    return replace(st, nodes=kept, omitted=len(st.nodes) - len(kept))
