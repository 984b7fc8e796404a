"""Bad images through every surface (the Python client, the CLI, HTTP) of one live node: each case
gets one clear answer, and the node keeps working afterwards."""

from __future__ import annotations

import asyncio
import base64
import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import aiohttp
import numpy as np
from PIL import Image

from mesh.surface.client import Client, Job, JobResult
from mesh.wire.transport import Context

from .cluster import cluster, free_port_block, wait_mesh


def enc(im: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def bomb() -> bytes:
    """A PNG whose header claims 30000x30000 pixels."""
    small = bytearray(enc(Image.new("L", (1, 1))))
    ihdr = small.index(b"IHDR")
    small[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30000, 30000)
    small[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(small[ihdr : ihdr + 17])))
    return bytes(small)


def box(size: tuple[int, int] = (64, 48), fill: int | None = None) -> bytes:
    w, h = size
    m = np.zeros((h, w), np.uint8) if fill is None else np.full((h, w), fill, np.uint8)
    if fill is None:
        m[h // 4 : h // 2, w // 4 : w // 2] = 255
    return enc(Image.fromarray(m))


CLI = [sys.executable, "-m", "mesh"]
rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
GOOD = enc(Image.fromarray(rgb))
# name -> (image, mask, None for a result or the words of the input error)
CASES: dict[str, tuple[bytes, bytes, str | None]] = {
    "truncated": (GOOD[: len(GOOD) // 2], box(), "truncated"),
    "zero-byte": (b"", box(), "empty"),
    "not an image": (b"GIF? no: just text, " * 20, box(), "not an image"),
    "30000x30000 declared": (bomb(), box(), "limit"),
    "mask of another size": (GOOD, box((10, 10)), None),  # resized to the image, with a warning
    "mask all one": (GOOD, box(fill=255), "whole image"),
    "1x1": (enc(Image.new("RGB", (1, 1), (10, 20, 30))), enc(Image.new("L", (1, 1), 0)), None),
    "CMYK": (enc(Image.fromarray(rgb).convert("CMYK"), "JPEG"), box(), None),
    "palette": (enc(Image.fromarray(rgb).convert("P")), box(), None),
    "16-bit": (enc(Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257)), box(), None),
    "mask all zero": (GOOD, box(fill=0), None),
    "good": (GOOD, box(), None),
}


def check(name: str, ok: bool, message: str) -> None:
    want = CASES[name][2]
    if want is None:
        assert ok, f"{name}: {message}"
    else:
        assert not ok and want in message and "\n" not in message.strip(), f"{name}: {message!r}"


def test_bad_images_through_client_cli_and_http(tmp_path: Path) -> None:
    http = free_port_block(1)
    with cluster(tmp_path, extra=["--slots", "1", "--device", "cpu"]) as c:
        (node,) = c.start(1, args=["--http", str(http)])
        wait_mesh(c, 1)

        async def through_client_and_http() -> None:
            ctx = Context()
            client = Client(ctx, [("127.0.0.1", node.port)])
            try:
                await client.connect()
                jobs = {n: Job(i, m, label=n) for n, (i, m, _) in CASES.items()}
                res: list[JobResult] = await client.run(jobs.values(), timeout=60)
                for r in res:
                    check(r.job.label, r.ok, r.error)
                    if not r.ok:
                        assert r.error_code == "input", r
            finally:
                client.close()
                ctx.close()
            async with aiohttp.ClientSession() as s:
                for n, (i, m, _) in CASES.items():
                    body = {"image": base64.b64encode(i).decode(), "mask": base64.b64encode(m).decode()}
                    async with s.post(f"http://127.0.0.1:{http}/api/v1/inpaint", json=body) as r:
                        if r.status == 200:
                            check(n, True, "")
                            Image.open(io.BytesIO(await r.read())).load()
                        else:
                            got = await r.json()
                            assert r.status == 400, (n, r.status, got)
                            check(n, False, got["error"])

        asyncio.run(through_client_and_http())
        for n, (i, m, _) in CASES.items():
            ip, mp = tmp_path / f"{n}.img", tmp_path / f"{n}.mask.png"
            ip.write_bytes(i)
            mp.write_bytes(m)
            out = tmp_path / f"{n}.out.png"
            p = subprocess.run(
                [*CLI, "submit", str(ip), str(mp), "-o", str(out), "--peer", f"127.0.0.1:{node.port}", "--no-local"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            check(n, p.returncode == 0, p.stderr)
            assert p.returncode in (0, 2), (n, p.returncode, p.stderr)
        assert node.alive and "Traceback" not in node.text()
