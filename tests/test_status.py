"""The status surfaces: snapshots from untrusted answers, the live Textual screen against a real
mesh (headless, Textual's run_test pilot) while the leader is killed under it, and --json."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

from mesh.surface.client import Client
from mesh.surface.snapshot import from_status
from mesh.surface.tui import StatusApp
from mesh.wire.protocol import Status
from mesh.wire.transport import Context

from .cluster import cluster, status, wait_mesh
from .test_mesh import jobs


def test_snapshot_from_a_garbled_status_reads_as_empty_fields() -> None:
    st = Status(
        "m",
        "a",
        3,
        nodes=[
            {"id": "a", "alive": True, "slots": 2, "busy": "x", "ewma_ms": {"builtin@s": 5, 7: 1}, "provider": "cuda"},
            {"id": 5, "alive": "yes", "slots": True},
            "not a node",  # type: ignore[list-item]
        ],
        outcomes={"ok": 4, "failed": "?"},  # type: ignore[dict-item]
        recent=[{"at": "x", "task": "t1", "outcome": "ok", "ms": 12}],
    )
    snap = from_status(st, now=1.0)
    assert [n.id for n in snap.nodes] == ["a", ""]
    a, b = snap.nodes
    assert (a.role, a.slots, a.busy, a.ewma_ms) == ("leader", 2, 0, (("builtin@s", 5.0),))
    assert (b.role, b.alive, b.slots) == ("dead", False, 0)
    assert snap.totals.nodes == 1 and snap.totals.slots == 2 and snap.totals.gpus == 1
    assert snap.outcomes == (("ok", 4),)
    assert snap.recent[0].task == "t1" and snap.recent[0].at == 0.0
    body = snap.to_json()
    assert {"mesh", "leader", "term", "nodes"} <= body.keys()
    assert {"id", "host", "port", "role", "alive", "provider", "slots", "busy", "queued", "done"} <= body["nodes"][
        0
    ].keys()


def test_live_screen_follows_a_mesh_through_a_leader_kill(tmp_path: Path) -> None:
    with cluster(tmp_path, extra=["--bench-delay-ms", "30"]) as c:
        c.start(3)
        wait_mesh(c, 3)

        async def main() -> None:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", c.nodes[1].port)])
            worker = Client(ctx, [("127.0.0.1", c.nodes[1].port)])
            try:
                await client.connect()
                await worker.connect()
                app = StatusApp(client.snapshot, refresh=0.2)
                async with app.run_test(size=(160, 40)) as pilot:

                    async def until(cond: object, what: str, timeout: float = 20) -> None:
                        deadline = time.monotonic() + timeout
                        while not cond():  # type: ignore[operator]
                            assert time.monotonic() < deadline, f"timed out waiting for {what}"
                            await pilot.pause(0.05)

                    await until(lambda: app.snapshot and app.snapshot.totals.nodes == 3, "3 nodes on screen")
                    first = app.snapshot
                    assert first is not None and first.leader
                    table = app.query_one("#nodes")
                    assert table.row_count == 3  # type: ignore[attr-defined]
                    await worker.run(jobs(20))
                    await until(lambda: app.snapshot and len(app.snapshot.recent) >= 20, "recent outcomes")
                    assert all(o.outcome == "ok" for o in app.snapshot.recent)  # type: ignore[union-attr]
                    app.save_screenshot("status.svg", str(tmp_path))
                    lport = next(n.port for n in first.nodes if n.id == first.leader)
                    leader = c.by_port(lport)
                    leader.kill()
                    await until(
                        lambda: (
                            app.snapshot
                            and app.snapshot.leader not in ("", first.leader)
                            and app.snapshot.term > first.term
                        ),
                        "a new leader on screen",
                    )
                    frames = app.frames
                    await until(lambda: app.frames >= frames + 3, "the screen to keep refreshing")
                    rows = {n.id: n for n in app.snapshot.nodes}  # type: ignore[union-attr]
                    assert rows.get(first.leader) is None or not rows[first.leader].alive
                    await pilot.press("q")
            finally:
                client.close()
                worker.close()
                ctx.close()

        asyncio.run(main())
        svg = (tmp_path / "status.svg").read_text()
        assert "leader" in svg and "tasks/s" in svg


def test_status_json_and_once_through_any_node(tmp_path: Path) -> None:
    with cluster(tmp_path, extra=["--bench-delay-ms", "0"]) as c:
        c.start(2)
        wait_mesh(c, 2)
        snap = status(c.nodes[1].port)  # asked of a worker: answered by the leader it names
        assert snap["answered_by"] == snap["leader"]
        assert snap["totals"]["nodes"] == 2 and snap["totals"]["slots"] == sum(n["slots"] for n in snap["nodes"])
        once = subprocess.run(
            [sys.executable, "-m", "mesh", "status", "--once", "--peer", f"127.0.0.1:{c.nodes[0].port}"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert once.returncode == 0, once.stderr
        assert f"leader {snap['leader']}" in once.stdout and "2 nodes" in once.stdout
        gone = subprocess.run(
            [sys.executable, "-m", "mesh", "status", "--json", "--peer", "127.0.0.1:9"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert gone.returncode == 3 and gone.stderr.count("\n") == 1 and "no lamamesh node answered" in gone.stderr


def test_demo_runs_a_local_mesh_and_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    p = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--nodes", "2", "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    assert sorted(f.name for f in (out / "results").iterdir()) == [
        "astronaut.jpg",
        "chelsea.jpg",
        "coffee.jpg",
        "rocket.jpg",
    ]
    assert "4 of 4 photos inpainted" in p.stdout and "who did what" in p.stdout
    assert "2 nodes up" in p.stderr
    for log in (out / "logs").iterdir():
        assert "stopped" in log.read_text()  # each node left gracefully
    bad = subprocess.run(
        [sys.executable, "-m", "mesh", "demo", "--nodes", "0"], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and bad.stderr.strip() == "lamamesh: --nodes must be between 1 and 16"


def test_log_json_lines_name_the_events(tmp_path: Path) -> None:
    """--log-json: every line one JSON object; joining, the leader and a peer's death are events."""
    import json

    from .cluster import wait_until

    with cluster(tmp_path, extra=["--bench-delay-ms", "0", "--log-json"]) as c:
        a, b = c.start(2)
        wait_mesh(c, 2)
        b.kill()
        wait_until(lambda: "is dead" in a.text(), 20, "the death logged")
    events = [json.loads(line) for line in a.text().splitlines()]
    assert all({"time", "level", "logger", "message"} <= e.keys() for e in events)
    text = "\n".join(e["message"] for e in events)
    assert f"joined mesh '{c.name}'" in text and "leads mesh" in text and "(term 1)" in text
    assert f"-{b.port}-" in text and "is dead" in text
