"""Every GPU of a machine (issue 15), tested without one by faking what NVML reports: one slot per
GPU, each slot's sessions on its own device_id, --gpus to choose, requirement classes met by every
GPU used, each GPU listed in the heartbeat."""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mesh.config import Config
from mesh.errors import ConfigError
from mesh.execute import capabilities, engine
from mesh.execute.slots import SlotPool, make_executor


class _Mem:
    def __init__(self, total_mb: int) -> None:
        self.total = total_mb * 2**20
        self.free = (total_mb - 100) * 2**20


def fake_nvml(monkeypatch: pytest.MonkeyPatch, cards: list[tuple[str, int]]) -> None:
    nvml: Any = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None
    nvml.nvmlShutdown = lambda: None
    nvml.nvmlDeviceGetCount = lambda: len(cards)
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetName = lambda h: cards[h][0].encode()
    nvml.nvmlDeviceGetMemoryInfo = lambda h: _Mem(cards[h][1])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)


def test_a_four_gpu_box_gets_a_slot_per_gpu_each_on_its_own_device(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_nvml(monkeypatch, [("RTX 4090", 24564), ("RTX 4090", 24564), ("RTX 3060", 12288), ("RTX 4090", 24564)])
    caps = capabilities.detect()
    assert [g.index for g in caps.gpus] == [0, 1, 2, 3] and capabilities.default_slots(caps) == 4
    assert caps.gpu == "RTX 4090 + RTX 4090 + RTX 3060 + RTX 4090"
    assert caps.vram_mb == 12288  # gpu-high (16 GiB) is not claimed: one of its slots could not meet it
    pool = make_executor(replace(Config(), home=tmp_path), caps)
    assert isinstance(pool, SlotPool) and pool.size == 4
    assert [s.device_id for s in pool.slots] == [0, 1, 2, 3]
    chosen = capabilities.detect("1,3")
    assert [g.index for g in chosen.gpus] == [1, 3] and chosen.gpu == "2x RTX 4090" and chosen.vram_mb == 24564
    pool = make_executor(replace(Config(), home=tmp_path, gpus="1,3"), chosen)
    assert [s.device_id for s in pool.slots] == [1, 3]  # type: ignore[attr-defined]
    cpu_only = make_executor(replace(Config(), home=tmp_path, device="cpu"), caps)
    assert [s.device_id for s in cpu_only.slots] == [0, 0, 0, 0]  # type: ignore[attr-defined]
    assert capabilities.detect("none").gpus == ()
    with pytest.raises(ConfigError, match="no GPU '7'"):
        capabilities.detect("0,7")
    assert [g.line() for g in chosen.gpus] == ["1: RTX 4090 (24564 MiB)", "3: RTX 4090 (24564 MiB)"]


def test_each_slots_session_asks_onnx_runtime_for_its_own_device() -> None:
    assert engine.cuda_providers(2) == [("CUDAExecutionProvider", {"device_id": 2}), "CPUExecutionProvider"]


def test_no_nvml_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: nvidia-ml-py absent
    caps = capabilities.detect()
    assert caps.gpus == () and caps.gpu == "" and capabilities.gpu_info() == ("", 0, 0)
