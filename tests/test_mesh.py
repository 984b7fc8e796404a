"""Whole nodes as processes on 127.0.0.1 joined by --peer: a batch survives kill -9 of the
leader and of a worker, and a graceful leave; every task's result arrives exactly once."""

from __future__ import annotations

import asyncio
import io
import re
import signal
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from mesh import const
from mesh.surface.client import Client, Job, JobResult
from mesh.wire.transport import Context

from .cluster import Cluster, cluster, png, wait_mesh, wait_until


def jobs(n: int) -> list[Job]:
    rng = np.random.default_rng(7)
    mask = np.zeros((64, 96), np.uint8)
    mask[20:44, 30:70] = 255
    m = png(mask)
    return [
        Job(png((rng.random((64, 96, 3)) * 255).astype(np.uint8)), m, priority="batch", label=f"t{i}") for i in range(n)
    ]


def leader_port(client: Client) -> int:
    assert client.leader is not None
    return int(client.leader.leader_addr.rsplit(":", 1)[1])


def run_batch(
    c: Cluster, n: int, on_count: dict[int, str], window: int = 16
) -> tuple[list[JobResult], list[str], Client]:
    """Submit ``n`` tasks; when ``k`` results have arrived, do ``on_count[k]`` ("kill-leader", ...)."""
    delivered: list[str] = []
    done_actions: list[str] = []

    async def main() -> tuple[list[JobResult], Client]:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", c.nodes[0].port)])
        try:
            await client.connect()

            def on_result(r: JobResult) -> None:
                delivered.append(r.job.task_id)
                action = on_count.get(len(delivered))
                if action is None:
                    return
                lp = leader_port(client)
                if action == "kill-leader":
                    c.by_port(lp).kill()
                elif action == "term-leader":
                    c.by_port(lp).kill(signal.SIGTERM)
                elif action == "term-worker":
                    next(x for x in c.nodes if x.alive and x.port != lp).kill(signal.SIGTERM)
                elif action == "kill-worker":
                    next(x for x in c.nodes if x.alive and x.port != lp).kill()
                done_actions.append(f"{action}@{len(delivered)}")

            results = await asyncio.wait_for(client.run(jobs(n), on_result, window=window), 150)
            return results, client
        finally:
            client.close()
            ctx.close()

    results, client = asyncio.run(main())
    return results, delivered, client


def check_exactly_once(results: list[JobResult], delivered: list[str], n: int) -> None:
    assert len(delivered) == n and len(set(delivered)) == n, "a task was answered twice or not at all"
    failed = [(r.job.label, r.error_code, r.error) for r in results if not r.ok]
    assert not failed, failed[:5]
    for r in results[:5]:
        assert Image.open(io.BytesIO(r.data)).size == (96, 64)


def test_batch_survives_kill_9_of_the_leader_then_of_a_worker(tmp_path: Path) -> None:
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, client = run_batch(c, 100, {15: "kill-leader", 55: "kill-worker"})
        check_exactly_once(results, delivered, 100)
        assert client.failovers >= 1
        by_node = Counter(r.node_id for r in results)
        assert len(by_node) >= 2, by_node  # the work was spread (the killed leader may not have run any yet)
        assert sum(n.alive for n in c.nodes) == 1
        survivor = next(n for n in c.nodes if n.alive)
        assert "leads mesh" in survivor.text() and "is dead" in survivor.text()


def test_short_tasks_fed_deep_survive_kill_9_of_a_worker_then_of_the_leader(tmp_path: Path) -> None:
    """Null tasks (the benchmark's sleep executor at 0 ms) on loopback: their turn is well under
    PREFETCH_COVER_MS, so each worker is given up to WORKER_PREFETCH_MAX tasks beyond its slot. A worker
    killed with that many in hand (the leader re-queues them once it is dead, 2 s later), then the
    leader: every task still answered exactly once."""
    with cluster(tmp_path, extra=["--slots", "1", "--bench-delay-ms", "0"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, client = run_batch(c, 12000, {400: "kill-worker", 11000: "kill-leader"}, window=64)
        check_exactly_once(results, delivered, 12000)
        assert client.failovers >= 1
        assert sum(n.alive for n in c.nodes) == 1
        # the dead worker held more than the LAN's prefetch (10-12 here): the deep pipeline was tested
        requeued = [int(k) for n in c.nodes for k in re.findall(r"(\d+) of its tasks re-queued", n.text())]
        assert requeued and max(requeued) > 1 + const.WORKER_PREFETCH, requeued


def test_one_task_at_a_time_goes_by_tickets_and_survives_its_workers_dying(tmp_path: Path) -> None:
    """A client with one task in flight holds a ticket (a slot kept for its next task) and sends each
    task straight to it; kill -9 of both workers one after the other (so whichever held a ticket) still
    answers every task exactly once."""
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, client = run_batch(c, 40, {8: "kill-worker", 24: "kill-worker"}, window=1)
        check_exactly_once(results, delivered, 40)
        assert client.direct >= 20, client.direct  # most tasks skipped the placement round trip
        assert sum(n.alive for n in c.nodes) == 1


def test_one_task_at_a_time_on_the_leaders_own_node_survives_its_kill_9(tmp_path: Path) -> None:
    """Between equal workers a ticket names the leader's own node, and a lone task goes there as one
    message on the leader connection (``Direct(submit)``), answered on it. The leader killed -9 with the
    next task on its way there: that connection is gone, so the task is submitted to the new leader;
    every task answered exactly once."""
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, client = run_batch(c, 30, {10: "kill-leader"}, window=1)
        check_exactly_once(results, delivered, 30)
        assert client.failovers >= 1 and client.lone >= 10, (client.failovers, client.lone)
        assert sum(n.alive for n in c.nodes) == 2


def test_graceful_leave_of_the_leader_hands_its_queue_back(tmp_path: Path) -> None:
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, _ = run_batch(c, 60, {10: "term-leader"})
        check_exactly_once(results, delivered, 60)
        gone = next(n for n in c.nodes if not n.alive or "leaving" in n.text())
        wait_until(lambda: not gone.alive, 30, "the leaving leader to exit")
        assert gone.proc.returncode == 0, gone.text()[-2000:]


def test_graceful_leave_of_a_worker_loses_nothing(tmp_path: Path) -> None:
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(3)
        wait_mesh(c, 3)
        results, delivered, client = run_batch(c, 60, {10: "term-worker"})
        check_exactly_once(results, delivered, 60)
        assert client.failovers == 0  # the leader stayed; the worker handed its tasks back
        gone = wait_until(lambda: next((n for n in c.nodes if not n.alive), None), 30, "the worker to exit")
        assert gone.proc.returncode == 0, gone.text()[-2000:]
        leader = next(n for n in c.nodes if n.alive and "leads mesh" in n.text())
        wait_until(
            lambda: any(f"-{gone.port}-" in ln and " left" in ln for ln in leader.text().splitlines()),
            10,
            "the leader to log the worker's leave",
        )
