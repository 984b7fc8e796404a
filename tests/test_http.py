"""`join --http`: a real HTTP client (aiohttp) against real node processes. IOPaint's request
body goes through the mesh; bad bodies get a JSON 4xx and the node goes on serving."""

from __future__ import annotations

import asyncio
import base64
import io
import time
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image

from mesh import const

from .cluster import cluster, free_port_block, png, wait_mesh


def jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_iopaint_api_health_status_metrics_through_a_two_node_mesh(tmp_path: Path) -> None:
    http_port = free_port_block(1)
    with cluster(tmp_path) as c:
        c.start(1)
        c.start(1, args=["--http", str(http_port), "--slots", "1"])
        wait_mesh(c, 2)
        rng = np.random.default_rng(3)
        image = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
        mask = np.zeros((96, 128), np.uint8)
        mask[30:60, 40:90] = 255
        body = {
            "image": "data:image/jpeg;base64," + base64.b64encode(jpeg(image)).decode(),
            "mask": base64.b64encode(png(mask)).decode(),
            "hd_strategy": "Original",
            "hd_strategy_crop_margin": 64,
            "ldm_steps": 20,  # an IOPaint field lamamesh ignores
            "sd_seed": 42,
        }
        base = f"http://127.0.0.1:{http_port}"

        async def main() -> None:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as s:
                async with asyncio.timeout(60):
                    while True:  # 503 "starting" until its slots are up
                        async with s.get(f"{base}/health") as r:
                            h = await r.json()
                            if r.status == 200:
                                break
                            assert r.status == 503 and h["status"] == "starting"
                        await asyncio.sleep(0.1)
                assert h["status"] == "ok" and h["nodes"] == 2 and h["leader"]

                async def good() -> str:
                    async with s.post(f"{base}/api/v1/inpaint", json=body) as r:
                        assert r.status == 200, await r.text()
                        assert r.headers["Content-Type"] == "image/jpeg"
                        out = Image.open(io.BytesIO(await r.read()))
                        assert out.format == "JPEG" and out.size == (128, 96)
                        return r.headers["X-Lamamesh-Node"]

                nodes = set(await asyncio.gather(*(good() for _ in range(8))))

                async def bad(payload: object, status: int, words: str, raw: bytes | None = None) -> None:
                    kw = {"data": raw} if raw is not None else {"json": payload}
                    async with s.post(f"{base}/api/v1/inpaint", **kw) as r:  # type: ignore[arg-type]
                        got = await r.json()
                        assert r.status == status, got
                        assert words in got["error"] and got["detail"] == got["error"]

                other_size = base64.b64encode(png(np.zeros((10, 10), np.uint8))).decode()
                await bad(None, 400, "not JSON", raw=b"{nope")
                await bad([1, 2], 400, "JSON object")
                await bad({**body, "image": "%%%not base64"}, 400, "not valid base64")
                await bad({**body, "mask": None}, 400, "'mask' must be a base64 string")
                async with s.post(f"{base}/api/v1/inpaint", json={**body, "mask": other_size}) as r:
                    assert r.status == 200  # another size: resized, and said so
                    assert r.headers["X-Lamamesh-Warning"] == (
                        "the mask is 10x10 and the image 128x96: the mask was resized to the image (nearest) | "
                        "the mask is empty (nothing painted): the image comes back unchanged"
                    )
                await bad({**body, "image": base64.b64encode(b"hello").decode()}, 400, "image")
                await bad({**body, "hd_strategy": "Zoom"}, 400, "hd_strategy")
                await bad({**body, "hd_strategy_resize_limit": -5}, 400, "whole number")
                # finding 8 of the hostile-peer probe: these were 500s with tracebacks, or a 300 s wait
                nan = b'{"image": "x", "mask": "y", "hd_strategy_crop_margin": NaN}'
                await bad(None, 400, "NaN", raw=nan)
                await bad(None, 400, "nested too deep", raw=b"[" * 100_000 + b"]" * 100_000)
                await bad({**body, "model": "m" * 70_000}, 400, "at most 256 characters")
                await bad({**body, "model": "nope"}, 400, "unknown model")
                await bad(None, 413, "over the limit", raw=b" " * (const.HTTP_MAX_BODY + 1))
                assert await good()  # the node goes on

                async with s.get(f"{base}/api/v1/status") as r:
                    st = await r.json()
                    assert r.status == 200 and st["answered_by"] == st["leader"] and len(st["nodes"]) == 2
                    assert st["outcomes"]["ok"] >= 9
                    # whichever node did the work answered through this one: each is a mesh member
                    assert nodes and nodes <= {n["id"] for n in st["nodes"]}, (nodes, st["nodes"])
                async with s.get(f"{base}/metrics") as r:
                    text = await r.text()
                    assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
                for line in (
                    'lamamesh_nodes{state="alive"} 2.0',
                    'lamamesh_http_inpaint_seconds_count{code="200"} 10.0',
                    'lamamesh_http_inpaint_seconds_count{code="400"} 11.0',
                    "lamamesh_leader_term ",
                    "lamamesh_queue_depth ",
                    'lamamesh_task_seconds_bucket{le="+Inf",model="builtin"}',
                ):
                    assert line in text, line
                async with s.get(f"{base}/nope") as r:
                    assert r.status == 404 and "error" in await r.json()

        asyncio.run(main())
        assert "Traceback" not in c.nodes[1].text()  # every bad body: one line in the log, no traceback


