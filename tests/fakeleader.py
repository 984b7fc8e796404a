"""A leader stand-in on a real socket for client tests: answers every ``Ping`` as the leader at
127.0.0.1 (telling the test's ``on_ping``, if any) and hands each ``Submit`` to the test's ``on_submit``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from mesh.wire.protocol import Ping, Pong, Submit
from mesh.wire.transport import Context, Router

OnSubmit = Callable[[Router, bytes, Submit], Awaitable[None]]


@asynccontextmanager
async def fake_leader(
    on_submit: OnSubmit, on_ping: Callable[[], Awaitable[None]] | None = None, members: tuple[str, ...] = ()
) -> AsyncIterator[tuple[Context, int]]:
    """Yields a context for the client and the leader's port; closes both (and stops serving) after.
    ``members``: the host:port list its ``Pong`` names (none by default)."""
    ctx = Context()
    router = ctx.router()
    port = router.bind("127.0.0.1", 0)

    async def serve() -> None:
        while True:
            peer, msg, _ = await router.recv()
            if isinstance(msg, Ping):
                addr = f"127.0.0.1:{port}"
                pong = Pong(nonce=msg.nonce, node_id="L", mesh="default", leader_id="L", leader_addr=addr, term=1,
                            host="127.0.0.1", members=members)  # fmt: skip
                await router.send(peer, pong)
                if on_ping is not None:
                    await on_ping()
            elif isinstance(msg, Submit):
                await on_submit(router, peer, msg)

    task = asyncio.create_task(serve())
    try:
        yield ctx, port
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        router.close()
        ctx.close()
