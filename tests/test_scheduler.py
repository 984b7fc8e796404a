"""The scheduler wired to fake sockets: priorities, credits, placement messages, re-queue, no-data, drain."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mesh import const
from mesh.cluster.scheduler import Pending, Scheduler
from mesh.control import placement
from mesh.wire.protocol import (
    HUNG,
    NO_DATA,
    WITHDRAWN,
    Bye,
    Cancel,
    Direct,
    Done,
    Message,
    Place,
    Ready,
    Result,
    Submit,
    Task,
    task_of,
)


class FakeRouter:
    def __init__(self) -> None:
        self.inbox: asyncio.Queue[tuple[bytes, Message, list[Any]]] = asyncio.Queue()
        self.sent: list[tuple[bytes, Message, list[Any]]] = []
        self.bundles: list[tuple[bytes, list[str]]] = []  # (peer, message types) of each send_bundle

    async def recv(self) -> tuple[bytes, Message, list[Any]]:
        return await self.inbox.get()

    async def send(self, peer: bytes, msg: Message, blobs: Any = ()) -> None:
        self.sent.append((peer, msg, list(blobs)))

    async def send_bundle(self, peer: bytes, msgs: list[Message], blobs: Any = ()) -> None:
        self.sent.extend((peer, m, list(blobs) if i == len(msgs) - 1 else []) for i, m in enumerate(msgs))
        self.bundles.append((peer, [m.t for m in msgs]))


def _leader() -> tuple[Scheduler, FakeRouter, FakeRouter]:
    front, back = FakeRouter(), FakeRouter()
    leader = Scheduler("n1", "m", front, back, "h:1")  # type: ignore[arg-type]
    leader.leading, leader.leader_id, leader.leader_addr, leader.term = True, "n1", "h:1", 1
    leader.ticket_ttl = 0  # plain placement here; tickets are tested on their own below
    leader.headroom = const.WORKER_PREFETCH  # a grant is what may be sent (prefetch is tested on its own)
    return leader, front, back


def test_interactive_goes_ahead_of_batch_and_credits_are_respected() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        for tid, prio in (("b1", "batch"), ("b2", "batch"), ("i1", "interactive")):
            await leader._submit(b"c", Submit(tid, priority=prio))
        assert back.sent == []  # no worker yet: all queued
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1, host="10.0.0.2", task_port=7000), [])
        assert [m.task_id for _, m, _ in back.sent if isinstance(m, Task)] == ["i1"]
        assert back.sent[0][2] == []  # the worker is told to hold a slot: no bytes pass the leader
        (place,) = [m for _, m, _ in front.sent if isinstance(m, Place)]
        assert (place.task_id, place.node_id, place.addr) == ("i1", "w1", "10.0.0.2:7000")  # bytes go there
        await leader._on_back(b"w1", Done("i1", True, node_id="w1", model_ms=5.0, fetch_ms=50.0, size=1 << 20), [])
        assert [m.task_id for _, m, _ in back.sent] == ["i1", "b1"]
        assert not [m for _, m, _ in front.sent if isinstance(m, Result)]  # the worker answered the client
        w = leader.workers[b"w1"]
        assert w.ms_per_mib == 50.0 and w.service_ms  # it learnt how fast bytes reach w1 and how fast it runs
        assert w.rates == {"m": 50.0}  # and for bytes of that size class

    asyncio.run(go())


def test_a_pass_tells_each_worker_and_each_client_in_one_message() -> None:
    """Three credits come back at once (a worker's Dones held back and sent together): the pass places
    three tasks and sends one message to the worker and one to each client, not one per task."""

    async def go() -> None:
        leader, front, back = _leader()
        for i in range(4):
            await leader._submit(b"a", Submit(f"a{i}", priority="batch"))
        await leader._submit(b"b", Submit("b0", priority="batch"))
        await leader._on_back(b"w1", Ready("w1", credits=3, slots=3, host="10.0.0.2", task_port=7000), [])
        assert back.bundles == [(b"w1", ["task", "task", "task"])]
        assert sorted(front.bundles) == [(b"a", ["place", "place"]), (b"b", ["place"])]

    asyncio.run(go())


def test_a_worker_is_sent_more_beyond_its_slots_only_when_its_tasks_are_short() -> None:
    """It grants slots + WORKER_PREFETCH_MAX; the leader uses WORKER_PREFETCH of that until the worker
    has measured short tasks whose bytes come at once (PREFETCH_COVER_MS of work), and goes back to it
    when they are long."""

    async def go() -> None:
        leader, _front, back = _leader()
        leader.headroom = const.WORKER_PREFETCH_MAX  # what a real worker grants
        for i in range(40):
            await leader._submit(b"c", Submit(f"t{i}", priority="batch"))
        await leader._on_back(b"w1", Ready("w1", credits=1 + const.WORKER_PREFETCH_MAX, slots=1), [])

        def placed() -> list[str]:
            return [m.task_id for _, m, _ in back.sent if isinstance(m, Task)]

        assert len(placed()) == 1 + const.WORKER_PREFETCH  # unmeasured: the LAN's prefetch
        short = Done("t0", True, node_id="w1", model_ms=0.5, fetch_ms=0.2, size=65536)  # bytes at once
        await leader._on_back(b"w1", short, [])
        assert len(placed()) == 1 + const.WORKER_PREFETCH_MAX + 1  # in hand: its slot and the most beyond
        w = leader.workers[b"w1"]
        assert len(w.assigned) == 1 + const.WORKER_PREFETCH_MAX and w.free() == 0
        for tid in placed()[1:]:  # long tasks from now on: it is filled only to slots + WORKER_PREFETCH
            await leader._on_back(b"w1", Done(tid, True, node_id="w1", model_ms=500.0, fetch_ms=0.2, size=65536), [])
        assert w.prefetch() == const.WORKER_PREFETCH
        assert len(w.assigned) == 1 + const.WORKER_PREFETCH and w.free() == 0

    asyncio.run(go())


def test_a_new_leader_places_by_the_slot_times_its_workers_bring_in_their_ready() -> None:
    """A leader elected mid-batch knew nothing of its workers' speeds: a CPU node (2 s a task) took as
    many tasks as a GPU (50 ms) until both had answered. Each Ready now carries the worker's own slot
    times; the leader seeds with them only what it has not timed itself."""

    async def go() -> None:
        leader, _front, back = _leader()
        key = placement.service_key(task_of(Submit("x")).model, 0)
        await leader._on_back(b"gpu", Ready("gpu", credits=4, slots=1, measured={key: 50.0}), [])
        await leader._on_back(b"cpu", Ready("cpu", credits=4, slots=1, measured={key: 2000.0}), [])
        for i in range(4):
            await leader._submit(b"c", Submit(f"t{i}", priority="batch"))
        sent = [ident for ident, m, _ in back.sent if isinstance(m, Task)]
        assert sent == [b"gpu"] * 4  # unmeasured, the two split them 2 / 2
        await leader._on_back(b"gpu", Done("t0", True, node_id="gpu", model_ms=80.0), [])
        timed = leader.workers[b"gpu"].service_ms[key]
        assert 50.0 < timed < 80.0  # its own measurement goes on from the seed
        await leader._on_back(b"gpu", Ready("gpu", credits=1, slots=1, measured={key: 1.0}), [])
        assert leader.workers[b"gpu"].service_ms[key] == timed  # a later Ready does not overwrite it
        lies = {"a@s": float("nan"), "b@s": float("inf"), "c@s": -1.0, "d@s": 0.0, "e@s": 1e12}
        await leader._on_back(b"liar", Ready("liar", credits=1, slots=1, measured=lies), [])
        assert leader.workers[b"liar"].service_ms == {}  # no time a slot could have taken

    asyncio.run(go())


def test_short_tasks_whose_bytes_take_a_while_keep_the_lan_prefetch() -> None:
    """1 ms tasks of 64 KiB over 100 Mbit/s (5.2 ms on the wire): a deeper pipeline only queues bytes
    on the client's link (bench/lan.py, 1 ms: 0.87-0.88 of the limit against 0.91-0.92)."""

    async def go() -> None:
        leader, _front, _back = _leader()
        leader.headroom = const.WORKER_PREFETCH_MAX
        await leader._on_back(b"w1", Ready("w1", credits=1 + const.WORKER_PREFETCH_MAX, slots=1), [])
        for i in range(10):
            await leader._submit(b"c", Submit(f"t{i}", priority="batch"))
            await leader._on_back(b"w1", Done(f"t{i}", True, node_id="w1", model_ms=1.0, fetch_ms=6.0, size=65536), [])
        assert leader.workers[b"w1"].prefetch() == const.WORKER_PREFETCH

    asyncio.run(go())


def test_two_clients_batches_take_turns_and_a_late_client_starts_level_not_ahead() -> None:
    async def go() -> None:
        leader, _, back = _leader()
        for i in range(6):  # client a's whole window arrives first ...
            await leader._submit(b"a", Submit(f"a{i}", priority="batch"))
        for i in range(6):  # ... then b's
            await leader._submit(b"b", Submit(f"b{i}", priority="batch"))
        await leader._submit(b"b", Submit("urgent", priority="interactive"))
        await leader._on_back(b"w1", Ready("w1", credits=5, slots=5), [])
        sent = [m.task_id for _, m, _ in back.sent if isinstance(m, Task)]
        assert sent == ["urgent", "a0", "b0", "a1", "b1"]  # priority first, then one each (before: a0-a3)
        for i in range(3):  # c comes now: level with the round being placed, not ahead of a and b
            await leader._submit(b"c", Submit(f"c{i}", priority="batch"))
        for tid in sent:
            await leader._on_back(b"w1", Done(tid, True, node_id="w1"), [])
        sent = [m.task_id for _, m, _ in back.sent if isinstance(m, Task)][5:]
        assert sent == ["a2", "b2", "c0", "a3", "b3"]

    asyncio.run(go())


def test_worker_leaving_requeues_its_tasks_and_duplicates_are_dropped() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=2, slots=2), [])
        await leader._submit(b"c", Submit("t1"))
        await leader._submit(b"c", Submit("t1"))  # resubmitted: still one task
        assert len(leader.tasks) == 1
        await leader._on_back(b"w1", Bye("w1"), [])
        assert leader.queue and not leader.workers
        await leader._on_back(b"w2", Ready("w2", credits=1, slots=1), [])
        sent = [(p, m) for p, m, _ in back.sent if isinstance(m, Task)]
        assert sent[-1][0] == b"w2" and sent[-1][1].attempt == 1
        places = [m for _, m, _ in front.sent if isinstance(m, Place)]
        assert [(m.node_id, m.attempt) for m in places] == [("w1", 0), ("w2", 1)]  # the client is told again
        await leader._on_back(b"w2", Done("t1", True, node_id="w2"), [])
        await leader._on_back(b"w1", Done("t1", True, node_id="w1"), [])  # late duplicate
        assert not leader.tasks and leader.outcomes["ok"] == 1

    asyncio.run(go())


