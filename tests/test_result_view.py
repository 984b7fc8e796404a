"""A result's bytes reach the caller as a view of the received message, not a copy (copying 8 MiB
cost ~1 ms a task on loopback), and every surface writes that view as it is."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mesh.surface.cli import _write
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Result, Submit
from mesh.wire.transport import Router

from .fakeleader import fake_leader


def test_a_result_is_a_read_only_view_of_the_message_and_writes_whole(tmp_path: Path) -> None:
    out = os.urandom(3 << 20)

    async def on_submit(router: Router, peer: bytes, msg: Submit) -> None:  # the result straight away
        await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [out])

    async def main() -> bytes | memoryview:
        async with fake_leader(on_submit) as (ctx, port):
            client = Client(ctx, [("127.0.0.1", port)])
            try:
                await client.connect()
                async with asyncio.timeout(20):
                    (res,) = await client.run([Job(b"img", b"mask")])
                return res.data
            finally:
                client.close()

    data = asyncio.run(main())
    assert isinstance(data, memoryview) and data.readonly and data == out
    _write(tmp_path / "r.png", data)  # what `submit` does with it
    assert (tmp_path / "r.png").read_bytes() == out and bytes(data) == out
