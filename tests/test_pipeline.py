"""Pure pipeline geometry: crop boxes, padding, strategies, paste-back."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.execute import pipeline
from mesh.execute.pipeline import Box, HDConfig, HDStrategy, ModelShape


@given(
    w=st.integers(1, 3000),
    h=st.integers(1, 3000),
    data=st.data(),
    margin=st.integers(0, 300),
)
def test_crop_box_inside_image_and_covers_box(w: int, h: int, data: st.DataObject, margin: int) -> None:
    left = data.draw(st.integers(0, w - 1))
    top = data.draw(st.integers(0, h - 1))
    right = data.draw(st.integers(left + 1, w))
    bottom = data.draw(st.integers(top + 1, h))
    box = Box(left, top, right, bottom)
    c = pipeline.crop_box(box, margin, w, h)
    assert 0 <= c.left < c.right <= w and 0 <= c.top < c.bottom <= h
    assert c.left <= box.left and c.top <= box.top and c.right >= box.right and c.bottom >= box.bottom
    # shifted, not shrunk: the crop is as big as box + margins wherever the image allows
    assert c.width == min(w, box.width + 2 * margin) or c.width >= box.width + 2 * margin - 1
    assert c.height == min(h, box.height + 2 * margin) or c.height >= box.height + 2 * margin - 1


def test_crop_box_near_edge_takes_context_from_the_other_side() -> None:
    c = pipeline.crop_box(Box(0, 0, 10, 10), 128, 1000, 1000)
    assert c == Box(0, 0, 266, 266)


@given(h=st.integers(1, 200), w=st.integers(1, 200), m=st.sampled_from([1, 8, 64]))
def test_pad_to_multiple(h: int, w: int, m: int) -> None:
    a = np.arange(h * w, dtype=np.int32).reshape(h, w)
    p = pipeline.pad_to_multiple(a, m)
    assert p.shape[0] % m == 0 and p.shape[1] % m == 0
    assert p.shape[0] - h < m and p.shape[1] - w < m
    assert (p[:h, :w] == a).all()


def test_mask_boxes_one_per_blob() -> None:
    m = np.zeros((100, 100), bool)
    m[10:20, 10:20] = True
    m[50:60, 70:90] = True
    m[20, 20] = True  # diagonal neighbour joins the first blob (8-connected)
    assert pipeline.mask_boxes(m) == [Box(10, 10, 21, 21), Box(70, 50, 90, 60)]


def _fake_infer(calls: list[tuple[int, int]]) -> pipeline.Infer:
    def infer(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        calls.append(mask.shape)
        out = rgb.copy()
        out[mask] = 7
        return out

    return infer


@settings(max_examples=30, deadline=None)
@given(
    h=st.integers(8, 1200),
    w=st.integers(8, 1200),
    strategy=st.sampled_from(list(HDStrategy)),
    fixed=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_pixels_outside_the_mask_are_untouched(h: int, w: int, strategy: HDStrategy, fixed: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), bool)
    for _ in range(3):
        y, x = rng.integers(0, h), rng.integers(0, w)
        mask[y : y + rng.integers(1, 40), x : x + rng.integers(1, 40)] = True
    calls: list[tuple[int, int]] = []
    shape = ModelShape(size=64) if fixed else ModelShape(multiple=8)
    out = pipeline.inpaint(rgb, mask, shape, _fake_infer(calls), HDConfig(strategy, 16, 300, 256))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert (out[~mask] == rgb[~mask]).all()
    for ch, cw in calls:
        if fixed:
            assert (ch, cw) == (64, 64)
        else:
            assert ch % 8 == 0 and cw % 8 == 0


def test_plan_follows_iopaint_defaults() -> None:
    small = np.zeros((600, 800), bool)
    small[10:20, 10:20] = True
    assert pipeline.plan(small, HDConfig())[0] is HDStrategy.ORIGINAL
    big = np.zeros((600, 1000), bool)
    big[10:20, 10:20] = True
    big[400:420, 700:800] = True
    strategy, crops = pipeline.plan(big, HDConfig())
    assert strategy is HDStrategy.CROP and len(crops) == 2
    assert pipeline.plan(np.zeros((600, 2000), bool), HDConfig(HDStrategy.RESIZE))[0] is HDStrategy.RESIZE
    assert pipeline.plan(np.zeros((600, 1000), bool), HDConfig(HDStrategy.RESIZE))[0] is HDStrategy.ORIGINAL


def test_crop_runs_model_only_on_crops() -> None:
    rgb = np.zeros((1000, 2000, 3), np.uint8)
    mask = np.zeros((1000, 2000), bool)
    mask[100:110, 100:110] = True
    mask[800:850, 1800:1900] = True
    calls: list[tuple[int, int]] = []
    pipeline.inpaint(rgb, mask, ModelShape(multiple=8), _fake_infer(calls), HDConfig())
    assert len(calls) == 2
    assert all(c[0] * c[1] < 400 * 400 for c in calls)


def test_crops_covering_more_than_the_image_run_once_on_a_dynamic_model() -> None:
    rgb = np.zeros((1000, 1000, 3), np.uint8)
    mask = np.zeros((1000, 1000), bool)
    for y, x in ((100, 100), (100, 700), (700, 100), (700, 700)):  # four big blobs: crops overlap
        mask[y : y + 250, x : x + 250] = True
    calls: list[tuple[int, int]] = []
    pipeline.inpaint(rgb, mask, ModelShape(multiple=8), _fake_infer(calls), HDConfig())
    assert len(calls) == 1  # one pass over the whole image
    fixed: list[tuple[int, int]] = []
    pipeline.inpaint(rgb, mask, ModelShape(size=512, multiple=1), _fake_infer(fixed), HDConfig())
    assert len(fixed) == 4  # a fixed-size model still gets one crop per blob (quality, not cost)


def test_strategy_parse() -> None:
    assert HDStrategy.parse("crop") is HDStrategy.CROP
    assert HDStrategy.parse("RESIZE") is HDStrategy.RESIZE
    try:
        HDStrategy.parse("zoom")
    except ValueError as exc:
        assert "zoom" in str(exc)
    else:
        raise AssertionError("expected ValueError")
