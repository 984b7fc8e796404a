"""The only module that imports onnxruntime: provider choice, sessions, inference.

Runs inside slot processes. The provider is decided by creating a session and
reading which providers it really got (onnxruntime-gpu lists CUDA as available on
machines where it cannot load), with ORT's own logging kept quiet and the reason
said in one line.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from mesh.errors import ModelError
from mesh.execute.capabilities import gpu_info
from mesh.execute.models import ModelSpec

_QUIET = 4  # ORT severity: fatal only; we say what happened ourselves
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

ort.set_default_logger_severity(_QUIET)


@dataclass(frozen=True)
class ProviderChoice:
    provider: str  # "cuda" or "cpu"
    reason: str  # one line a user can act on


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def _options(threads: int) -> ort.SessionOptions:
    so = ort.SessionOptions()
    so.log_severity_level = _QUIET
    so.intra_op_num_threads = max(1, threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def cuda_providers(device_id: int) -> list[Any]:
    """ONNX Runtime's provider list for a session on GPU ``device_id`` (CPU for what CUDA lacks)."""
    return [(CUDA, {"device_id": device_id}), CPU]


def open_session(
    path: Path, device: str, threads: int, device_id: int = 0
) -> tuple[ort.InferenceSession, ProviderChoice]:
    """A session on CUDA GPU ``device_id`` when asked (``cuda``) or possible (``auto``), else on the CPU."""
    if device not in ("auto", "cpu", "cuda"):
        raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
    try:
        if device != "cpu" and CUDA in ort.get_available_providers():
            sess = ort.InferenceSession(str(path), _options(threads), providers=cuda_providers(device_id))
            if CUDA in sess.get_providers():
                return sess, ProviderChoice("cuda", f"CUDA: the CUDA provider loaded (GPU {device_id})")
            gpu = gpu_info()[0]
            if not gpu:
                why = "no NVIDIA GPU found (NVML sees none), so the CUDA provider cannot load"
            else:
                why = (
                    f"the CUDA provider could not load on {gpu} (onnxruntime-gpu needs CUDA 13 and cuDNN 9: "
                    "pip install 'lamamesh[cuda]')"
                )
            if device == "cuda":
                raise ModelError(f"--device cuda: {why}")
            return sess, ProviderChoice("cpu", f"CPU: {why}")
        if device == "cuda":
            raise ModelError("--device cuda: this onnxruntime build has no CUDA provider (install onnxruntime-gpu)")
        sess = ort.InferenceSession(str(path), _options(threads), providers=[CPU])
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"model {path.name} failed to load: {str(exc).splitlines()[0][:200]}") from None
    reason = (
        "CPU: asked for with --device cpu" if device == "cpu" else "CPU: this onnxruntime build has no CUDA provider"
    )
    return sess, ProviderChoice("cpu", reason)


def input_shapes(path: Path) -> dict[str, list[int | str | None]]:
    """The model's inputs and their shapes (used by ``models add`` to check a file)."""
    try:
        sess = ort.InferenceSession(str(path), _options(1), providers=[CPU])
    except Exception as exc:
        raise ModelError(
            f"{path} is not an ONNX model ONNX Runtime can load: {str(exc).splitlines()[0][:200]}"
        ) from None
    return {i.name: list(i.shape) for i in sess.get_inputs()}


class Engine:
    """One model loaded in one session; ``infer`` follows the model's manifest contract."""

    def __init__(
        self, spec: ModelSpec, path: Path, device: str = "auto", threads: int | None = None, device_id: int = 0
    ) -> None:
        self.spec = spec
        self.session, self.choice = open_session(path, device, threads or os.cpu_count() or 1, device_id)
        inputs = self.session.get_inputs()
        if len(inputs) != 2:
            raise ModelError(f"model {spec.name} has {len(inputs)} inputs; an inpainting model takes image and mask")
        names = [i.name for i in inputs]
        if "image" in names and "mask" in names:
            self._image, self._mask = "image", "mask"
        else:  # order by channel count: 3 = image, 1 = mask
            by_channels = sorted(inputs, key=lambda i: -(i.shape[1] if isinstance(i.shape[1], int) else 0))
            self._image, self._mask = by_channels[0].name, by_channels[1].name

    def infer(self, rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 RGB and HxW bool -> HxWx3 uint8 RGB, shapes already fitted to the model."""
        img = rgb[:, :, ::-1] if self.spec.channels == "bgr" else rgb
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32)
        x *= np.float32(1 / 255)
        m = mask[None, None].astype(np.float32)
        (out,) = self.session.run(None, {self._image: x, self._mask: m})[:1]
        out = np.asarray(out)[0].transpose(1, 2, 0)
        if self.spec.channels == "bgr":
            out = out[:, :, ::-1]
        scale = 255.0 / self.spec.output_range
        result: np.ndarray = np.clip(np.rint(out * scale), 0, 255).astype(np.uint8)
        return result
