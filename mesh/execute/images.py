"""Image and mask decoding/encoding with Pillow (runs in slot processes, never on the loop).

A ``Picture`` keeps the decoded pixels in their own mode (RGB, RGBA, L, LA or 16-bit
grey), so the pixels outside the mask go back bit for bit; the model only ever sees an
8-bit RGB view of it.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field, replace

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mesh import const
from mesh.errors import InputError
from mesh.execute.header import OUTPUT_FORMATS

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I")


@dataclass(frozen=True, eq=False)
class Picture:
    pixels: np.ndarray  # HxW (L, I) or HxWxC (RGB, RGBA, LA) as decoded, orientation applied
    mode: str  # Pillow mode of ``pixels``: RGB, RGBA, L, LA or I (16-bit grey held as int32)
    format: str  # the file format it came in (PNG, JPEG, WEBP ...)
    meta: dict[str, object] = field(default_factory=dict)  # what the output keeps: exif, icc_profile, dpi, quality

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])

    def rgb8(self) -> np.ndarray:
        """An HxWx3 uint8 RGB view for the model."""
        p = self.pixels
        if self.mode == "I":
            grey = np.clip(np.round(p / 257.0), 0, 255).astype(np.uint8)
            return np.repeat(grey[:, :, None], 3, axis=2)
        if self.mode == "L":
            return np.repeat(p[:, :, None], 3, axis=2)
        if self.mode == "LA":
            return np.repeat(p[:, :, :1], 3, axis=2)
        return np.ascontiguousarray(p[:, :, :3])

    def merged(self, filled_rgb8: np.ndarray, mask: np.ndarray) -> Picture:
        """A copy whose masked pixels come from ``filled_rgb8``; all others are untouched."""
        out = self.pixels.copy()
        if self.mode in ("RGB", "RGBA"):
            out[..., :3][mask] = filled_rgb8[mask]
        else:
            f = filled_rgb8[mask].astype(np.float32)
            luma = f[:, 0] * 0.299 + f[:, 1] * 0.587 + f[:, 2] * 0.114
            if self.mode == "I":
                out[mask] = np.clip(np.round(luma * 257.0), 0, 65535).astype(out.dtype)
            elif self.mode == "L":
                out[mask] = np.clip(np.round(luma), 0, 255).astype(np.uint8)
            else:  # LA
                out[..., 0][mask] = np.clip(np.round(luma), 0, 255).astype(np.uint8)
        return replace(self, pixels=out)


def _open(data: bytes, what: str, max_pixels: int) -> tuple[Image.Image, str]:
    im: Image.Image
    if not data:
        raise InputError(f"{what} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise InputError(f"{what} is too large to decode safely (limit {max_pixels:,} pixels)") from None
    except UnidentifiedImageError:
        raise InputError(f"{what} is not an image Pillow can read (PNG, JPEG, WebP, TIFF, BMP ...)") from None
    except Exception as exc:  # Pillow raises many types on garbage
        raise InputError(f"{what} could not be read: {exc}") from None
    w, h = im.size
    if w * h > max_pixels:
        raise InputError(f"{what} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
    if w < 1 or h < 1:
        raise InputError(f"{what} has no pixels ({w}x{h})")
    fmt = (im.format or "PNG").upper()
    quality = jpeg_quality(im) if fmt == "JPEG" else 0
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im.load()
            im = ImageOps.exif_transpose(im)  # the pixels upright, the orientation tag reset to 1
    except Exception as exc:
        raise InputError(f"{what} is damaged or truncated: {exc}") from None
    if quality:
        im.info["lamamesh_quality"] = quality
    return im, fmt


# libjpeg's (IJG) luminance quantization table at quality 50: a JPEG's own table against it says
# the quality it was saved at (the scaling libjpeg, Pillow, Photoshop-alikes and cameras use)
_IJG_LUMA = (
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
)  # fmt: skip


def jpeg_quality(im: Image.Image) -> int:
    """The IJG quality (1-100) a JPEG was most likely saved at, from its luminance table; 0 if unknown."""
    tables = getattr(im, "quantization", None) or {}
    luma = tables.get(0)
    if not luma or len(luma) != 64:
        return 0
    scale = 100.0 * sum(luma) / sum(_IJG_LUMA)  # libjpeg: table = std * scale / 100
    quality = (200.0 - scale) / 2 if scale <= 100 else 5000.0 / scale
    return int(min(100, max(1, round(quality))))


def _meta(im: Image.Image) -> dict[str, object]:
    """What an output keeps of the input: EXIF (orientation already applied), ICC profile, DPI,
    and the JPEG quality it was saved at."""
    meta: dict[str, object] = {}
    exif = im.getexif()
    if len(exif):
        meta["exif"] = exif.tobytes()
    for key in ("icc_profile", "dpi"):
        if im.info.get(key):
            meta[key] = im.info[key]
    if im.info.get("lamamesh_quality"):
        meta["quality"] = im.info["lamamesh_quality"]
    return meta


def decode_image(data: bytes, max_pixels: int = const.MAX_IMAGE_PIXELS) -> Picture:
    im, fmt = _open(data, "image", max_pixels)
    meta = _meta(im)
    mode = im.mode
    if mode in _SIXTEEN_BIT:
        arr = np.asarray(im, dtype=np.int32)
        if mode == "I" and (arr.min() < 0 or arr.max() > 65535):
            arr = np.clip(arr, 0, 65535)
        return Picture(arr, "I", fmt, meta)
    if mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif mode == "PA":
        im = im.convert("RGBA")
    elif mode in ("1", "F"):
        im = im.convert("L")
    elif mode not in ("RGB", "RGBA", "L", "LA"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV ...
    return Picture(np.asarray(im).copy(), im.mode, fmt, meta)


def decode_mask(
    data: bytes, size: tuple[int, int], max_pixels: int = const.MAX_IMAGE_PIXELS
) -> tuple[np.ndarray, tuple[str, ...]]:
    """A bool HxW mask, True where the image is to be filled, and a note for the user where the
    mask was not what it should be.

    - A mask with transparency (some pixel not fully opaque) is read by its alpha: painted (alpha
      >= 127) = fill, whatever the colour of the strokes (red strokes on a transparent layer, as
      editors export them). Otherwise grey >= 127 = fill, as IOPaint reads masks.
    - A mask of another size than the image is resized to it (nearest), with a note, as
      ``iopaint run`` does.
    """
    im, _ = _open(data, "mask", max_pixels)
    notes: list[str] = []
    if im.size != size:
        notes.append(
            f"the mask is {im.size[0]}x{im.size[1]} and the image {size[0]}x{size[1]}: "
            "the mask was resized to the image (nearest)"
        )
        if im.mode == "P":
            im = im.convert("RGBA" if "transparency" in im.info else "L")
        im = im.resize(size, Image.Resampling.NEAREST)
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        alpha = np.asarray(im.convert("RGBA"))[:, :, 3]
        if alpha.min() < 255:
            return alpha >= const.MASK_THRESHOLD, tuple(notes)
    elif im.mode in _SIXTEEN_BIT:
        return np.asarray(im, dtype=np.int32) >= const.MASK_THRESHOLD * 257, tuple(notes)
    return np.asarray(im.convert("L")) >= const.MASK_THRESHOLD, tuple(notes)


def coverage_note(mask: np.ndarray) -> str:
    """A warning for a mask that is most likely not what its maker meant: empty, or over half the image."""
    share = float(mask.mean()) if mask.size else 0.0
    if share == 0.0:
        return "the mask is empty (nothing painted): the image comes back unchanged"
    if share > const.MASK_WARN_SHARE:
        return (
            f"the mask covers {share:.1%} of the image: painted (white or opaque) pixels are the ones filled; "
            "if you meant the opposite, invert the mask"
        )
    return ""


def output_format(requested: str, picture: Picture) -> str:
    """Pillow format name for the result: ``requested`` (an extension or name) or the input's."""
    if not requested:
        return picture.format if picture.format in OUTPUT_FORMATS.values() else "PNG"
    key = requested.lower().lstrip(".")
    if key in OUTPUT_FORMATS:
        return OUTPUT_FORMATS[key]
    if key.upper() in OUTPUT_FORMATS.values():
        return key.upper()
    raise InputError(f"unknown output format {requested!r}; use one of png, jpg, webp, tiff, bmp")


