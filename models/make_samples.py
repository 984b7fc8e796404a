"""Write the sample photos and masks bundled in the package (mesh/data/samples).

The photos come from scikit-image's wheel (public domain or CC0; see NOTICE there);
the masks are drawn here: strokes, a box and blobs, as a user would paint them.
Run ``python models/make_samples.py`` (needs scikit-image) to rebuild them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parent.parent / "mesh" / "data" / "samples"

# photo -> mask shapes: ("box", x0, y0, x1, y1) | ("line", width, x0, y0, x1, y1, ...) | ("blob", cx, cy, r)
SAMPLES = {
    "astronaut": [("box", 270, 330, 330, 380), ("line", 14, 20, 60, 70, 140, 40, 260)],
    "coffee": [("blob", 470, 90, 40), ("line", 18, 60, 340, 200, 380)],
    "chelsea": [("line", 10, 300, 40, 420, 70, 440, 150), ("box", 20, 230, 90, 290)],
    "rocket": [("box", 430, 60, 520, 140), ("blob", 120, 360, 30)],
}


def main() -> None:
    import skimage.data

    (OUT / "images").mkdir(parents=True, exist_ok=True)
    (OUT / "masks").mkdir(parents=True, exist_ok=True)
    for name, shapes in SAMPLES.items():
        img = np.asarray(getattr(skimage.data, name)())[:, :, :3]
        Image.fromarray(img).save(OUT / "images" / f"{name}.jpg", quality=90)
        mask = Image.new("L", (img.shape[1], img.shape[0]), 0)
        draw = ImageDraw.Draw(mask)
        for shape in shapes:
            kind, *v = shape
            if kind == "box":
                draw.rectangle(v, fill=255)
            elif kind == "line":
                draw.line(v[1:], fill=255, width=int(v[0]), joint="curve")
            else:
                cx, cy, r = v
                draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        mask.save(OUT / "masks" / f"{name}.png")
        print(f"{name}: {img.shape[1]}x{img.shape[0]}, mask {np.asarray(mask).mean() / 2.55:.1f}%")


if __name__ == "__main__":
    main()
