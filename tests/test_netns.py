"""mDNS for real: three network namespaces joined by a bridge, each running `lamamesh join`
with no flags at all; a fourth submits a batch with no --peer. One node is killed mid-batch."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .cluster import wait_until

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from lan import unavailable


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


def _can_netns() -> str:
    return unavailable()  # bench/lan.py's check: root, iproute2, a namespace can be made


@pytest.fixture
def lan() -> Iterator[list[str]]:
    """Four namespaces (10.77.x.1-4/24, interface eth0) on one bridge inside a fifth (the 'switch')."""
    why = _can_netns()
    if why:
        pytest.skip(why)
    tag = secrets.token_hex(2)
    net = 100 + int(tag, 16) % 150
    hub, names = f"lmhub{tag}", [f"lmn{i}{tag}" for i in range(1, 5)]
    made: list[str] = []
    try:
        _ip("netns", "add", hub)
        made.append(hub)
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for i, ns in enumerate(names, start=1):
            _ip("netns", "add", ns)
            made.append(ns)
            _ip("link", "add", f"lmv{i}{tag}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("link", "set", f"lmv{i}{tag}", "netns", hub)
            _ip("-n", hub, "link", "set", f"lmv{i}{tag}", "master", "br0")
            _ip("-n", hub, "link", "set", f"lmv{i}{tag}", "up")
            _ip("-n", ns, "addr", "add", f"10.77.{net}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
        yield names
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)


def batch(root: Path, n: int, h: int, w: int, seed: int) -> tuple[Path, Path, Path]:
    """``n`` random photos and their box masks under ``root``; returns (images, masks, output) folders."""
    imgs, masks, out = root / "i", root / "m", root / "out"
    imgs.mkdir()
    masks.mkdir()
    rng = np.random.default_rng(seed)
    for k in range(n):
        Image.fromarray((rng.random((h, w, 3)) * 255).astype(np.uint8)).save(imgs / f"p{k:03d}.png")
        m = np.zeros((h, w), np.uint8)
        m[h // 3 : 2 * h // 3, w // 3 : 2 * w // 3] = 255
        Image.fromarray(m).save(masks / f"p{k:03d}.png")
    return imgs, masks, out


def submit_batch(
    ns: str, imgs: Path, masks: Path, out: Path, env: dict[str, str], started: int
) -> subprocess.Popen[bytes]:
    """`lamamesh submit` of the batch from namespace ``ns`` (no --peer: mDNS), once ``started`` are out."""
    sub = subprocess.Popen(
        lm(ns, "submit", str(imgs), str(masks), "-o", str(out), "--no-local"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    wait_until(lambda: out.exists() and len(list(out.iterdir())) >= started, 60, "the batch to start")
    return sub


def kill_all(nodes: list[subprocess.Popen[bytes]]) -> None:
    for p in nodes:
        if p.poll() is None:
            p.kill()
    for p in nodes:
        p.wait(10)


def lm(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, sys.executable, "-m", "mesh", *args]


def test_three_namespaces_find_each_other_over_mdns_and_survive_a_kill(lan: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "LAMAMESH_HOME": str(tmp_path / "home"), "LAMAMESH_LOG_LEVEL": "info"}
    imgs, masks, out = batch(tmp_path, 150, 128, 160, seed=3)
    nodes: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"node{i}.log" for i in range(3)]
    try:
        for ns, log in zip(lan[:3], logs, strict=True):
            with log.open("wb") as fh:
                # `lamamesh join` with no flags but the device and slots (2 cores: 1 slot each)
                nodes.append(
                    subprocess.Popen(
                        lm(ns, "join", "--device", "cpu", "--slots", "1"), stdout=fh, stderr=subprocess.STDOUT, env=env
                    )
                )

        def formed() -> dict:
            p = subprocess.run(lm(lan[3], "status", "--json"), capture_output=True, text=True, env=env, timeout=30)
            if p.returncode != 0:
                return {}
            s = json.loads(p.stdout)
            return s if s["leader"] and sum(n["alive"] for n in s["nodes"]) == 3 else {}

        snap = wait_until(formed, 60, "three namespaces to form one mesh over mDNS")
        assert sorted(n["host"].rsplit(".", 1)[1] for n in snap["nodes"]) == ["1", "2", "3"]  # eth0, not lo
        leader_host = next(n["host"] for n in snap["nodes"] if n["id"] == snap["leader"])
        victim = int(leader_host.rsplit(".", 1)[1]) - 1  # kill the leader's namespace's node
        sub = submit_batch(lan[3], imgs, masks, out, env, started=20)
        nodes[victim].kill()
        so, se = sub.communicate(timeout=180)
        assert sub.returncode == 0, se.decode()[-3000:]
        assert len(list(out.glob("*.png"))) == 150
        summary = so.decode()
        assert "150 of 150 inpainted" in summary, summary
        split = dict((v, int(k)) for k, v in re.findall(r"(\d+) (\S+-5555-[0-9a-f]{4})", summary))
        assert len(split) == 3, summary  # all three shared the batch, the killed one before it died
        assert "found 3 nodes" in se.decode()
        survivors = [logs[i].read_text() for i in range(3) if i != victim]
        assert any("leads mesh" in t for t in survivors), (victim, snap["leader"], survivors)
    finally:
        kill_all(nodes)


def test_partition_then_heal_one_leader_no_task_lost(lan: list[str], tmp_path: Path) -> None:
    """The leader's namespace is cut off (its veth on the switch goes down) for longer than the dead
    timeout while a batch runs, then reconnected: the majority goes on, and after the heal there is
    one leader again (the higher term) and every task has exactly one output."""
    env = {**os.environ, "LAMAMESH_HOME": str(tmp_path / "home"), "LAMAMESH_LOG_LEVEL": "info"}
    imgs, masks, out = batch(tmp_path, 120, 192, 256, seed=4)
    tag = lan[0][-4:]
    hub = f"lmhub{tag}"
    nodes: list[subprocess.Popen[bytes]] = []
    try:
        logs = [tmp_path / f"node{i}.log" for i in range(3)]
        for ns, log in zip(lan[:3], logs, strict=True):
            with log.open("wb") as fh:
                nodes.append(
                    subprocess.Popen(
                        lm(ns, "join", "--device", "cpu", "--slots", "1"), stdout=fh, stderr=subprocess.STDOUT, env=env
                    )
                )

        def view(ns: str) -> dict:
            p = subprocess.run(lm(ns, "status", "--json"), capture_output=True, text=True, env=env, timeout=30)
            return json.loads(p.stdout) if p.returncode == 0 else {}

        def formed() -> dict:
            s = view(lan[3])
            return s if s.get("leader") and sum(n["alive"] and n.get("ready") for n in s["nodes"]) == 3 else {}

        snap = wait_until(formed, 60, "three namespaces to form one mesh")
        leader_host = next(n["host"] for n in snap["nodes"] if n["id"] == snap["leader"])
        cut = int(leader_host.rsplit(".", 1)[1])  # 1..3: the leader's namespace
        sub = submit_batch(lan[3], imgs, masks, out, env, started=10)
        _ip("-n", hub, "link", "set", f"lmv{cut}{tag}", "down")  # partition: the old leader is alone
        others = [ns for i, ns in enumerate(lan[:3], start=1) if i != cut]

        def new_leader() -> dict:
            s = view(others[0])
            return s if s.get("leader") and s["leader"] != snap["leader"] else {}

        during = wait_until(new_leader, 30, "the majority to elect a new leader")
        _ip("-n", hub, "link", "set", f"lmv{cut}{tag}", "up")  # heal

        def one_leader() -> dict:
            views = [view(ns) for ns in lan[:3]]
            leaders = {v.get("leader") for v in views}
            alive = [sum(n["alive"] for n in v.get("nodes", [])) for v in views]
            return views[0] if len(leaders) == 1 and None not in leaders and alive == [3, 3, 3] else {}

        healed = wait_until(one_leader, 45, "one leader for all three after the heal")
        assert healed["term"] >= during["term"] > snap["term"]
        try:  # ~20 s when healthy; the logs say why when not
            so, se = sub.communicate(timeout=75)
        except subprocess.TimeoutExpired:
            sub.kill()
            sub.wait(10)
            tails = "\n".join(f"{p.name}:\n" + "\n".join(p.read_text().splitlines()[-15:]) for p in logs)
            pytest.fail(f"the batch did not finish within 75 s after the heal\n{tails}")
        assert sub.returncode == 0, se.decode()[-3000:]
        assert "120 of 120 inpainted" in so.decode(), so.decode()
        assert len(list(out.glob("*.png"))) == 120
    finally:
        kill_all(nodes)
