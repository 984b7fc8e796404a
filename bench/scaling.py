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
3. Small batches of a slow model (4 and 8 nodes, 1000 ms a task, 4 tasks per node) on a mesh
   that ran it before: makespan against the ideal (what a batch's start costs).

    python bench/scaling.py [--quick] [--parts equal,mixed,slow]
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics

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


def slow(n_nodes: int, delay_ms: float, per_node: int, batches: int) -> dict[str, object]:
    """Small batches of a slow model (CPU LaMa takes seconds a photo) on a mesh that ran it before:
    each batch is a new client (as each ``lamamesh submit`` is), so this is where a batch's start shows."""
    with cluster(tmpdir(), extra=["--slots", "1", "--bench-delay-ms", str(delay_ms)]) as c:
        c.start(n_nodes)
        wait_mesh(c, n_nodes)
        run_jobs(c.nodes[0].port, jobs(n_nodes))  # warm-up: the mesh has run this model before
        spans = []
        for _ in range(batches):
            res, secs, _ = run_jobs(c.nodes[0].port, jobs(per_node * n_nodes), window=64)
            assert all(r.ok for r in res)
            spans.append(round(secs, 3))
        ideal = per_node * delay_ms / 1000
        return {
            "nodes": n_nodes,
            "delay_ms": delay_ms,
            "tasks": per_node * n_nodes,
            "makespans_s": spans,
            "ideal_s": ideal,
            "over_ideal": round(statistics.median(spans) / ideal - 1, 4),
        }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="fewer tasks (a smoke run)")
    ap.add_argument("--parts", default="equal,mixed,slow", help="which of equal, mixed, slow to run")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    out: dict[str, object] = {}
    if "equal" in parts:
        per_node = 20 if args.quick else 60
        delay = 100.0
        rows = [equal(n, delay, per_node) for n in (1, 2, 4, 8)]
        one = rows[0]["tasks_per_s"]
        print(f"equal nodes, {delay:g} ms per task, 1 slot each")
        print(f"{'nodes':>5} {'tasks':>6} {'tasks/s':>9} {'vs N x one':>11}")
        for r in rows:
            r["efficiency"] = round(r["tasks_per_s"] / (one * r["nodes"]), 4)
            print(f"{r['nodes']:>5} {r['tasks']:>6} {r['tasks_per_s']:>9.2f} {r['efficiency']:>11.3f}")
        out |= {"delay_ms": delay, "equal": rows}
    if "mixed" in parts:
        delays = [20.0, 67.0, 200.0]
        tasks = 150 if args.quick else 400
        mix = [mixed(delays, tasks, p) for p in ("completion", "least-loaded")]
        print(f"\nmixed speeds {delays} ms per task, {tasks} tasks")
        print(f"{'policy':>13} {'makespan s':>11} {'ideal s':>8} {'over ideal':>11}  split")
        for m in mix:
            span = f"{m['makespan_s']:>11.2f} {m['ideal_s']:>8.2f} {m['over_ideal']:>10.1%}"
            print(f"{m['policy']:>13} {span}  {m['split']}")
        out |= {"mixed_delays_ms": delays, "mixed": mix}
    if "slow" in parts:
        batches = 2 if args.quick else 3
        slow_rows = [slow(n, 1000.0, 4, batches) for n in (4, 8)]
        print(f"\nsmall batches of a slow model (1000 ms a task, 4 per node), {batches} batches after a warm-up")
        print(f"{'nodes':>5} {'tasks':>6} {'makespans s':>22} {'ideal s':>8} {'over ideal':>11}")
        for sr in slow_rows:
            spans = " / ".join(f"{x:.2f}" for x in sr["makespans_s"])  # type: ignore[attr-defined]
            print(f"{sr['nodes']:>5} {sr['tasks']:>6} {spans:>22} {sr['ideal_s']:>8.2f} {sr['over_ideal']:>10.1%}")
        out |= {"slow": slow_rows}
    save("scaling" if parts == {"equal", "mixed", "slow"} else "scaling-" + "-".join(sorted(parts)), out)


if __name__ == "__main__":
    main()
