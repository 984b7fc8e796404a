"""A task the leader never answers (its Submit or Result lost) is sent again after
CLIENT_RESEND_AFTER while the leader still answers pings; it is delivered once."""

from __future__ import annotations

import asyncio

import pytest

from mesh import const
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Ping, Pong, Result, Submit
from mesh.wire.transport import Context


def test_an_unanswered_task_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(const, "CLIENT_RESEND_AFTER", 0.5)

    async def main() -> tuple[int, list[bool]]:
        ctx = Context()
        router = ctx.router()
        port = router.bind("127.0.0.1", 0)
        submits = 0

        async def leader() -> None:  # answers pings; drops the first Submit, answers the next ones
            nonlocal submits
            while True:
                peer, msg, _ = await router.recv()
                if isinstance(msg, Ping):
                    pong = Pong(
                        nonce=msg.nonce,
                        node_id="L",
                        mesh="default",
                        leader_id="L",
                        leader_addr=f"127.0.0.1:{port}",
                        term=1,
                        host="127.0.0.1",
                    )
                    await router.send(peer, pong)
                elif isinstance(msg, Submit):
                    submits += 1
                    if submits > 1:
                        await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [b"out"])

        task = asyncio.create_task(leader())
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            async with asyncio.timeout(20):
                res = await client.run([Job(b"img", b"mask")])
            return submits, [r.ok for r in res]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            client.close()
            router.close()
            ctx.close()

    submits, oks = asyncio.run(main())
    assert oks == [True] and submits == 2