_KEEPS = {  # what each output format can hold of the input's metadata
    "JPEG": ("exif", "icc_profile", "dpi"),
    "PNG": ("exif", "icc_profile", "dpi"),
    "WEBP": ("exif", "icc_profile"),
    "TIFF": ("icc_profile", "dpi"),
    "BMP": ("dpi",),
}


def encode(picture: Picture, fmt: str, quality: int = 0) -> bytes:
    """The picture in ``fmt`` with the input's EXIF, ICC profile and DPI where ``fmt`` holds them.
    JPEG quality: ``quality`` if given, else the input's (estimated from its tables) when it was a
    JPEG, else ``JPEG_QUALITY``."""
    arr, mode = picture.pixels, picture.mode
    if mode == "I":
        im = Image.fromarray(arr.astype(np.uint16))
        if fmt not in ("PNG", "TIFF"):
            im = Image.fromarray(np.clip(np.round(arr / 257.0), 0, 255).astype(np.uint8))
    else:
        im = Image.fromarray(arr, mode)
    if fmt in ("JPEG", "BMP") and im.mode in ("RGBA", "LA"):
        im = im.convert(im.mode[:-1] if im.mode == "LA" else "RGB")
    buf = io.BytesIO()
    options: dict[str, object] = {k: picture.meta[k] for k in _KEEPS.get(fmt, ()) if k in picture.meta}
    if fmt == "JPEG":
        q = quality or int(picture.meta.get("quality", 0) or const.JPEG_QUALITY)  # type: ignore[call-overload]
        options |= {"quality": min(100, max(1, q)), "subsampling": 0 if q >= 90 else 2}
    elif fmt == "WEBP":
        options |= {"lossless": True}
    elif fmt == "PNG":
        options |= {"compress_level": 1}
    im.save(buf, format=fmt, **options)
    return buf.getvalue()
