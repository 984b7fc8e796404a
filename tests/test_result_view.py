"""A result's bytes reach the caller as a view of the received message, not a copy (copying 8 MiB
cost ~1 ms a task on loopback), and every surface writes that view as it is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mesh.surface.cli import _write
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Ping, Pong, Result, Submit
from mesh.wire.transport import Context


def test_a_result_is_a_read_only_view_of_the_message_and_writes_whole(tmp_path: Path) -> None:
    out = os.urandom(3 << 20)

    async def main() -> bytes | memoryview:
        ctx = Context()
        router = ctx.router()
        port = router.bind("127.0.0.1", 0)

        async def leader() -> None:  # answers pings, and each Submit with the result straight away
            while True:
                peer, msg, _ = await router.recv()
                if isinstance(msg, Ping):
                    addr = f"127.0.0.1:{port}"
                    pong = Pong(nonce=msg.nonce, node_id="L", mesh="default", leader_id="L", leader_addr=addr, term=1)
                    await router.send(peer, pong)
                elif isinstance(msg, Submit):
                    await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [out])

        task = asyncio.create_task(leader())
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            async with asyncio.timeout(20):
                (res,) = await client.run([Job(b"img", b"mask")])
            return res.data
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            client.close()
            router.close()
            ctx.close()

    data = asyncio.run(main())
    assert isinstance(data, memoryview) and data.readonly and data == out
    _write(tmp_path / "r.png", data)  # what `submit` does with it
    assert (tmp_path / "r.png").read_bytes() == out and bytes(data) == out
