"""Masked-region PSNR of the built-in model against OpenCV's cv2.inpaint (Telea and NS).

Real photos from scikit-image's wheel, three mask shapes (strokes, boxes, blobs) at
about 10% and 30% of the image. The built-in model runs through lamamesh's own
pipeline and ONNX Runtime (CPU), exactly as a slot runs it. Prints a table and saves
bench/results/quality.json.

    python bench/quality.py
"""

from __future__ import annotations

import json
import platform
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import skimage.data

from mesh.execute import engine, models, pipeline
from mesh.execute.pipeline import HDConfig, HDStrategy, ModelShape

PHOTOS = ["astronaut", "coffee", "chelsea", "rocket", "camera"]
SHAPES = ["strokes", "boxes", "blobs"]
COVERAGE = [0.10, 0.30]
OUT = Path(__file__).parent / "results" / "quality.json"


def load(name: str) -> np.ndarray:
    img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    return np.ascontiguousarray(img[:, :, :3])


def make_mask(h: int, w: int, shape: str, target: float, rng: np.random.Generator) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    while m.mean() < target:
        if shape == "strokes":
            pts = rng.integers(0, [w, h], size=(4, 2)).reshape(-1, 1, 2)
            cv2.polylines(m, [pts], False, 1, thickness=int(rng.integers(h // 60 + 4, h // 25 + 8)))
        elif shape == "boxes":
            bw, bh = int(rng.integers(w // 12, w // 5)), int(rng.integers(h // 12, h // 5))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            cv2.rectangle(m, (x, y), (x + bw, y + bh), 1, -1)
        else:
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            axes = (int(rng.integers(h // 30, h // 10)), int(rng.integers(h // 30, h // 10)))
            cv2.ellipse(m, c, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return m.astype(bool)


def psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    err = ((a[mask].astype(np.float64) - b[mask].astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255.0**2 / max(err, 1e-12)))


def main() -> None:
    spec, path = models.Registry(Path("/nonexistent")).resolve("builtin")
    eng = engine.Engine(spec, path, "cpu")
    shape = ModelShape(spec.size, spec.multiple)
    rng = np.random.default_rng(2026)
    rows: list[dict[str, Any]] = []
    methods = ["builtin", "telea", "ns"]
    print(
        f"{'photo':10s} {'mask':8s} {'cover':>6s} "
        + " ".join(f"{m:>9s}" for m in methods)
        + "   (masked-region PSNR, dB)"
    )
    for name in PHOTOS:
        img = load(name)
        for shape_name in SHAPES:
            for target in COVERAGE:
                mask = make_mask(img.shape[0], img.shape[1], shape_name, target, rng)
                m8 = mask.astype(np.uint8)
                t = time.perf_counter()
                ours = pipeline.inpaint(img, mask, shape, eng.infer, HDConfig(HDStrategy.ORIGINAL))
                ours_ms = (time.perf_counter() - t) * 1000
                bgr = img[:, :, ::-1].copy()
                t = time.perf_counter()
                telea = cv2.inpaint(bgr, m8, 3, cv2.INPAINT_TELEA)[:, :, ::-1]
                telea_ms = (time.perf_counter() - t) * 1000
                t = time.perf_counter()
                ns = cv2.inpaint(bgr, m8, 3, cv2.INPAINT_NS)[:, :, ::-1]
                ns_ms = (time.perf_counter() - t) * 1000
                row: dict[str, Any] = {
                    "photo": name,
                    "size": f"{img.shape[1]}x{img.shape[0]}",
                    "mask": shape_name,
                    "coverage": round(float(mask.mean()), 4),
                    "psnr": {
                        "builtin": psnr(ours, img, mask),
                        "telea": psnr(telea, img, mask),
                        "ns": psnr(ns, img, mask),
                    },
                    "ms": {"builtin": ours_ms, "telea": telea_ms, "ns": ns_ms},
                }
                rows.append(row)
                print(
                    f"{name:10s} {shape_name:8s} {row['coverage'] * 100:5.1f}% "
                    + " ".join(f"{row['psnr'][m]:9.2f}" for m in methods)
                )
    mean = {m: float(np.mean([r["psnr"][m] for r in rows])) for m in methods}
    wins = {m: sum(r["psnr"]["builtin"] > r["psnr"][m] for r in rows) for m in ("telea", "ns")}
    ms = {m: float(np.median([r["ms"][m] for r in rows])) for m in methods}
    print(f"{'mean':26s} " + " ".join(f"{mean[m]:9.2f}" for m in methods))
    print(f"builtin beats Telea on {wins['telea']}/{len(rows)} cases and NS on {wins['ns']}/{len(rows)}")
    print("median ms per image: " + ", ".join(f"{m} {ms[m]:.0f}" for m in methods))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "date": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()} {platform.processor() or ''} {platform.node()}".strip(),
                "cpus": __import__("os").cpu_count(),
                "mean_psnr": mean,
                "builtin_wins": wins,
                "median_ms": ms,
                "cases": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"saved {OUT}")


if __name__ == "__main__":
    main()
