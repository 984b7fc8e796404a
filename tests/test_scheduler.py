"""The leader's routing wired to fake sockets: priorities, credits, re-queue, drain."""

from __future__ import annotations

import asyncio
from typing import Any

from mesh.cluster.scheduler import Scheduler
from mesh.wire.protocol import Bye, Done, Message, Ready, Result, Submit, Task


class FakeRouter:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Message, list[Any]]] = asyncio.Queue()
        self.sent: list[tuple[bytes, Message, list[Any]]] = []

    async def recv(self) -> tuple[bytes, Message, list[Any]]:
        return await self.inbox.get()

    async def send(self, peer: bytes, msg: Message, blobs: Any = ()) -> None:
        self.sent.append((peer, msg, list(blobs)))


def _leader() -> tuple[Scheduler, FakeRouter, FakeRouter]:
    front, back = FakeRouter(), FakeRouter()
    leader = Scheduler("n1", "m", front, back, "h:1")  # type: ignore[arg-type]
    leader.leading, leader.leader_id, leader.leader_addr, leader.term = True, "n1", "h:1", 1
    return leader, front, back


def test_interactive_goes_ahead_of_batch_and_credits_are_respected() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        for tid, prio in (("b1", "batch"), ("b2", "batch"), ("i1", "interactive")):
            await leader._submit(b"c", Submit(tid, priority=prio), [b"img", b"mask"])
        assert back.sent == []  # no worker yet: all queued
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        assert [m.task_id for _, m, _ in back.sent if isinstance(m, Task)] == ["i1"]
        assert back.sent[0][2] == [b"img", b"mask"]  # frames passed through untouched
        await leader._on_back(b"w1", Done("i1", True, node_id="w1", model_ms=5.0), [b"out"])
        assert [m.task_id for _, m, _ in back.sent] == ["i1", "b1"]
        res = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert res[0].task_id == "i1" and res[0].ok and front.sent[0][2] == [b"out"]

    asyncio.run(go())


def test_worker_leaving_requeues_its_tasks_and_duplicates_are_dropped() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=2, slots=2), [])
        await leader._submit(b"c", Submit("t1"), [b"i", b"m"])
        await leader._submit(b"c", Submit("t1"), [b"i", b"m"])  # resubmitted: still one task
        assert len(leader.tasks) == 1
        await leader._on_back(b"w1", Bye("w1"), [])
        assert leader.queue and not leader.workers
        await leader._on_back(b"w2", Ready("w2", credits=1, slots=1), [])
        sent = [(p, m) for p, m, _ in back.sent if isinstance(m, Task)]
        assert sent[-1][0] == b"w2" and sent[-1][1].attempt == 1
        await leader._on_back(b"w2", Done("t1", True, node_id="w2"), [b"o"])
        await leader._on_back(b"w1", Done("t1", True, node_id="w1"), [b"o"])  # late duplicate
        assert len([m for _, m, _ in front.sent if isinstance(m, Result)]) == 1

    asyncio.run(go())


def test_drain_answers_what_is_left() -> None:
    async def go() -> None:
        leader, front, _ = _leader()
        await leader._submit(b"c", Submit("t1"), [b"i", b"m"])
        await leader.drain(0.05)
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert not res.ok and res.error_code == "no_mesh" and "shut down" in res.error
        await leader._submit(b"c", Submit("t2"), [b"i", b"m"])
        assert "shutting down" in front.sent[-1][1].error  # type: ignore[attr-defined]

    asyncio.run(go())


def test_per_client_limit(monkeypatch: Any) -> None:
    from mesh import const

    monkeypatch.setattr(const, "MAX_QUEUED_PER_CLIENT", 2)

    async def go() -> None:
        leader, front, _ = _leader()
        for i in range(3):
            await leader._submit(b"c", Submit(f"t{i}"), [b"i", b"m"])
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert res.task_id == "t2" and res.error_code == "overloaded"

    asyncio.run(go())
