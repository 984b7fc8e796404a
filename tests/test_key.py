"""The mesh key: with --secret-file every socket speaks CurveZMQ and only holders of the key
join, gossip, submit or read status; strangers are refused (and logged), over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mesh.errors import ConfigError, NoMesh
from mesh.surface.client import Client, Job
from mesh.wire.transport import Context, load_key, new_key_text

from .cluster import cluster, png, status, wait_until

EXE = [sys.executable, "-m", "mesh"]


def keyfile(path: Path) -> Path:
    p = subprocess.run([*EXE, "keygen", "-o", str(path)], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    return path


def test_keygen_files_and_bad_key_files(tmp_path: Path) -> None:
    k = keyfile(tmp_path / "mesh.key")
    assert k.stat().st_mode & 0o777 == 0o600
    key = load_key(k)
    assert len(key.public) == 40 and key.secret.decode() in k.read_text()
    assert key.secret.decode() not in repr(key)
    again = subprocess.run([*EXE, "keygen", "-o", str(k)], capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "exists" in again.stderr  # never overwrites a key in use
    assert new_key_text() != new_key_text()
    for name, text in [("empty", ""), ("junk", "hello\n"), ("short", "abc" * 13 + "\n"), ("bin", "\udcff")]:
        bad = tmp_path / name
        bad.write_text(text, errors="surrogateescape")
        with pytest.raises(ConfigError, match=r"not a lamamesh mesh key|cannot read"):
            load_key(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_key(tmp_path / "missing.key")
    p = subprocess.run(
        [*EXE, "join", "--secret-file", str(tmp_path / "junk"), "--port", "0", "--no-mdns"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2 and p.stderr.strip().splitlines()[-1].startswith("lamamesh: ")
    assert "Traceback" not in p.stderr


def test_only_key_holders_join_submit_or_read_status(tmp_path: Path) -> None:
    key, other = keyfile(tmp_path / "mesh.key"), keyfile(tmp_path / "other.key")
    with cluster(tmp_path, extra=["--bench-delay-ms", "5", "--secret-file", str(key)]) as c:
        a, b = c.start(2)

        def st(port: int, *args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*EXE, "status", "--json", "--peer", f"127.0.0.1:{port}", *args],
                capture_output=True,
                text=True,
                timeout=30,
            )

        def mesh_of_two() -> dict[str, object]:
            p = st(a.port, "--secret-file", str(key))
            s = json.loads(p.stdout) if p.returncode == 0 else {}
            return s if sum(1 for n in s.get("nodes", []) if n["alive"] and n.get("ready")) == 2 else {}

        wait_until(mesh_of_two, 60, "the keyed nodes to form a mesh")
        # strangers: a node with no key and a node with another key, both --peer'ing the mesh
        c.extra = ["--bench-delay-ms", "5"]
        stranger = c.start(1)[0]
        c.extra = ["--bench-delay-ms", "5", "--secret-file", str(other)]
        impostor = c.start(1)[0]
        for n in (stranger, impostor):
            wait_until(lambda n=n: "leads mesh" in n.text(), 30, "each stranger to lead a mesh of its own")
        s = mesh_of_two()
        assert s and {n["port"] for n in s["nodes"]} == {a.port, b.port}  # type: ignore[union-attr]
        assert status(stranger.port)["nodes"][0]["port"] == stranger.port  # alone
        for args in ([], ["--secret-file", str(other)]):
            p = st(a.port, *args)
            assert p.returncode == 3 and "no lamamesh node answered" in p.stderr, p.stderr
        img = tmp_path / "x.png"
        img.write_bytes(png(np.zeros((32, 32, 3), np.uint8)))
        mask = tmp_path / "m.png"
        m = np.zeros((32, 32), np.uint8)
        m[8:16, 8:16] = 255
        mask.write_bytes(png(m))
        sub = [*EXE, "submit", str(img), str(mask), "-o", str(tmp_path / "o.png"), "--peer", f"127.0.0.1:{b.port}"]
        p = subprocess.run([*sub, "--no-local"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 3 and "give --secret-file" in p.stderr
        env = {**os.environ, "LAMAMESH_SECRET_FILE": str(key)}
        p = subprocess.run([*sub, "--no-local"], capture_output=True, text=True, timeout=60, env=env)
        assert p.returncode == 0, p.stderr
        wait_until(lambda: "does not hold this mesh's key" in a.text() + b.text(), 20, "a refusal logged")
        refusals = [ln for ln in (a.text() + b.text()).splitlines() if "does not hold this mesh's key" in ln]
        assert len(refusals) <= 6  # rate-limited: one line per address per minute and socket
        assert "this mesh has no key" in stranger.text() and "this mesh has no key" not in a.text()


def test_a_keyed_mesh_answers_tasks_one_at_a_time_by_tickets(tmp_path: Path) -> None:
    """One task at a time goes by tickets: to the leader's own node as one message on the leader
    connection, or straight to another worker. Over CurveZMQ both work, and a keyless client gets nothing."""
    key = keyfile(tmp_path / "mesh.key")
    with cluster(tmp_path, extra=["--bench-delay-ms", "5", "--secret-file", str(key)]) as c:
        a, _b = c.start(2)

        def ready() -> bool:
            p = subprocess.run(
                [*EXE, "status", "--json", "--peer", f"127.0.0.1:{a.port}", "--secret-file", str(key)],
                capture_output=True,
                text=True,
                timeout=30,
            )
            nodes = json.loads(p.stdout).get("nodes", []) if p.returncode == 0 else []
            return sum(1 for n in nodes if n["alive"] and n.get("ready")) == 2

        wait_until(ready, 60, "the keyed nodes to form a mesh")

        mesh_key = load_key(key)

        async def run(with_key: bool) -> tuple[list[bool], int, int]:
            ctx = Context(key=mesh_key if with_key else None)
            client = Client(ctx, [("127.0.0.1", a.port)], probe_timeout=2.0)
            try:
                await client.connect()
                res = await client.run([Job(b"img", b"mask") for _ in range(20)], window=1, timeout=60)
                return [r.ok for r in res], client.direct, client.lone
            finally:
                client.close()
                ctx.close()

        oks, direct, lone = asyncio.run(run(True))
        assert oks == [True] * 20 and direct >= 15 and lone >= 1, (direct, lone)
        with pytest.raises(NoMesh):
            asyncio.run(run(False))
