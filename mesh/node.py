"""A node: one asyncio process that binds its sockets, leads (or follows) and works.

``Node.run()`` owns one root TaskGroup. Sockets are bound first (a port in use fails
before anything starts), then the slot processes start, then the node serves until
``request_stop()``: it stops taking tasks, lets those it holds finish (bounded by
``shutdown_grace``), answers any left with a clear error, and closes everything.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from typing import Any

from . import capabilities
from .config import Config
from .leader import Leader
from .slots import SlotPool, SlotSettings
from .transport import Context
from .worker import Worker

log = logging.getLogger("lamamesh.node")


def new_node_id(port: int) -> str:
    host = socket.gethostname().split(".")[0][:24] or "node"
    return f"{host}-{port}-{secrets.token_hex(2)}"


class Node:
    def __init__(self, config: Config, node_id: str | None = None) -> None:
        self.config = config
        self.node_id = node_id or ""
        self.caps = capabilities.detect()
        self.task_port = 0
        self.backend_port = 0
        self.ready = asyncio.Event()
        self.leader: Leader | None = None
        self.worker: Worker | None = None
        self.pool: SlotPool | None = None
        self._stop = asyncio.Event()

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def slot_count(self) -> int:
        return self.config.slots or capabilities.default_slots(self.caps)

    async def run(self) -> None:
        cfg = self.config
        ctx = Context()
        front, back = ctx.router(), ctx.router()
        try:
            self.task_port = front.bind(cfg.bind, cfg.port)
            self.backend_port = back.bind(cfg.bind, self.task_port + 1 if cfg.port else 0)
            self.node_id = self.node_id or new_node_id(self.task_port)
            advertised_host = cfg.local_host if cfg.bind not in ("0.0.0.0", "", "*") else self.caps.host
            self.leader = Leader(self.node_id, cfg.mesh, front, back, f"{advertised_host}:{self.task_port}")
            slots = self.slot_count
            threads = max(1, self.caps.cores // slots)
            self.pool = SlotPool(slots, SlotSettings(cfg.home, cfg.device, threads, cfg.max_pixels))
            await self.pool.start()
            log.info("execution: %s (%d slots, %d threads each)", self.pool.reason, slots, threads)
            self.worker = Worker(ctx, self.node_id, self.caps.host, self.pool)
            self.worker.connect(cfg.local_host, self.backend_port)
            log.info(
                "node %s leads mesh %r (term %d); tasks on %s:%d",
                self.node_id,
                cfg.mesh,
                self.leader.term,
                cfg.bind,
                self.task_port,
            )
            async with asyncio.TaskGroup() as tg:
                services: list[asyncio.Task[Any]] = [
                    tg.create_task(self.leader.serve_front(), name="front"),
                    tg.create_task(self.leader.serve_back(), name="back"),
                    tg.create_task(self.worker.run(), name="worker"),
                ]
                self.ready.set()
                await self._stop.wait()
                log.info("leaving: finishing %d tasks (up to %.0f s)", len(self.leader.tasks), cfg.shutdown_grace)
                await self.leader.drain(cfg.shutdown_grace)
                for t in services:
                    t.cancel()
        finally:
            self.ready.clear()
            if self.pool is not None:
                await self.pool.close()
            for closer in (front.close, back.close, self.worker.close if self.worker else None):
                if closer is not None:
                    closer()
            ctx.close()
            log.info("node %s stopped", self.node_id or "(not started)")