def test_drain_answers_what_is_left() -> None:
    async def go() -> None:
        leader, front, _ = _leader()
        await leader._submit(b"c", Submit("t1"))
        await leader.drain(0.05)
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert not res.ok and res.error_code == "no_mesh" and "shut down" in res.error
        await leader._submit(b"c", Submit("t2"))
        assert "shutting down" in front.sent[-1][1].error  # type: ignore[attr-defined]

    asyncio.run(go())


def test_per_client_limit(monkeypatch: Any) -> None:
    from mesh import const

    monkeypatch.setattr(const, "MAX_QUEUED_PER_CLIENT", 2)

    async def go() -> None:
        leader, front, _ = _leader()
        for i in range(3):
            await leader._submit(b"c", Submit(f"t{i}"))
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert res.task_id == "t2" and res.error_code == "overloaded"

    asyncio.run(go())


def test_a_task_whose_bytes_never_came_is_placed_again_then_failed() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        for attempt in range(const.DATA_TRIES):
            tasks = [m for _, m, _ in back.sent if isinstance(m, Task)]
            assert tasks[-1].attempt == attempt
            await leader._on_back(b"w1", Done("t1", False, NO_DATA, "no bytes", "w1"), [])
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert res.error_code == "no_mesh" and "never reached" in res.error
        assert not leader.tasks and leader.workers[b"w1"].credits == 1  # the slot came back each time

    asyncio.run(go())


def test_a_placed_task_is_not_handed_back_when_the_leader_steps_down() -> None:
    """Stepping down answers ``moved`` only for tasks not placed yet: the placed ones are with their
    workers, which answer the clients directly."""

    async def go() -> None:
        leader, front, _ = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("placed"))
        await leader._submit(b"c", Submit("queued"))
        await leader.set_role("n2", "h:2", 2)
        moved = [m.task_id for _, m, _ in front.sent if isinstance(m, Result)]
        assert moved == ["queued"]

    asyncio.run(go())


