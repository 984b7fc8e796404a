"""The client side of the mesh: find a node, submit tasks, collect results exactly once.

Delivery is at-least-once: the client keeps every task until its result arrives and
may send it again; results are deduplicated by task id, so each task is answered to
the caller exactly once. With no node answering, ``mesh.cluster.node.embedded()`` runs a
node inside this process (its slots are still separate processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sized
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

from mesh import const
from mesh.errors import NoMesh
from mesh.kinds import Priority
from mesh.surface.snapshot import Snapshot, from_status
from mesh.wire.protocol import (
    MOVED,
    RETRY,
    Cancel,
    Data,
    Direct,
    Message,
    Ping,
    Place,
    Pong,
    Result,
    Status,
    StatusRequest,
    Submit,
)
from mesh.wire.transport import Context, Dealer, recv_any

log = logging.getLogger("lamamesh.client")


_Spec = TypeVar("_Spec", Submit, Direct)


@dataclass(frozen=True)
class Job:
    image: bytes
    mask: bytes
    _: KW_ONLY  # every other field by name
    model: str = "builtin"
    priority: str = Priority.INTERACTIVE
    session: str = ""
    out_format: str = ""
    hd_strategy: str = "Crop"
    crop_margin: int = const.HD_CROP_MARGIN
    crop_trigger: int = const.HD_CROP_TRIGGER
    resize_limit: int = const.HD_RESIZE_LIMIT
    pixels: int = 0  # width x height if the caller knows it (placement uses it); 0 = unknown
    requires: str = ""  # requirement class: "" any node, cpu, gpu-low, gpu-medium, gpu-high
    task_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    label: str = ""  # the caller's name for it (a file name); not sent
    quality: int = 0  # JPEG output quality 1-100; 0 = the input's (or 95)

    @property
    def size(self) -> int:
        """Bytes of image + mask: what crosses the client's link for it (placement and the byte budget)."""
        return len(self.image) + len(self.mask)

    def submit(self, ticket: str = "") -> Submit:
        return self._spec(Submit, ticket)

    def direct(self, ticket: str, submit: bool = False) -> Direct:
        return self._spec(Direct, ticket, submit=submit)

    def _spec(self, kind: type[_Spec], ticket: str, **more: Any) -> _Spec:
        return kind(
            ticket=ticket,
            **more,
            task_id=self.task_id,
            model=self.model,
            priority=self.priority,
            session=self.session,
            out_format=self.out_format,
            hd_strategy=self.hd_strategy,
            crop_margin=self.crop_margin,
            crop_trigger=self.crop_trigger,
            resize_limit=self.resize_limit,
            pixels=self.pixels,
            requires=self.requires,
            size=self.size,
            quality=self.quality,
        )


@dataclass(frozen=True)
class JobResult:
    job: Job
    ok: bool
    # the result's bytes as they came off the socket: a read-only memoryview over the received
    # message, no copy (8 MiB copied cost ~1 ms a task on loopback); ``bytes(r.data)`` makes one
    data: bytes | memoryview = b""
    out_format: str = ""
    node_id: str = ""
    error_code: str = ""
    error: str = ""
    slot_ms: float = 0.0
    latency_ms: float = 0.0
    notes: tuple[str, ...] = ()  # lines the worker had for the user (mask resized, mask empty ...)


async def _pong(d: Dealer) -> Pong:
    """Ping the node at the other end of ``d`` and wait for its answer (the caller bounds the wait)."""
    nonce = secrets.randbits(31)
    await d.send(Ping(nonce))
    while True:
        msg, _ = await d.recv()
        if isinstance(msg, Pong) and msg.nonce == nonce:
            return msg


