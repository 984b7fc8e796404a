"""A task the leader never answers (its Submit or Result lost) is sent again after
CLIENT_RESEND_AFTER while the leader still answers pings; it is delivered once."""

from __future__ import annotations

import asyncio

import pytest

from mesh import const
from mesh.surface.client import Client, Job
from mesh.wire.protocol import Result, Submit
from mesh.wire.transport import Context, Router

from .fakeleader import fake_leader


def test_an_unanswered_task_is_sent_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(const, "CLIENT_RESEND_AFTER", 0.5)

    submits = 0

    async def on_submit(router: Router, peer: bytes, msg: Submit) -> None:  # drops the first, answers the rest
        nonlocal submits
        submits += 1
        if submits > 1:
            await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [b"out"])

    async def main() -> tuple[int, list[bool]]:
        async with fake_leader(on_submit) as (ctx, port):
            client = Client(ctx, [("127.0.0.1", port)])
            try:
                await client.connect()
                async with asyncio.timeout(20):
                    res = await client.run([Job(b"img", b"mask")])
                return submits, [r.ok for r in res]
            finally:
                client.close()

    submits, oks = asyncio.run(main())
    assert oks == [True] and submits == 2


def test_a_ticket_offered_while_our_tasks_wait_for_a_place_is_let_go_at_once() -> None:
    """At a batch's start the leader places the first task and offers a ticket before the rest of the
    window reaches it; the client, with tasks still waiting for a place, gives the slot back at once
    (before: it used the ticket seconds later, on a busy link, and the task went twice)."""
    from mesh.surface.client import _Batch, _Sent
    from mesh.wire.protocol import Direct, Message, Place

    class FakeDealer:
        def __init__(self) -> None:
            self.sent: list[Message] = []

        async def send(self, msg: Message, blobs: object = ()) -> None:
            self.sent.append(msg)

    async def main() -> None:
        batch = _Batch(Client(Context(), [("127.0.0.1", 1)]), [], None, window=4, timeout=None, keep=False)
        dealer = FakeDealer()
        batch.worker = lambda addr: dealer  # type: ignore[method-assign,assignment,return-value]
        placed, waiting = Job(b"i", b"m"), Job(b"i", b"m")
        batch.pending = {
            placed.task_id: _Sent(placed, 0.0, 0.0, worker="h:1"),
            waiting.task_id: _Sent(waiting, 0.0, 0.0),
        }
        offer = Place(node_id="w", addr="10.0.0.2:7000", ticket="t1", model="builtin", ttl_s=2.0)
        await batch.on_place(offer)
        assert batch.ticket is None and [(type(m), m.ticket, m.task_id) for m in dealer.sent] == [(Direct, "t1", "")]
        del batch.pending[waiting.task_id]  # every task of ours placed: a lone client keeps its ticket
        await batch.on_place(Place(node_id="w", addr="10.0.0.2:7000", ticket="t2", model="builtin", ttl_s=2.0))
        assert batch.ticket is not None and batch.ticket.ticket == "t2" and len(dealer.sent) == 1

    asyncio.run(main())


def test_a_batch_reaches_every_worker_before_its_bytes_flow() -> None:
    """A batch (window > 1) connects to the members the leader names and waits for each to answer a
    ping before its first Submit: a connection opened later, on a link full of another worker's bytes,
    lost its handshake and waited out TCP's 1 s retransmission timeout (the LAN benchmark's uneven
    crews). A member that never answers holds the batch up ``CLIENT_REACH_WAIT`` at most; a batch of one
    task at a time, or of one task (a single photo, an HTTP request), reaches nobody ahead."""
    from mesh.wire.protocol import Ping, Pong

    async def main() -> None:
        ctx_w = Context()
        answering, silent = ctx_w.router(), ctx_w.router()
        a_port, s_port = answering.bind("127.0.0.1", 0), silent.bind("127.0.0.1", 0)
        pinged: list[str] = []  # what the workers and the leader heard, in order

        async def serve(router: Router, name: str, answer: bool) -> None:
            while True:
                peer, msg, _ = await router.recv()
                if isinstance(msg, Ping):
                    pinged.append(name)
                    if answer:
                        await router.send(peer, Pong(nonce=msg.nonce, node_id=name))

        async def on_submit(router: Router, peer: bytes, msg: Submit) -> None:
            pinged.append("submit")
            await router.send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [b"out"])

        servers = [asyncio.create_task(serve(answering, "a", True)), asyncio.create_task(serve(silent, "s", False))]
        members = (f"127.0.0.1:{a_port}", f"127.0.0.1:{s_port}")
        try:
            async with fake_leader(on_submit, members=members) as (ctx, port):
                for window, jobs, want in ((4, 2, ["a", "s"]), (1, 2, []), (4, 1, [])):
                    pinged.clear()
                    client = Client(ctx, [("127.0.0.1", port)])
                    try:
                        await client.connect()
                        async with asyncio.timeout(20):
                            res = await client.run([Job(b"img", b"mask")] * jobs, window=window)
                    finally:
                        client.close()
                    assert [r.ok for r in res] == [True] * jobs
                    first = pinged.index("submit")
                    assert sorted(pinged[:first]) == want, (window, pinged)
                    assert set(pinged[first:]) == {"submit"}, pinged
        finally:
            for t in servers:
                t.cancel()
            await asyncio.gather(*servers, return_exceptions=True)
            answering.close()
            silent.close()
            ctx_w.close()

    asyncio.run(main())


def test_a_lone_task_sent_on_the_leader_connection_is_submitted_again_when_the_leader_moves() -> None:
    """A lone task's bytes went on the leader connection (``Direct(submit)`` to the leader's own node).
    When that leader moves, the client closes the connection its answer would come on: the task goes to
    the new leader, while a task whose bytes are at another live worker stays there."""
    from mesh.surface.client import _Batch, _Sent
    from mesh.wire.protocol import Pong

    async def main() -> None:
        client = Client(Context(), [("127.0.0.1", 1)])
        client.leader = Pong(node_id="L", leader_id="L", leader_addr="h:1")

        async def failover(hint: str, deadline: float | None) -> bool:
            client.leader = Pong(node_id="N", leader_id="N", leader_addr="h:2")
            return True

        client._failover = failover  # type: ignore[method-assign]
        batch = _Batch(client, [], None, window=1, timeout=None, keep=False)
        lone, elsewhere = Job(b"i", b"m"), Job(b"i", b"m")
        batch.pending = {
            lone.task_id: _Sent(lone, 0.0, 0.0, worker="h:1", via_leader=True, data_sent=1),
            elsewhere.task_id: _Sent(elsewhere, 0.0, 0.0, worker="h:3", data_sent=1),
        }
        batch.moved = True
        assert await batch.watch_leader()
        assert [m.task_id for m in batch.outbox] == [lone.task_id]
        assert batch.pending[elsewhere.task_id].worker == "h:3"

    asyncio.run(main())
