"""Limits (frame bytes, image pixels, tasks queued per client, result bytes): each a constant and a
config key; past one the client gets one clear error and the node goes on serving."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import numpy as np

from mesh.surface.client import Client, Job, JobResult
from mesh.wire.protocol import Submit, encode
from mesh.wire.transport import Context

from .cluster import cluster, png, wait_mesh


def noise(h: int, w: int, seed: int = 1) -> bytes:
    return png((np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8))


def box(h: int, w: int) -> bytes:
    m = np.zeros((h, w), np.uint8)
    m[h // 4 : h // 2, w // 4 : w // 2] = 255
    return png(m)


def test_each_limit_answers_clearly_and_the_node_goes_on(tmp_path: Path) -> None:
    conf = tmp_path / "limits.toml"
    conf.write_text(
        "[lamamesh]\nmax_frame_bytes = 400000\nmax_pixels = 40000\nmax_queued_per_client = 3\n"
        "max_result_bytes = 30000\nslots = 1\n"
    )
    with cluster(tmp_path, extra=["--config", str(conf)]) as c:
        (node,) = c.start(1)
        wait_mesh(c, 1)

        async def main() -> dict[str, JobResult]:
            ctx = Context(max_frame_bytes=400000)
            client = Client(ctx, [("127.0.0.1", node.port)])
            try:
                await client.connect()
                jobs = {
                    "ok": Job(noise(64, 64), box(64, 64)),
                    "frame": Job(os.urandom(500_000), box(64, 64)),  # over max_frame_bytes: refused before sending
                    "pixels": Job(noise(250, 250), box(250, 250)),  # 62,500 px > 40,000
                    "result": Job(noise(120, 160, 2), box(120, 160), out_format="bmp"),  # ~57 KB > 30,000
                }
                out = {k: r for k, r in zip(jobs, await client.run(jobs.values(), timeout=60), strict=True)}
                # a raw client that ignores the frame limit: the node drops the message unread
                raw = ctx.dealer()
                raw.connect("127.0.0.1", node.port)
                # copied, not zero-copy: the node drops this connection while the frame is in flight
                raw.sock.send_multipart([encode(Submit("big", "builtin")), os.urandom(600_000), b"x"], copy=True)
                # queue limit: 8 at once from one client; the leader holds at most 3 (tasks of ~30 ms each)
                flat = png(np.full((190, 190, 3), 120, np.uint8))
                burst = await client.run([Job(flat, box(190, 190)) for i in range(8)], timeout=60)
                for i, r in enumerate(burst):
                    out[f"burst{i}"] = r
                (out["after"],) = await client.run([Job(noise(64, 64), box(64, 64))], timeout=60)
                return out
            finally:
                client.close()
                ctx.close()  # closes the raw socket too

        got = asyncio.run(main())
    assert got["ok"].ok and got["after"].ok
    assert got["frame"].error_code == "input" and "max_frame_bytes" in got["frame"].error
    assert got["pixels"].error_code == "input" and "over the limit of 40,000" in got["pixels"].error
    assert got["result"].error_code == "overloaded" and "max_result_bytes" in got["result"].error
    burst = [got[f"burst{i}"] for i in range(8)]
    refused = [r for r in burst if not r.ok]
    assert refused and all(r.error_code == "overloaded" and "max_queued_per_client" in r.error for r in refused)
    assert sum(r.ok for r in burst) >= 3
    assert "Traceback" not in node.text()
