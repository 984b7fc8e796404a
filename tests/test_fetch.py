"""`lamamesh models fetch` against an HTTP server this test starts (never the internet): progress,
sha256 checked while streaming, a wrong checksum leaves no file, an interrupted part resumes."""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.errors import ModelError
from mesh.execute.models import Registry, data_dir, download


@contextlib.contextmanager
def serve(root: Path) -> Iterator[str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, name="test-http", daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()
        t.join(5)


def lamamesh(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mesh", "models", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "LAMAMESH_HOME": str(home)},
    )


def one_error(p: subprocess.CompletedProcess[str]) -> bool:
    """Exactly one `lamamesh: ...` line (beside the progress bar) and no traceback."""
    return [ln.startswith("lamamesh: ") for ln in p.stderr.splitlines()].count(
        True
    ) == 1 and "Traceback" not in p.stderr


def test_fetch_new_then_again_and_wrong_checksums(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    model = (data_dir() / "builtin_fill.onnx").read_bytes()  # a real ONNX file, served as "mine"
    (site / "mine.onnx").write_bytes(model)
    (site / "other.onnx").write_bytes(b"not the model")
    digest = hashlib.sha256(model).hexdigest()
    home = tmp_path / "home"
    with serve(site) as base:
        p = lamamesh(home, "fetch", "mine", "--url", f"{base}/mine.onnx", "--sha256", digest)
        assert p.returncode == 0, p.stderr
        assert "fetched model 'mine'" in p.stdout and digest in p.stdout
        spec, path = Registry(home).resolve("mine")
        assert spec.sha256 == digest and path.read_bytes() == model
        path.unlink()  # gone: fetched again from its recorded checksum
        p = lamamesh(home, "fetch", "mine", "--url", f"{base}/mine.onnx")
        assert p.returncode == 0, p.stderr
        path.unlink()
        p = lamamesh(home, "fetch", "mine", "--url", f"{base}/other.onnx")  # wrong bytes: nothing kept
        assert p.returncode == 2 and one_error(p) and "expected " + digest in p.stderr
        assert sorted(f.name for f in (home / "models").iterdir()) == []
        p = lamamesh(home, "fetch", "lama", "--url", f"{base}/other.onnx")  # the manifest's checksum
        assert p.returncode == 2 and "1faef5301d78" in p.stderr and "deleted" in p.stderr
        assert not any((home / "models").iterdir())
        p = lamamesh(home, "fetch", "lama", "--url", f"{base}/missing.onnx")
        assert p.returncode == 2 and "HTTP 404" in p.stderr
    for args, words in [
        (("fetch", "nope"), "give --url and --sha256"),
        (("fetch", "builtin"), "ships inside lamamesh"),
        (("fetch", "mine", "--sha256", "12"), "64 hex digits"),
        (("fetch", "lama", "--url", "http://127.0.0.1:9/x"), "cannot download"),
    ]:
        p = lamamesh(home, *args)
        assert p.returncode == 2 and words in p.stderr and one_error(p), (args, p.stderr)


def test_a_partial_download_resumes_or_restarts(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    blob = os.urandom(3 << 20)
    (site / "m.bin").write_bytes(blob)
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()
    (dest.parent / "m.bin.part").write_bytes(blob[: 1 << 20])  # a download cut short earlier
    seen: list[int] = []
    with serve(site) as base:
        got = download(f"{base}/m.bin", dest, hashlib.sha256(blob).hexdigest(), lambda d, t: seen.append(d))
        assert got == hashlib.sha256(blob).hexdigest() and dest.read_bytes() == blob
        assert seen[-1] == len(blob) and not (dest.parent / "m.bin.part").exists()
        with pytest.raises(ModelError, match="expected"):
            download(f"{base}/m.bin", tmp_path / "out" / "n.bin", "0" * 64)
        assert not (tmp_path / "out" / "n.bin").exists() and not (tmp_path / "out" / "n.bin.part").exists()
