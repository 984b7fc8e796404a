"""What this machine can do: cores, RAM, GPU (psutil and NVML where present)."""

from __future__ import annotations

import contextlib
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


SLOT_RAM_MB = 2048  # RAM one CPU slot may need (a LaMa session and its activations at 512x512)


def default_slots(caps: Capabilities) -> int:
    """One slot per GPU-backed node; on the CPU one per core, at most 4 and one per 2 GiB of RAM.

    Measured (bench/model_speed.py, 2 cores): two slots of one ORT thread each finish 1.2-1.9x the
    images per second of one slot with two threads (the models' small convolutions scale poorly
    across threads inside one session)."""
    if caps.gpu:
        return 1
    return max(1, min(4, caps.cores, caps.ram_mb // SLOT_RAM_MB))


_VIRTUAL_PREFIXES = ("lo", "docker", "br-", "virbr", "veth", "cni", "flannel", "tun", "tap", "zt", "tailscale")


def lan_addresses() -> list[tuple[str, str]]:
    """(interface, IPv4) of this machine's LAN-facing interfaces, best first.

    Loopback, link-local and the usual virtual bridges (docker0, virbr, veth) are left out:
    advertising those is the classic reason an mDNS mesh never forms. The interface of
    the default route comes first."""
    preferred = ""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent, the kernel just picks a route
        preferred = s.getsockname()[0]
    found: list[tuple[str, str]] = []
    for name, addrs in psutil.net_if_addrs().items():
        if name.startswith(_VIRTUAL_PREFIXES):
            continue
        for a in addrs:
            if a.family == socket.AF_INET and not a.address.startswith(("127.", "169.254.")):
                found.append((name, a.address))
    found.sort(key=lambda na: na[1] != preferred)
    return found


def advertised_address(bind: str, advertise: str = "") -> tuple[str, str]:
    """(address peers should use, why): --advertise, else a specific --bind, else the LAN address."""
    if advertise:
        return advertise, "--advertise"
    if bind not in ("0.0.0.0", "", "*"):
        return bind, "--bind"
    lan = lan_addresses()
    if lan:
        return lan[0][1], f"interface {lan[0][0]}"
    return "127.0.0.1", "no LAN interface found, this machine only"
