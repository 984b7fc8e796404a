"""The loopback overhead of several checkouts of lamamesh, in paired batches.

Every checkout's mesh (two ``lamamesh join`` processes, the null executor, as ``overhead.py``) runs at
once, each idle while another is measured; a batch of tasks goes to each in turn, the order reversed
from one pair to the next, ``--pairs`` times per payload. Batches of the checkouts being compared are
a second or less apart, so the slow and fast spells of a shared VM (the same code's 64 KiB p50 was seen
to move 2x within minutes) fall on all of them alike, where ``trees.py``'s whole runs (~10 s each per
checkout) can land in different spells. Two kinds of batch per payload:

- one at a time: ``--n`` tasks (a new client each batch: its first task, with no ticket yet, is left
  out), their latencies (p50: pooled over all batches, and the median of the batch medians) and the
  share that ran on the leader's node (where the tickets sent them);
- 64 in flight: ``--n-window`` tasks, tasks/s (a new client's setup, connecting to the members, is in
  the time: a batch of a few hundred tasks reads low).

Prints each checkout's figures and, against the first checkout, the median ratio of the pairs and in
how many pairs it was better; saves everything under bench/results/. Each checkout runs its own code
with its ``.venv/bin/python`` when it has one (else this interpreter) and its ``bench/_common.py`` (copy
this checkout's into an older one, as for ``trees.py``); this file's ``_pairside.py`` drives it.

    python bench/pairs.py /tmp/pre . [--pairs 30] [--sizes 65536,1048576,8388608] [--n 60] [--out pairs]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from _common import save
from trees import revision

SIDE = Path(__file__).resolve().parent / "_pairside.py"


class Side:
    """One checkout's mesh, driven over the side script's stdin and stdout."""

    def __init__(self, tree: Path, nodes: int) -> None:
        self.tree = tree
        py = tree / ".venv" / "bin" / "python"
        cmd = [str(py if py.exists() else sys.executable), str(SIDE), str(nodes)]
        self.proc = subprocess.Popen(cmd, cwd=tree / "bench", stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if self._line() != "ready":
            raise RuntimeError(f"the mesh of {tree} did not start")

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def run(self, size: int, n: int, window: int) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"run {size} {n} {window}\n")
        self.proc.stdin.flush()
        got: dict[str, Any] = json.loads(self._line())
        if not got["ok"]:
            raise RuntimeError(f"tasks failed in {self.tree}")
        return got

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _ratio(mine: list[float], base: list[float], lower: bool) -> tuple[float, int]:
    """Median of the pairs' ratios (mine / base - 1) and how many pairs were better (lower or higher)."""
    ratios = [m / b - 1 for m, b in zip(mine, base, strict=True)]
    better = sum((r < 0) if lower else (r > 0) for r in ratios)
    return statistics.median(ratios), better


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", type=Path, help="checkouts of lamamesh (the first is the baseline)")
    ap.add_argument("--pairs", type=int, default=30)
    ap.add_argument("--sizes", default="65536,1048576,8388608")
    ap.add_argument("--n", type=int, default=60, help="tasks per one-at-a-time batch")
    ap.add_argument("--n-window", type=int, default=800, help="tasks per batch with 64 in flight")
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--out", default="pairs")
    args = ap.parse_args()
    trees = [t.resolve() for t in args.trees]
    names = [f"{revision(t)} ({t})" for t in trees]
    sizes = [int(s) for s in args.sizes.split(",")]
    runs: dict[str, dict[str, dict[str, list[Any]]]] = {
        str(s): {name: {"lat": [], "medians": [], "tps_one": [], "tps": [], "on_leader": []} for name in names}
        for s in sizes
    }
    sides: list[Side] = []
    try:
        for t in trees:
            sides.append(Side(t, args.nodes))
        for k in range(args.pairs):
            for size in sizes:
                order = list(range(len(sides))) if k % 2 == 0 else list(reversed(range(len(sides))))
                for i in order:
                    one = sides[i].run(size, args.n, 1)
                    many = sides[i].run(size, args.n_window, 64)
                    r = runs[str(size)][names[i]]
                    r["lat"] += one["lat"]
                    r["medians"].append(statistics.median(one["lat"]))
                    r["tps_one"].append(one["tps"])
                    r["on_leader"].append(one["on_leader"])
                    r["tps"].append(many["tps"])
            print(f"pair {k + 1}/{args.pairs}", file=sys.stderr, flush=True)
    finally:
        for side in sides:
            side.close()
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for size in sizes:
        by = runs[str(size)]
        base = by[names[0]]
        summary[str(size)] = {}
        for name in names:
            r = by[name]
            row = {
                "p50_ms": round(statistics.median(r["lat"]), 3),
                "median_of_batch_p50_ms": round(statistics.median(r["medians"]), 3),
                "tasks_per_s_one_at_a_time": round(statistics.median(r["tps_one"]), 1),
                "tasks_per_s": round(statistics.median(r["tps"]), 1),
                "one_at_a_time_on_leader": round(sum(r["on_leader"]) / max(1, len(r["lat"])), 3),
            }
            line = f"{size // 1024:>5} KiB  {name[:28]:28s}  p50 {row['p50_ms']:.3f} ms  {row['tasks_per_s']:>7,.0f}/s"
            line += f"  ({row['one_at_a_time_on_leader']:.0%} on the leader's node)"
            if name != names[0]:
                p50, p50_better = _ratio(r["medians"], base["medians"], lower=True)
                tps, tps_better = _ratio(r["tps"], base["tps"], lower=False)
                row |= {"p50_ratio": round(p50, 4), "p50_better_pairs": p50_better}
                row |= {"tasks_per_s_ratio": round(tps, 4), "tasks_per_s_better_pairs": tps_better}
                line += f"  vs first: p50 {p50 * 100:+.1f}% (better in {p50_better}/{args.pairs})"
                line += f", tasks/s {tps * 100:+.1f}% (better in {tps_better}/{args.pairs})"
            summary[str(size)][name] = row
            print(line)
    save(
        args.out,
        {"trees": names, "pairs": args.pairs, "n": args.n, "n_window": args.n_window, "nodes": args.nodes}
        | {"summary": summary, "runs": runs},
    )


if __name__ == "__main__":
    main()
