"""Shared by the benchmarks: a cluster of real node processes, a client run, JSON output."""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mesh import aio  # noqa: E402
from mesh.surface.client import Client, Job, JobResult  # noqa: E402
from mesh.wire.transport import Context  # noqa: E402
from tests.cluster import Cluster, cluster, status, wait_mesh  # noqa: E402

RESULTS = ROOT / "bench" / "results"
__all__ = [
    "Client", "Cluster", "Job", "JobResult", "cluster", "machine", "pct", "run_jobs", "save", "save_runs", "status",
    "wait_mesh",
]  # fmt: skip


def like_the_cli() -> None:
    """Set up this process's allocator as the ``lamamesh`` command does its own (``mesh/malloc.py``): a
    benchmark's client process stands in for ``lamamesh submit``. Nothing in a checkout before it (the
    old trees ``bench/trees.py`` runs)."""
    try:
        from mesh.malloc import keep_freed_memory
    except ImportError:
        return
    keep_freed_memory()


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def save(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2) + "\n")
    print(f"saved {path.relative_to(ROOT)}")
    return path


def save_runs(name: str, runs: list[dict[str, Any]], **extra: Any) -> Path:
    """Save ``runs`` after those the file under ``name`` holds already: A/B sets that alternate two
    checkouts, one run per call, build up one file."""
    path = RESULTS / f"{name}.json"
    before = json.loads(path.read_text())["runs"] if path.exists() else []
    return save(name, {**extra, "runs": [*before, *runs]})


def run_jobs(
    port: int,
    jobs: Sequence[Job],
    window: int = 64,
    on_result: Callable[[JobResult, Client], None] | None = None,
    timeout: float = 600,
    keep_data: bool = True,
) -> tuple[list[JobResult], float, Client]:
    """Submit through the mesh reached at ``port``; returns (results, seconds, client).
    ``keep_data=False``: results come back without their image (as a batch run holds them:
    handed on as they arrive, not kept), so a long run of big payloads does not fill memory."""

    async def main() -> tuple[list[JobResult], float, Client]:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        try:
            await client.connect()
            slim: list[JobResult] = []

            def cb(r: JobResult) -> None:
                if on_result is not None:
                    on_result(r, client)
                if not keep_data:
                    slim.append(dataclasses.replace(r, data=b""))

            t0 = time.perf_counter()
            res = await asyncio.wait_for(client.run(jobs, cb, window=window, keep=keep_data), timeout)
            secs = time.perf_counter() - t0
            if not keep_data:
                order = {j.task_id: i for i, j in enumerate(jobs)}
                res = sorted(slim, key=lambda r: order[r.job.task_id])
            return res, secs, client
        finally:
            client.close()
            ctx.close()

    return aio.run(main())  # not asyncio.run: its 3.11 repr of the results (mesh/aio.py)


def pct(xs: list[float], q: float) -> float:
    """The ``q`` quantile of ``xs`` (nearest rank, as every benchmark here reports p99)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def tmpdir() -> Path:
    """A scratch folder for a benchmark's nodes (their logs and homes), removed when the script exits
    unless ``BENCH_KEEP=1`` (then its path is printed). Before, every run left one in /tmp (279 of
    them by 2026-12-02)."""
    path = Path(tempfile.mkdtemp(prefix="lamamesh-bench-"))
    if os.environ.get("BENCH_KEEP"):
        print(f"keeping {path} (BENCH_KEEP)", file=sys.stderr)
    else:
        atexit.register(shutil.rmtree, path, True)
    return path
