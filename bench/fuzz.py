"""The long fuzzing run: one live node, real tasks through it one after another, and N hostile
messages (hypothesis: random bytes, truncated / wrong-version / wrong-shape msgpack, huge claimed
lengths, absurd values, frames out of order) over its task ROUTER, worker ROUTER and gossip input.

    python bench/fuzz.py --examples 50000
"""

from __future__ import annotations

import argparse
import shutil

from _common import save, tmpdir

from tests.fuzzwire import fuzz_node


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--examples", type=int, default=50_000)
    args = ap.parse_args()
    root = tmpdir()
    try:
        got = fuzz_node(root, args.examples)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{got['messages_sent']} hostile messages ({got['by_socket']}) in {got['seconds']} s; "
        f"the node dropped {got['dropped_by_node']}, stayed up: {got['node_alive']}; "
        f"real tasks: {got['real_tasks_ok']} ok ({got['real_tasks_ok_while_fuzzing']} during the fuzzing), "
        f"{got['real_tasks_failed']} failed"
    )
    save("fuzz", {"examples": args.examples, **got})


if __name__ == "__main__":
    main()