def test_a_big_base64_field_is_decoded_in_steps_and_still_strictly() -> None:
    """A 90 MiB body's image is decoded 4 Mi characters at a time (the GIL is free between steps, so
    the node's loop keeps its heartbeats), with the same answers as one strict decode."""
    import binascii
    import os

    import pytest

    from mesh.surface.http import _b64decode

    raw = os.urandom(9 * 2**20 + 5)
    text = base64.b64encode(raw).decode()
    assert _b64decode(text) == raw
    for bad in (text[:-1], text[:1000] + "%" + text[1001:], text[:8] + "==" + text[10:]):
        with pytest.raises((binascii.Error, ValueError)):
            _b64decode(bad)


class _NoNode:
    """The least of a node an ``HttpApi`` needs before a request reaches the mesh."""

    def observe_tasks(self, observer: object) -> None:
        pass


def test_half_sent_heads_and_stalled_bodies_are_cut_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """Finding 3's second half: 1,100 half-sent requests held their sockets forever (no header
    timeout), and a body that stops mid-way held its handler forever. Now a head must come whole
    within HTTP_HEADER_TIMEOUT and a body within HTTP_BODY_GRACE + 1 s per MiB it declares."""
    from mesh.surface.http import HttpApi

    monkeypatch.setattr(const, "HTTP_HEADER_TIMEOUT", 1.0)
    monkeypatch.setattr(const, "HTTP_BODY_GRACE", 1.0)

    api = HttpApi(_NoNode(), "127.0.0.1", 0)  # type: ignore[arg-type]  # built off the loop, as a node does

    async def main() -> None:
        port = await api.start()
        try:
            # a head that never ends: the server closes the connection
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b"POST /api/v1/inpaint HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            t0 = time.monotonic()
            async with asyncio.timeout(10):
                assert await r.read() == b""
            assert time.monotonic() - t0 < 5
            w.close()
            # a body that stops: 408 with one JSON error, once its time (1 s + 1 s/MiB declared) is up
            r, w = await asyncio.open_connection("127.0.0.1", port)
            w.write(b'POST /api/v1/inpaint HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n{"image": ')
            t0 = time.monotonic()
            async with asyncio.timeout(10):
                head = await r.readuntil(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408"), head
            assert 1.5 < time.monotonic() - t0 < 6
            w.close()
            # and the server goes on
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/samples") as resp:
                assert resp.status == 200 and "astronaut.jpg" in await resp.json()
        finally:
            await api.close()

    asyncio.run(main())
