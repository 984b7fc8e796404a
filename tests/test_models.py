"""Model registry, the built-in model and a LaMa-shaped stand-in through the pipeline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from mesh.errors import ModelError
from mesh.execute import engine, models, pipeline
from mesh.execute.pipeline import HDConfig, ModelShape

from .conftest import box_mask, photo
from .standin import build


def test_manifest_ships_builtin_with_its_checksum() -> None:
    reg = models.Registry(Path("/nonexistent-home"))
    spec, path = reg.resolve("builtin")
    assert path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == spec.sha256
    lama = next(s for s in models.manifest() if s.name == "lama")
    assert lama.size == 512 and lama.output_range == 255 and lama.bytes == 208044816
    assert lama.sha256 == "1faef5301d78db7dda502fe59966957ec4b79dd64e16f03ed96913c7a4eb68d6"


def test_unknown_and_absent_models_say_what_to_do(tmp_path: Path) -> None:
    reg = models.Registry(tmp_path)
    with pytest.raises(ModelError, match="unknown model 'nope'; known models: builtin"):
        reg.resolve("nope")
    with pytest.raises(ModelError, match="models fetch lama"):
        reg.resolve("lama")


def test_builtin_fills_plausibly() -> None:
    spec, path = models.Registry(Path("/x")).resolve("builtin")
    eng = engine.Engine(spec, path, "cpu", 1)
    assert eng.choice.provider == "cpu" and "CPU" in eng.choice.reason
    img = photo("astronaut")
    mask = box_mask(512, 512, (200, 180, 330, 260)) > 0
    out = pipeline.inpaint(img, mask, ModelShape(0, spec.multiple), eng.infer, HDConfig())
    assert (out[~mask] == img[~mask]).all()
    err_fill = np.abs(out[mask].astype(float) - img[mask]).mean()
    err_mean = np.abs(img[~mask].mean(axis=0) - img[mask].astype(float)).mean()
    assert err_fill < err_mean * 0.8  # clearly better than a flat fill with the mean colour
    # on a smooth gradient the harmonic fill is nearly exact
    yy, xx = np.mgrid[0:256, 0:256]
    grad = np.dstack([xx, yy, (xx + yy) // 2]).astype(np.uint8)
    hole = box_mask(256, 256, (60, 70, 180, 150)) > 0
    filled = pipeline.inpaint(grad, hole, ModelShape(0, spec.multiple), eng.infer, HDConfig())
    assert np.abs(filled[hole].astype(int) - grad[hole]).max() <= 4


def test_add_standin_lama_and_run_it_through_crop(tmp_path: Path) -> None:
    src = build(tmp_path / "my_lama.onnx")
    reg = models.Registry(tmp_path / "home")
    spec = reg.add(src, shapes=engine.input_shapes(src))
    assert (spec.name, spec.size, spec.output_range, spec.channels) == ("my_lama", 512, 255.0, "rgb")
    assert json.loads((tmp_path / "home" / "models.json").read_text())["models"][0]["name"] == "my_lama"
    spec2, path = reg.resolve("my_lama")
    assert spec2 == spec and path.read_bytes() == src.read_bytes()

    eng = engine.Engine(spec, path, "cpu", 1)
    img = np.zeros((900, 1600, 3), np.uint8)
    img[:, :, 0] = 200  # a flat red image: the stand-in fills with the mean of known pixels
    img[:, :, 2] = 40
    mask = np.zeros((900, 1600), bool)
    mask[100:140, 100:160] = True
    mask[700:760, 1400:1500] = True
    calls: list[tuple[int, ...]] = []

    def infer(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
        calls.append(rgb.shape)
        return eng.infer(rgb, m)

    out = pipeline.inpaint(img, mask, ModelShape(spec.size, spec.multiple), infer, HDConfig())
    assert calls == [(512, 512, 3), (512, 512, 3)]  # two blobs -> two crops, each resized to 512
    assert (out[~mask] == img[~mask]).all()
    assert np.abs(out[mask].astype(int) - [200, 0, 40]).max() <= 2


def test_bgr_model_gets_bgr(tmp_path: Path) -> None:
    src = build(tmp_path / "bgr.onnx", size=64)
    spec = models.Registry(tmp_path / "home").add(src, name="bgr", channels="bgr", output_range=255)
    eng = engine.Engine(spec, tmp_path / "home" / "models" / "bgr.onnx", "cpu", 1)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 250
    mask = np.zeros((64, 64), bool)
    mask[:8, :8] = True
    out = eng.infer(rgb, mask)
    assert out[0, 0].tolist() == [250, 0, 0]  # channel order restored on the way out


def test_add_refuses_bad_files(tmp_path: Path) -> None:
    reg = models.Registry(tmp_path / "home")
    with pytest.raises(ModelError, match="does not exist"):
        reg.add(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not onnx")
    with pytest.raises(ModelError, match="not an ONNX model"):
        engine.input_shapes(junk)
    good = build(tmp_path / "x.onnx", size=64)
    with pytest.raises(ModelError, match="not allowed"):
        reg.add(good, name="Bad Name!")
    with pytest.raises(ModelError, match="cuda"):
        engine.Engine(models.manifest()[0], models.data_dir() / "builtin_fill.onnx", "cuda", 1)
