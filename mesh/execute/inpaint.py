"""One task from bytes to bytes: decode, plan, run the model, paste back, encode.

Runs inside a slot process (``slots.py``), never on a node's event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mesh.errors import InputError
from mesh.execute import images, pipeline
from mesh.execute.pipeline import HDConfig, HDStrategy, ModelShape
from mesh.wire.protocol import TaskSpec


@dataclass(frozen=True)
class Filled:
    data: bytes
    out_format: str
    model_ms: float  # time spent in the model itself
    total_ms: float  # decode + model + encode
    notes: tuple[str, ...] = ()  # lines for the user: mask resized, empty, covering most of the image


def hd_config(spec: TaskSpec) -> HDConfig:
    try:
        strategy = HDStrategy.parse(spec.hd_strategy)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if spec.crop_margin < 0 or spec.crop_trigger < 1 or spec.resize_limit < 8:
        raise InputError("hd strategy numbers must be positive (crop margin >= 0, trigger >= 1, resize limit >= 8)")
    return HDConfig(strategy, spec.crop_margin, spec.crop_trigger, spec.resize_limit)


def run(
    spec: TaskSpec,
    image: bytes,
    mask: bytes,
    shape: ModelShape,
    infer: Callable[[np.ndarray, np.ndarray], np.ndarray],
    max_pixels: int,
) -> Filled:
    t0 = time.perf_counter()
    hd = hd_config(spec)
    picture = images.decode_image(image, max_pixels)
    fmt = images.output_format(spec.out_format, picture)
    holes, notes = images.decode_mask(mask, picture.size, max_pixels)
    if holes.all():
        raise InputError("the mask covers the whole image: there are no known pixels to fill from")
    warn = images.coverage_note(holes)
    notes = (*notes, warn) if warn else notes
    if not holes.any():
        same = fmt == picture.format and not spec.quality
        data = bytes(image) if same else images.encode(picture, fmt, spec.quality)
        return Filled(data, fmt, 0.0, (time.perf_counter() - t0) * 1000, notes)
    model_ms = 0.0

    def timed(rgb: np.ndarray, m: np.ndarray) -> np.ndarray:
        nonlocal model_ms
        t = time.perf_counter()
        out = infer(rgb, m)
        model_ms += (time.perf_counter() - t) * 1000
        return out

    filled = pipeline.inpaint(picture.rgb8(), holes, shape, timed, hd)
    data = images.encode(picture.merged(filled, holes), fmt, spec.quality)
    return Filled(data, fmt, model_ms, (time.perf_counter() - t0) * 1000, notes)
