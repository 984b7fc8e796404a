"""What a client needs of images before sending one: the output formats, and an image's size from its
header alone (Pillow only).

Kept apart from ``images`` (decode, masks, encode: numpy and Pillow) so a command that only sends
photos does not import numpy (65 ms of a `lamamesh submit` here)."""

from __future__ import annotations

import io

from PIL import Image

OUTPUT_FORMATS = {  # a file extension (or --format) -> Pillow's format name
    "png": "PNG",
    "jpg": "JPEG",
    "jpeg": "JPEG",
    "webp": "WEBP",
    "tif": "TIFF",
    "tiff": "TIFF",
    "bmp": "BMP",
}


def pixels(data: bytes) -> int:
    """Width x height from the image header alone (no decode); 0 when it cannot be read."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]) * int(im.size[1])
    except Exception:  # any unreadable input: the slot reports the real error later
        return 0