def test_a_withdrawn_task_is_dropped_without_an_answer_and_its_credit_comes_back() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        await leader._submit(b"c", Submit("t2"))  # waits for the credit t1 holds
        assert [m.task_id for _, m, _ in back.sent if isinstance(m, Task)] == ["t1"]
        await leader._on_back(b"w1", Done("t1", False, WITHDRAWN, "answered", "w1"), [])
        assert "t1" not in leader.tasks and leader.per_client[b"c"] == 1
        assert not [m for _, m, _ in front.sent if isinstance(m, Result)]  # the client has its answer
        assert [m.task_id for _, m, _ in back.sent if isinstance(m, Task)] == ["t1", "t2"]
        assert leader.outcomes["withdrawn"] == 0  # not an outcome of the mesh

    asyncio.run(go())


def test_a_silent_clients_tasks_are_dropped_and_its_placed_slot_not_placed_again() -> None:
    """A client that died (or failed over to another leader across a partition) says nothing more:
    after CLIENT_GONE_AFTER its queued tasks are dropped, and a placed one's no_data finds nothing
    to place again. A client that keeps pinging keeps its tasks."""

    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        for t in ("a1", "a2", "a3"):
            await leader._submit(b"gone", Submit(t))
        await leader._submit(b"alive", Submit("b1"))
        t0 = time.monotonic()
        leader.client_seen[b"alive"] = t0 + const.CLIENT_GONE_AFTER  # it pinged later
        await leader.sweep_clients(t0 + const.CLIENT_GONE_AFTER + 0.1)
        assert set(leader.tasks) == {"b1"} and leader.outcomes["abandoned"] == 3
        assert b"gone" not in leader.per_client and b"gone" not in leader.client_seen
        await leader._on_back(b"w1", Done("a1", False, NO_DATA, "no bytes", "w1"), [])  # a1 was placed
        tasks = [m.task_id for _, m, _ in back.sent if isinstance(m, Task)]
        assert tasks == ["a1", "b1"]  # the slot went to the live client's task, not to a1 again
        assert not [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert leader.status().failed == 0  # abandoned is not a failure of the mesh

    asyncio.run(go())


def test_a_ready_naming_another_node_is_refused_and_credit_is_capped() -> None:
    """Finding 2 of the hostile-peer probe: one forged Ready naming a real worker's id with 65,536
    credits took 38 of 40 tasks and answered none. A worker's connection is named by its node id,
    so a Ready for another node from another connection is refused and counted; a worker's grant
    is never more than its slots and the prefetch."""

    async def go() -> None:
        leader, _front, back = _leader()
        leader.headroom = const.WORKER_PREFETCH_MAX  # what a real worker grants
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._on_back(b"forger", Ready("w1", credits=65536, slots=1024), [])
        assert list(leader.workers) == [b"w1"] and leader.refused["ready for another node"] == 1
        await leader._on_back(b"w2", Ready("w2", credits=65536, slots=1024), [])
        assert leader.workers[b"w2"].slots == const.MAX_WORKER_SLOTS
        await leader._on_back(b"w3", Ready("w3", credits=65536, slots=2), [])
        assert leader.workers[b"w3"].credits == 2 + const.WORKER_PREFETCH_MAX
        assert leader.workers[b"w3"].free() == 2 + const.WORKER_PREFETCH  # its tasks' length unknown yet
        for i in range(10):
            await leader._submit(b"c", Submit(f"t{i}"))
        placed = [ident for ident, m, _ in back.sent if isinstance(m, Task)]
        assert b"forger" not in placed

    asyncio.run(go())


def test_a_task_past_its_deadline_is_placed_elsewhere_then_failed_with_a_clear_error() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._on_back(b"w2", Ready("w2", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        (first,) = [(ident, m) for ident, m, _ in back.sent if isinstance(m, Task)]
        assert first[1].deadline_s == const.TASK_DEADLINE_MAX  # no worker has measured the model yet
        now = time.monotonic()
        leader.client_seen[b"c"] = now + 10 * const.TASK_DEADLINE_MAX  # the client keeps pinging
        await leader.sweep(now + const.TASK_DEADLINE_MAX + 1)
        tasks = [(ident, m) for ident, m, _ in back.sent if isinstance(m, Task)]
        assert len(tasks) == 2 and tasks[1][0] != first[0] and tasks[1][1].attempt == 1  # the other worker
        places = [m for _, m, _ in front.sent if isinstance(m, Place)]
        assert [p.node_id for p in places] == [first[0].decode(), tasks[1][0].decode()]
        for k in range(2, const.TASK_TRIES + 1):
            await leader._on_back(f"w{k + 1}".encode(), Ready(f"w{k + 1}", credits=1, slots=1), [])
            await leader.sweep(now + k * (const.TASK_DEADLINE_MAX + 1))
        (res,) = [m for _, m, _ in front.sent if isinstance(m, Result)]
        assert res.error_code == "timeout" and "no answer within" in res.error and not leader.tasks
        # the workers that never answered got nothing more: each still holds the credit it took
        held = {w.node_id: w.credits for w in leader.workers.values()}
        assert [held[f"w{k}"] for k in range(1, const.TASK_TRIES + 1)] == [0] * const.TASK_TRIES

    asyncio.run(go())


def test_a_measured_task_gets_a_deadline_from_its_service_time_within_the_floor_and_cap() -> None:
    async def go() -> None:
        leader, _front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        leader.workers[b"w1"].service_ms["builtin@s"] = 100.0
        await leader._submit(b"c", Submit("t1", model="builtin"))
        (task,) = [m for _, m, _ in back.sent if isinstance(m, Task)]
        assert task.deadline_s == const.TASK_DEADLINE_MIN  # 10 s + 4 x 0.1 s is under the floor

    asyncio.run(go())


def test_a_hung_slot_sends_its_task_elsewhere_at_once() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._on_back(b"w2", Ready("w2", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        ((ident, _),) = [(i, m) for i, m, _ in back.sent if isinstance(m, Task)]
        await leader._on_back(ident, Done("t1", False, HUNG, "hung", ident.decode()), [])
        tasks = [i for i, m, _ in back.sent if isinstance(m, Task)]
        assert len(tasks) == 2 and tasks[1] != ident
        assert not [m for _, m, _ in front.sent if isinstance(m, Result)]

    asyncio.run(go())


def test_the_status_answer_stays_under_the_header_limit_whatever_the_member_count() -> None:
    from mesh.wire.protocol import NodeRow, encode

    leader, _front, _back = _leader()
    rows = [
        NodeRow(
            id=f"n{i:04d}",
            role="leader" if i == 700 else "worker",
            alive=True,
            ready=i == 900,
            models=("m" * 100,) * 5,
        )
        for i in range(1100)
    ]
    leader.status_rows = lambda: tuple(rows)
    st = leader.status()
    assert len(encode(st)) <= const.STATUS_MAX_BYTES and st.omitted == 1100 - len(st.nodes) > 0
    kept = {r["id"] for r in st.nodes}
    assert {"n0700", "n0900"} <= kept  # the leader and the registered worker first


def test_a_client_that_cancels_has_its_tasks_dropped_at_once() -> None:
    async def go() -> None:
        leader, front, back = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        for t in ("a1", "a2", "a3"):
            await leader._submit(b"quitter", Submit(t))
        await leader._submit(b"other", Submit("b1"))
        await leader._on_front(b"quitter", Cancel(), [])
        assert set(leader.tasks) == {"b1"} and leader.outcomes["cancelled"] == 3
        await leader._on_back(b"w1", Done("a1", False, NO_DATA, "no bytes", "w1"), [])  # a1 was placed
        assert [m.task_id for _, m, _ in back.sent if isinstance(m, Task)] == ["a1", "b1"]
        assert leader.status().failed == 0 and not [m for _, m, _ in front.sent if isinstance(m, Result)]

    asyncio.run(go())


def test_an_idle_workers_old_transfer_estimate_is_not_trusted_for_ever() -> None:
    """A worker judged slow at moving bytes got no work, so its estimate never learned: after
    TRANSFER_ESTIMATE_STALE without tasks it reads as unknown (the fleet's stands in)."""
    from mesh.cluster.scheduler import WorkerState

    w = WorkerState(b"w", "w", slots=1, credits=4, ms_per_mib=80.0, rates={"m": 80.0}, measured_at=100.0)
    fresh = w.load(100.0 + const.TRANSFER_ESTIMATE_STALE / 2)
    assert fresh.ms_per_mib == 80.0 and fresh.rates == {"m": 80.0}
    stale = w.load(100.0 + const.TRANSFER_ESTIMATE_STALE + 0.1)
    assert stale.ms_per_mib is None and not stale.rates
    w.assigned["t"] = 1.0  # while it holds work its estimate is kept (it will be refreshed)
    assert w.load(100.0 + const.TRANSFER_ESTIMATE_STALE + 0.1).rates == {"m": 80.0}


# ---- tickets: a slot held ahead for a client's next task --------------------------------------


def _ticketing() -> tuple[Scheduler, FakeRouter, FakeRouter]:
    leader, front, back = _leader()
    leader.ticket_ttl = const.TICKET_TTL
    return leader, front, back


def _offers(front: FakeRouter, to: bytes = b"c") -> list[Place]:
    return [m for p, m, _ in front.sent if p == to and isinstance(m, Place) and m.ticket]


def test_a_ticket_is_offered_when_nothing_waits_and_its_task_needs_no_place() -> None:
    async def go() -> None:
        leader, front, back = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=4, slots=1, host="10.0.0.2", task_port=7000), [])
        await leader._submit(b"c", Submit("t1"))
        (offer,) = _offers(front)
        assert offer.task_id == "" and offer.addr == "10.0.0.2:7000" and offer.model == "builtin" and offer.ttl_s > 0
        holds = [m for _, m, _ in back.sent if isinstance(m, Task) and m.ticket]
        assert [(h.task_id, h.ticket) for h in holds] == [("", offer.ticket)]
        assert leader.workers[b"w1"].credits == 2  # t1 and the ticket's hold
        # the next task comes with the ticket: placed on w1, no Place for it, and a new ticket offered
        await leader._submit(b"c", Submit("t2", ticket=offer.ticket))
        assert leader.tasks["t2"].worker == b"w1" and leader.direct == 1
        assert not [m for _, m, _ in front.sent if isinstance(m, Place) and m.task_id == "t2"]
        second = _offers(front)[-1]
        assert second.ticket != offer.ticket
        await leader._on_back(b"w1", Done("t2", True, node_id="w1", ticket=offer.ticket), [])
        assert "t2" not in leader.tasks and leader.outcomes["ok"] == 1
        # the unused ticket's hold expires at the worker: the credit comes back, the ticket is gone
        await leader._on_back(b"w1", Done("", False, NO_DATA, "unused", "w1", ticket=second.ticket), [])
        assert not leader.tickets.held and not leader.tickets.of
        await leader._on_back(b"w1", Done("t1", True, node_id="w1"), [])
        assert leader.workers[b"w1"].credits == 4 and not leader.tasks

    asyncio.run(go())


def test_between_equal_workers_a_ticket_goes_to_the_leaders_own() -> None:
    """Its hold and its answer go by a call, not a message (on one machine: a process less a task)."""

    async def go() -> None:
        leader, front, _back = _ticketing()
        holds: list[Task] = []
        leader.local_worker = holds.append
        for name in ("a1", "z9"):  # the remote one sorts first: without a preference it would win the tie
            ready = Ready(name, credits=4, slots=1, host="10.0.0.2", task_port=7000)
            await leader._on_back(name.encode(), ready, [], local=name == "z9")
        await leader._offer_ticket(b"c", Pending(task_of(Submit("t1")), b"c", 1, 0.0))  # both idle
        (offer,) = _offers(front)
        assert offer.node_id == "z9" and [h.ticket for h in holds] == [offer.ticket]

    asyncio.run(go())


def test_a_tickets_task_the_worker_never_got_is_placed_anew_when_its_client_sends_it_again() -> None:
    async def go() -> None:
        leader, front, back = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=4, slots=1, host="10.0.0.2", task_port=7000), [])
        await leader._on_back(b"w2", Ready("w2", credits=4, slots=1, host="10.0.0.3", task_port=7000), [])
        await leader._submit(b"c", Submit("t1"))
        await leader._on_back(b"w2", Done("t1", True, node_id="w2", model_ms=100.0), [])  # the model is measured
        (offer, *_) = _offers(front)
        held = next(w for w in leader.workers.values() if w.node_id == offer.node_id)
        await leader._submit(b"c", Submit("t2", ticket=offer.ticket))
        p = leader.tasks["t2"]
        assert p.worker == held.identity and p.task.deadline_s < const.TASK_DEADLINE_MAX  # not a 600 s guess
        # on a busy link the bytes came after the hold ended: the hold's credit comes back, the worker
        # answers the bytes `retry` and the client sends the task again plainly
        await leader._on_back(held.identity, Done("", False, NO_DATA, "unused", offer.node_id, ticket=offer.ticket), [])
        await leader._submit(b"c", Submit("t2"))
        again = [m for _, m, _ in front.sent if isinstance(m, Place) and m.task_id == "t2"]
        assert len(again) == 1 and [m.task_id for _, m, _ in back.sent if isinstance(m, Task)][-1] == "t2"
        assert "t2" not in held.assigned or leader.tasks["t2"].worker == held.identity  # charged once

    asyncio.run(go())


def test_no_ticket_while_a_task_waits_or_no_credit_is_left() -> None:
    async def go() -> None:
        leader, front, _ = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=1, slots=1), [])
        await leader._submit(b"c", Submit("t1"))  # takes the only credit: nothing to hold a ticket with
        await leader._submit(b"c", Submit("t2"))  # waits
        assert not _offers(front) and leader.queue
        await leader._on_back(b"w1", Ready("w1", credits=2, slots=1), [])  # t2 placed; then nothing waits
        assert len(_offers(front)) == 1

    asyncio.run(go())


