"""A real node on 127.0.0.1 with ephemeral ports, its slots real processes."""

from __future__ import annotations

import asyncio
import io
import os
import signal
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import numpy as np
import zmq
import zmq.asyncio
from PIL import Image

from mesh import Config, Job, Node
from mesh.surface.client import Client, JobResult
from mesh.wire.transport import Context

from .conftest import box_mask, photo

Body = Callable[[Node, Client], Awaitable[None]]


def run_with_node(body: Body, tmp_path: Path, slots: int = 1, deadline: float = 90) -> None:
    async def main() -> None:
        node = Node(Config(bind="127.0.0.1", port=0, slots=slots, device="cpu", home=tmp_path / "home"))
        runner = asyncio.create_task(node.run())
        ctx = Context()
        client = None
        try:
            async with asyncio.timeout(deadline):
                waiter = asyncio.create_task(node.ready.wait())
                await asyncio.wait({runner, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if runner.done():
                    runner.result()
                client = Client(ctx, [("127.0.0.1", node.task_port)])
                await client.connect()
                await body(node, client)
        finally:
            if client is not None:
                client.close()
            ctx.close()
            node.request_stop()
            await asyncio.wait_for(runner, 30)

    asyncio.run(main())


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


IMG = photo("astronaut")
MASK = box_mask(512, 512, (200, 180, 330, 260))


def test_round_trip_and_bad_tasks_do_not_hurt_the_node(tmp_path: Path) -> None:
    async def body(node: Node, client: Client) -> None:
        good = Job(png(IMG), png(MASK), label="good")
        bad = [
            Job(b"not an image", png(MASK), label="junk"),
            Job(png(IMG), png(MASK[:100]), label="size"),
            Job(png(IMG), png(np.full_like(MASK, 255)), label="all"),
            Job(png(IMG), png(MASK), model="nope", label="model"),
            Job(png(IMG)[:500], png(MASK), label="truncated"),
            Job(b"", png(MASK), label="empty"),
        ]
        results = {r.job.label: r for r in await client.run([*bad, good], timeout=60)}
        assert results["good"].ok, results["good"].error
        out = np.asarray(Image.open(io.BytesIO(results["good"].data)))
        m = MASK >= 127
        assert (out[~m] == IMG[~m]).all() and not (out[m] == IMG[m]).all()
        assert "not an image" in results["junk"].error
        assert results["size"].ok and results["size"].notes == (  # another size: resized, and said so
            "the mask is 512x100 and the image 512x512: the mask was resized to the image (nearest)",
            "the mask is empty (nothing painted): the image comes back unchanged",  # the box is below row 100
        )
        assert "whole image" in results["all"].error
        assert "unknown model" in results["model"].error
        assert "truncated" in results["truncated"].error or "damaged" in results["truncated"].error
        assert "empty" in results["empty"].error
        assert all(r.error_code == "input" for r in results.values() if not r.ok and r.job.label != "model")
        # and the node still works
        (again,) = await client.run([Job(png(IMG), png(MASK))], timeout=30)
        assert again.ok
        st = await client.status()
        assert st.done == 3 and st.failed == 5 and st.nodes[0]["role"] == "leader"

    run_with_node(body, tmp_path)


def test_empty_mask_returns_the_input_unchanged(tmp_path: Path) -> None:
    async def body(node: Node, client: Client) -> None:
        data = png(IMG)
        (r,) = await client.run([Job(data, png(np.zeros_like(MASK)))], timeout=30)
        assert r.ok and r.data == data
        assert r.notes == ("the mask is empty (nothing painted): the image comes back unchanged",)

    run_with_node(body, tmp_path)


def test_garbage_on_the_socket_is_dropped_and_counted(tmp_path: Path) -> None:
    async def body(node: Node, client: Client) -> None:
        zctx = zmq.asyncio.Context()
        raw = zctx.socket(zmq.DEALER)
        raw.setsockopt(zmq.LINGER, 0)
        raw.connect(f"tcp://127.0.0.1:{node.task_port}")
        try:
            for frames in ([b"\xc1"], [b"\x93\x01\x02"], [b"{}"] * 4, [b"\x82\xa1v\x63\xa1t\xa4ping"]):
                await raw.send_multipart(frames)
            (r,) = await client.run([Job(png(IMG), png(MASK))], timeout=30)
            assert r.ok
        finally:
            raw.close(0)
            zctx.destroy(0)
        assert node.scheduler is not None
        assert node.scheduler.front.ctx.bad.total >= 4

    run_with_node(body, tmp_path)


def test_a_crashed_slot_is_restarted_and_its_task_retried(tmp_path: Path) -> None:
    big = np.tile(IMG, (5, 5, 1))  # 2560x2560: seconds of work on one slot
    big_mask = np.zeros(big.shape[:2], np.uint8)
    big_mask[1000:1600, 900:1700] = 255

    async def body(node: Node, client: Client) -> None:
        assert node.pool is not None
        job = Job(png(big), png(big_mask), hd_strategy="Original")
        run = asyncio.create_task(client.run([job], timeout=120))
        async with asyncio.timeout(30):
            while node.pool.busy == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # let the slot start on it (a bounded step, the result is awaited below)
        os.kill(node.pool.pids()[0], signal.SIGKILL)
        (r,) = await run
        assert r.ok, r.error
        assert node.pool.restarts == 1

    run_with_node(body, tmp_path, deadline=150)


def test_graceful_leave_finishes_held_tasks(tmp_path: Path) -> None:
    async def body(node: Node, client: Client) -> None:
        jobs = [Job(png(IMG), png(MASK)) for _ in range(3)]
        run = asyncio.create_task(client.run(jobs, timeout=60))
        async with asyncio.timeout(30):
            while node.scheduler is None or not node.scheduler.tasks:
                await asyncio.sleep(0.01)
        node.request_stop()
        results = await run
        assert len(results) == 3 and all(r.ok for r in results)

    run_with_node(body, tmp_path)


def test_a_long_batch_is_read_lazily_and_not_kept(tmp_path: Path) -> None:
    """Client.run pulls jobs as the window frees up and, with keep=False, keeps no result:
    a folder of thousands of photos never sits in memory at once."""
    pulled = 0
    in_flight_max = 0
    answered = 0

    def jobs() -> Iterator[Job]:
        nonlocal pulled, in_flight_max
        for _ in range(60):
            pulled += 1
            in_flight_max = max(in_flight_max, pulled - answered)
            yield Job(png(IMG), png(MASK), pixels=512 * 512)

    def on_result(r: JobResult) -> None:
        nonlocal answered
        assert r.ok, r.error
        answered += 1

    async def body(node: Node, client: Client) -> None:
        out = await client.run(jobs(), on_result, window=4, timeout=120, keep=False)
        assert out == []

    run_with_node(body, tmp_path, slots=2)
    assert answered == pulled == 60
    assert in_flight_max <= 5  # the window (4) and the one being pulled
