"""The loop integration of transport's sockets over real TCP on 127.0.0.1.

ZeroMQ's file descriptor only signals that *something* changed, and a send can consume the
signal a waiting receive on the same socket needs; these runs reproduce the leader's shape
(one coroutine always waiting to receive while others send on the same socket) long enough
that a lost wake-up would stall them past their deadline."""

from __future__ import annotations

import asyncio

import zmq

from mesh.wire.protocol import Ping, Result
from mesh.wire.transport import Context, Dealer, Router

from .cluster import free_port_block


def pair(ctx: Context) -> tuple[Router, Dealer]:
    """A ROUTER on an ephemeral port of 127.0.0.1 and a DEALER connected to it."""
    router = ctx.router()
    port = router.bind("127.0.0.1", 0)
    dealer = ctx.dealer()
    dealer.connect("127.0.0.1", port)
    return router, dealer


def test_a_router_answering_from_other_coroutines_never_misses_a_message() -> None:
    async def main() -> None:
        ctx = Context()
        try:
            router = ctx.router()
            port = router.bind("127.0.0.1", 0)
            clients = [ctx.dealer() for _ in range(3)]
            for c in clients:
                c.connect("127.0.0.1", port)
            todo: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()

            async def serve() -> None:  # always waiting to receive, as serve_front is
                while True:
                    peer, msg, _ = await router.recv()
                    assert isinstance(msg, Ping)
                    todo.put_nowait((peer, msg.nonce))

            async def answer() -> None:  # sends on the same socket from another coroutine
                while True:
                    peer, nonce = await todo.get()
                    # answers of 0, 30 KB and 60 KB: some go out in one write, some take several
                    await router.send(peer, Result(str(nonce), True), [b"x" * (nonce % 3) * 30000])

            async def client(c: Dealer, base: int, n: int, window: int) -> int:
                sent = got = 0
                while got < n:
                    while sent < n and sent - got < window:
                        await c.send(Ping(base + sent))
                        sent += 1
                    msg, _ = await c.recv()
                    assert isinstance(msg, Result)
                    got += 1
                return got

            async with asyncio.timeout(60):
                tasks = [asyncio.create_task(serve()), asyncio.create_task(answer())]
                try:
                    done = await asyncio.gather(
                        *(
                            client(c, i * 100_000, 3000, w)
                            for i, (c, w) in enumerate(zip(clients, (1, 8, 64), strict=True))
                        )
                    )
                finally:
                    for t in tasks:
                        t.cancel()
                    await asyncio.gather(*tasks, return_exceptions=True)
            assert done == [3000, 3000, 3000]
        finally:
            ctx.close()

    asyncio.run(main())


def test_a_send_with_no_peer_yet_waits_for_one_and_close_wakes_a_waiting_receive() -> None:
    async def main() -> None:
        ctx = Context()
        try:
            port = free_port_block(1)
            dealer = ctx.dealer()
            dealer.sock.setsockopt(zmq.IMMEDIATE, 1)  # no pipe before a connection: a send must wait
            dealer.connect("127.0.0.1", port)
            sender = asyncio.create_task(dealer.send(Ping(7)))
            receiver = asyncio.create_task(dealer.recv())
            await asyncio.sleep(0.1)
            assert not sender.done() and not receiver.done()
            router = ctx.router()
            router.bind("127.0.0.1", port)  # the peer appears: the send goes out
            async with asyncio.timeout(10):
                await sender
                _, msg, _ = await router.recv()
            assert isinstance(msg, Ping) and msg.nonce == 7
            dealer.close()  # a receive still waiting is cancelled, not left hanging
            async with asyncio.timeout(5):
                (got,) = await asyncio.gather(receiver, return_exceptions=True)
            assert isinstance(got, asyncio.CancelledError)
        finally:
            ctx.close()

    asyncio.run(main())


def test_a_receive_cut_short_by_a_timeout_never_loses_the_message() -> None:
    """A receive under ``asyncio.timeout`` (the client's loop) that times out just as the message
    arrives must leave the message for the next receive. (With pyzmq's asyncio socket the message
    was read into the Future the timeout then cancelled: gone; the client resent it 30 s later.)"""

    async def main() -> int:
        ctx = Context()
        try:
            router, dealer = pair(ctx)
            await dealer.send(Ping(0))
            async with asyncio.timeout(10):
                peer, _, _ = await router.recv()
            n, got, timeouts = 3000, 0, 0

            async def stream() -> None:
                for i in range(n):
                    await router.send(peer, Result(str(i), True))
                    if i % 7 == 0:
                        await asyncio.sleep(0)  # let the receiver wait and time out in between

            sender = asyncio.create_task(stream())
            async with asyncio.timeout(60):
                while got < n:
                    try:
                        async with asyncio.timeout(0.00005):
                            await dealer.recv()
                        got += 1
                    except TimeoutError:
                        timeouts += 1
                        await asyncio.sleep(0)
            await sender
            assert timeouts > 0  # the race was exercised
            return got
        finally:
            ctx.close()

    assert asyncio.run(main()) == 3000


def test_a_socket_keeps_working_when_used_from_a_second_event_loop() -> None:
    ctx = Context()
    try:
        router, dealer = pair(ctx)

        async def round_trip(nonce: int) -> int:
            async with asyncio.timeout(10):
                await dealer.send(Ping(nonce))
                peer, _, _ = await router.recv()
                await router.send(peer, Result(str(nonce), True))
                msg, _ = await dealer.recv()
            assert isinstance(msg, Result)
            return int(msg.task_id)

        assert asyncio.run(round_trip(1)) == 1
        assert asyncio.run(round_trip(2)) == 2  # a new loop: the waits register with it
    finally:
        ctx.close()
