"""Decoding real and awkward images; every bad input is one InputError."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mesh.errors import InputError
from mesh.execute import images

from .conftest import photo


def _bytes(im: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_exif_orientation_applied() -> None:
    im = Image.fromarray(photo("coffee"))  # 600x400
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    pic = images.decode_image(_bytes(im, "JPEG", exif=exif))
    assert pic.size == (400, 600)
    assert pic.format == "JPEG"


def test_rgba_keeps_alpha_bit_for_bit() -> None:
    rgba = np.dstack([photo()[:64, :64], np.arange(64 * 64, dtype=np.uint8).reshape(64, 64)])
    pic = images.decode_image(_bytes(Image.fromarray(rgba, "RGBA")))
    mask = np.zeros((64, 64), bool)
    mask[10:20, 10:20] = True
    merged = pic.merged(np.zeros((64, 64, 3), np.uint8), mask)
    back = np.asarray(Image.open(io.BytesIO(images.encode(merged, "PNG"))))
    assert (back[..., 3] == rgba[..., 3]).all()
    assert (back[~mask] == rgba[~mask]).all()
    assert (back[mask][:, :3] == 0).all()


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "1", "LA"])
def test_modes_decode(mode: str) -> None:
    im = Image.fromarray(photo()[:32, :48]).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    pic = images.decode_image(_bytes(im, fmt))
    assert pic.size == (48, 32)
    assert pic.rgb8().shape == (32, 48, 3)


def test_sixteen_bit_grey_round_trip() -> None:
    arr = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 31).astype(np.uint16)
    pic = images.decode_image(_bytes(Image.fromarray(arr)))
    assert pic.mode == "I"
    mask = np.zeros((40, 50), bool)
    mask[5:10, 5:10] = True
    merged = pic.merged(np.full((40, 50, 3), 255, np.uint8), mask)
    back = np.asarray(Image.open(io.BytesIO(images.encode(merged, "PNG")))).astype(np.int64)
    assert (back[~mask] == arr[~mask]).all()
    assert (back[mask] == 65535).all()


def test_bad_images() -> None:
    good = _bytes(Image.fromarray(photo()[:64, :64]))
    with pytest.raises(InputError, match="empty"):
        images.decode_image(b"")
    with pytest.raises(InputError, match="not an image"):
        images.decode_image(b"hello, world" * 10)
    with pytest.raises(InputError, match=r"truncated|damaged"):
        images.decode_image(good[: len(good) // 2])
    with pytest.raises(InputError, match=r"over the limit|too large"):
        images.decode_image(good, max_pixels=1000)


def test_decompression_bomb_header_refused_before_decoding() -> None:
    # a PNG header claiming 30000x30000 pixels: refused from the header alone
    small = bytearray(_bytes(Image.new("L", (1, 1))))
    ihdr = small.index(b"IHDR")
    small[ihdr + 4 : ihdr + 12] = struct.pack(">II", 30000, 30000)
    small[ihdr + 17 : ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(small[ihdr : ihdr + 17])))
    data = bytes(small)
    with pytest.raises(InputError, match=r"30000x30000|too large"):
        images.decode_image(data)


def test_mask_threshold_and_size() -> None:
    m = np.array([[0, 126, 127, 255]], np.uint8)
    got, notes = images.decode_mask(_bytes(Image.fromarray(m)), (4, 1))
    assert got.tolist() == [[False, False, True, True]] and notes == ()
    # another size: resized to the image (nearest), with one line saying so
    got, notes = images.decode_mask(_bytes(Image.fromarray(m)), (8, 2))
    assert got.tolist() == [[False, False, False, False, True, True, True, True]] * 2
    assert notes == ("the mask is 4x1 and the image 8x2: the mask was resized to the image (nearest)",)


def test_mask_with_transparency_is_read_by_its_alpha() -> None:
    """Red strokes on a transparent layer (as editors export them) fill where painted; before, the
    red read as dark grey and nothing was filled."""
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3] = (255, 0, 0, 255)  # red, opaque
    rgba[0, 0] = (255, 255, 255, 0)  # white but transparent: not painted
    got, _ = images.decode_mask(_bytes(Image.fromarray(rgba, "RGBA")), (4, 4))
    want = np.zeros((4, 4), bool)
    want[1:3, 1:3] = True
    assert (got == want).all()
    # an RGBA mask that is opaque everywhere is read by its grey, as before
    rgba[..., :] = (0, 0, 0, 255)
    rgba[1:3, 1:3] = (255, 255, 255, 255)
    got, _ = images.decode_mask(_bytes(Image.fromarray(rgba, "RGBA")), (4, 4))
    assert (got == want).all()
    # grey + alpha (LA) with a transparent background: alpha decides
    la = np.zeros((4, 4, 2), np.uint8)
    la[2, 2] = (0, 200)  # black stroke, opaque enough
    got, _ = images.decode_mask(_bytes(Image.fromarray(la, "LA")), (4, 4))
    assert got.sum() == 1 and got[2, 2]


def test_coverage_notes() -> None:
    assert images.coverage_note(np.zeros((10, 10), bool)).startswith("the mask is empty")
    m = np.ones((10, 10), bool)
    m[0, :3] = False
    assert "covers 97.0% of the image" in images.coverage_note(m) and "invert" in images.coverage_note(m)
    m[:6] = False
    assert images.coverage_note(m) == ""


def test_output_format() -> None:
    pic = images.decode_image(_bytes(Image.fromarray(photo()[:8, :8]), "JPEG"))
    assert images.output_format("", pic) == "JPEG"
    assert images.output_format("png", pic) == "PNG"
    assert images.output_format(".webp", pic) == "WEBP"
    with pytest.raises(InputError, match="unknown output format"):
        images.output_format("gif2", pic)


def test_outputs_keep_the_photos_exif_icc_and_dpi_and_a_jpegs_own_quality() -> None:
    """Issue 15: EXIF (date, camera) and the ICC profile were dropped on every output, and a JPEG
    was always re-encoded at quality 95 (68 KB -> 107 KB)."""
    import io

    from PIL import Image, ImageCms

    from mesh.execute import images

    rng = np.random.default_rng(2)
    arr = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    src = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0110] = "Test Camera"  # Model
    exif[0x0132] = "2026:12:02 10:00:00"  # DateTime
    exif[0x0112] = 6  # Orientation: rotated; the output is upright and says 1
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    buf = io.BytesIO()
    src.save(buf, format="JPEG", quality=70, exif=exif.tobytes(), icc_profile=icc, dpi=(300, 300))
    data = buf.getvalue()
    pic = images.decode_image(data)
    assert pic.size == (64, 96) and pic.meta["quality"] == 70
    for fmt in ("JPEG", "PNG", "WEBP"):
        out = Image.open(io.BytesIO(images.encode(pic, fmt)))
        got = out.getexif()
        assert got.get(0x0110) == "Test Camera" and got.get(0x0132) == "2026:12:02 10:00:00", fmt
        assert got.get(0x0112, 1) == 1, fmt  # orientation applied to the pixels, not left to apply twice
        assert out.info.get("icc_profile") == icc, fmt
        if fmt in ("JPEG", "PNG"):
            assert tuple(round(v) for v in out.info["dpi"]) == (300, 300), fmt
    again = images.encode(pic, "JPEG")
    assert images.jpeg_quality(Image.open(io.BytesIO(again))) == 70
    assert len(again) < 1.3 * len(data)  # not re-encoded at 95
    assert images.jpeg_quality(Image.open(io.BytesIO(images.encode(pic, "JPEG", quality=90)))) == 90