def test_a_ticket_of_another_client_or_another_model_is_a_plain_submit() -> None:
    async def go() -> None:
        leader, front, _ = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=8, slots=2), [])
        await leader._submit(b"c", Submit("t1"))
        (offer,) = _offers(front)
        await leader._submit(b"d", Submit("x1", ticket=offer.ticket))  # not d's ticket
        await leader._submit(b"c", Submit("x2", model="lama", ticket=offer.ticket))  # not this kind of task
        placed = {m.task_id: p for p, m, _ in front.sent if isinstance(m, Place) and m.task_id}
        assert placed["x1"] == b"d" and placed["x2"] == b"c" and leader.direct == 0
        assert offer.ticket in leader.tickets.held  # still c's, for a builtin task

    asyncio.run(go())


def test_a_tickets_task_done_before_its_submit_came_is_not_placed_again() -> None:
    async def go() -> None:
        leader, front, _ = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=4, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        (offer,) = _offers(front)
        await leader._on_back(b"w1", Done("t2", True, node_id="w1", ticket=offer.ticket), [])  # the Direct was quick
        await leader._submit(b"c", Submit("t2", ticket=offer.ticket))
        assert "t2" not in leader.tasks and not leader.queue and leader.outcomes["ok"] == 1

    asyncio.run(go())


