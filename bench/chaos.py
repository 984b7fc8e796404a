"""The long chaos run: a batch over several node processes while the leader and others are killed
(SIGKILL) and restarted, slot processes are killed, and a leader is frozen (SIGSTOP) past the dead
timeout, then thawed. Checks every task has exactly one output, byte-identical to a single-node run.

    python bench/chaos.py --nodes 4 --tasks 1000 --every 3
"""

from __future__ import annotations

import argparse
import shutil

from _common import save, tmpdir

from tests.chaos import chaos


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--every", type=float, default=3.0, help="seconds between two chaos actions")
    ap.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    args = ap.parse_args()
    root = tmpdir()
    try:
        got = chaos(root, args.nodes, args.tasks, args.every, tuple(args.size))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{got['tasks']} tasks over {got['nodes']} nodes in {got['seconds']} s with {got['actions']}: "
        f"{got['ok']} ok, lost {got['lost']}, duplicated {got['duplicated']}, corrupt {got['corrupt']} "
        f"(vs a single-node run), ports left listening {got['leaked_ports']}"
    )
    save("chaos", got)


if __name__ == "__main__":
    main()
