"""Render `lamamesh status` headless to docs/img/status.svg: a real 3-node mesh on this machine
working through the bundled samples (python docs/make_screenshot.py)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from mesh.execute.images import pixels
from mesh.execute.models import data_dir
from mesh.surface.client import Client, Job
from mesh.surface.demo import local_mesh, wait_ready
from mesh.surface.tui import StatusApp

OUT = Path(__file__).parent / "img"


async def main(nodes: list) -> None:  # type: ignore[type-arg]
    client, ctx, _ = await wait_ready(nodes)
    feeder = Client(ctx, [("127.0.0.1", nodes[0].port)])
    await feeder.connect()
    src = data_dir() / "samples"
    jobs = [
        Job((src / "images" / p.name).read_bytes(), (src / "masks" / f"{p.stem}.png").read_bytes(), priority="batch",
            pixels=pixels((src / "images" / p.name).read_bytes()))
        for _ in range(6)
        for p in sorted((src / "images").iterdir())
    ]  # fmt: skip
    try:
        app = StatusApp(client.snapshot, refresh=0.3)
        async with app.run_test(size=(150, 36)) as pilot:
            batch = asyncio.create_task(feeder.run(jobs))
            while app.snapshot is None or app.snapshot.done < 12:
                await pilot.pause(0.2)
            await pilot.pause(0.5)
            app.save_screenshot("status.svg", str(OUT))
            print("screenshot taken", file=sys.stderr)
            await pilot.press("q")
        print("app closed", file=sys.stderr)
        await batch
        print("batch done", file=sys.stderr)
    finally:
        feeder.close()
        client.close()
        ctx.close()


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp, local_mesh(3, Path(tmp) / "logs") as procs:
        asyncio.run(main(procs))
    print(f"wrote {OUT / 'status.svg'}", file=sys.stderr)