def test_a_lone_tasks_direct_to_the_leaders_node_is_its_submit_and_gets_the_next_ticket_with_its_result() -> None:
    """One photo at a time on the leader's own node: ``Direct(submit)`` is the task's Submit and its bytes
    in one message; the next ticket rides on the task's Result (one message back, not two). A hung slot
    sends no Result: the offer then goes alone when its Done comes. A node that no longer leads answers
    ``moved`` (the client submits it again to the new leader) and still hands the bytes to its worker."""

    async def go() -> None:
        leader, front, _ = _ticketing()
        holds: list[Task] = []
        directs: list[tuple[bytes, Direct, list[Any]]] = []
        leader.local_worker = holds.append
        leader.on_direct = lambda c, m, b: directs.append((c, m, b))
        await leader._on_back(b"n1", Ready("n1", credits=4, slots=1, host="h", task_port=1), [], local=True)
        await leader._submit(b"c", Submit("t1"))
        (first,) = _offers(front)  # the first task's ticket comes alone: the task went the plain way
        await leader._on_back(b"n1", Done("t1", True, node_id="n1"), [], local=True)

        lone = Direct("t2", ticket=first.ticket, submit=True)
        await leader._on_front(b"c", lone, [b"img", b"mask"])
        assert leader.tasks["t2"].worker == b"n1" and leader.tasks["t2"].by_ticket and leader.direct == 1
        assert directs == [(b"c", lone, [b"img", b"mask"])]  # the worker runs it in the ticket's slot
        assert len(_offers(front)) == 1  # the next ticket waits for t2's Result
        await leader.answer(b"c", Result("t2", True, node_id="n1"), [b"out"])
        assert front.bundles[-1] == (b"c", ["place", "result"])
        second = _offers(front)[-1]
        assert second.ticket not in ("", first.ticket) and front.sent[-1][2] == [b"out"]
        await leader._on_back(b"n1", Done("t2", True, node_id="n1", ticket=first.ticket), [], local=True)
        assert "t2" not in leader.tasks and len(_offers(front)) == 2

        await leader._on_front(b"c", Direct("t3", ticket=second.ticket, submit=True), [b"img", b"mask"])
        hung = Done("t3", False, HUNG, "its slot hung", "n1", ticket=second.ticket)
        await leader._on_back(b"n1", hung, [], local=True)  # no Result came: the offer goes alone
        assert len(_offers(front)) == 3 and not leader.riding

        await leader.set_role("n2", "h2:1", 2)
        await leader._on_front(b"c", Direct("t4", ticket=_offers(front)[-1].ticket, submit=True), [b"i", b"m"])
        moved = [m for _, m, _ in front.sent if isinstance(m, Result) and m.task_id == "t4"]
        assert [m.error_code for m in moved] == ["moved"] and directs[-1][1].task_id == "t4"

    asyncio.run(go())


