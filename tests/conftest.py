"""The strict harness: every wait has a deadline, nothing outlives its test."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
from blockbuster import blockbuster_ctx
from PIL import Image

from .cluster import wait_until

os.environ.setdefault("LAMAMESH_LOG_LEVEL", "warning")


wait_for = wait_until  # poll a condition under a deadline (one helper for tests and benchmarks)


def _children(me: psutil.Process) -> list[psutil.Process]:
    """Live children, less multiprocessing's resource tracker (one per interpreter, by design)."""
    out = []
    for c in me.children(recursive=True):
        try:
            if c.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(c.cmdline()):
                out.append(c)
        except psutil.NoSuchProcess:
            pass
    return out


def _new_threads(before: set[int | None]) -> list[threading.Thread]:
    """Threads the test started that still run, less pyzmq's zero-copy garbage collector (a singleton)."""
    return [
        t
        for t in threading.enumerate()
        if t.ident not in before and t.is_alive() and type(t).__name__ != "GarbageCollectorThread"
    ]


@pytest.fixture(autouse=True)
def no_leaks() -> Iterator[None]:
    """Fail a test that leaves a child process or a thread behind (after a bounded wait)."""
    me = psutil.Process()
    before_threads = {t.ident for t in threading.enumerate()}
    yield
    wait_for(lambda: not _children(me), 15, "child processes to exit")
    wait_for(
        lambda: not _new_threads(before_threads),
        10,
        f"threads started by the test to end: {[t.name for t in _new_threads(before_threads)]}",
    )


@pytest.fixture(autouse=True)
def no_blocking_calls() -> Iterator[None]:
    """Fail a test whose event loop makes a blocking call (file or socket I/O, sleep, a lock) on the
    loop thread: blockbuster wraps those functions while an asyncio loop runs (as python-zeroconf
    and anyio test themselves). Startup reads that happen once (the registry, the key file, psutil
    at start) are allowed where they are, by function."""
    with blockbuster_ctx(["mesh"]) as bb:
        for path, functions in ALLOWED_BLOCKING:
            for wrapped in bb.functions.values():
                wrapped.can_block_in(path, functions)
        yield


ALLOWED_BLOCKING: list[tuple[str, list[str]]] = [
    # once, when a node starts: its capabilities (psutil, NVML), its registry and key files
    ("mesh/cluster/node.py", ["__init__", "_wire", "run"]),
    # /proc/self/stat for the heartbeat's CPU figure: made by the kernel on read, no disk behind it
    ("mesh/cluster/node.py", ["_cpu_percent"]),
]


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    monkeypatch.setenv("LAMAMESH_HOME", str(h))
    return h


def photo(name: str = "astronaut") -> np.ndarray:
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[:, :, :3])


def box_mask(h: int, w: int, box: tuple[int, int, int, int]) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    x0, y0, x1, y1 = box
    m[y0:y1, x0:x1] = 255
    return m


@pytest.fixture
def photo_files(tmp_path: Path) -> tuple[Path, Path, np.ndarray, np.ndarray]:
    img = photo("astronaut")
    m = box_mask(img.shape[0], img.shape[1], (200, 180, 330, 260))
    ip, mp = tmp_path / "astronaut.png", tmp_path / "astronaut_mask.png"
    Image.fromarray(img).save(ip)
    Image.fromarray(m).save(mp)
    return ip, mp, img, m >= 127
