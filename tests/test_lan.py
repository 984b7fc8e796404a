"""The direct data path on a real (namespaced) LAN: image bytes go client -> worker, never through
the leader. bench/lan.py's hosts; counts the bytes each host's link received."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from lan import Lan, in_ns, unavailable, wait_formed  # noqa: E402

PAYLOAD = 256 * 1024
TASKS = 24


def rx_bytes(ns: str) -> int:
    out = subprocess.run(in_ns(ns, "cat", "/sys/class/net/eth0/statistics/rx_bytes"), capture_output=True, text=True)
    return int(out.stdout.strip())


def test_bytes_go_straight_to_the_worker_not_through_the_leader() -> None:
    why = unavailable()
    if why:
        pytest.skip(why)
    lan = Lan(3, "")  # leader, worker, client; unshaped: this is about where bytes go, not speed
    work = Path(tempfile.mkdtemp(prefix="lmlantest"))
    env = {**os.environ, "LAMAMESH_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(2):
            cmd = [sys.executable, "-m", "mesh", "join", "--mesh", "lantest", "--no-mdns", "--bind", lan.addr(i),
                   "--port", "5555", "--slots", "1", "--bench-delay-ms", "30"]  # fmt: skip
            if i:
                cmd += ["--peer", f"{lan.addr(0)}:5555"]
            with (work / f"node{i}.log").open("wb") as log:
                nodes.append(subprocess.Popen(in_ns(lan.hosts[i], *cmd), stdout=log, stderr=subprocess.STDOUT, env=env))
            if i == 0:  # the first node leads (the test works either way; this keeps the runs alike)
                wait_formed(lan, lan.hosts[2], 5555, 1, env)
        snap = wait_formed(lan, lan.hosts[2], 5555, 2, env)
        leader_ns = (
            lan.hosts[0]
            if snap["leader"] == next(n["id"] for n in snap["nodes"] if n["host"] == lan.addr(0))
            else lan.hosts[1]
        )
        before = {ns: rx_bytes(ns) for ns in lan.hosts[:2]}
        out = work / "client.json"
        cmd = [sys.executable, str(ROOT / "bench" / "_lanclient.py"), "--peer", f"{lan.addr(0)}:5555",
               "--tasks", str(TASKS), "--payload", str(PAYLOAD), "--out", str(out)]  # fmt: skip
        subprocess.run(in_ns(lan.hosts[2], *cmd), env=env, timeout=120, check=True, capture_output=True)
        got = json.loads(out.read_text())
        assert got["ok"] == TASKS and got["duplicates"] == 0 and got["failed"] == 0
        ids = {n["host"]: n["id"] for n in snap["nodes"]}
        received = {ns: rx_bytes(ns) - before[ns] for ns in lan.hosts[:2]}
        for i, ns in enumerate(lan.hosts[:2]):
            ran = got["by_node"].get(ids[lan.addr(i)], 0)
            # a node's link carries the bytes of the tasks it ran, plus headers and gossip (< 1 MiB here)
            assert ran * PAYLOAD <= received[ns] < ran * PAYLOAD + (1 << 20), (ns, ran, received)
        assert got["by_node"].get(ids[lan.addr(0 if leader_ns == lan.hosts[0] else 1)], 0) < TASKS
    finally:
        for p in nodes:
            p.kill()
        for p in nodes:
            p.wait(10)
        lan.close()
        shutil.rmtree(work, ignore_errors=True)  # its logs and the client's figures (each run left one in /tmp)
