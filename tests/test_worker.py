"""The worker's two halves of a task (the leader's hold, the client's bytes), wired to fakes."""

from __future__ import annotations

import asyncio
import time
from typing import Any, ClassVar

from mesh import const
from mesh.cluster.worker import LOCAL, Worker
from mesh.control.placement import service_key
from mesh.execute.slots import SlotResult
from mesh.wire.protocol import HUNG, NO_DATA, RETRY, WITHDRAWN, Data, Direct, Done, Message, Ready, Result, Task
from mesh.wire.transport import Context


class EchoPool:
    size, provider, busy = 1, "cpu", 0

    async def run(self, spec: Any, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
        return SlotResult(True, bytes(image), "png", 1.0, 1.0)


class GatePool:
    """One slot; each task runs until the test opens its gate."""

    size, provider, busy = 1, "cpu", 0

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}

    async def run(self, spec: Any, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
        await self.gates.setdefault(spec.task_id, asyncio.Event()).wait()
        return SlotResult(True, b"out", "png", 1.0, 1.0)

    async def finish(self, task_id: str) -> None:
        self.gates.setdefault(task_id, asyncio.Event()).set()
        for _ in range(5):  # the task's coroutine answers, reports and ends
            await asyncio.sleep(0)


def _worker() -> tuple[Worker, list[tuple[bytes, Message, list[Any]]], list[Message]]:
    ctx = Context()
    w = Worker(ctx, "w1", "127.0.0.1", EchoPool(), task_port=7000)  # type: ignore[arg-type]
    replies: list[tuple[bytes, Message, list[Any]]] = []
    told: list[Message] = []

    async def reply(client: bytes, msg: Message, blobs: list[Any]) -> None:
        replies.append((client, msg, blobs))

    async def local(ident: bytes, msg: Message, blobs: list[Any]) -> None:
        told.append(msg)

    w.reply, w.local, w.following = reply, local, LOCAL
    return w, replies, told


async def _settle(w: Worker) -> None:
    async with asyncio.timeout(5):
        while w.running:
            await asyncio.wait(set(w.running))


def test_bytes_and_hold_meet_in_either_order_and_the_answer_goes_to_the_client() -> None:
    async def go() -> None:
        w, replies, told = _worker()
        w.reserve(Task(task_id="a"))
        w.data(b"client1", Data("a"), [b"img-a", b"m"])
        w.data(b"client2", Data("b"), [b"img-b", b"m"])  # before its hold
        w.reserve(Task(task_id="b"))
        await _settle(w)
        got = {m.task_id: (c, blobs) for c, m, blobs in replies if isinstance(m, Result) and m.ok}
        assert got == {"a": (b"client1", [b"img-a"]), "b": (b"client2", [b"img-b"])}
        dones = [m for m in told if isinstance(m, Done)]
        assert sorted(d.task_id for d in dones) == ["a", "b"] and all(d.size == 6 for d in dones)
        w.close()

    asyncio.run(go())


def test_a_hold_without_bytes_is_freed_and_the_leader_told() -> None:
    """A client that vanished after its task was placed: the slot is free again after DATA_WAIT."""

    async def go() -> None:
        w, _replies, told = _worker()
        w.reserve(Task(task_id="lost"))
        await w.sweep(time.monotonic())
        assert "lost" in w.held and not told  # not yet
        await w.sweep(time.monotonic() + const.DATA_WAIT)
        assert "lost" not in w.held
        (done,) = told
        assert isinstance(done, Done) and done.error_code == NO_DATA and not done.ok
        w.close()

    asyncio.run(go())


def test_bytes_no_placement_claims_are_dropped_and_the_client_told_to_retry() -> None:
    async def go() -> None:
        w, replies, _told = _worker()
        w.data(b"c", Data("stray"), [b"i", b"m"])
        await w.sweep(time.monotonic() + const.DATA_WAIT)
        assert not w.early
        ((client, res, _),) = replies
        assert client == b"c" and isinstance(res, Result) and res.error_code == RETRY
        w.close()

    asyncio.run(go())


def test_a_withdrawn_task_frees_its_slot_at_once_before_or_after_its_hold() -> None:
    """A client that has a task's answer already (it ran elsewhere across a leader change) withdraws
    the placement: the slot is free at once, not after DATA_WAIT, and nothing runs or answers."""

    async def go() -> None:
        w, replies, told = _worker()
        w.reserve(Task(task_id="held"))
        w.data(b"c", Data("held", withdrawn=True), [])
        w.data(b"c", Data("early", withdrawn=True), [])  # before its hold
        w.reserve(Task(task_id="early"))
        await _settle(w)
        assert not w.held and not w.early and not replies
        assert sorted((m.task_id, m.error_code) for m in told if isinstance(m, Done)) == [
            ("early", WITHDRAWN),
            ("held", WITHDRAWN),
        ]
        await w.sweep(time.monotonic() + const.DATA_WAIT)  # nothing left to free or to answer
        assert not replies and len(told) == 2
        w.close()

    asyncio.run(go())


def test_a_hung_slot_tells_the_leader_only_and_gets_the_tasks_deadline() -> None:
    """The client gets no answer from a hung slot (the leader places the task elsewhere; a failure
    here would reach the client first and end its task)."""

    class HungPool(EchoPool):
        timeouts: ClassVar[list[float | None]] = []

        async def run(self, spec: Any, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
            self.timeouts.append(timeout)
            return SlotResult(False, error_code=HUNG, error="hung")

    async def go() -> None:
        w, replies, told = _worker()
        w.pool = HungPool()
        w.reserve(Task(task_id="a", deadline_s=42.0))
        w.data(b"c", Data("a"), [b"i", b"m"])
        await _settle(w)
        assert not replies and HungPool.timeouts == [42.0]
        (done,) = [m for m in told if isinstance(m, Done)]
        assert done.error_code == HUNG
        w.close()

    asyncio.run(go())


def test_bytes_waiting_for_their_placement_are_bounded_by_size_too(monkeypatch: Any) -> None:
    monkeypatch.setattr(const, "DATA_STAGED_BYTES", 25)

    async def go() -> None:
        w, replies, _told = _worker()
        for k in range(3):
            w.data(b"c", Data(f"t{k}"), [b"x" * 10, b"m"])  # 11 bytes each
        await _settle(w)
        assert list(w.early) == ["t1", "t2"] and w.early_bytes == 22
        ((_, res, _),) = replies
        assert isinstance(res, Result) and res.task_id == "t0" and res.error_code == RETRY
        w.reserve(Task(task_id="t1"))
        await _settle(w)
        assert w.early_bytes == 11
        w.close()

    asyncio.run(go())


def test_a_tickets_task_runs_in_the_slot_held_for_it_whichever_came_first() -> None:
    async def go() -> None:
        w, replies, told = _worker()
        w.reserve(Task(ticket="T1", deadline_s=33.0))  # the leader's hold for the client's next task
        assert w.tickets and not w.held
        w.direct(b"client1", Direct("a", ticket="T1"), [b"img-a", b"m"])
        w.direct(b"client2", Direct("b", ticket="T2"), [b"img-b", b"m"])  # before its hold
        w.reserve(Task(ticket="T2", deadline_s=33.0))
        await _settle(w)
        got = {m.task_id: c for c, m, _ in replies if isinstance(m, Result) and m.ok}
        assert got == {"a": b"client1", "b": b"client2"}
        dones = {m.task_id: m for m in told if isinstance(m, Done)}
        assert {k: (d.ticket, d.size) for k, d in dones.items()} == {"a": ("T1", 0), "b": ("T2", 0)}
        assert not w.tickets and not w.early
        w.close()

    asyncio.run(go())


def test_an_unused_ticket_gives_its_slot_back_and_an_unknown_one_is_answered_retry(monkeypatch: Any) -> None:
    async def go() -> None:
        w, replies, told = _worker()
        w.reserve(Task(ticket="T1"))
        w.direct(b"client1", Direct("x", ticket="forged"), [b"img", b"m"])
        await w.sweep(time.monotonic() + const.TICKET_TTL + 0.1)
        assert [(m.task_id, m.error_code, m.ticket) for m in told if isinstance(m, Done)] == [("", NO_DATA, "T1")]
        assert not w.tickets
        await w.sweep(time.monotonic() + const.DATA_WAIT + 0.1)
        assert [(c, m.task_id, m.error_code) for c, m, _ in replies if isinstance(m, Result)] == [
            (b"client1", "x", RETRY)
        ]
        w.close()

    asyncio.run(go())


def test_a_ticket_the_client_lets_go_frees_its_slot_at_once() -> None:
    async def go() -> None:
        w, replies, told = _worker()
        w.reserve(Task(ticket="T1", ttl_s=30.0))
        w.direct(b"client1", Direct(ticket="T1"), [])  # no task: the client is done
        w.direct(b"client1", Direct(ticket="never-held"), [])  # nothing to free, nothing kept
        await _settle(w)
        assert [(m.task_id, m.error_code, m.ticket) for m in told if isinstance(m, Done)] == [("", NO_DATA, "T1")]
        assert not w.tickets and not w.early and not replies
        w.close()

    asyncio.run(go())


def test_a_tickets_task_whose_bytes_come_after_its_hold_ended_runs_at_once() -> None:
    """On a busy link a ticket's bytes can come after the worker's hold ended unused (found on the shaped
    LAN: a 100-task batch stalled 10 s on its last task, which then went again). The leader recorded the
    task here when its Submit came, so it runs here at once, under the hold's deadline; only once per
    ticket, and only for DATA_WAIT after the hold ended."""

    async def go() -> None:
        specs: list[Any] = []

        class Pool(EchoPool):
            async def run(self, spec: Any, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
                specs.append(spec)
                return await super().run(spec, image, mask, timeout)

        w, replies, told = _worker()
        w.pool = Pool()  # type: ignore[assignment]
        t0 = time.monotonic()
        w.reserve(Task(ticket="T1", deadline_s=33.0, ttl_s=2.0))
        w.reserve(Task(ticket="T2", deadline_s=33.0, ttl_s=2.0))
        await w.sweep(t0 + 2.1)  # both holds end unused: their credits go back to the leader
        assert [(m.task_id, m.error_code, m.ticket) for m in told if isinstance(m, Done)] == [
            ("", NO_DATA, "T1"),
            ("", NO_DATA, "T2"),
        ]
        w.direct(b"client1", Direct("late", ticket="T1"), [b"img", b"m"])  # the bytes, late
        await _settle(w)
        assert [(c, m.task_id, m.ok) for c, m, _ in replies if isinstance(m, Result)] == [(b"client1", "late", True)]
        assert [(s.task_id, s.deadline_s) for s in specs] == [("late", 33.0)]
        last = [m for m in told if isinstance(m, Done)][-1]
        assert (last.task_id, last.ok, last.ticket) == ("late", True, "T1")
        # once per ticket: the same ticket again is kept like bytes no placement claims (retry later)
        w.direct(b"client1", Direct("again", ticket="T1"), [b"img", b"m"])
        assert not w.running and "~T1" in w.early
        # a lapsed ticket is remembered for DATA_WAIT only
        await w.sweep(t0 + 2.1 + const.DATA_WAIT + 0.1)
        assert not w.lapsed
        w.direct(b"client1", Direct("too-late", ticket="T2"), [b"img", b"m"])
        assert not w.running and "~T2" in w.early
        w.close()

    asyncio.run(go())


def test_a_hold_waits_longer_for_a_big_tasks_bytes() -> None:
    """A 12 MB photo on an 8 Mbit/s link takes 12 s to come: its hold waits DATA_WAIT plus the time to
    move it at DATA_MIN_RATE (before: DATA_WAIT alone, so every such task was placed and sent twice)."""

    async def go() -> None:
        w, _replies, told = _worker()
        big = 12 * 1024 * 1024
        w.reserve(Task(task_id="big", size=big))
        w.reserve(Task(task_id="small", size=1000))
        t0 = time.monotonic()
        await w.sweep(t0 + const.DATA_WAIT + 1)
        assert "big" in w.held and "small" not in w.held
        await w.sweep(t0 + const.DATA_WAIT + big / const.DATA_MIN_RATE + 0.1)
        assert "big" not in w.held
        assert [(m.task_id, m.error_code) for m in told if isinstance(m, Done)] == [
            ("small", NO_DATA),
            ("big", NO_DATA),
        ]
        w.close()

    asyncio.run(go())


def _dones(told: list[Message]) -> list[str]:
    return [m.task_id for m in told if isinstance(m, Done)]


def test_a_done_waits_while_the_slot_has_its_next_tasks_in_hand() -> None:
    """With more tasks in hand than slots, the credit a Done returns is not needed soon: it waits for
    the next ones (one message, one placement pass for them all), DONE_HOLD_MAX at most."""

    async def go() -> None:
        w, _replies, told = _worker()
        w.pool = pool = GatePool()  # type: ignore[assignment]
        for t in "abc":
            w.reserve(Task(task_id=t))
            w.data(b"c", Data(t), [b"img", b"m"])
        assert w.in_hand == 3
        await pool.finish("a")
        assert _dones(told) == []  # b and c are here for the one slot: a's credit waits
        await pool.finish("b")
        assert _dones(told) == ["a", "b"]  # only c is left: both go now
        await pool.finish("c")
        assert _dones(told) == ["a", "b", "c"]
        for t in "def":
            w.reserve(Task(task_id=t))
            w.data(b"c", Data(t), [b"img", b"m"])
        await pool.finish("d")
        assert _dones(told) == ["a", "b", "c"]
        async with asyncio.timeout(5):  # the slot stays on e: d's Done goes after DONE_HOLD_MAX all the same
            while _dones(told)[-1:] != ["d"]:
                await asyncio.sleep(const.DONE_HOLD_MAX / 4)
        await pool.finish("e")
        await pool.finish("f")
        await _settle(w)
        assert _dones(told) == list("abcdef") and w.in_hand == 0
        w.close()

    asyncio.run(go())


def _remote(ctx: Context, pool: Any) -> Worker:
    """A worker that follows a leader over a socket (the test binds it), its answers to clients dropped."""
    w = Worker(ctx, "w1", "127.0.0.1", pool, task_port=7000)

    async def reply(client: bytes, msg: Message, blobs: list[Any]) -> None:
        pass

    w.reply = reply
    return w


def test_held_dones_reach_a_remote_leader_as_one_message() -> None:
    async def go() -> None:
        ctx = Context()
        backend = ctx.router()
        port = backend.bind("127.0.0.1", 0)
        pool = GatePool()
        w = _remote(ctx, pool)
        try:
            async with asyncio.timeout(5):
                await w.follow(f"tcp://127.0.0.1:{port}")
                _, ready, _ = await backend.recv()
                assert isinstance(ready, Ready)
                for t in "abc":
                    w.reserve(Task(task_id=t))
                    w.data(b"c", Data(t), [b"img", b"m"])
                await pool.finish("a")
                await pool.finish("b")
                _, first, _ = await backend.recv()
                assert isinstance(first, Done) and first.task_id == "a"
                assert len(backend._held) == 1  # b's came in the same ZeroMQ message
                _, second, _ = await backend.recv()
                assert isinstance(second, Done) and second.task_id == "b"
                await pool.finish("c")
                await _settle(w)
        finally:
            w.close()
            backend.close()
            ctx.close()

    asyncio.run(go())


def test_a_ready_to_a_new_leader_carries_the_slots_times_so_far() -> None:
    """Over real sockets: the first Ready has no times; after a task ran (EchoPool: 1 ms in the slot),
    the Ready to the next leader carries that time under the task's model and size class."""

    async def go() -> None:
        ctx = Context()
        old, new = ctx.router(), ctx.router()
        ports = old.bind("127.0.0.1", 0), new.bind("127.0.0.1", 0)
        w = _remote(ctx, EchoPool())
        try:
            async with asyncio.timeout(5):
                await w.follow(f"tcp://127.0.0.1:{ports[0]}")
                _, first, _ = await old.recv()
                assert isinstance(first, Ready) and first.measured == {}
                w.reserve(Task(task_id="a", model="m", pixels=640 * 480))
                w.data(b"c", Data("a"), [b"img", b"m"])
                await _settle(w)
                await w.follow(f"tcp://127.0.0.1:{ports[1]}")
                _, second, _ = await new.recv()
                assert isinstance(second, Ready) and second.measured == {service_key("m", 640 * 480): 1.0}
        finally:
            w.close()
            old.close()
            new.close()
            ctx.close()

    asyncio.run(go())
