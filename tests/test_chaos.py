"""Chaos under load, the short version (bench/chaos.py is the long one): 200 tasks over 3 node
processes while the leader and others are killed and restarted, slots are killed and a leader is
frozen past the dead timeout. Every task has exactly one output, identical to a single-node run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .chaos import chaos


@pytest.mark.timeout(300)
def test_chaos_under_load_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    got = chaos(tmp_path, nodes=3, tasks=200, every=2.0, size=(256, 320))
    print(json.dumps({k: v for k, v in got.items() if k != "action_log"}))
    assert got["lost"] == 0 and got["duplicated"] == 0 and got["corrupt"] == 0, got
    assert got["ok"] == got["tasks"] == got["outputs"] == got["reference_ok"], got["failed"]
    assert sum(got["actions"].values()) >= 2, got["action_log"]
    assert not got["leaked_ports"]
