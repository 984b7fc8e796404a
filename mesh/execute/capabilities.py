"""What this machine can do: cores, RAM, GPU (psutil and NVML where present)."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass

import psutil

from mesh.errors import ConfigError


@dataclass(frozen=True)
class Gpu:
    index: int  # NVML's (and CUDA's, ONNX Runtime's device_id) index
    name: str
    vram_mb: int
    free_mb: int

    def line(self) -> str:
        return f"{self.index}: {self.name} ({self.vram_mb} MiB)"


@dataclass(frozen=True)
class Capabilities:
    host: str
    cores: int
    ram_mb: int
    gpu: str  # "" when NVML sees none; several GPUs: "2x NAME" or "NAME + NAME"
    vram_mb: int  # the largest of the GPUs used: a task of a class it meets runs on a slot whose GPU meets it
    vram_free_mb: int
    gpus: tuple[Gpu, ...] = ()  # every NVIDIA GPU this node uses (one slot each)


def gpu_list() -> list[Gpu]:
    """Every NVIDIA GPU NVML sees, or [] (no driver, no device, no nvidia-ml-py)."""
    try:
        import pynvml  # from nvidia-ml-py; absent or failing where there is no NVIDIA driver
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
        try:
            found = []
            for i in range(pynvml.nvmlDeviceGetCount()):
                handle = pynvml.nvmlDeviceGetHandleByIndex(i)
                name = pynvml.nvmlDeviceGetName(handle)
                mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
                name = name.decode() if isinstance(name, bytes) else str(name)
                found.append(Gpu(i, name, int(mem.total) // 2**20, int(mem.free) // 2**20))
            return found
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # pynvml.NVMLError: no driver, no device
        return []


def gpu_info() -> tuple[str, int, int]:
    """(name, total MiB, free MiB) of the first NVIDIA GPU, or ("", 0, 0)."""
    gpus = gpu_list()
    return (gpus[0].name, gpus[0].vram_mb, gpus[0].free_mb) if gpus else ("", 0, 0)


def choose_gpus(found: list[Gpu], wanted: str) -> tuple[Gpu, ...]:
    """The GPUs ``--gpus`` names ("" or "all": every one; "none": none; else "0,2")."""
    w = wanted.strip().lower()
    if w in ("", "all"):
        return tuple(found)
    if w == "none":
        return ()
    by_index = {g.index: g for g in found}
    chosen = []
    for part in w.split(","):
        if not part.strip().isdigit() or int(part) not in by_index:
            have = ", ".join(str(g.index) for g in found) or "none"
            raise ConfigError(f"--gpus {wanted}: no GPU {part.strip()!r} here (NVML sees: {have})")
        chosen.append(by_index[int(part)])
    return tuple(chosen)


def detect(wanted_gpus: str = "") -> Capabilities:
    gpus = choose_gpus(gpu_list(), wanted_gpus)
    names = [g.name for g in gpus]
    name = (
        ""
        if not names
        else names[0]
        if len(names) == 1
        else (f"{len(names)}x {names[0]}" if len(set(names)) == 1 else " + ".join(names))
    )
    return Capabilities(
        host=socket.gethostname(),
        cores=psutil.cpu_count(logical=True) or os.cpu_count() or 1,
        ram_mb=int(psutil.virtual_memory().total) // 2**20,
        gpu=name,
        vram_mb=max((g.vram_mb for g in gpus), default=0),
        vram_free_mb=max((g.free_mb for g in gpus), default=0),
        gpus=gpus,
    )


SLOT_RAM_MB = 2048  # RAM one CPU slot may need (a LaMa session and its activations at 512x512)


def default_slots(caps: Capabilities) -> int:
    """One slot per GPU; on the CPU one per core, at most 4 and one per 2 GiB of RAM.

    Measured (bench/model_speed.py, 2 cores): two slots of one ORT thread each finish 1.2-1.9x the
    images per second of one slot with two threads (the models' small convolutions scale poorly
    across threads inside one session)."""
    if caps.gpus:
        return len(caps.gpus)
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
