"""The loopback overhead of several checkouts of lamamesh, in interleaved rounds.

Runs ``bench/overhead.py --only lamamesh`` in each checkout once per round, the order alternating
from one round to the next: a checkout run last in a round was seen to come out slower (64 KiB alone:
0.51 against 0.47 ms p50 when the same code ran second, 0.47 against 0.47 when it ran first), and
rounds in a fixed order had put the newest code last. Prints each checkout's medians per payload
and saves every run under bench/results/.

Each checkout runs its own code: its ``.venv/bin/python`` when it has one (make one with
``git worktree add /tmp/pre e50b7a4 && python3 -m venv /tmp/pre/.venv && /tmp/pre/.venv/bin/pip
install -e /tmp/pre``), else this interpreter.

    python bench/trees.py /tmp/pre . [--rounds 8] [--sizes 65536,1048576,8388608] [--n 200] [--out trees]

``--nodes 1`` runs each mesh as one node (every task on the leader's node: the per-task cost of each
path without the second node's process competing for the same cores); a checkout older than that flag
needs this checkout's ``bench/overhead.py`` copied into it (it runs against any client since e50b7a4).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import save


def run_once(tree: Path, sizes: str, n: int, nodes: int = 2) -> dict[str, dict[str, float]]:
    """One ``overhead.py`` run in ``tree``: its lamamesh figures per payload size (``nodes``: of its mesh;
    other than 2 needs ``--lamamesh-nodes``, which checkouts before 2026-12-03's twelfth session lack)."""
    py = tree / ".venv" / "bin" / "python"
    name = f"trees-scratch-{os.getpid()}"
    cmd = [str(py if py.exists() else sys.executable), "bench/overhead.py", "--only", "lamamesh"]
    cmd += ["--n", str(n), "--sizes", sizes, "--out", name] + (["--lamamesh-nodes", str(nodes)] if nodes != 2 else [])
    subprocess.run(cmd, cwd=tree, check=True, stdout=subprocess.DEVNULL, timeout=900)
    out = tree / "bench" / "results" / f"{name}.json"
    try:
        return dict(json.loads(out.read_text())["results"]["lamamesh"])
    finally:
        out.unlink(missing_ok=True)


def revision(tree: Path) -> str:
    """The checkout's commit, with "+" when it has uncommitted changes (bench files copied into an old
    tree, or work not yet committed: two trees at one commit are then told apart)."""
    got = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tree, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "-uno"], cwd=tree, capture_output=True, text=True)
    return (got.stdout.strip() or "?") + ("+" if dirty.stdout.strip() else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", type=Path, help="checkouts of lamamesh (at least one)")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--sizes", default="65536,1048576,8388608")
    ap.add_argument("--n", type=int, default=200, help="tasks one at a time per size (2n with 64 in flight)")
    ap.add_argument("--nodes", type=int, default=2, help="nodes of each mesh (1: every task on the leader's node)")
    ap.add_argument("--out", default="trees")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.trees]
    for t in trees:
        if not (t / "bench" / "overhead.py").exists():
            sys.exit(f"{t} is not a lamamesh checkout (no bench/overhead.py)")
    revs = {t: revision(t) for t in trees}
    runs: list[dict[str, object]] = []
    for r in range(args.rounds):
        for t in trees if r % 2 == 0 else trees[::-1]:
            got = run_once(t, args.sizes, args.n, args.nodes)
            runs.append({"round": r + 1, "tree": str(t), "rev": revs[t], "lamamesh": got})
            brief = "  ".join(
                f"{int(k) // 1024} KiB {v['p50_ms']:.2f} ms {v['tasks_per_s']:,.0f}/s"
                + (f" ({v['on_leader']:.0f} on the leader's node)" if "on_leader" in v else "")
                + (f" ({v['failovers']:.0f} failovers, {v['resubmitted']:.0f} again)" if v.get("failovers") else "")
                + (f" ({v['inflight_on_leader']:.0%} in flight)" if "inflight_on_leader" in v else "")
                + (f" cpu {v['cpu_us_nodes'] + v['cpu_us_client']:.0f} us" if "cpu_us_nodes" in v else "")
                for k, v in got.items()
            )
            print(f"round {r + 1}  {revs[t]:>9}  {brief}", flush=True)
    print(f"\nmedians over {args.rounds} rounds (p50 ms, tasks/s)")
    for size in args.sizes.split(","):
        for t in trees:
            mine = [run["lamamesh"][size] for run in runs if run["tree"] == str(t)]  # type: ignore[index]
            p50 = statistics.median(m["p50_ms"] for m in mine)
            tps = statistics.median(m["tasks_per_s"] for m in mine)
            cpu = [m["cpu_us_nodes"] + m["cpu_us_client"] for m in mine if "cpu_us_nodes" in m]
            per = f"  cpu {statistics.median(cpu):5.0f} us/task" if cpu else ""
            one = [m["cpu_us_one"] for m in mine if "cpu_us_one" in m]
            per += f"  (one at a time {statistics.median(one):5.0f})" if one else ""
            print(f"  {int(size) // 1024:>6} KiB  {revs[t]:>9}  {p50:6.3f} ms  {tps:9,.0f}/s{per}  ({t})")
    save(args.out, {"sizes": args.sizes, "n": args.n, "rounds": args.rounds, "nodes": args.nodes, "runs": runs})


if __name__ == "__main__":
    main()
