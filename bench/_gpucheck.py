"""Provider check on a GPU machine whose Python lacks lamamesh's network deps (e.g. a lent
device image): loads only mesh.engine/models/capabilities and reports NVML's GPU, the
provider the built-in model really got and why, and ms per 1024^2 image per device.

    python3 bench/_gpucheck.py
"""

import pathlib
import sys
import tempfile
import time
import types

pkg = types.ModuleType("mesh")
pkg.__path__ = [str(pathlib.Path("mesh").resolve())]
sys.modules["mesh"] = pkg
import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402

from mesh.execute import (  # noqa: E402
    capabilities,
    engine,
    models,
)
from mesh.execute.models import Registry  # noqa: E402

models.data_dir = lambda: pathlib.Path("mesh/data").resolve()  # the stub package has no resource reader
print("onnxruntime", ort.__version__, ort.get_available_providers())
print("gpu", capabilities.gpu_info())
spec, path = Registry(pathlib.Path(tempfile.mkdtemp())).resolve("builtin")
for dev in ("auto", "cuda", "cpu"):
    try:
        e = engine.Engine(spec, path, dev, 4)
        print(dev, "->", e.choice)
        img = (np.random.default_rng(0).random((1024, 1024, 3)) * 255).astype(np.uint8)
        m = np.zeros((1024, 1024), bool)
        m[300:600, 300:700] = True
        e.infer(img, m)
        t = time.perf_counter()
        [e.infer(img, m) for _ in range(5)]
        print(dev, "1024^2 ms/image", round((time.perf_counter() - t) / 5 * 1000, 1))
    except Exception as exc:
        print(dev, "raised", type(exc).__name__, exc)
