"""Scaling of the mesh: N equal nodes, and a mix of speeds under two placement policies.

Every node is a real `lamamesh join` process on 127.0.0.1 joined by --peer. The model is
replaced by the BENCHMARK-ONLY sleep executor (`join --bench-delay-ms MS`: each task takes
MS of wall time and no CPU, and returns its input), so eight nodes fit on a 2-core machine
and what is measured is the mesh: routing, credits, placement.

1. N = 1, 2, 4, 8 equal nodes (1 slot, 100 ms per task): throughput, and its ratio to
   N x one node's (design: >= 0.9; aim >= 0.95).
2. Three nodes at 10x, 3x and 1x speed (20, 67, 200 ms per task): batch makespan against
   the ideal split (tasks / sum of rates), with completion-time placement (ours) and with
   least-loaded placement for contrast (design: within 15%; aim 10%).

    python bench/scaling.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import secrets

from _common import Job, cluster, run_jobs, save, tmpdir, wait_mesh

PAYLOAD = os.urandom(64 * 1024)


def jobs(n: int) -> list[Job]:
    return [Job(PAYLOAD, b"m", priority="batch", pixels=512 * 512, task_id=secrets.token_hex(8)) for _ in range(n)]


def equal(n_nodes: int, delay_ms: float, per_node: int) -> dict[str, float]:
    with cluster(tmpdir(), extra=["--slots", "1", "--bench-delay-ms", str(delay_ms)]) as c:
        c.start(n_nodes)
        wait_mesh(c, n_nodes)
        run_jobs(c.nodes[0].port, jobs(4 * n_nodes))  # warm-up: every worker measured once
        res, secs, _ = run_jobs(c.nodes[0].port, jobs(per_node * n_nodes), window=8 * n_nodes + 16)
        assert all(r.ok for r in res)
        return {
            "nodes": n_nodes,
            "tasks": len(res),
            "seconds": round(secs, 3),
            "tasks_per_s": round(len(res) / secs, 2),
        }


def mixed(delays: list[float], tasks: int, policy: str) -> dict[str, object]:
    with cluster(tmpdir(), extra=["--slots", "1", "--placement", policy]) as c:
        for d in delays:
            c.start(1, args=["--bench-delay-ms", str(d)])
        wait_mesh(c, len(delays))
        run_jobs(c.nodes[0].port, jobs(3 * len(delays)))  # warm-up: every worker measured once
        res, secs, _ = run_jobs(c.nodes[0].port, jobs(tasks), window=64)
        assert all(r.ok for r in res)
        ideal = tasks / sum(1000.0 / d for d in delays)
        split: dict[str, int] = {}
        for r in res:
            split[r.node_id] = split.get(r.node_id, 0) + 1
        ports = {n.port: d for n, d in zip(c.nodes, delays, strict=True)}
        by_delay = {f"{ports[int(k.split('-')[-2])]:g} ms": v for k, v in split.items()}
        return {
            "policy": policy,
            "tasks": tasks,
            "makespan_s": round(secs, 3),
            "ideal_s": round(ideal, 3),
            "over_ideal": round(secs / ideal - 1, 4),
            "split": by_delay,
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer tasks (a smoke run)")
    args = ap.parse_args()
    per_node = 20 if args.quick else 60
    delay = 100.0
    rows = [equal(n, delay, per_node) for n in (1, 2, 4, 8)]
    one = rows[0]["tasks_per_s"]
    print(f"equal nodes, {delay:g} ms per task, 1 slot each")
    print(f"{'nodes':>5} {'tasks':>6} {'tasks/s':>9} {'vs N x one':>11}")
    for r in rows:
        r["efficiency"] = round(r["tasks_per_s"] / (one * r["nodes"]), 4)
        print(f"{r['nodes']:>5} {r['tasks']:>6} {r['tasks_per_s']:>9.2f} {r['efficiency']:>11.3f}")
    delays = [20.0, 67.0, 200.0]
    tasks = 150 if args.quick else 400
    mix = [mixed(delays, tasks, p) for p in ("completion", "least-loaded")]
    print(f"\nmixed speeds {delays} ms per task, {tasks} tasks")
    print(f"{'policy':>13} {'makespan s':>11} {'ideal s':>8} {'over ideal':>11}  split")
    for m in mix:
        print(f"{m['policy']:>13} {m['makespan_s']:>11.2f} {m['ideal_s']:>8.2f} {m['over_ideal']:>10.1%}  {m['split']}")
    save("scaling", {"delay_ms": delay, "equal": rows, "mixed_delays_ms": delays, "mixed": mix})


if __name__ == "__main__":
    main()
