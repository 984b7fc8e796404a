"""Chaos under load (tests/test_chaos.py runs it short, bench/chaos.py long): a batch over several
node processes while nodes are killed with SIGKILL (the leader among them) and restarted on the
same port, slot processes are killed, and a node is frozen with SIGSTOP for longer than the dead
timeout and then thawed (a zombie leader). Afterwards every task must have exactly one output,
byte-identical to a single-node run of the same inputs, and no process or port may be left."""

from __future__ import annotations

import asyncio
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from mesh.surface.client import Client, Job, JobResult
from mesh.wire.transport import Context

from .cluster import Cluster, NodeProc, cluster, png, wait_mesh

FLAGS = ["--slots", "1", "--device", "cpu"]


def inputs(n: int, size: tuple[int, int] = (192, 256)) -> list[Job]:
    h, w = size
    mask = np.zeros((h, w), np.uint8)
    mask[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
    m = png(mask)
    return [
        Job(png(np.random.default_rng(k).integers(0, 255, (h, w, 3), np.uint8)), m, priority="batch", label=str(k))
        for k in range(n)
    ]


def run(port: int, jobs: list[Job], on_result: Any = None, timeout: float = 600) -> list[JobResult]:
    async def main() -> list[JobResult]:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            return await client.run(jobs, on_result, window=16, timeout=timeout)
        finally:
            client.close()
            ctx.close()

    return asyncio.run(main())


class Monkey(threading.Thread):
    """Every ``every`` seconds: SIGKILL a node (the leader half the time) and restart it on its port,
    kill a slot process, or SIGSTOP a node for ``freeze`` seconds and SIGCONT it."""

    def __init__(self, c: Cluster, every: float, freeze: float, seed: int) -> None:
        super().__init__(name="chaos-monkey")
        self.c, self.every, self.freeze = c, every, freeze
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.done: Counter[str] = Counter()
        self.log: list[str] = []

    def live(self) -> list[NodeProc]:
        return [n for n in self.c.nodes if n.alive]

    def leader(self) -> NodeProc | None:
        for n in self.live():
            text = n.text()
            if text.rfind("this node leads") > max(text.rfind("leader is"), text.rfind("no leader")):
                return n
        return None

    def run(self) -> None:
        actions = ["kill", "kill-leader", "slot", "freeze"]
        k = 0
        while not self.stop.wait(self.every):
            action = actions[k % len(actions)] if k < len(actions) else self.rng.choice(actions)
            k += 1
            live = self.live()
            if not live:
                continue
            target = (self.leader() if action in ("kill-leader", "freeze") else None) or self.rng.choice(live)
            if action in ("kill", "kill-leader"):
                target.kill()
                target.proc.wait(10)
                self.c.restart(target)
            elif action == "slot":
                kids = psutil.Process(target.proc.pid).children()
                if not kids:
                    continue
                self.rng.choice(kids).kill()
            else:
                target.kill(signal.SIGSTOP)
                self.stop.wait(self.freeze)
                target.kill(signal.SIGCONT)
            self.done[action] += 1
            self.log.append(f"{time.strftime('%H:%M:%S')} {action} :{target.port}")


def listening(ports: set[int]) -> list[int]:
    """Those of ``ports`` some process still listens on (TIME_WAIT leftovers are not leaks)."""
    return sorted(
        c.laddr.port for c in psutil.net_connections(kind="tcp") if c.status == "LISTEN" and c.laddr.port in ports
    )


def chaos(
    root: Path, nodes: int, tasks: int, every: float, size: tuple[int, int] = (192, 256), seed: int = 1
) -> dict[str, Any]:
    jobs = inputs(tasks, size)
    delivered: Counter[str] = Counter()
    started = time.monotonic()
    with cluster(root / "mesh", extra=FLAGS) as c:
        c.start(nodes)
        wait_mesh(c, nodes)
        monkey = Monkey(c, every, freeze=3.0, seed=seed)  # frozen longer than the 2 s dead timeout
        monkey.start()
        try:
            results = run(c.nodes[0].port, jobs, lambda r: delivered.update([r.job.task_id]))
        finally:
            monkey.stop.set()
            monkey.join(30)
        ports = [n.port + i for n in c.nodes for i in range(3)]
    batch_s = time.monotonic() - started
    leaked_ports = listening(set(ports))
    with cluster(root / "single", extra=FLAGS) as one:
        one.start(1)
        wait_mesh(one, 1)
        reference = run(one.nodes[0].port, jobs)
    ref = {r.job.task_id: r.data for r in reference if r.ok}
    outputs = {r.job.task_id: r for r in results}
    return {
        "nodes": nodes,
        "tasks": tasks,
        "seconds": round(batch_s, 1),
        "actions": dict(monkey.done),
        "action_log": monkey.log,
        "outputs": len(outputs),
        "ok": sum(r.ok for r in results),
        "failed": [f"{r.job.label}: {r.error}" for r in results if not r.ok][:5],
        "lost": sum(1 for j in jobs if j.task_id not in outputs),
        "duplicated": sum(1 for n in delivered.values() if n > 1),
        "corrupt": sum(1 for t, r in outputs.items() if r.ok and ref.get(t) != r.data),
        "reference_ok": len(ref),
        "leaked_ports": leaked_ports,
    }
