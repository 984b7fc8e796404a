"""The geometry around a model, as IOPaint users know it: pure numpy, no I/O.

``inpaint(rgb, mask, model, infer, hd)`` picks the HD strategy (ORIGINAL, RESIZE,
CROP), cuts one crop per mask blob, fits each crop to the model (pad to its multiple,
or resize to its fixed size), calls ``infer`` and pastes back only the masked pixels:
every pixel outside the mask is the input's, bit for bit.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from mesh import const


class HDStrategy(enum.StrEnum):
    ORIGINAL = "Original"
    RESIZE = "Resize"
    CROP = "Crop"

    @classmethod
    def parse(cls, value: str) -> HDStrategy:
        for s in cls:
            if s.value.lower() == value.strip().lower():
                return s
        raise ValueError(f"unknown hd strategy {value!r}; use Original, Resize or Crop")


@dataclass(frozen=True)
class HDConfig:
    strategy: HDStrategy = HDStrategy.CROP
    crop_margin: int = const.HD_CROP_MARGIN
    crop_trigger: int = const.HD_CROP_TRIGGER
    resize_limit: int = const.HD_RESIZE_LIMIT


@dataclass(frozen=True)
class ModelShape:
    """What a model accepts: ``size`` > 0 is a fixed square input; else H, W padded to ``multiple``."""

    size: int = 0
    multiple: int = 8


@dataclass(frozen=True, order=True)
class Box:
    left: int
    top: int
    right: int  # exclusive
    bottom: int  # exclusive

    @property
    def width(self) -> int:
        return self.right - self.left

    @property
    def height(self) -> int:
        return self.bottom - self.top


# (image HxWx3 uint8, mask HxW bool) -> filled HxWx3 uint8; shapes already fitted to the model
Infer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def mask_boxes(mask: np.ndarray) -> list[Box]:
    """One bounding box per 8-connected blob of the mask, in scan order."""
    from scipy import ndimage  # imported here: 0.4 s at import time, and only CROP needs it

    labels, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    boxes = []
    for sl in ndimage.find_objects(labels)[:n]:
        if sl is not None:
            boxes.append(Box(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop))
    return boxes


def crop_box(box: Box, margin: int, width: int, height: int) -> Box:
    """``box`` grown by ``margin`` on each side, shifted (not shrunk) to stay inside the image.

    Follows IOPaint's ``_crop_box``: a crop that runs over one edge takes the lost
    context from the opposite side, then is clipped to the image.
    """
    cx, cy = (box.left + box.right) // 2, (box.top + box.bottom) // 2
    w, h = box.width + 2 * margin, box.height + 2 * margin
    left, right = cx - w // 2, cx - w // 2 + w
    top, bottom = cy - h // 2, cy - h // 2 + h
    if left < 0:
        right, left = right - left, 0
    if right > width:
        left, right = left - (right - width), width
    if top < 0:
        bottom, top = bottom - top, 0
    if bottom > height:
        top, bottom = top - (bottom - height), height
    return Box(max(left, 0), max(top, 0), min(right, width), min(bottom, height))


def resize_rgb(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BICUBIC))


def resize_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    im = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    return np.asarray(im) >= const.MASK_THRESHOLD


def pad_to_multiple(arr: np.ndarray, multiple: int) -> np.ndarray:
    """Pad bottom and right (edge mode) so both sides are multiples of ``multiple``."""
    h, w = arr.shape[:2]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return arr
    pad = [(0, ph), (0, pw)] + [(0, 0)] * (arr.ndim - 2)
    return np.pad(arr, pad, mode="edge")


def fit_and_run(rgb: np.ndarray, mask: np.ndarray, shape: ModelShape, infer: Infer) -> np.ndarray:
    """Run ``infer`` on one region, adapting it to the model's input shape."""
    h, w = mask.shape
    if shape.size > 0:
        out = infer(resize_rgb(rgb, shape.size, shape.size), resize_mask(mask, shape.size, shape.size))
        return resize_rgb(out, w, h)
    padded_mask = pad_to_multiple(mask, shape.multiple)
    out = infer(pad_to_multiple(rgb, shape.multiple), padded_mask)
    return out[:h, :w]


def plan(mask: np.ndarray, hd: HDConfig) -> tuple[HDStrategy, list[Box]]:
    """Which strategy applies to this image, and the crops it will run (CROP only)."""
    h, w = mask.shape
    longer = max(h, w)
    if hd.strategy is HDStrategy.CROP and longer > hd.crop_trigger:
        return HDStrategy.CROP, [crop_box(b, hd.crop_margin, w, h) for b in mask_boxes(mask)]
    if hd.strategy is HDStrategy.RESIZE and longer > hd.resize_limit:
        return HDStrategy.RESIZE, []
    return HDStrategy.ORIGINAL, []


def inpaint(
    rgb: np.ndarray, mask: np.ndarray, shape: ModelShape, infer: Infer, hd: HDConfig = HDConfig()
) -> np.ndarray:
    """Fill ``rgb`` (HxWx3 uint8) where ``mask`` (HxW bool) is True; the rest is returned as is."""
    result = rgb.copy()
    if not mask.any():
        return result
    strategy, crops = plan(mask, hd)
    h, w = mask.shape
    if strategy is HDStrategy.CROP and not shape.size and sum(c.width * c.height for c in crops) >= h * w:
        # a model that takes any size gains nothing from crops that cover more than the image
        # (overlapping blobs of a large mask): one pass over the whole image is cheaper
        strategy = HDStrategy.ORIGINAL
    if strategy is HDStrategy.CROP:
        for c in crops:
            region_mask = mask[c.top : c.bottom, c.left : c.right]
            filled = fit_and_run(rgb[c.top : c.bottom, c.left : c.right], region_mask, shape, infer)
            view = result[c.top : c.bottom, c.left : c.right]
            view[region_mask] = filled[region_mask]
        return result
    if strategy is HDStrategy.RESIZE:
        scale = hd.resize_limit / max(h, w)
        sw, sh = max(1, round(w * scale)), max(1, round(h * scale))
        small = fit_and_run(resize_rgb(rgb, sw, sh), resize_mask(mask, sw, sh), shape, infer)
        filled = resize_rgb(small, w, h)
    else:
        filled = fit_and_run(rgb, mask, shape, infer)
    result[mask] = filled[mask]
    return result
