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
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mesh import const
from mesh.errors import NoMesh
from mesh.surface.snapshot import Snapshot, from_status
from mesh.wire.protocol import MOVED, Message, Ping, Pong, Result, Status, StatusRequest, Submit
from mesh.wire.transport import Context, Dealer

log = logging.getLogger("lamamesh.client")


@dataclass(frozen=True)
class Job:
    image: bytes
    mask: bytes
    model: str = "builtin"
    priority: str = "interactive"
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

    def submit(self) -> Submit:
        return Submit(
            self.task_id,
            self.model,
            self.priority,
            self.session,
            self.out_format,
            self.hd_strategy,
            self.crop_margin,
            self.crop_trigger,
            self.resize_limit,
            self.pixels,
            self.requires,
        )


@dataclass(frozen=True)
class JobResult:
    job: Job
    ok: bool
    data: bytes = b""
    out_format: str = ""
    node_id: str = ""
    error_code: str = ""
    error: str = ""
    slot_ms: float = 0.0
    latency_ms: float = 0.0


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
        self._answered = False  # some node answered a probe (a mesh exists, perhaps still electing)

    async def _probe(self, host: str, port: int, timeout: float | None = None) -> tuple[Dealer, Pong] | None:
        d = self.ctx.dealer()
        ok = False
        try:
            d.connect(host, port)
            nonce = secrets.randbits(31)
            await d.send(Ping(nonce))
            async with asyncio.timeout(self.probe_timeout if timeout is None else timeout):
                while True:
                    msg, _ = await d.recv()
                    if isinstance(msg, Pong) and msg.nonce == nonce:
                        ok = True
                        return d, msg
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
        if self.dealer is not None:
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
        fresh: Iterator[Job] = iter(jobs)
        todo: deque[Job] = deque()  # jobs to send again (moved, or the leader changed), before fresh ones
        exhausted = False
        order: list[str] = []
        first_sent: dict[str, float] = {}
        last_sent: dict[str, float] = {}  # when each pending task was last sent to the current leader
        pending: dict[str, Job] = {}  # sent to the current leader, not answered
        results: dict[str, JobResult] = {}
        deadline = None if timeout is None else time.monotonic() + timeout
        last_heard = last_ping = last_resend_check = time.monotonic()

        def next_job() -> Job | None:
            nonlocal exhausted
            if todo:
                return todo.popleft()
            if exhausted:
                return None
            job = next(fresh, None)
            if job is None:
                exhausted = True
            elif keep:
                order.append(job.task_id)
            return job

        async def deliver(r: JobResult) -> None:
            if keep:
                results[r.job.task_id] = r
            if on_result is not None:
                maybe = on_result(r)
                if maybe is not None:
                    await maybe

        async def fail_all(code: str, why: str) -> None:
            for sent in list(pending.values()):
                await deliver(JobResult(sent, False, error_code=code, error=why))
            pending.clear()
            while (left := next_job()) is not None:
                await deliver(JobResult(left, False, error_code=code, error=why))

        while True:
            dealer = self.dealer
            assert dealer is not None
            while len(pending) < window and (job := next_job()) is not None:
                big = max((len(job.image), "image"), (len(job.mask), "mask"))
                if big[0] > self.ctx.max_frame_bytes:  # the node would drop it unread: say why here
                    limit = f"{self.ctx.max_frame_bytes:,} bytes (max_frame_bytes)"
                    await deliver(JobResult(job, False, error_code="input", error=f"{big[1]} is over {limit}"))
                    continue
                pending[job.task_id] = job
                first_sent.setdefault(job.task_id, time.monotonic())
                last_sent[job.task_id] = time.monotonic()
                await dealer.send(job.submit(), [job.image, job.mask])
            if not pending and not todo and exhausted:
                break
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                await fail_all("timeout", f"no result within {timeout:g} s")
                break
            if now - last_ping >= const.CLIENT_PING_INTERVAL:
                await dealer.send(Ping(0))
                last_ping = now
            wait = const.CLIENT_PING_INTERVAL
            if deadline is not None:
                wait = min(wait, max(0.0, deadline - now))
            moved, hint = False, ""
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
            # races with the message arriving, and a cancelled run() would then go on
            msg: Message | None = None
            blobs: list[Any] = []
            got = dealer.recv_now()  # under load an answer is usually here already: no timer needed
            if got is not None:
                msg, blobs = got
            else:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        msg, blobs = await dealer.recv()
            if msg is not None:
                last_heard = time.monotonic()
            if isinstance(msg, Pong):
                if msg.leader_id != msg.node_id:
                    moved, hint = True, msg.leader_addr
                else:
                    self._learn(msg, ("", 0))
            elif isinstance(msg, Result) and msg.task_id in pending:
                job = pending.pop(msg.task_id)
                if msg.error_code == MOVED:
                    todo.appendleft(job)
                    moved, hint = True, msg.error
                else:
                    data = bytes(blobs[0].buffer) if (msg.ok and blobs) else b""
                    sent = first_sent.pop(job.task_id, time.monotonic())
                    last_sent.pop(job.task_id, None)
                    await deliver(
                        JobResult(
                            job,
                            msg.ok,
                            data,
                            msg.out_format,
                            msg.node_id,
                            msg.error_code,
                            msg.error,
                            msg.model_ms,
                            (time.monotonic() - sent) * 1000,
                        )
                    )
            # a leader that answers pings but not a task for CLIENT_RESEND_AFTER gets it again: safe,
            # as it ignores a task id it still holds. A Result lost to a receive timing out as it arrived
            # (pyzmq's asyncio socket read it into the Future the timeout cancelled) cannot happen with
            # transport's sockets (tests/test_transport.py); this stays as the last line of defence
            stale: list[str] = []
            if time.monotonic() - last_resend_check >= 1.0:  # once a second, not per answer: O(window)
                last_resend_check = time.monotonic()
                stale = [t for t in pending if last_resend_check - last_sent.get(t, 0.0) > const.CLIENT_RESEND_AFTER]
            for task_id in stale:
                job = pending[task_id]
                last_sent[task_id] = time.monotonic()
                log.info("task %s unanswered for %g s; sending it again", task_id[:12], const.CLIENT_RESEND_AFTER)
                await dealer.send(job.submit(), [job.image, job.mask])
            silent = time.monotonic() - last_heard > self.dead_timeout / 2
            if (moved or silent) and (todo or pending or not exhausted):
                why = "moved" if moved else f"silent for {self.dead_timeout / 2:g} s"
                log.info("leader %s: %s", self.leader.leader_id if self.leader else "?", why)
                if not await self._failover(hint, deadline):
                    await fail_all("no_mesh", "the mesh lost its leader and no new leader answered")
                    break
                todo.extendleft(reversed(list(pending.values())))  # resubmit, oldest first
                pending.clear()
                last_heard = last_ping = time.monotonic()
        return [results[t] for t in order if t in results]
