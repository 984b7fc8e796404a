"""Join: seconds from starting `lamamesh join` to that node's first finished task.

A two-node mesh on 127.0.0.1 (sleep executor, so it leaves the CPU to the newcomer as
separate machines would) is kept busy by a client streaming small tasks; at t0 a third
`lamamesh join --peer ...` process is started, and we wait for the first result that the
new node ran. Measured twice: with the real built-in ONNX model (so the time includes
spawning the slot process and loading ONNX Runtime) and with the BENCHMARK-ONLY sleep
executor (only the mesh part: process start, gossip, election view, credits, placement).
Design: < 2 s.

    python bench/join.py [--runs 3]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import statistics
import time

import numpy as np
from _common import Client, Job, JobResult, cluster, save, tmpdir, wait_mesh

from mesh.wire.transport import Context
from tests.cluster import png


def stream(n: int) -> list[Job]:
    rng = np.random.default_rng(1)
    img = png((rng.random((96, 128, 3)) * 255).astype(np.uint8))
    m = np.zeros((96, 128), np.uint8)
    m[30:60, 40:90] = 255
    mask = png(m)
    return [Job(img, mask, priority="batch", pixels=96 * 128, task_id=secrets.token_hex(8)) for _ in range(n)]


def one_run(model: str) -> float:
    # the two nodes already there use the sleep executor so that, as on a real LAN where the new
    # machine has its own cores, they do not take this machine's two cores from the newcomer
    new_args = ["--bench-delay-ms", "20"] if model == "sleep" else []
    with cluster(tmpdir(), extra=["--slots", "1", "--device", "cpu"]) as c:
        c.start(2, args=["--bench-delay-ms", "20"])
        wait_mesh(c, 2)
        out: dict[str, float] = {}

        async def main() -> None:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", c.nodes[0].port)])
            await client.connect()
            t0 = 0.0
            new_port = 0
            done = asyncio.Event()

            def on_result(r: JobResult) -> None:
                nonlocal t0, new_port
                if not t0:
                    (node,) = c.start(1, args=new_args)
                    t0, new_port = time.monotonic(), node.port
                elif f"-{new_port}-" in r.node_id and "joined_s" not in out:
                    out["joined_s"] = time.monotonic() - t0
                    done.set()

            run = asyncio.ensure_future(client.run(stream(100000), on_result, window=8))
            try:
                await asyncio.wait_for(done.wait(), 60)
            finally:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await run
                client.close()
                ctx.close()

        asyncio.run(main())
        return out["joined_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    report: dict[str, object] = {}
    for model in ("builtin", "sleep"):
        runs = [one_run(model) for _ in range(args.runs)]
        report[model] = {"median_s": round(statistics.median(runs), 3), "max_s": round(max(runs), 3), "runs": runs}
        what = "built-in ONNX model (slot spawn + ORT load included)" if model == "builtin" else "sleep executor"
        print(f"join -> first task, {what}: median {statistics.median(runs):.2f} s, max {max(runs):.2f} s")
    save("join", report)


if __name__ == "__main__":
    main()
