"""Well-formed hostile messages against real nodes on 127.0.0.1 (findings of the hostile-peer
probe): each attack runs while tasks go through, and the mesh must still answer during it and
after it stops. The peer speaks the protocol (tests/hostile.py); nothing here is random bytes."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mesh import const
from mesh.surface.client import Client, Job
from mesh.wire.transport import Context

from .cluster import Cluster, cluster, png, status, wait_mesh, wait_until
from .hostile import HostilePeer, idle_connections

IMG = png((np.random.default_rng(7).random((48, 64, 3)) * 255).astype(np.uint8))
MASK = png(np.full((48, 64), 255, np.uint8))


@pytest.fixture
def mesh2(tmp_path: Path) -> Iterator[Cluster]:
    with cluster(tmp_path, extra=("--bench-delay-ms", "20", "--slots", "1")) as c:
        c.start(2)
        wait_mesh(c, 2)
        yield c


def run_tasks(port: int, n: int, timeout: float = 60) -> list[bool]:
    async def go() -> list[bool]:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            got = await client.run([Job(IMG, MASK) for _ in range(n)], timeout=timeout)
            return [r.ok for r in got]
        finally:
            client.close()
            ctx.close()

    return asyncio.run(go())


def healthy(c: Cluster, n: int = 2) -> dict[str, Any]:
    """The mesh answers status with one leader and ``n`` live nodes, and runs 10 tasks."""
    s = wait_until(lambda: _formed(c, n), 30, f"a mesh of {n} with a leader")
    assert run_tasks(c.nodes[0].port, 10) == [True] * 10
    return s  # type: ignore[no-any-return]


def _formed(c: Cluster, n: int) -> dict[str, Any]:
    s = status(c.nodes[0].port)
    ready = [x for x in s.get("nodes", []) if x["alive"] and x.get("ready")]
    return s if s.get("leader") and len(ready) == n else {}


def lm_status(port: int, *flags: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "mesh", "status", *flags, "--peer", f"127.0.0.1:{port}"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)


def leader_port(c: Cluster, s: dict[str, Any]) -> int:
    return int(next(x["port"] for x in s["nodes"] if x["id"] == s["leader"]))


def test_a_heartbeat_with_a_huge_term_does_not_break_the_mesh(mesh2: Cluster) -> None:
    """Finding 1: one heartbeat with term 2**31 made every node claim a term the decoder refuses."""
    before = healthy(mesh2)
    hp = HostilePeer()

    async def attack() -> None:
        for n in mesh2.nodes:
            await hp.introduce(n.port, "evil-term")
        await hp.gossip([hp.heartbeat("evil-term", term=2**31, leader="")], 3.0)

    try:
        asyncio.run(attack())
        during = healthy(mesh2)
        assert during["leader"] == before["leader"] and during["term"] < 1000
    finally:
        hp.close()
    assert healthy(mesh2)["term"] < 1000


def test_a_forged_ready_for_a_real_worker_is_refused_and_no_task_is_lost(mesh2: Cluster) -> None:
    """Finding 2: a Ready naming a real worker's id with 65,536 credits took 38 of 40 tasks."""
    s = healthy(mesh2)
    victim = next(x for x in s["nodes"] if x["id"] != s["leader"])
    hp = HostilePeer()

    async def attack() -> None:
        await hp.ready(
            leader_port(mesh2, s) + 1,
            b"forger",
            node_id=victim["id"],
            credits=65536,
            slots=1024,
            host="127.0.0.1",
            task_port=1,
        )
        await asyncio.sleep(0.5)  # let it arrive before the tasks (a deadline-free wait would need a probe)

    try:
        asyncio.run(attack())
        assert run_tasks(mesh2.nodes[0].port, 40) == [True] * 40
    finally:
        hp.close()
    leader_log = mesh2.by_port(leader_port(mesh2, s)).text()
    assert "refused a Ready naming node" in leader_log
    healthy(mesh2)


def test_a_flood_of_fake_members_keeps_status_readable(mesh2: Cluster) -> None:
    """Finding 7: 1,100 fake heartbeats made the status answer 200 KB, over the header limit, and
    `lamamesh status` died with a traceback."""
    healthy(mesh2)
    hp = HostilePeer()
    fakes = [hp.heartbeat(f"fake-{i:04d}", task_port=2000 + i) for i in range(1100)]

    async def attack() -> None:
        for n in mesh2.nodes:
            await hp.introduce(n.port, "fake-0000")
        await hp.gossip(fakes, 3.0, every=0.3)

    try:
        asyncio.run(attack())
        port = mesh2.nodes[0].port
        p = lm_status(port, "--json")
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-2000:]
        got = json.loads(p.stdout)
        listed = len(got["nodes"])
        assert 100 < listed + got["omitted"] <= const.MAX_MEMBERS, (listed, got["omitted"])  # capped
        assert any(x["id"] == got["leader"] for x in got["nodes"])  # the leader's row is always kept
        text = lm_status(port, "--once")
        assert text.returncode == 0 and "Traceback" not in text.stderr, text.stderr[-2000:]
    finally:
        hp.close()
    healthy(mesh2)


def test_a_node_raises_its_open_file_limit_and_survives_1100_idle_connections(tmp_path: Path) -> None:
    """Finding 3: about 1,100 idle TCP connections at the usual soft limit of 1,024 made psutil's
    heartbeat read fail with EMFILE, and that stopped the node."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard open-file limit here is {hard}")
    with cluster(tmp_path, extra=("--bench-delay-ms", "20", "--slots", "1")) as c:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # what the node inherits
        try:
            (node,) = c.start(1)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        wait_mesh(c, 1)
        assert "open-file limit raised from 1024" in node.text()
        with idle_connections(node.port, 1100):
            assert run_tasks(node.port, 10) == [True] * 10
            assert node.alive
        healthy(c, 1)