def test_a_riding_ticket_is_planned_as_if_its_task_were_done() -> None:
    """A lone task's next ticket reaches its client with the task's answer, so the next task comes when
    this one is done: the ticket is planned as if it were. A 10 ms task counted against the leader's
    own worker made an idle worker look 10 ms sooner, and the lone client's tickets left the node. A
    ticket redeemed at another worker (its answer comes from there, the offer from here) still counts
    its task. Planned ahead or on arrival alike."""

    async def go(ahead: bool) -> None:
        leader, front, _ = _ticketing()
        leader.local_worker = lambda t: None
        leader.on_direct = lambda c, m, b: None
        if not ahead:
            leader._plan_ahead = lambda p, w: None  # type: ignore[method-assign]
        await leader._on_back(b"n1", Ready("n1", credits=4, slots=1, host="h", task_port=1), [], local=True)
        await leader._submit(b"c", Submit("t1"))  # the first ticket, at n1 (the only worker yet)
        await leader._on_back(b"n1", Done("t1", True, node_id="n1", model_ms=10.0), [], local=True)
        ticket = _offers(front)[-1]
        assert ticket.node_id == "n1"
        await leader._on_back(b"w2", Ready("w2", credits=4, slots=1, host="h2", task_port=1), [])
        for w in leader.workers.values():
            w.service_ms[placement.service_key("builtin", 0)] = 10.0
        for i in range(2, 7):  # lone tasks on the leader's own node: each next ticket stays there
            await leader._on_front(b"c", Direct(f"t{i}", ticket=ticket.ticket, submit=True), [b"i", b"m"])
            await leader.answer(b"c", Result(f"t{i}", True, node_id="n1"), [b"out"])
            await leader._on_back(b"n1", Done(f"t{i}", True, node_id="n1", model_ms=10.0), [], local=True)
            ticket = _offers(front)[-1]
            assert ticket.node_id == "n1", i
        assert (leader.planned_ahead > 0) == ahead
        # a plain Submit by the ticket (the bytes went to n1 on a second connection): the task counts
        await leader._submit(b"c", Submit("t9", ticket=ticket.ticket))
        assert _offers(front)[-1].node_id == "w2"

    asyncio.run(go(ahead=True))
    asyncio.run(go(ahead=False))


def test_a_ticket_planned_ahead_is_not_used_once_an_idle_workers_figures_go_stale() -> None:
    """What placement sees of an idle worker changes with time alone: its turn time and transfer rate
    read as unknown once ``TRANSFER_ESTIMATE_STALE`` has passed since they were measured. A plan made
    ahead holds only until the first such moment, then the ticket is planned on arrival. Here the other
    worker's 30 ms turn time, measured under load, goes stale between the plan and the task: planned then,
    it is the sooner one (0.5 ms against 3)."""
    import types

    from mesh.cluster import scheduler as sched_mod

    async def go(gap: float) -> tuple[str, int]:
        leader, front, _ = _ticketing()
        leader.local_worker = lambda t: None
        leader.on_direct = lambda c, m, b: None
        await leader._on_back(b"n1", Ready("n1", credits=4, slots=1, host="h", task_port=1), [], local=True)
        await leader._on_back(b"w2", Ready("w2", credits=4, slots=1, host="h2", task_port=2), [])
        key = placement.service_key("builtin", 0)
        n1, w2 = leader.workers[b"n1"], leader.workers[b"w2"]
        n1.service_ms[key], w2.service_ms[key] = 3.0, 0.5
        w2.floor_ms, w2.floor_at = 30.0, now[0] - 1.5  # stale 0.5 s from now
        await leader._submit(b"c", Submit("t1"))
        await leader._on_back(b"n1", Done("t1", True, node_id="n1", model_ms=3.0), [], local=True)
        ticket = _offers(front)[-1]
        assert ticket.node_id == "n1"  # w2's turn time makes it the slower
        now[0] += 0.001
        await leader._on_front(b"c", Direct("t2", ticket=ticket.ticket, submit=True), [b"i", b"m"])
        await leader.answer(b"c", Result("t2", True, node_id="n1"), [b"out"])
        now[0] += 0.001
        await leader._on_back(b"n1", Done("t2", True, node_id="n1", model_ms=3.0), [], local=True)
        assert leader.ahead is not None and leader.ahead.chosen is not None
        assert leader.ahead.chosen.node_id == "n1"
        ticket = _offers(front)[-1]
        now[0] += gap  # the client reads the answer and sends its next task
        await leader._on_front(b"c", Direct("t3", ticket=ticket.ticket, submit=True), [b"i", b"m"])
        await leader.answer(b"c", Result("t3", True, node_id="n1"), [b"out"])  # its next ticket rides on it
        return _offers(front)[-1].node_id, leader.planned_ahead

    now = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0])
    real, sched_mod.time = sched_mod.time, fake  # type: ignore[assignment]
    try:
        assert asyncio.run(go(0.2)) == ("n1", 1)  # w2's figure still fresh: the plan made ahead is taken
        now[0] = 1000.0
        assert asyncio.run(go(0.7)) == ("w2", 0)  # stale by then (within AHEAD_FRESH): planned on arrival
    finally:
        sched_mod.time = real


def test_everything_placement_reads_moves_the_generation_a_plan_made_ahead_is_checked_by() -> None:
    """``Scheduler.gen`` moves with each thing that can change where a ticket goes: a worker's message
    (grant, answer, goodbye), a client's Submit, Cancel or lone task, a placement, a ticket given, a
    sweep, a role change, a worker or client dropped. A plan made ahead is used only while it has not."""

    async def go() -> None:
        leader, front, _ = _ticketing()
        leader.local_worker = lambda t: None
        leader.on_direct = lambda c, m, b: None

        def lone() -> Any:
            return leader._on_front(b"c", Direct("t2", ticket=_offers(front)[-1].ticket, submit=True), [])

        steps: list[tuple[str, Any]] = [
            ("a grant", lambda: leader._on_back(b"n1", Ready("n1", credits=4, slots=1, host="h"), [], local=True)),
            ("a second worker", lambda: leader._on_back(b"w2", Ready("w2", credits=4, slots=1, host="h2"), [])),
            ("a Submit (placed, a ticket given)", lambda: leader._on_front(b"c", Submit("t1"), [])),
            ("an answer", lambda: leader._on_back(b"n1", Done("t1", True, node_id="n1"), [], local=True)),
            ("a lone task", lone),
            ("a sweep", lambda: leader.sweep(time.monotonic() + 1)),
            ("a Cancel", lambda: leader._on_front(b"c", Cancel(), [])),
            ("a worker dropped", lambda: leader.drop_worker("w2", "gone")),
            ("a goodbye", lambda: leader._on_back(b"n1", Bye("n1"), [], local=True)),
            ("a role change", lambda: leader.set_role("n9", "h9:1", 2)),
        ]
        for what, step in steps:
            gen = leader.gen
            await step()
            assert leader.gen > gen, what
        gen = leader.gen
        leader._drop_client(b"c", "abandoned")
        assert leader.gen > gen

    asyncio.run(go())


def _lone_run(seed: int) -> tuple[int, int, set[str]]:
    """A lone client's tasks (each by the ticket the last brought) on a leader with another worker, and
    between them, at random: the other worker's grant changing, another client's tasks placed and done
    with slot times that make that worker much faster or slower, the clock moving on (up to 3 s: idle
    figures go stale and plans made ahead expire), sweeps. Time is a fake clock. Each time the leader
    takes a plan made ahead, it is checked against planning afresh at that moment. Returns how many
    plans were taken, how many lone tasks there were, and the workers the tickets went to."""
    import random
    import types

    from mesh.cluster import scheduler as sched_mod

    rng = random.Random(seed)
    now = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: now[0], time=lambda: now[0])
    real, sched_mod.time = sched_mod.time, fake  # type: ignore[assignment]
    try:
        return asyncio.run(_lone_script(rng, now))
    finally:
        sched_mod.time = real


