"""`lamamesh doctor`: each check names the problem and the fix in one line; with a mesh reachable
it round-trips one real task through it."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from mesh.execute.models import Registry
from mesh.surface import doctor

from .cluster import cluster, free_port_block, wait_mesh


def test_port_in_use_and_foreign_bind_address_are_named() -> None:
    port = free_port_block()
    assert doctor.ports_check("127.0.0.1", port).state == "ok"
    with socket.socket() as s:
        s.bind(("127.0.0.1", port + 1))
        s.listen()
        c = doctor.ports_check("127.0.0.1", port)
    assert c.state == "warn" and str(port + 1) in c.detail and "--port" in c.fix
    bad = doctor.ports_check("203.0.113.7", port)
    assert bad.state == "fail" and "not an address of this machine" in bad.detail


def test_a_corrupt_model_file_fails_with_its_fix(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "m.onnx"
    src.write_bytes(b"model bytes")
    spec = Registry(home).add(src, name="mine")
    ok = {c.name: c for c in doctor.model_checks(home)}
    assert ok["model mine"].state == "ok" and "sha256 ok" in ok["model mine"].detail
    assert ok["model builtin"].state == "ok"
    (home / "models" / spec.file).write_bytes(b"bit rot")
    bad = {c.name: c for c in doctor.model_checks(home)}["model mine"]
    assert bad.state == "fail" and "expected" in bad.detail and bad.fix
    assert "\n" not in bad.line()


def test_doctor_round_trips_a_task_through_a_real_mesh(tmp_path: Path) -> None:
    with cluster(tmp_path) as c:
        c.start(2)
        wait_mesh(c, 2)
        p = subprocess.run(
            [sys.executable, "-m", "mesh", "doctor", "--peer", f"127.0.0.1:{c.nodes[1].port}", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert p.returncode == 0, p.stdout + p.stderr
    lines = p.stdout.strip().splitlines()
    names = [ln.split(":")[0].split(maxsplit=1)[1] for ln in lines]
    assert names[:5] == ["onnxruntime", "cuda", "gpu", "ports", "multicast"], lines
    mesh_line = lines[-1]
    assert mesh_line.startswith("OK") and "2 nodes" in mesh_line and "round-tripped via" in mesh_line
    assert "Traceback" not in p.stderr


def test_doctor_without_a_mesh_warns_and_passes(tmp_path: Path) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "mesh", "doctor", "--peer", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.strip().splitlines()[-1].startswith("WARN  mesh: none reachable")
