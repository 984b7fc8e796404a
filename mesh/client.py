"""The client side of the mesh: find a node, submit tasks, collect results exactly once.

Delivery is at-least-once: the client keeps every task until its result arrives and
may send it again; results are deduplicated by task id, so each task is answered to
the caller exactly once. With no node answering, ``embedded()`` runs a node inside
this process (its slots are still separate processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace

from . import const
from .config import Config
from .errors import NoMesh
from .node import Node
from .protocol import Ping, Pong, Result, Status, StatusRequest, Submit
from .transport import Context, Dealer

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
    def __init__(
        self, ctx: Context, peers: Iterable[tuple[str, int]], probe_timeout: float = const.CLIENT_PROBE_TIMEOUT
    ) -> None:
        self.ctx = ctx
        self.peers = list(peers)
        self.probe_timeout = probe_timeout
        self.dealer: Dealer | None = None
        self.leader: Pong | None = None

    async def _probe(self, host: str, port: int) -> tuple[Dealer, Pong] | None:
        d = self.ctx.dealer()
        d.connect(host, port)
        nonce = secrets.randbits(31)
        await d.send(Ping(nonce))
        deadline = time.monotonic() + self.probe_timeout
        try:
            while (left := deadline - time.monotonic()) > 0:
                msg, _ = await asyncio.wait_for(d.recv(), left)
                if isinstance(msg, Pong) and msg.nonce == nonce:
                    return d, msg
        except TimeoutError:
            pass
        d.close()
        return None

    async def connect(self) -> Pong:
        """Reach the first peer that answers; raises ``NoMesh`` if none does."""
        for host, port in self.peers:
            got = await self._probe(host, port)
            if got is not None:
                self.dealer, self.leader = got
                return got[1]
        tried = ", ".join(f"{h}:{p}" for h, p in self.peers) or "no peers"
        raise NoMesh(f"no lamamesh node answered at {tried} within {self.probe_timeout:g} s")

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

    async def run(
        self,
        jobs: Iterable[Job],
        on_result: Callable[[JobResult], Awaitable[None] | None] | None = None,
        window: int = 64,
        timeout: float | None = None,
    ) -> list[JobResult]:
        """Submit ``jobs`` with up to ``window`` in flight; each job is answered exactly once."""
        assert self.dealer is not None, "connect() first"
        dealer = self.dealer
        todo = list(jobs)
        pending: dict[str, tuple[Job, float]] = {}
        results: dict[str, JobResult] = {}
        order = [j.task_id for j in todo]
        deadline = None if timeout is None else time.monotonic() + timeout
        nxt = 0

        async def deliver(r: JobResult) -> None:
            results[r.job.task_id] = r
            if on_result is not None:
                maybe = on_result(r)
                if maybe is not None:
                    await maybe

        while nxt < len(todo) or pending:
            while nxt < len(todo) and len(pending) < window:
                job = todo[nxt]
                nxt += 1
                pending[job.task_id] = (job, time.monotonic())
                await dealer.send(job.submit(), [job.image, job.mask])
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                for job, _ in pending.values():
                    await deliver(JobResult(job, False, error_code="failed", error=f"no result within {timeout:g} s"))
                pending.clear()
                break
            try:
                msg, blobs = await asyncio.wait_for(dealer.recv(), left)
            except TimeoutError:
                continue
            if not isinstance(msg, Result) or msg.task_id not in pending:
                continue  # a duplicate or stray answer: each task is output once
            job, sent = pending.pop(msg.task_id)
            data = bytes(blobs[0].buffer) if (msg.ok and blobs) else b""
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
        return [results[t] for t in order if t in results]


@contextlib.asynccontextmanager
async def embedded(config: Config) -> AsyncIterator[Node]:
    """A node inside this process on 127.0.0.1 with ephemeral ports, for as long as the block runs."""
    node = Node(replace(config, bind="127.0.0.1", port=0, http=0, peers=()))
    runner = asyncio.create_task(node.run(), name="embedded-node")
    ready = asyncio.create_task(node.ready.wait())
    try:
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            runner.result()  # raises what made the node fail
        yield node
    finally:
        ready.cancel()
        node.request_stop()
        with contextlib.suppress(asyncio.CancelledError):
            await runner
