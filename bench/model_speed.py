"""Model speed on this machine's CPU (and CUDA where a usable GPU is at hand): the built-in model at
512^2, 1024^2 and 2048^2 with 10% and 40% masks, one slot (latency) and --slots 2 (throughput); and a
stand-in with LaMa's contract (fixed 512x512, tests/standin.py: a mean fill, so it measures the CROP
pipeline around the model, not LaMa's own compute) through the CROP strategy.

    python bench/model_speed.py [--device cpu|cuda] [--repeat 4]
"""

from __future__ import annotations

import argparse
import io
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np
from _common import ROOT, Job, cluster, run_jobs, save, tmpdir, wait_mesh
from PIL import Image

from tests.standin import build


def photo(side: int, seed: int) -> bytes:
    """A photo-like image: smooth gradients plus texture, JPEG like most user photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side] / side
    base = np.stack([np.sin(6 * x + seed), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 80 + 128
    img = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=92)
    return buf.getvalue()


def mask(side: int, frac: float, seed: int) -> bytes:
    """Several blobs covering about ``frac`` of the image (each becomes its own CROP window)."""
    rng = np.random.default_rng(seed)
    m = np.zeros((side, side), np.uint8)
    blobs = 4
    r = int(side * np.sqrt(frac / blobs / np.pi))
    yy, xx = np.mgrid[0:side, 0:side]
    for _ in range(blobs):
        cy, cx = rng.integers(r, side - r, 2)
        m[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = 255
    buf = io.BytesIO()
    Image.fromarray(m).save(buf, format="PNG")
    return buf.getvalue()


def measure(port: int, model: str, side: int, frac: float, repeat: int, window: int, strategy: str) -> dict[str, Any]:
    jobs = [
        Job(photo(side, k), mask(side, frac, k), model=model, hd_strategy=strategy, pixels=side * side, label=str(k))
        for k in range(repeat)
    ]
    run_jobs(port, jobs[:1], window=1)  # warm: the slot loads the model on its first task
    res, secs, _ = run_jobs(port, jobs, window=window)
    bad = [r.error for r in res if not r.ok]
    if bad:
        raise SystemExit(f"{model} {side}: {bad[0]}")
    return {
        "model": model,
        "side": side,
        "mask": frac,
        "strategy": strategy,
        "ms_in_slot_median": round(statistics.median(r.slot_ms for r in res), 1),
        "ms_end_to_end_median": round(statistics.median(r.latency_ms for r in res), 1),
        "images_per_s": round(len(res) / secs, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    root = tmpdir()
    standin = build(root / "standin_lama.onnx")
    home = root / "home"
    env = {"LAMAMESH_HOME": str(home)}
    add = ["models", "add", str(standin), "--name", "standin-lama", "--home", str(home)]
    subprocess.run(
        [sys.executable, "-m", "mesh", *add],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    rows = []
    for slots in (1, 2):
        with cluster(root / f"s{slots}", extra=["--slots", str(slots), "--device", args.device], env=env) as c:
            c.start(1)
            wait_mesh(c, 1)
            port = c.nodes[0].port
            window = 1 if slots == 1 else 2 * slots
            for side in (512, 1024, 2048):
                for frac in (0.1, 0.4):
                    for strategy in ("Crop", "Original") if side > 800 else ("Crop",):  # Crop: the default
                        row = {"slots": slots, **measure(port, "builtin", side, frac, args.repeat, window, strategy)}
                        print(row, flush=True)
                        rows.append(row)
            for side in (1024, 2048):
                row = {"slots": slots, **measure(port, "standin-lama", side, 0.1, args.repeat, window, "Crop")}
                print(row, flush=True)
                rows.append(row)
            provider = c.nodes[0].text()
    used = "cuda" if "execution: CUDA" in provider else "cpu"
    save(f"model_speed_{used}", {"device_asked": args.device, "provider": used, "rows": rows, "at": time.time()})


if __name__ == "__main__":
    main()
