"""A leader killed mid-batch on a mixed fleet: does the new leader keep the slow nodes' share small?

Four real `lamamesh join` processes on 127.0.0.1 with the BENCHMARK-ONLY sleep executor: two fast
(20 ms a task) and two slow (1000 ms: a CPU node beside GPUs). A warm-up batch lets every worker be
measured, then a client runs a batch of --tasks with 64 in flight and the leader gets kill -9 when
--kill-at results are in. Measured per run: seconds from the kill to the batch's end, how many tasks
the slow survivors ran after the kill, and that every task was answered exactly once.

A new leader knows only what its workers tell it. Without their own times in their `Ready`, it took
every worker for the fleet's mean until each answered, so each slow survivor got its slot and
prefetch's worth (4 tasks, 4 s) at once.

    python bench/failover_mixed.py [--runs 5] [--tasks 150] [--kill-at 40]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import time
from collections import Counter
from typing import Any

from _common import Client, Job, JobResult, cluster, run_jobs, save_runs, tmpdir, wait_mesh

from mesh import aio
from mesh.wire.transport import Context

FAST_MS, SLOW_MS = 20.0, 1000.0
PAYLOAD = os.urandom(16 * 1024)


def jobs(n: int) -> list[Job]:
    return [Job(PAYLOAD, b"m", priority="batch", pixels=512 * 512, task_id=secrets.token_hex(8)) for _ in range(n)]


def one_run(tasks: int, kill_at: int) -> dict[str, Any]:
    with cluster(tmpdir(), extra=["--slots", "1"]) as c:
        for ms in (FAST_MS, FAST_MS, SLOW_MS, SLOW_MS):
            c.start(1, args=["--bench-delay-ms", str(ms)])
        wait_mesh(c, 4)
        slow_ports = {n.port for n in c.nodes[2:]}
        run_jobs(c.nodes[0].port, jobs(8), window=8)  # warm-up: every worker measured
        snap = wait_mesh(c, 4)
        leader = snap["leader"]
        leader_port = next(n["port"] for n in snap["nodes"] if n["id"] == leader)
        slow_ids = {n["id"] for n in snap["nodes"] if n["port"] in slow_ports}
        out: dict[str, Any] = {"killed_leader_was": "slow" if leader in slow_ids else "fast"}
        after: Counter[str] = Counter()
        t0: list[float] = []

        async def main() -> list[JobResult]:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", leader_port)])
            await client.connect()
            seen = 0

            def on_result(r: JobResult) -> None:
                nonlocal seen
                seen += 1
                if seen == kill_at:
                    c.by_port(leader_port).kill()
                    t0.append(time.monotonic())
                elif t0 and r.node_id in slow_ids:
                    after[r.node_id] += 1

            try:
                return await client.run(jobs(tasks), on_result, window=64, timeout=300)
            finally:
                client.close()
                ctx.close()

        res = aio.run(main())  # not asyncio.run: mesh/aio.py
        out["after_kill_s"] = round(time.monotonic() - t0[0], 2)
        out["slow_tasks_after_kill"] = sum(after.values())
        out["answered"] = len(res)
        out["failed"] = sum(not r.ok for r in res)
        out["duplicates"] = len(res) - len({r.job.task_id for r in res})
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=150)
    ap.add_argument("--kill-at", type=int, default=40, help="results in when the leader is killed")
    ap.add_argument("--label", default="", help="what code this is (saved with the figures)")
    ap.add_argument("--out", default="failover-mixed")
    args = ap.parse_args()
    runs = []
    for i in range(args.runs):
        r = one_run(args.tasks, args.kill_at)
        runs.append(r)
        print(
            f"run {i + 1}: killed a {r['killed_leader_was']} leader; batch ended {r['after_kill_s']} s after; "
            f"slow nodes ran {r['slow_tasks_after_kill']} tasks after the kill; answered {r['answered']}, "
            f"failed {r['failed']}, duplicates {r['duplicates']}"
        )
    med = statistics.median(r["after_kill_s"] for r in runs)
    slow = statistics.median(r["slow_tasks_after_kill"] for r in runs)
    print(f"median: {med} s from the kill to the end, {slow} tasks on the slow nodes after it")
    for r in runs:
        r |= {"label": args.label, "tasks": args.tasks, "kill_at": args.kill_at}
    save_runs(args.out, runs, fast_ms=FAST_MS, slow_ms=SLOW_MS)


if __name__ == "__main__":
    main()
