"""Fuzzing every socket a live node binds (and its gossip input) while a client keeps running
real tasks through it: the node drops the garbage, counts it, and every real task is answered."""

from __future__ import annotations

import os
from pathlib import Path

from .fuzzwire import fuzz_node

EXAMPLES = int(os.environ.get("LAMAMESH_FUZZ_EXAMPLES", "1500"))  # per run of the test


def test_fuzzing_every_socket_while_real_tasks_run(tmp_path: Path) -> None:
    got = fuzz_node(tmp_path, EXAMPLES)
    print(
        f"fuzzed {got['messages_sent']} messages ({got['by_socket']}); node dropped {got['dropped_by_node']}; "
        f"{got['real_tasks_ok']} real tasks ok"
    )
    assert got["node_alive"] and not got["traceback_in_log"]
    assert got["real_tasks_failed"] == 0, got["failures"]
    assert got["real_tasks_ok_while_fuzzing"] > 0
    assert got["messages_sent"] >= EXAMPLES * 0.9 and got["dropped_by_node"] >= got["messages_sent"] // 4
