"""What this machine can do: cores, RAM, GPU (psutil and NVML where present)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Capabilities:
    host: str
    cores: int
    ram_mb: int
    gpu: str  # "" when NVML sees none
    vram_mb: int
    vram_free_mb: int


def gpu_info() -> tuple[str, int, int]:
    """(name, total MiB, free MiB) of the first NVIDIA GPU, or ("", 0, 0)."""
    try:
        import pynvml  # from nvidia-ml-py; absent or failing where there is no NVIDIA driver
    except ImportError:
        return "", 0, 0
    try:
        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() < 1:
                return "", 0, 0
            handle = pynvml.nvmlDeviceGetHandleByIndex(0)
            name = pynvml.nvmlDeviceGetName(handle)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = name.decode() if isinstance(name, bytes) else str(name)
            return name, int(mem.total) // 2**20, int(mem.free) // 2**20
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml.NVMLError: no driver, no device
        return "", 0, 0


def detect() -> Capabilities:
    name, total, free = gpu_info()
    return Capabilities(
        host=socket.gethostname(),
        cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_mb=int(psutil.virtual_memory().total) // 2**20,
        gpu=name,
        vram_mb=total,
        vram_free_mb=free,
    )


def default_slots(caps: Capabilities) -> int:
    """One slot per GPU-backed node, else about one per two cores (ORT uses threads inside a slot)."""
    if caps.gpu:
        return 1
    return max(1, min(4, caps.cores // 2))