class Client:
    """Talks to a mesh: finds its leader from any member, submits, and follows the leader.

    The client keeps every task until its answer arrives. While tasks are pending it pings
    the leader every ``CLIENT_PING_INTERVAL``; if the leader is silent for ``dead_timeout``,
    or answers that it no longer leads, or a task comes back ``moved``, the client asks the
    members it knows who leads now and resubmits every unanswered task there. Answers are
    deduplicated by task id, so each task is delivered to the caller exactly once."""

    def __init__(
        self,
        ctx: Context,
        peers: Iterable[tuple[str, int]],
        probe_timeout: float = const.CLIENT_PROBE_TIMEOUT,
        dead_timeout: float = const.DEAD_TIMEOUT,
        find_timeout: float = const.CLIENT_FIND_LEADER_TIMEOUT,
    ) -> None:
        self.ctx = ctx
        self.peers = list(peers)
        self.probe_timeout = probe_timeout
        self.dead_timeout = dead_timeout
        self.find_timeout = find_timeout
        self.dealer: Dealer | None = None
        self.leader: Pong | None = None
        self.known: list[tuple[str, int]] = list(self.peers)  # every member address learned so far
        self.failovers = 0
        self.submitted = False  # some task was submitted on this connection (close then cancels)
        self.resubmitted = 0  # tasks submitted to a leader again (a worker or the leader was lost, moved, retry)
        self.resent = 0  # tasks whose bytes were sent a second time (placed again)
        self.direct = 0  # tasks sent straight to a worker under a ticket (no placement round trip)
        self.lone = 0  # of those, sent as one message on the leader connection to the leader's own node
        self._answered = False  # some node answered a probe (a mesh exists, perhaps still electing)

    async def _probe(self, host: str, port: int, timeout: float | None = None) -> tuple[Dealer, Pong] | None:
        d = self.ctx.dealer()
        ok = False
        try:
            d.connect(host, port)
            async with asyncio.timeout(self.probe_timeout if timeout is None else timeout):
                pong = await _pong(d)
            ok = True
            return d, pong
        except TimeoutError:
            return None
        finally:
            if not ok:
                d.close()

    def _learn(self, pong: Pong, via: tuple[str, int]) -> None:
        for addr in [*pong.members, pong.leader_addr]:
            host, _, port = addr.rpartition(":")
            if host and port.isdigit() and (host, int(port)) not in self.known:
                self.known.append((host, int(port)))
        if via[0] and via not in self.known:
            self.known.append(via)

    async def _find_leader(
        self, hint: str = "", among: list[tuple[str, int]] | None = None, timeout: float | None = None
    ) -> tuple[Dealer, Pong] | None:
        """One round: probe the known members at once (the hint among them) and return a connection
        to the leader as soon as the leader itself answers; else ask the leader the others name."""
        addrs = list(self.known if among is None else among)
        if hint:
            host, _, port = hint.rpartition(":")
            if host and port.isdigit():
                addrs.insert(0, (host, int(port)))
        addrs = list(dict.fromkeys(addrs))

        async def at(a: tuple[str, int]) -> tuple[tuple[str, int], tuple[Dealer, Pong] | None]:
            return a, await self._probe(a[0], a[1], timeout)

        probes = [asyncio.ensure_future(at(a)) for a in addrs]
        answers: list[tuple[Dealer, Pong]] = []
        chosen: tuple[Dealer, Pong] | None = None
        try:
            for fut in asyncio.as_completed(probes):
                a, got = await fut
                if got is None:
                    continue
                self._answered = True
                self._learn(got[1], a)
                if got[1].leader_id and got[1].leader_id == got[1].node_id:
                    chosen = got  # the leader answered itself
                    return got
                answers.append(got)
            named = [g[1] for g in answers if g[1].leader_addr]
            if not named:
                return None
            best = max(named, key=lambda p: p.term)
            host, _, port = best.leader_addr.rpartition(":")
            direct = await self._probe(host, int(port), timeout)
            if direct is not None and direct[1].leader_id == direct[1].node_id:
                self._learn(direct[1], (host, int(port)))
                return direct
            if direct is not None:
                direct[0].close()
            return None
        finally:
            for f in probes:
                f.cancel()
            for f in probes:
                if f.done() and not f.cancelled():
                    _, got = f.result()
                    if got is not None and got is not chosen:
                        got[0].close()

    async def connect(self) -> Pong:
        """Reach the mesh through any peer and connect to its leader; raises ``NoMesh`` if none answers."""
        deadline = time.monotonic() + self.find_timeout
        while True:
            found = await self._find_leader(among=self.peers)
            if found is not None:
                self.close()
                self.dealer, self.leader = found
                return found[1]
            if not self.answered_once() or time.monotonic() >= deadline:
                break
            await asyncio.sleep(const.CLIENT_PING_INTERVAL)
        tried = ", ".join(f"{h}:{p}" for h, p in self.peers) or "no peers"
        if self.answered_once():
            raise NoMesh(f"the mesh at {tried} has no leader (no election finished within {self.find_timeout:g} s)")
        hint = (
            "; its nodes may hold another mesh key" if self.ctx.key else "; if the mesh has a key, give --secret-file"
        )
        raise NoMesh(f"no lamamesh node answered at {tried} within {self.probe_timeout:g} s{hint}")

    def answered_once(self) -> bool:
        return self._answered

    def close(self) -> None:
        """Close the connection; if tasks were submitted on it, tell the leader to drop any it still
        holds (a Ctrl-C mid-batch frees the mesh at once, not after ``CLIENT_GONE_AFTER``)."""
        if self.dealer is not None:
            if self.submitted and self.dealer.send_now(Cancel()):
                self.dealer.close(linger=const.CANCEL_LINGER_MS)
            else:
                self.dealer.close()
            self.dealer = None

    async def status(self, timeout: float = 3.0) -> Status:
        assert self.dealer is not None
        await self.dealer.send(StatusRequest())
        async with asyncio.timeout(timeout):
            while True:
                msg, _ = await self.dealer.recv()
                if isinstance(msg, Status):
                    return msg

    async def snapshot(self, timeout: float = const.STATUS_TIMEOUT) -> Snapshot:
        """The mesh as its leader sees it; when the node we ask is silent or no longer leads, find
        the leader again first (so a live view survives the leader changing under it)."""
        if self.dealer is not None:
            try:
                st = await self.status(timeout)
                if st.leader in ("", st.node_id):  # the leader answered (or the mesh is electing)
                    return from_status(st)
                hint = next((f"{n['host']}:{n['port']}" for n in st.nodes if n.get("id") == st.leader), "")
                if await self._failover(hint, time.monotonic() + self.dead_timeout):
                    return from_status(await self.status(timeout))
                return from_status(st)  # the named leader did not answer: this node's view is the best there is
            except TimeoutError:
                pass
        if not await self._failover("", time.monotonic() + max(self.find_timeout, 3 * self.dead_timeout)):
            raise NoMesh("no node of the mesh answers")
        return from_status(await self.status(timeout))

    async def _failover(self, hint: str, deadline: float | None) -> bool:
        """Find the leader again; False when none was found before ``deadline`` (or the find timeout)."""
        self.failovers += 1
        old = self.leader.leader_id if self.leader else "?"
        self.close()
        give_up = time.monotonic() + max(self.find_timeout, 3 * self.dead_timeout)
        if deadline is not None:
            give_up = min(give_up, deadline)
        while True:
            found = await self._find_leader(hint, timeout=min(self.probe_timeout, const.CLIENT_FAILOVER_PROBE))
            if found is not None:
                self.dealer, self.leader = found
                log.info("leader changed from %s to %s; resubmitting unanswered tasks", old, found[1].leader_id)
                return True
            if time.monotonic() >= give_up:
                return False
            hint = ""
            await asyncio.sleep(const.CLIENT_FAILOVER_RETRY)

    async def run(
        self,
        jobs: Iterable[Job],
        on_result: Callable[[JobResult], Awaitable[None] | None] | None = None,
        window: int = 64,
        timeout: float | None = None,
        keep: bool = True,
    ) -> list[JobResult]:
        """Submit ``jobs`` with up to ``window`` in flight; each job is answered exactly once.

        ``jobs`` is read lazily, one job as a place in the window frees up (a generator reading
        files as it goes keeps only the window in memory). Results are returned in the order of
        ``jobs``; with ``keep=False`` they are only given to ``on_result`` and the list is empty
        (a batch of thousands of photos then holds no more than the window at a time)."""
        assert self.dealer is not None, "connect() first"
        batch = _Batch(self, jobs, on_result, window, timeout, keep)
        try:
            return await batch.run()
        finally:
            batch.close()


