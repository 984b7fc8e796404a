"""A client keeps in flight only the bytes its link can move while a worker waits for them: at most
CLIENT_BYTES_FLOOR before anything is answered, then CLIENT_BACKLOG_S of its measured throughput.
Found on the shaped LAN: 12 MB photos, 4 nodes, 100 Mbit/s: 16 tasks placed at once, the last bytes
came after 15 s, past their holds (DATA_WAIT, 10 s): 25 sent again and 3 failed in 30."""

from __future__ import annotations

import asyncio

from mesh import const
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Result, Submit
from mesh.wire.transport import Router

from .fakeleader import fake_leader

MIB = 1024 * 1024


def _submits_before_the_first_answer(size: int, n: int) -> tuple[int, int]:
    """Run ``n`` tasks of ``size`` bytes. The stand-in leader holds its first answer until the client
    has pinged after its last Submit (it went round its loop and sent nothing more), then answers
    everything at once. Returns (Submits seen before the first answer, results ok)."""
    held: list[tuple[bytes, Submit]] = []
    seen = answered = 0
    pinged_after = asyncio.Event()
    router_box: list[Router] = []

    async def answer(router: Router, peer: bytes, msg: Submit) -> None:
        await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [b"out"])

    async def on_submit(router: Router, peer: bytes, msg: Submit) -> None:
        nonlocal seen
        router_box[:] = [router]
        if answered:
            await answer(router, peer, msg)
            return
        seen += 1
        held.append((peer, msg))
        pinged_after.clear()

    async def on_ping() -> None:
        if held:
            pinged_after.set()

    async def main() -> int:
        nonlocal answered
        async with fake_leader(on_submit, on_ping) as (ctx, port):
            client = Client(ctx, [("127.0.0.1", port)])
            try:
                await client.connect()
                async with asyncio.timeout(20), asyncio.TaskGroup() as tg:
                    run = tg.create_task(client.run([Job(bytes(size), b"m") for _ in range(n)]))
                    await pinged_after.wait()  # a ping after the last Submit: the client sent what it would
                    answered = 1
                    for peer, msg in held:
                        await answer(router_box[0], peer, msg)
                return sum(r.ok for r in run.result())
            finally:
                client.close()

    ok = asyncio.run(main())
    return seen, ok


def test_big_photos_go_one_at_a_time_until_the_link_is_measured() -> None:
    assert const.CLIENT_BYTES_FLOOR < 2 * 12 * MIB
    seen, ok = _submits_before_the_first_answer(12 * MIB, 4)
    assert (seen, ok) == (1, 4)  # the code before sent all 4 (48 MiB) at once


def test_small_tasks_fill_the_window_as_before() -> None:
    seen, ok = _submits_before_the_first_answer(MIB // 2, 20)
    assert (seen, ok) == (20, 20)  # 10 MiB: under the floor


def test_the_budget_follows_the_measured_throughput() -> None:
    from mesh.surface.client import _Batch

    batch = _Batch(Client.__new__(Client), [], None, window=64, timeout=None, keep=False)
    t0 = batch.answers[0][0]
    assert batch.budget() == const.CLIENT_BYTES_FLOOR
    for i in range(1, 41):  # 10 MiB answered a second
        batch.answers.append((t0 + i * 0.1, i * MIB))
    assert abs(batch.budget() - 10 * MIB * const.CLIENT_BACKLOG_S) < MIB
    for i in range(41, 81):  # then 1 MiB a second: the last 32 answers say so, not the batch's average
        batch.answers.append((t0 + 4 + (i - 40), i * MIB))
    assert batch.budget() == const.CLIENT_BYTES_FLOOR  # 6 MiB < the floor
