"""The leader's task router: clients' ROUTER in front, workers' ROUTER behind.

Clients send ``Submit`` to the front; the leader queues tasks (interactive ahead of
batch, FIFO within each), and sends each to the worker ``routing.place`` picks,
never beyond the credits that worker granted. Image frames pass through untouched
(the leader never decodes an image). A worker's ``Done`` goes back to the client
that submitted the task, by task id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import logging
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from . import const, routing
from .errors import Overloaded
from .protocol import Bye, Done, Message, Ping, Pong, Ready, Result, Status, StatusRequest, Submit, Task
from .transport import Router

log = logging.getLogger("lamamesh.leader")
PRIORITY = {"interactive": 0, "batch": 1}


def _fields(msg: Message) -> dict[str, Any]:
    return {f.name: getattr(msg, f.name) for f in dataclasses.fields(msg)}


@dataclass
class Pending:
    task: Task
    client: bytes
    blobs: list[Any]
    seq: int
    submitted: float
    worker: bytes | None = None

    @property
    def key(self) -> tuple[int, int]:
        return (PRIORITY.get(self.task.priority, 1), self.seq)


@dataclass
class WorkerState:
    identity: bytes
    node_id: str
    slots: int
    credits: int
    provider: str = ""
    host: str = ""
    assigned: set[str] = field(default_factory=set)
    service_ms: dict[str, float] = field(default_factory=dict)
    done: int = 0
    last_seen: float = 0.0

    def load(self) -> routing.WorkerLoad:
        return routing.WorkerLoad(self.node_id, self.credits, len(self.assigned), self.slots, dict(self.service_ms))


class Leader:
    def __init__(self, node_id: str, mesh: str, front: Router, back: Router, advertised: str) -> None:
        self.node_id = node_id
        self.mesh = mesh
        self.term = 1
        self.front = front
        self.back = back
        self.advertised = advertised  # host:port clients should talk to
        self.queue: list[tuple[tuple[int, int], str]] = []
        self.tasks: dict[str, Pending] = {}
        self.workers: dict[bytes, WorkerState] = {}
        self.affinity: dict[str, str] = {}
        self.per_client: Counter[bytes] = Counter()
        self.outcomes: Counter[str] = Counter()
        self.accepting = True
        self._seq = itertools.count()
        self._changed = asyncio.Event()

    # ---- clients -------------------------------------------------------------------
    async def serve_front(self) -> None:
        while True:
            client, msg, blobs = await self.front.recv()
            try:
                await self._on_front(client, msg, blobs)
            except Exception:  # a bug handling one message must not take the node down
                log.exception("error handling %s from a client", msg.t)

    async def _on_front(self, client: bytes, msg: Message, blobs: list[Any]) -> None:
        if isinstance(msg, Submit):
            await self._submit(client, msg, blobs)
        elif isinstance(msg, Ping):
            await self.front.send(
                client, Pong(msg.nonce, self.node_id, self.mesh, self.node_id, self.advertised, self.term)
            )
        elif isinstance(msg, StatusRequest):
            await self.front.send(client, self.status())
        else:
            log.debug("ignored %s from a client", msg.t)

    async def _reject(self, client: bytes, task_id: str, code: str, error: str) -> None:
        self.outcomes[code] += 1
        await self.front.send(client, Result(task_id, False, code, error, self.node_id))

    async def _submit(self, client: bytes, msg: Submit, blobs: list[Any]) -> None:
        if not msg.task_id:
            return await self._reject(client, "", "input", "task has no id")
        if not self.accepting:
            return await self._reject(client, msg.task_id, "no_mesh", f"node {self.node_id} is shutting down")
        if len(blobs) != 2:
            return await self._reject(client, msg.task_id, "input", "a task needs two frames: image and mask")
        known = self.tasks.get(msg.task_id)
        if known is not None:  # a resubmission of a task still here: answer the newest asker once
            if known.client != client:
                self.per_client[known.client] -= 1
                self.per_client[client] += 1
                known.client = client
            return None
        if self.per_client[client] >= const.MAX_QUEUED_PER_CLIENT:
            err = Overloaded(f"more than {const.MAX_QUEUED_PER_CLIENT} tasks queued from one client; wait for results")
            return await self._reject(client, msg.task_id, err.code, str(err))
        p = Pending(Task(**_fields(msg)), client, blobs, next(self._seq), time.monotonic())
        self.tasks[msg.task_id] = p
        self.per_client[client] += 1
        heapq.heappush(self.queue, (p.key, msg.task_id))
        await self.dispatch()
        return None

    # ---- workers -------------------------------------------------------------------
    async def serve_back(self) -> None:
        while True:
            ident, msg, blobs = await self.back.recv()
            try:
                await self._on_back(ident, msg, blobs)
            except Exception:  # a bug handling one message must not take the node down
                log.exception("error handling %s from a worker", msg.t)

    async def _on_back(self, ident: bytes, msg: Message, blobs: list[Any]) -> None:
        now = time.monotonic()
        if isinstance(msg, Ready):
            w = self.workers.get(ident)
            if w is None:
                w = WorkerState(ident, msg.node_id, max(1, msg.slots), 0, msg.provider, msg.host)
                self.workers[ident] = w
                log.info("worker %s joined (%d slots, %s)", msg.node_id, w.slots, msg.provider)
            w.credits += max(0, msg.credits)
            w.last_seen = now
            await self.dispatch()
        elif isinstance(msg, Done):
            await self._done(ident, msg, blobs, now)
        elif isinstance(msg, Bye):
            await self.drop_worker(ident, "left")

    async def _done(self, ident: bytes, msg: Done, blobs: list[Any], now: float) -> None:
        w = self.workers.get(ident)
        p = self.tasks.get(msg.task_id)
        if w is not None:
            w.last_seen = now
            if msg.task_id in w.assigned:
                w.assigned.discard(msg.task_id)
                w.credits += 1
            if msg.ok:
                w.done += 1
                p_model = p.task.model if p else "builtin"
                w.service_ms[p_model] = routing.ewma(w.service_ms.get(p_model), msg.model_ms)
        if p is None:
            return await self.dispatch()  # a duplicate answer (task re-queued and done twice): drop it
        del self.tasks[msg.task_id]
        self.per_client[p.client] -= 1
        if self.per_client[p.client] <= 0:
            del self.per_client[p.client]
        self.outcomes["ok" if msg.ok else (msg.error_code or "failed")] += 1
        await self.front.send(p.client, Result(**_fields(msg)), blobs[:1] if msg.ok else ())
        await self.dispatch()
        self._changed.set()
        return None

    async def drop_worker(self, ident: bytes, why: str) -> None:
        w = self.workers.pop(ident, None)
        if w is None:
            return
        requeued = 0
        for task_id in w.assigned:
            p = self.tasks.get(task_id)
            if p is not None:
                p.worker = None
                p.task = replace(p.task, attempt=p.task.attempt + 1)
                heapq.heappush(self.queue, (p.key, task_id))
                requeued += 1
        log.info("worker %s %s; %d of its tasks re-queued", w.node_id, why, requeued)
        await self.dispatch()

    async def dispatch(self) -> None:
        """Send queued tasks to workers while any has credit."""
        skipped: list[tuple[tuple[int, int], str]] = []
        while self.queue:
            loads = {w.node_id: w.load() for w in self.workers.values() if w.credits > 0}
            if not loads:
                break
            key, task_id = heapq.heappop(self.queue)
            p = self.tasks.get(task_id)
            if p is None or p.worker is not None:
                continue
            node = routing.place(loads, routing.TaskNeeds(p.task.model, p.task.session), self.affinity)
            if node is None:
                skipped.append((key, task_id))
                continue
            w = next(w for w in self.workers.values() if w.node_id == node)
            w.credits -= 1
            w.assigned.add(task_id)
            p.worker = w.identity
            if p.task.session:
                self.affinity[p.task.session] = node
            await self.back.send(w.identity, p.task, p.blobs)
        for item in skipped:
            heapq.heappush(self.queue, item)

    # ---- shutdown and status -------------------------------------------------------------
    async def drain(self, timeout: float) -> None:
        """Stop taking tasks; wait for those held to finish, then answer the rest with an error."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                break
        for task_id, p in list(self.tasks.items()):
            await self._reject(p.client, task_id, "no_mesh", f"node {self.node_id} shut down before the task ran")
        self.tasks.clear()
        self.queue.clear()

    def status(self) -> Status:
        nodes = []
        for w in self.workers.values():
            nodes.append(
                {
                    "id": w.node_id,
                    "host": w.host,
                    "port": int(self.advertised.rsplit(":", 1)[1]) if w.node_id == self.node_id else 0,
                    "role": "leader" if w.node_id == self.node_id else "worker",
                    "alive": True,
                    "provider": w.provider,
                    "slots": w.slots,
                    "busy": len(w.assigned),
                    "queued": 0,
                    "done": w.done,
                    "ewma_ms": {k: round(v, 1) for k, v in w.service_ms.items()},
                }
            )
        return Status(
            self.mesh,
            self.node_id,
            self.term,
            nodes,
            queued=len(self.queue),
            done=self.outcomes["ok"],
            failed=sum(v for k, v in self.outcomes.items() if k != "ok"),
        )
