"""Failover: how long until a killed node is seen dead, and until a new leader routes.

Three real `lamamesh join` processes on 127.0.0.1 (--peer, BENCHMARK-ONLY sleep executor
of 5 ms per task so a steady stream of results flows). A client streams tasks through the
leader; at t0 the leader gets kill -9. Measured from t0:

- detected: the first moment a surviving node's status shows the old leader dead
  (polled every 20 ms through that node's task port);
- routing: the first result the client receives after t0 that a new leader routed
  (the client noticed the silence, found the new leader and resubmitted);
- in flight answered: when the last task that was in flight at t0 got its answer (it was
  re-queued by the leader, or resubmitted by the client, and run again elsewhere).

Also the same with a worker killed (detected, and the leader re-queues its tasks).
Design floor: detected < 2 s, routing < 3 s; aim 1 s / 2 s. Each is repeated --runs times.

    python bench/failover.py [--runs 5] [--dead-timeout 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import threading
import time

from _common import Client, Job, JobResult, cluster, save, tmpdir, wait_mesh

from mesh.wire.protocol import Status, StatusRequest
from mesh.wire.transport import Context

PAYLOAD = os.urandom(16 * 1024)


def stream(n: int) -> list[Job]:
    return [Job(PAYLOAD, b"m", priority="batch", pixels=512 * 512, task_id=secrets.token_hex(8)) for _ in range(n)]


async def watch_dead(port: int, victim: str, t0_box: list[float], out: dict[str, float], stop: threading.Event) -> None:
    """Ask one surviving node (directly, not its leader) for its view every 20 ms after t0."""
    ctx = Context()
    d = ctx.dealer()
    d.connect("127.0.0.1", port)
    try:
        while not stop.is_set():
            if t0_box:
                await d.send(StatusRequest())
                try:
                    msg, _ = await asyncio.wait_for(d.recv(), 1.0)
                except TimeoutError:
                    continue
                if isinstance(msg, Status):
                    row = next((n for n in msg.nodes if n["id"] == victim), None)
                    if row is None or not row["alive"]:
                        out["detected_s"] = time.monotonic() - t0_box[0]
                        return
            await asyncio.sleep(0.02)
    finally:
        d.close()
        ctx.close()


def one_run(kill: str, dead_timeout: float) -> dict[str, float]:
    extra = ["--slots", "2", "--bench-delay-ms", "5", "--dead-timeout", str(dead_timeout)]
    with cluster(tmpdir(), extra=extra) as c:
        c.start(3)
        snap = wait_mesh(c, 3)
        leader = snap["leader"]
        leader_port = next(n["port"] for n in snap["nodes"] if n["id"] == leader)
        if kill == "leader":
            victim_id, victim_port = leader, leader_port
        else:
            row = next(n for n in snap["nodes"] if n["id"] != leader)
            victim_id, victim_port = row["id"], row["port"]
        watcher_port = next(n.port for n in c.nodes if n.port not in (victim_port,))
        t0_box: list[float] = []
        out: dict[str, float] = {}
        stop = threading.Event()

        async def main() -> None:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", leader_port)], dead_timeout=dead_timeout)
            await client.connect()
            watcher = asyncio.create_task(watch_dead(watcher_port, victim_id, t0_box, out, stop))
            seen = 0

            def on_result(r: JobResult) -> None:
                nonlocal seen
                seen += 1
                now = time.monotonic()
                if seen == 200:
                    c.by_port(victim_port).kill()
                    t0_box.append(now)
                elif t0_box:
                    moved = client.leader is not None and client.leader.leader_id != leader
                    if kill == "leader" and "routing_s" not in out and moved:
                        out["routing_s"] = now - t0_box[0]
                    if now - r.latency_ms / 1000 < t0_box[0]:  # a task in flight when the node died
                        out["inflight_answered_s"] = now - t0_box[0]

            try:
                res = await client.run(stream(4000), on_result, window=16, timeout=120)
                out["lost"] = float(sum(1 for r in res if not r.ok))
                out["answered"] = float(len(res))
            finally:
                stop.set()
                await asyncio.wait_for(watcher, 5)
                client.close()
                ctx.close()

        asyncio.run(main())
        return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--dead-timeout", type=float, default=2.0)
    args = ap.parse_args()
    report: dict[str, object] = {"dead_timeout_s": args.dead_timeout, "runs": args.runs}
    for kill in ("leader", "worker"):
        runs = [one_run(kill, args.dead_timeout) for _ in range(args.runs)]
        det = [r["detected_s"] for r in runs if "detected_s" in r]
        rot = [r.get("routing_s", r.get("inflight_answered_s", 0.0)) for r in runs]
        inflight = [r["inflight_answered_s"] for r in runs if "inflight_answered_s" in r]
        lost = sum(r.get("lost", 0) for r in runs)
        report[kill] = {
            "detected_s": {"median": round(statistics.median(det), 3), "max": round(max(det), 3)},
            "routing_s": {"median": round(statistics.median(rot), 3), "max": round(max(rot), 3)},
            "inflight_answered_s": {"median": round(statistics.median(inflight), 3), "max": round(max(inflight), 3)},
            "tasks_answered": int(sum(r.get("answered", 0) for r in runs)),
            "tasks_failed": int(lost),
            "raw": runs,
        }
        print(
            f"kill -9 {kill:6s}: detected median {statistics.median(det):.2f} s (max {max(det):.2f}), "
            f"routing again median {statistics.median(rot):.2f} s (max {max(rot):.2f}), "
            f"every task in flight answered by median {statistics.median(inflight):.2f} s; "
            f"{int(sum(r.get('answered', 0) for r in runs))} tasks answered, {int(lost)} failed"
        )
    save("failover" if args.dead_timeout == 2.0 else f"failover-dead{args.dead_timeout:g}", report)


if __name__ == "__main__":
    main()
