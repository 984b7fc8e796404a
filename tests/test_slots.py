"""A slot process that hangs (SIGSTOP here; a wedged driver in life) is found by its task's deadline,
killed and started again; the task answers ``hung`` and the next one runs in the new process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np

from mesh.execute.slots import SlotPool, SlotSettings
from mesh.wire.protocol import HUNG, Task

from .cluster import png


def test_a_hung_slot_is_restarted_and_the_next_task_runs(home: Path) -> None:
    img = png((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8))
    m = np.zeros((64, 64), np.uint8)
    m[20:40, 20:40] = 255
    mask = png(m)

    async def go() -> None:
        pool = SlotPool(1, SlotSettings(home, "cpu", 1))
        await pool.start()
        try:
            first = await pool.run(Task(task_id="ok1"), img, mask, timeout=60)
            assert first.ok, first.error
            (pid,) = pool.pids()
            os.kill(pid, signal.SIGSTOP)
            hung = await pool.run(Task(task_id="stuck"), img, mask, timeout=1.0)
            assert not hung.ok and hung.error_code == HUNG and pool.restarts == 1
            (new,) = pool.pids()
            assert new != pid
            after = await pool.run(Task(task_id="ok2"), img, mask, timeout=60)
            assert after.ok, after.error
        finally:
            await pool.close()

    asyncio.run(asyncio.wait_for(go(), 120))


def test_a_killed_nodes_slots_exit_quietly(tmp_path: Path) -> None:
    """Issue 15: a killed node's slot processes wrote two BrokenPipeError tracebacks each into its
    log (the one mid-task tried to send its result to a parent that was gone)."""
    import threading

    import psutil

    from .cluster import cluster, wait_mesh, wait_until

    with cluster(tmp_path, extra=("--slots", "2", "--device", "cpu")) as c:
        (node,) = c.start(1)
        wait_mesh(c, 1)
        slots = psutil.Process(node.proc.pid).children()
        assert len(slots) >= 2
        t = threading.Thread(target=lambda: _ignore(lambda: _big_tasks(node.port, 8)))
        t.start()
        wait_until(lambda: any(s.cpu_percent(0.2) > 20 for s in slots), 30, "a slot to be busy")
        node.kill()
        node.proc.wait(10)
        wait_until(
            lambda: not any(s.is_running() and s.status() != psutil.STATUS_ZOMBIE for s in slots),
            20,
            "the slots to exit",
        )
        t.join(60)
        log = node.text()
        assert "Traceback" not in log and "BrokenPipeError" not in log, log[-3000:]


def _ignore(fn: Any) -> None:
    with contextlib.suppress(Exception):  # the node was killed under the client: not what this test checks
        fn()


def _big_tasks(port: int, n: int) -> None:
    from mesh.surface.client import Client, Job
    from mesh.wire.transport import Context

    img = png((np.random.default_rng(3).random((768, 1024, 3)) * 255).astype(np.uint8))
    m = np.zeros((768, 1024), np.uint8)
    m[200:600, 300:700] = 255

    async def go() -> None:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            jobs = [Job(img, png(m), hd_strategy="Original") for _ in range(n)]
            await client.run(jobs, timeout=30)
        finally:
            client.close()
            ctx.close()

    asyncio.run(go())