async def _lone_script(rng: Any, now: list[float]) -> tuple[int, int, set[str]]:
    leader, front, _ = _ticketing()
    holds: list[Task] = []
    leader.local_worker = holds.append
    leader.on_direct = lambda c, m, b: None
    take = leader._take_ahead

    def checked(client: bytes, p: Pending, at: float) -> Any:
        got = take(client, p, at)
        if got is not None:  # what planning it now finds (this node's worker without the task coming)
            loads = {o.node_id: o.load(at) for o in leader.workers.values()}
            needs = placement.TaskNeeds(p.task.model, p.task.pixels, p.task.session, p.task.requires, p.task.size)
            fresh = leader._plan_ticket(loads, needs)
            assert got.chosen == fresh, (got.chosen, fresh)
            assert got.measured == placement.measured(loads.values(), needs)
            assert got.estimate_ms == placement.service_estimate_ms(loads["n1"], needs)
        return got

    leader._take_ahead = checked  # type: ignore[method-assign]
    await leader._on_back(b"n1", Ready("n1", credits=4, slots=1, host="h", task_port=1), [], local=True)
    await leader._on_back(b"w2", Ready("w2", credits=4, slots=1, host="h2", task_port=2), [])
    size = 1 << 20
    wide = rng.random() < 0.5  # links that differ a lot, or alike
    nodes: set[str] = set()
    lone = others = 0
    for i in range(80):
        offers = _offers(front)
        offer = offers[-1] if offers and leader.tickets.holds(b"c") else None
        for _ in range(rng.choice((0, 1, 1, 2, 3))):  # what else happens before the client's next task
            what = rng.random()
            if what < 0.2:
                grant = Ready("w2", credits=rng.choice((0, 1, 4)), slots=1, host="h2", task_port=2)
                await leader._on_back(b"w2", grant, [])
            elif what < 0.6:
                others += 1
                tid = f"d{others}"
                await leader._submit(b"d", Submit(tid, size=size if wide else 65536))
                got = leader.tasks.get(tid)
                if got is not None and got.worker is not None:
                    ms = rng.choice((0.2, 40.0))  # that worker becomes much faster or slower
                    fetch = rng.choice((0.5, 10.0)) if wide else 1.0
                    done = Done(tid, True, node_id=got.worker.decode(), model_ms=ms, fetch_ms=fetch, size=size)
                    await leader._on_back(got.worker, done, [], got.worker == b"n1")
            elif what < 0.85:
                now[0] += rng.choice((0.001, 0.3, 0.9, 1.7, 2.5))
            else:
                await leader.sweep(now[0])
        now[0] += 0.0005
        tid, ms = f"t{i}", rng.choice((0.5, 20.0))
        if offer is None:  # no ticket: a plain task (its answer brings one)
            await leader._submit(b"c", Submit(tid, size=size))
            got = leader.tasks.get(tid)
            if got is not None and got.worker is not None:
                fetch = rng.choice((1.0, 40.0)) if wide else 5.0  # a fast or slow link (stale: the fleet's)
                done = Done(tid, True, node_id=got.worker.decode(), model_ms=ms, fetch_ms=fetch, size=size)
                await leader._on_back(got.worker, done, [], got.worker == b"n1")
            continue
        nodes.add(offer.node_id)
        if offer.node_id == "n1":  # a lone task with its bytes to the leader's node; its next ticket rides back
            lone += 1
            await leader._on_front(b"c", Direct(tid, ticket=offer.ticket, submit=True, size=size), [b"i", b"m"])
            await leader.answer(b"c", Result(tid, True, node_id="n1"), [b"out"])
            now[0] += ms / 1000
            await leader._on_back(b"n1", Done(tid, True, node_id="n1", model_ms=ms, ticket=offer.ticket), [], True)
        else:  # its bytes to the other worker, its Submit here: the next ticket comes at once
            await leader._submit(b"c", Submit(tid, ticket=offer.ticket, size=size))
            now[0] += ms / 1000
            await leader._on_back(b"w2", Done(tid, True, node_id="w2", model_ms=ms, ticket=offer.ticket), [])
    return leader.planned_ahead, lone, nodes


def test_a_lone_clients_ticket_planned_ahead_goes_where_planning_it_on_arrival_would() -> None:
    """A lone client's next ticket is planned once its last task is done, while the client reads the
    answer (``Scheduler._plan_ahead``), and used when its task comes if nothing changed since. Whatever
    else happens in between (other workers' grants and times, other clients, time making idle figures
    stale), a plan taken is what planning then would find."""
    planned = lone = 0
    nodes: set[str] = set()
    for seed in range(40):
        got = _lone_run(seed)
        planned, lone, nodes = planned + got[0], lone + got[1], nodes | got[2]
    assert nodes == {"n1", "w2"}  # tickets went to both workers
    assert lone // 5 < planned < lone  # many lone tasks took a plan made ahead, not all


def test_a_dead_workers_tickets_go_and_their_tasks_are_submitted_plainly() -> None:
    async def go() -> None:
        leader, front, _ = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=4, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        (offer,) = _offers(front)
        await leader.drop_worker("w1", "died")
        assert not leader.tickets.held
        await leader._on_back(b"w2", Ready("w2", credits=4, slots=1), [])
        await leader._submit(b"c", Submit("t2", ticket=offer.ticket))  # the client did not know yet
        assert leader.tasks["t2"].worker == b"w2"
        assert [m.node_id for _, m, _ in front.sent if isinstance(m, Place) and m.task_id == "t2"] == ["w2"]

    asyncio.run(go())


