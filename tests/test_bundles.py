"""Messages without data frames for one peer travel as one ZeroMQ message (a bundle): the client's
Submits while the leader still has enough of its tasks to place, a placement pass's Tasks and Places,
a busy worker's Dones. Each still reaches the code as one message, in order. At 64 KiB on loopback a
message per task each way cost more than the tasks' bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.surface.client import Client, Job, _Batch, _Sent
from mesh.wire.protocol import Ping, Place, Result, Submit
from mesh.wire.transport import Context, Router, recv_any

from .fakeleader import fake_leader


def test_a_bundle_arrives_as_its_messages_in_order_on_every_receive() -> None:
    async def go() -> None:
        ctx = Context()
        router = ctx.router()
        port = router.bind("127.0.0.1", 0)
        dealers = [ctx.dealer(), ctx.dealer()]
        try:
            async with asyncio.timeout(5):
                for d in dealers:
                    d.connect("127.0.0.1", port)
                await dealers[0].send_bundle([Submit(task_id=f"s{i}") for i in range(70)])  # 64 + 6
                got = [await router.recv() for _ in range(70)]
                assert [m.task_id for _, m, _ in got] == [f"s{i}" for i in range(70)]  # type: ignore[attr-defined]
                assert {peer for peer, _, _ in got} == {got[0][0]}
                await dealers[1].send(Ping(7))
                peer1, ping, _ = await router.recv()
                assert ping == Ping(7) and peer1 != got[0][0]
                places = [Place(f"p{i}", "n", "h:1") for i in range(3)]
                await router.send_bundle(peer1, places)
                await router.send(got[0][0], Place("other", "n", "h:1"))
                seen: list[Any] = []
                while len(seen) < 4:  # recv_any finds the held rest of a bundle without a wait
                    r = await recv_any(dealers, 1.0)
                    assert r is not None
                    seen.append((dealers.index(r[0]), r[1].task_id))  # type: ignore[attr-defined]
                assert [s for s in seen if s[0] == 1] == [(1, "p0"), (1, "p1"), (1, "p2")]
                assert (0, "other") in seen
                assert dealers[1].recv_now() is None
        finally:
            for d in dealers:
                d.close()
            router.close()
            ctx.close()

    asyncio.run(go())


def test_held_now_gives_the_rest_of_the_bundle_read_and_never_reads_the_socket() -> None:
    """The client handles a bundle's messages in one loop turn (a lone task's next ticket and its
    Result come as one): ``held_now`` gives what is left of the bundle read, then None, even with
    another message waiting on the socket (that one waits its turn among the sockets)."""

    async def go() -> None:
        ctx = Context()
        router = ctx.router()
        port = router.bind("127.0.0.1", 0)
        dealer = ctx.dealer()
        try:
            async with asyncio.timeout(5):
                dealer.connect("127.0.0.1", port)
                await dealer.send(Ping(1))
                peer, _, _ = await router.recv()
                await router.send_bundle(peer, [Place(ticket="t9"), Result("a", True)], [b"out"])
                await router.send(peer, Place("later", "n", "h:1"))
                first, blobs = await dealer.recv()
                assert first == Place(ticket="t9") and blobs == []
                rest = dealer.held_now()
                assert rest is not None and rest[0] == Result("a", True)
                assert [bytes(b) for b in rest[1]] == [b"out"]
                assert dealer.held_now() is None
                got = await dealer.recv()
                assert got[0] == Place("later", "n", "h:1")
        finally:
            dealer.close()
            router.close()
            ctx.close()

    asyncio.run(go())


def test_a_client_refills_a_few_places_at_once_while_the_leader_has_enough_of_its_tasks() -> None:
    batch = _Batch(Client(Context(), [("127.0.0.1", 1)]), (Job(b"i", b"m") for _ in range(100)), None,
                   window=16, timeout=None, keep=False)  # fmt: skip
    assert batch.refill_at == 2
    batch.client.dealer = batch.client.ctx.dealer()  # the leader's connection: nothing comes on it here

    async def fill() -> int:
        before = len(batch.pending)
        await batch.fill()
        return len(batch.pending) - before

    for _ in range(15):  # 15 in flight, all waiting at the leader for a place: one free place waits
        job = Job(b"i", b"m")
        batch.pending[job.task_id] = _Sent(job, 0.0, 0.0, asked=True)
    batch.asked = 15
    assert asyncio.run(fill()) == 0
    batch.asked = 1  # the leader has one of ours left to place: the free place is taken at once
    assert asyncio.run(fill()) == 1 and len(batch.outbox) == 1 and batch.asked == 2
    batch.client.dealer.close()
    batch.client.ctx.close()


def test_a_streaming_client_sends_its_submits_a_few_to_a_message() -> None:
    """A stand-in leader that holds every Submit and answers one at a time, the oldest first, as a busy
    mesh does. The client's Submits after its first window come 8 (window / 8) to a ZeroMQ message;
    before, every answer was followed by a message with one Submit (64 + 64 for 128 tasks)."""
    held: list[tuple[bytes, Submit]] = []
    messages = submits = 0

    async def on_submit(router: Router, peer: bytes, msg: Submit) -> None:
        nonlocal messages, submits
        submits += 1
        messages += not router._held  # the last (or only) Submit of a ZeroMQ message
        held.append((peer, msg))

    async def main() -> int:
        async with fake_leader(on_submit) as (ctx, port):
            client = Client(ctx, [("127.0.0.1", port)])
            router: list[Router] = []

            async def answer() -> None:
                while True:
                    if held and router:
                        peer, msg = held.pop(0)
                        await router[0].send(peer, Result(msg.task_id, True, "", "", "L", "png", 1.0), [b"out"])
                    await asyncio.sleep(0.001)

            try:
                pong = await client.connect()
                assert pong.leader_id == "L"
                router.append(next(s for s in ctx.sockets if isinstance(s, Router)))
                async with asyncio.timeout(30), asyncio.TaskGroup() as tg:
                    answering = tg.create_task(answer())
                    results = await client.run([Job(b"i", b"m") for _ in range(128)], window=64)
                    answering.cancel()
                return sum(r.ok for r in results)
            finally:
                client.close()

    assert asyncio.run(main()) == 128
    assert submits == 128
    assert messages <= 128 // 8 + 2  # 8 to a message (the first window too; the last may be short)


def test_a_first_window_goes_a_few_submits_to_a_message() -> None:
    """A client's first window of 64 Submits goes 8 to a message, so a leader reading its clients'
    connections in turn (ZeroMQ queues each apart) sees every client's tasks before its first
    placement pass. A window in one message was read whole before the other clients' (8 nodes, 3
    clients, 256 KiB: the first client kept the first pass's 32 tasks as a lead and finished 0.75 s
    before the others, whose links then held the tail back: 0.89-0.90 of compute against 0.94)."""

    async def go() -> list[int]:
        ctx = Context()
        leader = ctx.router()
        port = leader.bind("127.0.0.1", 0)
        client = Client(ctx, [("127.0.0.1", port)])
        client.dealer = ctx.dealer()
        batch = _Batch(client, (Job(b"i", b"m") for _ in range(64)), None, 64, None, keep=False)
        sizes: list[int] = []
        try:
            async with asyncio.timeout(5):
                client.dealer.connect("127.0.0.1", port)
                await batch.fill()
                await batch.flush()
                n = 0
                while sum(sizes) < 64:
                    _, msg, _ = await leader.recv()
                    assert isinstance(msg, Submit)
                    n += 1
                    if not leader._held:  # the last of its ZeroMQ message
                        sizes.append(n)
                        n = 0
                return sizes
        finally:
            client.dealer.close()
            leader.close()
            ctx.close()

    assert asyncio.run(go()) == [8] * 8


def test_a_ticket_waiting_unread_is_used_for_the_next_task() -> None:
    """The leader's ticket offer came while the client was reading a result from a worker (it reads one
    message a turn, the leader and the workers in rotation): the next task still goes by the ticket.
    Before, it went the long way (Submit, Place, Data): 46 of 300 tasks one at a time at 64 KiB."""

    async def go() -> None:
        ctx = Context()
        leader, worker = ctx.router(), ctx.router()
        port, wport = leader.bind("127.0.0.1", 0), worker.bind("127.0.0.1", 0)
        client = Client(ctx, [("127.0.0.1", port)])
        client.dealer = ctx.dealer()
        job = Job(b"img", b"m")
        batch = _Batch(client, iter([job]), None, window=1, timeout=None, keep=False)
        try:
            async with asyncio.timeout(5):
                client.dealer.connect("127.0.0.1", port)
                await client.dealer.send(Ping(1))
                peer, _, _ = await leader.recv()
                offer = Place(node_id="w", addr=f"127.0.0.1:{wport}", ticket="t1", model=job.model, ttl_s=5.0)
                await leader.send(peer, offer)
                while not client.dealer._events() & 1:  # zmq.POLLIN: the offer is here, unread
                    await asyncio.sleep(0.001)
                await batch.fill()
                await batch.flush()
                assert client.direct == 1
                _, submit, _ = await leader.recv()
                assert isinstance(submit, Submit) and (submit.task_id, submit.ticket) == (job.task_id, "t1")
                _, direct, blobs = await worker.recv()
                assert (direct.task_id, direct.ticket) == (job.task_id, "t1")  # type: ignore[attr-defined]
                assert [bytes(b.buffer) for b in blobs] == [b"img", b"m"]
        finally:
            batch.close()
            client.dealer.close()
            leader.close()
            worker.close()
            ctx.close()

    asyncio.run(go())