@dataclass
class _Sent:
    """A task in flight: submitted to the leader, and once placed, its bytes sent to ``worker``."""

    job: Job
    first: float  # when it was first submitted (for its latency)
    last: float  # when it was last sent anywhere (the resend rule)
    worker: str = ""  # host:port its bytes went to ("" = waiting for a placement)
    via_leader: bool = False  # they went on the leader connection (a lone task on its node): its answer comes there
    data_sent: int = 0  # times its bytes were sent
    asked: bool = False  # submitted, its placement not come yet (counted in _Batch.asked)


class _Batch:
    """One ``Client.run``: a window of tasks, each submitted to the leader and its bytes sent to the
    worker the leader places it on; answers read from the leader and every such worker at once.

    The steps, one method each: ``fill`` the window, ``ping`` the leader and the workers holding our
    tasks, ``receive`` one message and ``handle`` it (``Place`` -> send the bytes; ``Result`` ->
    deliver, or resubmit when it says ``moved`` / ``retry``), ``resend_stale`` tasks unanswered for
    ``CLIENT_RESEND_AFTER``, ``watch_workers`` (a silent worker's tasks are submitted again) and
    ``watch_leader`` (a silent or moved leader: fail over; tasks whose bytes are at a live worker
    stay there, only the others are submitted again)."""

    def __init__(
        self,
        client: Client,
        jobs: Iterable[Job],
        on_result: Callable[[JobResult], Awaitable[None] | None] | None,
        window: int,
        timeout: float | None,
        keep: bool,
    ) -> None:
        self.client = client
        self.fresh: Iterator[Job] = iter(jobs)
        self.on_result = on_result
        self.window = window
        self.timeout = timeout
        self.keep = keep
        self.exhausted = False
        self.order: list[str] = []
        self.pending: dict[str, _Sent] = {}
        self.results: dict[str, JobResult] = {}
        self.workers: dict[str, Dealer] = {}  # host:port -> a connection for the bytes and their answers
        self.live: frozenset[str] | None = None  # host:port of the live members, as the leader last said
        now = time.monotonic()
        self.deadline = None if timeout is None else now + timeout
        self.last_heard = self.last_ping = self.last_resend_check = now
        self.moved, self.hint = False, ""
        self._turn = 0
        self.ticket: Place | None = None  # a slot held for our next task (see Place.ticket), until ticket_until
        self.ticket_until = 0.0
        self.ahead: Job | None = None  # the next job, read but not sent: the byte budget said wait
        self.unanswered = 0  # bytes (image + mask) of the tasks in flight
        # (time, bytes answered by then) of the last answers, from the batch's start: the throughput
        self.answers: deque[tuple[float, int]] = deque([(now, 0)], maxlen=33)
        self.outbox: list[Submit] = []  # Submits for the leader, sent as one bundle per loop turn (flush)
        self.asked = 0  # our tasks the leader has and has not placed yet
        self.refill_at = max(1, window // 8)  # see fill
        # connect to the workers before the first task (see reach); not for one task at a time, nor for one
        # task (a single photo, an HTTP request): one connection carries the bytes, a slow member would delay it
        self.reaching = window > 1 and not (isinstance(jobs, Sized) and len(jobs) < 2)

    # ---- the loop -----------------------------------------------------------------------------
    async def run(self) -> list[JobResult]:
        if self.reaching:
            await self.reach()
        while True:
            await self.fill()
            await self.flush()
            if not self.pending and self.exhausted:
                break
            if self.deadline is not None and time.monotonic() >= self.deadline:
                await self.fail_all("timeout", f"no result within {self.timeout:g} s")
                break
            await self.ping()
            got = await self.receive()
            if got is not None:
                await self.handle(*got)
                # the rest of its bundle now, not a loop turn each: a lone task's Result comes after
                # its next ticket in one bundle, and its answer waited a turn behind the ticket
                while (rest := got[0].held_now()) is not None:
                    await self.handle(got[0], *rest)
            await self.resend_stale()
            if not await self.watch_leader():
                break
        return [self.results[t] for t in self.order if t in self.results]

    async def reach(self) -> None:
        """Connect to the mesh's workers (up to ``CLIENT_REACH_MAX``) and wait until each answers a ping
        (``CLIENT_REACH_WAIT`` at most), before any bytes flow. A connection opened later, once our link
        is full of another worker's bytes, can lose its handshake or first segment in the link's queue
        and wait out TCP's initial retransmission timeout (1 s, then 2): that worker then gets nothing
        for seconds while the first one runs our tasks alone. Opened now, every connection has its
        handshake and a round-trip time done on an idle link. Nothing but a ``Pong`` can come on these
        connections before our first task is sent, so nothing is lost reading them here. Not for a batch
        of one task, nor of one task at a time (``reaching``)."""
        leader = self.client.leader
        addrs = list(dict.fromkeys(leader.members if leader is not None else ()))[: const.CLIENT_REACH_MAX]

        dealers = [d for d in map(self.worker, addrs) if d is not None]
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(const.CLIENT_REACH_WAIT):
                await asyncio.gather(*map(_pong, dealers))

    def close(self) -> None:
        t, self.ticket = self.ticket, None
        if t is not None:  # unused: its slot is free at once, not when it lapses
            # on the connection a task of ours would have used: the worker's, or the leader's (a lone task's)
            to = self.workers.get(t.addr) or (self.client.dealer if self._on_leader(t) else None)
            if to is not None:
                to.send_now(Direct(ticket=t.ticket))
        for d in self.workers.values():
            d.close()
        self.workers.clear()

    @property
    def leader(self) -> Dealer:
        assert self.client.dealer is not None
        return self.client.dealer

    # ---- the window ---------------------------------------------------------------------------
    def _pull(self) -> Job | None:
        if self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            return ahead
        if self.exhausted:
            return None
        job = next(self.fresh, None)
        if job is None:
            self.exhausted = True
        return job

    def next_job(self) -> Job | None:
        job = self._pull()
        if job is not None and self.keep:
            self.order.append(job.task_id)
        return job

    def budget(self) -> float:
        """Bytes this batch may have in flight: ``CLIENT_BACKLOG_S`` of its throughput over its last 32
        answers (from its start until it has them), at least ``CLIENT_BYTES_FLOOR``. Every task placed
        starts its worker's wait for the bytes (``DATA_WAIT``); sending more than the client's link moves
        in that time makes the last ones come after their holds ended (then they are placed and sent
        again). The budget follows what was answered, so it grows as fast as the mesh and the link go."""
        (t0, b0), (t1, b1) = self.answers[0], self.answers[-1]
        rate = (b1 - b0) / (t1 - t0) if t1 - t0 > 0.01 else 0.0
        return max(const.CLIENT_BYTES_FLOOR, rate * const.CLIENT_BACKLOG_S)

    def _room(self) -> bool:
        """The window has room for the next job, by count and by bytes (one task always fits)."""
        if len(self.pending) >= self.window:
            return False
        if self.ahead is None:
            self.ahead = self._pull()
            if self.ahead is None:
                return False
        return not self.pending or self.unanswered + self.ahead.size <= self.budget()

    async def fill(self) -> None:
        """Take new jobs while the window has room. While the leader still has ``refill_at`` of our tasks
        to place, a place or two freed waits for more (up to ``refill_at``): their ``Submit``s then go as
        one message (a loop turn per answer, each sending one, cost the client and the leader more than
        the tasks' bytes at 64 KiB); the leader's queue of ours never runs dry for it."""
        free = self.window - len(self.pending)
        if free < self.refill_at and self.asked >= self.refill_at:
            return
        if free > 0 and self.ticket is None:
            await self.read_leader()  # an offer waiting there saves the next task the placement round trip
        max_frame = self.client.ctx.max_frame_bytes
        while self._room() and (job := self.next_job()) is not None:
            long = max((len(job.model), "model name"), (len(job.session), "session id"))
            if long[0] > const.MAX_NAME_CHARS:  # its header would be refused unread: say why here
                err = f"the {long[1]} is {long[0]:,} characters long; at most {const.MAX_NAME_CHARS}"
                await self.deliver(JobResult(job, False, error_code="input", error=err))
                continue
            big = max((len(job.image), "image"), (len(job.mask), "mask"))
            if big[0] > max_frame:  # the node would drop it unread: say why here
                limit = f"{max_frame:,} bytes (max_frame_bytes)"
                await self.deliver(JobResult(job, False, error_code="input", error=f"{big[1]} is over {limit}"))
                continue
            now = time.monotonic()
            sent = self.pending[job.task_id] = _Sent(job, now, now)
            self.unanswered += job.size
            if not await self.send_direct(sent):
                await self.submit(sent)

    def _on_leader(self, t: Place) -> bool:
        """The ticket names the leader's own node (the one our leader connection reaches)."""
        leader = self.client.leader
        return leader is not None and bool(t.node_id) and t.node_id == leader.leader_id

    async def send_direct(self, sent: _Sent) -> bool:
        """A new task, while we hold a ticket for its kind: its bytes straight to the ticket's worker,
        the leader told by ``Submit(ticket)`` (no placement round trip). False: no ticket to use.

        A lone task (nothing else in flight as it goes: ``run(window=1)``, or jobs read slower than they
        are answered) whose ticket names the leader's own node goes as one message on the leader
        connection, ``Direct(submit=True)``: the node takes it as the Submit and the bytes, and answers
        on that connection. One message less each way than two to the same node. With more in flight
        the bytes keep off the leader connection: our Submits and pings would wait behind them on a
        slow link."""
        t, job = self.ticket, sent.job
        if t is not None and time.monotonic() > self.ticket_until:
            self.ticket = t = None  # lapsed: the worker gives the slot back; the leader offers another
        if t is None or (t.model, t.requires) != (job.model, job.requires):
            return False
        self.ticket = None
        lone = len(self.pending) == 1 and self._on_leader(t)
        d = None if lone else self.worker(t.addr)
        if not lone and d is None:
            return False
        self.client.submitted = True
        if d is None:
            await self.leader.send(job.direct(t.ticket, submit=True), [job.image, job.mask])
            sent.via_leader = True
            self.client.lone += 1
        else:
            # the leader first (not in the outbox): it offers our next ticket when this Submit comes
            await self.leader.send(job.submit(t.ticket))
            await d.send(job.direct(t.ticket), [job.image, job.mask])
        sent.worker, sent.last, sent.data_sent = t.addr, time.monotonic(), 1
        self.client.direct += 1
        return True

    def worker(self, addr: str) -> Dealer | None:
        """Our connection to the worker at ``addr`` (host:port), made on first use; None if not an address."""
        d = self.workers.get(addr)
        if d is None:
            host, _, port = addr.rpartition(":")
            if not host or not port.isdigit():
                return None
            d = self.workers[addr] = self.client.ctx.dealer()
            d.connect(host, int(port))
        return d

    async def submit(self, sent: _Sent) -> None:
        """(Again) ask the leader to place it; the bytes wait for the answer. Sent by ``flush``."""
        if sent.worker or sent.data_sent:
            self.client.resubmitted += 1
        sent.worker, sent.via_leader = "", False
        sent.last = time.monotonic()
        if not sent.asked:
            sent.asked = True
            self.asked += 1
        self.client.submitted = True
        self.outbox.append(sent.job.submit())

    def _placed(self, sent: _Sent) -> None:
        if sent.asked:
            sent.asked = False
            self.asked -= 1

    async def flush(self) -> None:
        """Send the ``Submit``s this loop turn made, ``refill_at`` to a message. Not the whole window in
        one: the leader reads the clients' messages in turn (ZeroMQ queues each connection apart), so a
        batch's first window in one message was read before any other client's, placed alone by the
        first pass, and that client kept its lead (8 nodes, 3 clients, 256 KiB: it finished 0.75 s
        before the others, whose links then held the rest back: 0.89-0.90 of compute, 0.90-0.94 before)."""
        if self.outbox:
            out, self.outbox = self.outbox, []
            for i in range(0, len(out), self.refill_at):
                await self.leader.send_bundle(out[i : i + self.refill_at])

    async def deliver(self, r: JobResult) -> None:
        if self.keep:
            self.results[r.job.task_id] = r
        if self.on_result is not None:
            maybe = self.on_result(r)
            if maybe is not None:
                await maybe

    async def fail_all(self, code: str, why: str) -> None:
        for sent in list(self.pending.values()):
            await self.deliver(JobResult(sent.job, False, error_code=code, error=why))
        self.pending.clear()
        self.unanswered = 0
        self.asked = 0
        while (left := self.next_job()) is not None:
            await self.deliver(JobResult(left, False, error_code=code, error=why))

    # ---- messages -----------------------------------------------------------------------------
    async def ping(self) -> None:
        now = time.monotonic()
        if now - self.last_ping < const.CLIENT_PING_INTERVAL:
            return
        self.last_ping = now
        await self.leader.send(Ping(0))

    async def receive(self) -> tuple[Dealer, Message, list[Any]] | None:
        wait = const.CLIENT_PING_INTERVAL
        if self.deadline is not None:
            wait = min(wait, max(0.0, self.deadline - time.monotonic()))
        socks = [self.leader, *self.workers.values()]
        self._turn += 1
        got = await recv_any(socks, wait, self._turn)
        if got is not None and got[0] is self.leader:
            self.last_heard = time.monotonic()
        return got

    async def read_leader(self) -> None:
        """Handle what the leader has sent and we have not read. ``receive`` takes one message a turn,
        from the leader and the workers in rotation: a task's result (from its worker) and the ticket for
        the next task (from the leader, sent when the task's ``Submit`` came) often wait together, and
        read in that order the next task went without its ticket (64 KiB one at a time: 46 of 300, p50
        0.66 ms against 0.45 when none did)."""
        while (got := self.leader.recv_now()) is not None:
            self.last_heard = time.monotonic()
            await self.handle(self.leader, *got)

    async def handle(self, sock: Dealer, msg: Message, blobs: list[Any]) -> None:
        if isinstance(msg, Place):
            await self.on_place(msg)
        elif isinstance(msg, Result):
            await self.on_result_msg(msg, blobs)
        elif isinstance(msg, Pong) and sock is self.leader:
            if msg.leader_id != msg.node_id:
                self.moved, self.hint = True, msg.leader_addr
            else:
                self.client._learn(msg, ("", 0))
                self.live = frozenset(msg.members)
                await self.watch_workers()  # judged when the leader says who lives (every ping), not per message

    async def on_place(self, msg: Place) -> None:
        if msg.ticket and not msg.task_id:  # a slot held for our next task of this kind
            if any(not p.worker for p in self.pending.values()):
                # tasks of ours wait for a place: the offer crossed them (the leader forgets it when
                # they come), and our next task would go long after: let its slot go now
                d = self.worker(msg.addr)
                if d is not None:
                    await d.send(Direct(ticket=msg.ticket))
                return
            self.ticket, self.ticket_until = msg, time.monotonic() + max(0.0, min(msg.ttl_s, const.TICKET_TTL_MAX))
            return
        sent = self.pending.get(msg.task_id)
        d = self.worker(msg.addr)
        if d is None:
            return
        if sent is None:  # answered already (a leader placed it again after a change): free its slot
            await d.send(Data(msg.task_id, msg.attempt, withdrawn=True))
            return
        if sent.data_sent:
            self.client.resent += 1
            log.debug("task %s placed again at %s (attempt %d)", msg.task_id[:12], msg.addr, msg.attempt)
        self._placed(sent)
        sent.worker, sent.last, sent.via_leader = msg.addr, time.monotonic(), False
        sent.data_sent += 1
        await d.send(Data(msg.task_id, msg.attempt), [sent.job.image, sent.job.mask])

    async def on_result_msg(self, msg: Result, blobs: list[Any]) -> None:
        sent = self.pending.get(msg.task_id)
        if sent is None:
            return  # a second answer (the task ran twice): delivered once already
        if msg.error_code == MOVED:  # the leader no longer leads: unplaced, so watch_leader submits it anew
            sent.worker, sent.via_leader = "", False
            self.moved, self.hint = True, msg.error
            return
        if msg.error_code == RETRY:  # a worker had no placement for its bytes: ask the leader again
            log.info("task %s: %s said %s; submitting it again", msg.task_id[:12], msg.node_id, msg.error)
            await self.submit(sent)
            return
        del self.pending[msg.task_id]
        self._placed(sent)
        self.unanswered -= sent.job.size
        self.answers.append((time.monotonic(), self.answers[-1][1] + sent.job.size))
        data = blobs[0].buffer.toreadonly() if (msg.ok and blobs) else b""  # zero-copy: see JobResult.data
        await self.deliver(
            JobResult(
                sent.job,
                msg.ok,
                data,
                msg.out_format,
                msg.node_id,
                msg.error_code,
                msg.error,
                msg.model_ms,
                (time.monotonic() - sent.first) * 1000,
                msg.notes,
            )
        )

    # ---- failures -----------------------------------------------------------------------------
    async def resend_stale(self) -> None:
        """A task unanswered for ``CLIENT_RESEND_AFTER`` while the mesh answers pings is submitted
        again: safe, as the leader ignores a task id it still holds, and answers are deduplicated."""
        now = time.monotonic()
        if now - self.last_resend_check < 1.0:  # once a second, not per answer: O(window)
            return
        self.last_resend_check = now
        for sent in [s for s in self.pending.values() if now - s.last > const.CLIENT_RESEND_AFTER]:
            log.info("task %s unanswered for %g s; sending it again", sent.job.task_id[:12], const.CLIENT_RESEND_AFTER)
            await self.submit(sent)

    async def watch_workers(self) -> None:
        """A worker holding our bytes that the leader no longer lists as a live member: submit its tasks
        again. (Its own connection is no judge: a result of many MiB on a busy link keeps it quiet for
        seconds. The leader re-places a dead worker's tasks itself; this covers a leader that changed.)"""
        leader = self.client.leader
        if self.live is None or leader is None or leader.leader_addr not in self.live:
            return  # no list yet, or the leader itself is leaving (its list leaves itself out): no judge
        busy = {s.worker for s in self.pending.values() if s.worker}
        for addr in busy - self.live:
            await self.forget_worker(addr, "is no longer a live member")

    async def forget_worker(self, addr: str, why: str) -> None:
        log.info("worker at %s %s; submitting its tasks again", addr, why)
        if self.ticket is not None and self.ticket.addr == addr:
            self.ticket = None
        d = self.workers.pop(addr, None)
        if d is not None:
            d.close()
        for sent in [s for s in self.pending.values() if s.worker == addr]:
            await self.submit(sent)

    async def watch_leader(self) -> bool:
        """Fail over when the leader is silent or moved; False when no leader could be found."""
        silent = time.monotonic() - self.last_heard > self.client.dead_timeout / 2
        if not (self.moved or silent) or not (self.pending or not self.exhausted):
            return True
        client = self.client
        old = client.leader
        why = "moved" if self.moved else f"silent for {client.dead_timeout / 2:g} s"
        log.info("leader %s: %s", old.leader_id if old else "?", why)
        if not await client._failover(self.hint, self.deadline):
            await self.fail_all("no_mesh", "the mesh lost its leader and no new leader answered")
            return False
        self.moved, self.hint = False, ""
        self.ticket = None  # the old leader's
        self.live = None  # until the new leader says who lives
        self.last_heard = self.last_ping = time.monotonic()
        if silent and old is not None and old.leader_addr in self.workers:
            await self.forget_worker(old.leader_addr, "was the leader that went silent")
        # the tasks not placed yet go to the new leader; those whose bytes are at a live worker stay there,
        # but not those sent on the old leader connection (closed now: their answers would come on it)
        for sent in [s for s in self.pending.values() if not s.worker or s.via_leader]:
            await self.submit(sent)
        return True