def test_a_worker_idle_before_a_burst_is_not_judged_by_its_idle_time() -> None:
    async def go() -> None:
        leader, _, _ = _leader()
        await leader._on_back(b"w1", Ready("w1", credits=4, slots=1), [])
        await leader._submit(b"c", Submit("t0"))
        await leader._on_back(b"w1", Done("t0", True, node_id="w1"), [])
        w = leader.workers[b"w1"]
        w.last_done -= 5.0  # its last answer was long ago: it sat idle since
        await leader._submit(b"c", Submit("t1"))
        await leader._submit(b"c", Submit("t2"))
        await leader._on_back(b"w1", Done("t1", True, node_id="w1"), [])  # t2 still held: a busy turn
        assert w.floor_ms is not None and w.floor_ms < 1000  # not the 5 s it idled
        # a turn time not refreshed while the worker idles reads as unknown, like its transfer estimate
        await leader._on_back(b"w1", Done("t2", True, node_id="w1"), [])
        w.floor_ms, w.floor_at = 500.0, time.monotonic() - 10
        assert w.load(time.monotonic()).floor_ms == 0.0

    asyncio.run(go())


def test_a_worker_answering_tasks_it_never_had_gets_no_credit_past_its_grant() -> None:
    async def go() -> None:
        leader, _, _ = _ticketing()
        await leader._on_back(b"w1", Ready("w1", credits=2, slots=1), [])
        for i in range(50):
            await leader._on_back(b"w1", Done(f"never-{i}", True, node_id="w1", ticket=f"{i:016x}"), [])
        assert leader.workers[b"w1"].credits == 1 + const.WORKER_PREFETCH
        assert leader.outcomes["ok"] == 0 and not leader.tickets.spent

    asyncio.run(go())


class _Clock:
    """The scheduler's ``time`` with a monotonic clock the test moves (answers' timing is what crews grow by)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()


def _crew_run(monkeypatch: Any, fetch_ms: list[float], gap_s: float) -> tuple[Scheduler, list[bytes]]:
    """Four idle workers; a client's 12 tasks of 1 MiB; one of its crew's workers answers three of them,
    its bytes having come ``fetch_ms`` after each was placed, one answer every ``gap_s``. Returns the
    workers every task was sent to, in order."""
    import mesh.cluster.scheduler as sched

    clock = _Clock()
    monkeypatch.setattr(sched, "time", clock)

    async def go() -> tuple[Scheduler, list[bytes]]:
        leader, _front, back = _leader()
        for i in range(1, 5):
            await leader._on_back(f"w{i}".encode(), Ready(f"w{i}", credits=4, slots=1), [])
        for i in range(12):
            await leader._submit(b"c", Submit(f"t{i}", size=1 << 20))
        sent = [(ident, m.task_id) for ident, m, _ in back.sent if isinstance(m, Task)]
        # a crew of CREW_START to start with, each held to its credit
        assert len({ident for ident, _ in sent}) == const.CREW_START and len(sent) == 4 * const.CREW_START
        first = sent[0][0]
        for k, tid in enumerate([tid for ident, tid in sent if ident == first][:3]):
            clock.now += gap_s if k else fetch_ms[0] / 1000 + 0.1
            done = Done(tid, True, node_id=first.decode(), model_ms=100.0, fetch_ms=fetch_ms[k], size=1 << 20)
            await leader._on_back(first, done, [])
        return leader, [ident for ident, m, _ in back.sent if isinstance(m, Task)]

    return asyncio.run(go())


def test_a_crew_does_not_grow_while_its_clients_link_is_the_limit(monkeypatch: Any) -> None:
    """Bytes that come one every 250 ms to a worker that needs 100 ms a task: the client's link is
    the limit, more workers would only split it; the crew stays as it is and its tasks wait for it."""
    leader, sent = _crew_run(monkeypatch, [250.0, 500.0, 750.0], 0.25)
    assert len(set(sent)) == const.CREW_START and len(sent) == 4 * const.CREW_START + 3  # one more per answer
    assert len(leader.crews[b"c"]) == const.CREW_START


def test_a_crew_grows_while_its_workers_are_the_limit(monkeypatch: Any) -> None:
    """Bytes that come 10 ms apart to a worker answering back to back: its slot is the limit; the
    crew takes in others (as many as the client's link can feed: here all four)."""
    leader, sent = _crew_run(monkeypatch, [10.0, 20.0, 30.0], 0.1)
    assert len(set(sent)) == 4 and len(sent) == 12
    assert len(leader.crews[b"c"]) == 4


def test_crews_end_with_their_clients_tasks_and_lose_dead_workers() -> None:
    async def go() -> None:
        leader, _front, back = _leader()
        for i in (1, 2):
            await leader._on_back(f"w{i}".encode(), Ready(f"w{i}", credits=4, slots=1), [])
        await leader._submit(b"c", Submit("t1"))
        await leader._submit(b"d", Submit("t2"))
        placed = {m.task_id: ident for ident, m, _ in back.sent if isinstance(m, Task)}
        assert set(leader.crews) == {b"c", b"d"}
        dead = placed["t2"].decode()
        await leader.drop_worker(dead, "died")
        assert all(dead not in crew for crew in leader.crews.values())
        (again,) = [ident for ident, m, _ in back.sent if isinstance(m, Task) and m.task_id == "t2" and m.attempt]
        assert list(leader.crews[b"d"]) == [again.decode()]  # placed again, on the one left, its crew now
        await leader._on_back(placed["t1"], Done("t1", True, node_id=placed["t1"].decode(), model_ms=5.0), [])
        assert b"c" not in leader.crews and b"c" not in leader.links  # answered: its next batch starts afresh

    asyncio.run(go())


def _first_pass_spread(ms_per_mib: float) -> set[bytes]:
    """Four workers that ran the model before (1000 ms a task) and took ``ms_per_mib`` to receive
    bytes; a new client's 8 tasks of 1 MiB: the workers they were sent to."""

    async def go() -> set[bytes]:
        leader, _front, back = _leader()
        for i in range(1, 5):
            await leader._on_back(f"w{i}".encode(), Ready(f"w{i}", credits=4, slots=1), [])
        for w in leader.workers.values():
            w.service_ms, w.ms_per_mib = {"builtin@?": 1000.0}, ms_per_mib
        for i in range(8):
            await leader._submit(b"c", Submit(f"t{i}", size=1 << 20))
        return {ident for ident, m, _ in back.sent if isinstance(m, Task)}

    return asyncio.run(go())


def test_a_batch_the_mesh_knows_is_compute_bound_takes_every_worker_from_its_start() -> None:
    """A model that takes 1000 ms against bytes that take 10 ms: no crew holds the batch back (it took
    CREW_START workers and waited a model time for answers before growing: small batches of a slow
    model took 26% longer than the ideal). Bytes that take as long as the model: the crew as before."""
    assert len(_first_pass_spread(10.0)) == 4
    assert len(_first_pass_spread(1000.0)) == const.CREW_START
