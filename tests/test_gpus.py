"""Every GPU of a machine (issue 15), tested without one by faking what NVML reports: one slot per
GPU, each slot's sessions on its own device_id, --gpus to choose, requirement classes met by every
GPU used, each GPU listed in the heartbeat."""

from __future__ import annotations

import asyncio
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
from mesh.kinds import MIN_VRAM_MB, Requirement


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
    fake_nvml(monkeypatch, [("RTX 4090", 24576), ("RTX 3060", 12288), ("GTX 1660", 6144), ("GT 1030", 3072)])
    caps = capabilities.detect()
    assert [g.index for g in caps.gpus] == [0, 1, 2, 3] and capabilities.default_slots(caps) == 4
    assert caps.gpu == "RTX 4090 + RTX 3060 + GTX 1660 + GT 1030"
    assert caps.vram_mb == 24576  # the node takes gpu-high tasks: its 24 GiB slot runs them
    pool = make_executor(replace(Config(), home=tmp_path), caps)
    assert isinstance(pool, SlotPool) and pool.size == 4
    assert [(s.device_id, s.vram_mb) for s in pool.slots] == [(0, 24576), (1, 12288), (2, 6144), (3, 3072)]
    chosen = capabilities.detect("1,3")
    assert [g.index for g in chosen.gpus] == [1, 3] and chosen.gpu == "RTX 3060 + GT 1030"
    pool2 = make_executor(replace(Config(), home=tmp_path, gpus="1,3"), chosen)
    assert [s.device_id for s in pool2.slots] == [1, 3]  # type: ignore[attr-defined]
    cpu_only = make_executor(replace(Config(), home=tmp_path, device="cpu"), caps)
    assert [s.device_id for s in cpu_only.slots] == [0, 0, 0, 0]  # type: ignore[attr-defined]
    assert capabilities.detect("none").gpus == ()
    beside = make_executor(replace(Config(), home=tmp_path, cpu_slots=2), caps)  # asked for: 2 CPU slots more
    assert [(s.device, s.device_id, s.vram_mb) for s in beside.slots][3:] == [  # type: ignore[attr-defined]
        ("", 3, 3072),
        ("cpu", 0, 0),
        ("cpu", 0, 0),
    ]
    no_gpu = capabilities.Capabilities("h", 2, 8192, "", 0, 0)
    assert make_executor(replace(Config(), home=tmp_path, cpu_slots=2), no_gpu).size == 2  # only beside GPUs
    with pytest.raises(ConfigError, match="no GPU '7'"):
        capabilities.detect("0,7")
    assert [g.line() for g in chosen.gpus] == ["1: RTX 3060 (12288 MiB)", "3: GT 1030 (3072 MiB)"]


def test_a_task_runs_on_a_slot_whose_gpu_meets_its_requirement_class(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 15's check: with GPUs of 24/12/6/3 GiB, a gpu-high task lands only on the 24 GiB one
    (it waits for it when busy), gpu-medium on a 12+ GiB one, anything else on any free slot."""
    fake_nvml(monkeypatch, [("RTX 4090", 24576), ("RTX 3060", 12288), ("GTX 1660", 6144), ("GT 1030", 3072)])
    pool = make_executor(replace(Config(), home=tmp_path), capabilities.detect())
    assert isinstance(pool, SlotPool)

    async def go() -> None:
        pool._free = list(pool.slots)  # as start() leaves it, without starting processes
        high = await pool._take(MIN_VRAM_MB[Requirement.GPU_HIGH])
        assert high.device_id == 0
        waiting = asyncio.create_task(pool._take(MIN_VRAM_MB[Requirement.GPU_HIGH]))
        medium = await pool._take(MIN_VRAM_MB[Requirement.GPU_MEDIUM])
        assert medium.device_id == 1  # the only other 8+ GiB GPU
        anything = [await pool._take(MIN_VRAM_MB[Requirement.ANY]) for _ in range(2)]
        assert sorted(s.device_id for s in anything) == [2, 3]
        await asyncio.sleep(0)
        assert not waiting.done()  # the 24 GiB slot is busy: the gpu-high task waits for it
        await pool._give(high)
        async with asyncio.timeout(5):
            assert (await waiting).device_id == 0

    asyncio.run(go())


def test_each_slots_session_asks_onnx_runtime_for_its_own_device() -> None:
    assert engine.cuda_providers(2) == [("CUDAExecutionProvider", {"device_id": 2}), "CPUExecutionProvider"]


def test_no_nvml_means_no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails: nvidia-ml-py absent
    caps = capabilities.detect()
    assert caps.gpus == () and caps.gpu == "" and capabilities.gpu_info() == ("", 0, 0)
