"""A node's worker side: a DEALER to the leader's backend, feeding tasks to the slots.

Credit-based: the worker grants the leader ``slots + prefetch`` credits when it joins,
and each ``Done`` it sends returns one, so it never holds more tasks than it can start
soon. Each task runs in a slot process (``slots.SlotPool``), never on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Any

from mesh import const
from mesh.execute.slots import Executor, SlotResult
from mesh.wire.protocol import Bye, Done, Message, Ready, Task
from mesh.wire.transport import Context, Dealer

log = logging.getLogger("lamamesh.worker")
LOCAL = "local"  # Worker.follow's endpoint for its own node's router


class Worker:
    def __init__(
        self,
        ctx: Context,
        node_id: str,
        host: str,
        pool: Executor,
        prefetch: int = const.WORKER_PREFETCH,
        vram_mb: int = 0,
        models: list[str] | None = None,
    ) -> None:
        self.node_id = node_id
        self.host = host
        self.pool = pool
        self.prefetch = prefetch
        self.vram_mb = vram_mb
        self.models = models or []
        self.identity = node_id.encode()
        self.dealer: Dealer = ctx.dealer(identity=self.identity)
        self.running: set[asyncio.Task[None]] = set()
        self.done = 0
        self.failed = 0
        self.outcomes: Counter[str] = Counter()  # finished tasks by outcome ("ok" or the error code)
        self.on_finished: Callable[[str, bool, float], None] | None = None  # (model, ok, ms in the slot)
        self.following = ""  # the endpoint of the leader's backend it follows ("local": its own node's)
        # its own node's router, reached by a call instead of a socket while this node leads
        # (no copy, encode, decode or loop wake-up per message); set by the node
        self.local: Callable[[bytes, Message, list[Any]], Awaitable[None]] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self.leaving = False
        self.last_ready = 0.0
        self.started = time.monotonic()
        self._finished: deque[float] = deque()  # monotonic times of the tasks finished in the rate window

    def rate(self, now: float | None = None) -> float:
        """Tasks/s finished over the last ``RATE_WINDOW`` seconds (or since the start, if sooner)."""
        now = time.monotonic() if now is None else now
        while self._finished and now - self._finished[0] > const.RATE_WINDOW:
            self._finished.popleft()
        span = min(const.RATE_WINDOW, max(1.0, now - self.started))
        return len(self._finished) / span

    async def follow(self, endpoint: str) -> None:
        """Follow a leader (leaving any previous one) and grant it our free capacity.
        ``endpoint``: its backend's ``tcp://host:port``, or ``local`` for this node's own router."""
        if endpoint == self.following or self.leaving:
            return
        self.dealer.disconnect()
        if endpoint != LOCAL:
            self.dealer.connect_endpoint(endpoint)
        self.following = endpoint
        await self.send_ready()

    async def _send(self, msg: Message, blobs: list[Any] | tuple[()] = ()) -> None:
        if self.following == LOCAL and self.local is not None:
            await self.local(self.identity, msg, list(blobs))
        else:
            await self.dealer.send(msg, blobs)

    def take(self, task: Task, blobs: list[Any]) -> None:
        """Start a task: one from the socket (``run``), or from this node's own router by a call."""
        coro = self._run_one(task, blobs)
        t = self._tg.create_task(coro) if self._tg is not None else asyncio.get_running_loop().create_task(coro)
        self.running.add(t)
        t.add_done_callback(self.running.discard)

    async def send_ready(self) -> None:
        """(Re)grant the leader our whole free capacity; also sent again when the leader's heartbeat
        does not list us (a Ready that arrived before it knew it leads is lost)."""
        if not self.following or self.leaving:
            return
        self.last_ready = time.monotonic()
        credits = max(0, self.pool.size + self.prefetch - len(self.running))
        ready = Ready(self.node_id, credits, self.pool.size, self.pool.provider, self.host, self.vram_mb, self.models)
        await self._send(ready)

    def unfollow(self) -> None:
        self.dealer.disconnect()
        self.following = ""

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            while True:
                msg, blobs = await self.dealer.recv()
                if isinstance(msg, Task):
                    self.take(msg, blobs)

    async def _run_one(self, task: Task, blobs: list[Any]) -> None:
        if len(blobs) != 2:
            res = SlotResult(False, error_code="input", error="a task needs two frames: image and mask")
        else:
            try:
                res = await self.pool.run(task, blobs[0], blobs[1])  # frames: buffers, resent without a copy
            except Exception as exc:  # never lose a task to a bug: answer it with the error
                log.exception("task %s raised", task.task_id)
                res = SlotResult(False, error_code="failed", error=f"{type(exc).__name__}: {exc}")
        self._finished.append(time.monotonic())
        self.outcomes["ok" if res.ok else res.error_code or "failed"] += 1
        if self.on_finished is not None:
            self.on_finished(task.model, res.ok, res.total_ms)
        if res.ok:
            self.done += 1
        else:
            self.failed += 1
            if res.error_code == "failed":
                log.warning("task %s failed: %s", task.task_id, res.error)
        done = Done(task.task_id, res.ok, res.error_code, res.error, self.node_id, res.out_format, res.total_ms)
        await self._send(done, [res.data] if res.ok else [])

    async def leave(self) -> None:
        """Tell the leader to give our queued tasks to others; the running ones still answer."""
        self.leaving = True
        if self.following:
            await self._send(Bye(self.node_id))

    def close(self) -> None:
        self.dealer.close()
