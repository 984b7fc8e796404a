"""A slot process that hangs (SIGSTOP here; a wedged driver in life) is found by its task's deadline,
killed and started again; the task answers ``hung`` and the next one runs in the new process."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

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
