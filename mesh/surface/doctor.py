"""``lamamesh doctor``: what on this machine stops a node from working, one line per check.

Each check returns a ``Check``: ok, warn (works, but not as well as it could) or fail,
with the reason and the fix. Nothing here changes the machine: ports are tried with a
bind that is closed at once, multicast with a socket that joins the mDNS group and leaves.
"""

from __future__ import annotations

import errno
import socket
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from mesh import const
from mesh.execute import capabilities
from mesh.execute.models import Registry, sha256_file

MDNS_GROUP = "224.0.0.251"


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | warn | fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        fix = f"; fix: {self.fix}" if self.fix else ""
        return f"{self.state.upper():<4}  {self.name}: {self.detail}{fix}"


def onnxruntime_check() -> Check:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return Check("onnxruntime", "fail", f"cannot import onnxruntime ({exc})", "pip install onnxruntime")
    providers = ", ".join(p.removesuffix("ExecutionProvider") for p in ort.get_available_providers())
    return Check("onnxruntime", "ok", f"version {ort.__version__}, providers {providers}")


def cuda_check() -> Check:
    """Really open a session on CUDA (onnxruntime-gpu lists CUDA where it cannot load)."""
    from mesh.execute import engine
    from mesh.execute.models import data_dir, manifest

    builtin = next(s for s in manifest() if s.builtin)

    try:
        sess, choice = engine.open_session(data_dir() / builtin.file, "auto", 1)
    except Exception as exc:  # a broken install: say so in one line
        return Check("cuda", "fail", f"no ONNX Runtime session could be opened: {exc}", "reinstall lamamesh")
    del sess
    if choice.provider == "cuda":
        return Check("cuda", "ok", "the CUDA provider loads and runs the built-in model")
    has_gpu = bool(capabilities.gpu_info()[0])
    fix = "pip install 'lamamesh[cuda]' (CUDA 12/13 and cuDNN 9 from pip)" if has_gpu else ""
    return Check("cuda", "warn" if has_gpu else "ok", choice.reason, fix)


def gpu_check() -> Check:
    name, total, free = capabilities.gpu_info()
    if not name:
        return Check("gpu", "ok", "no NVIDIA GPU seen by NVML: this node runs on the CPU")
    return Check("gpu", "ok", f"{name}, {total} MiB VRAM ({free} MiB free)")


def ports_check(bind: str, port: int) -> Check:
    ports = [port, port + 1, port + 2]
    busy = []
    for p in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((bind, p))
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    return Check("ports", "fail", f"{bind} is not an address of this machine", "give --bind one")
                busy.append(p)
    if not busy:
        return Check("ports", "ok", f"{bind}:{ports[0]}-{ports[-1]} free (task, backend, gossip)")
    return Check(
        "ports",
        "warn",
        f"{', '.join(map(str, busy))} in use on {bind} (a node already running here, or another program)",
        f"lamamesh join --port {port + 10} (or --port 0 for free ones)",
    )


def multicast_check(bind: str) -> Check:
    host, why = capabilities.advertised_address(bind)
    if host.startswith("127."):
        return Check(
            "multicast", "warn", f"no LAN interface ({why}): mDNS reaches this machine only", "use --peer HOST:PORT"
        )
    nic = next((n for n, a in capabilities.lan_addresses() if a == host), "")
    stats = psutil.net_if_stats().get(nic) if nic else None
    flags = getattr(stats, "flags", "") if stats is not None else ""
    if stats is not None and not stats.isup:
        return Check("multicast", "fail", f"interface {nic} ({host}) is down", "bring it up or --bind another")
    if flags and "multicast" not in flags.split(","):
        return Check(
            "multicast", "fail", f"interface {nic} ({host}) has multicast off", f"ip link set {nic} multicast on"
        )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP) as s:
        try:
            mreq = struct.pack("4s4s", socket.inet_aton(MDNS_GROUP), socket.inet_aton(host))
            s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
        except OSError as exc:
            return Check(
                "multicast", "fail", f"cannot join the mDNS group on {host}: {exc.strerror}", "use --peer HOST:PORT"
            )
    where = f"interface {nic} ({host})" if nic else host
    return Check(
        "multicast",
        "ok",
        f"mDNS group joined on {where}, advertised by `join` ({why}); Wi-Fi client isolation can still block it",
    )


def model_checks(home: Path) -> list[Check]:
    out = []
    for e in Registry(home).entries():
        s = e.spec
        if e.path is None:
            how = f"lamamesh models fetch {s.name}" if s.url else f"lamamesh models add FILE --name {s.name}"
            out.append(Check(f"model {s.name}", "ok", f"not on this machine (optional; to add it: {how})"))
            continue
        if not s.sha256:
            out.append(Check(f"model {s.name}", "ok", f"{e.path} (no checksum recorded)"))
            continue
        t0 = time.monotonic()
        got = sha256_file(e.path)
        ms = (time.monotonic() - t0) * 1000
        if got != s.sha256:
            out.append(
                Check(
                    f"model {s.name}",
                    "fail",
                    f"{e.path} has sha256 {got[:12]}..., expected {s.sha256[:12]}...",
                    f"delete it and run lamamesh models fetch {s.name}" if s.url else "copy the file again",
                )
            )
        else:
            out.append(Check(f"model {s.name}", "ok", f"{e.path}, sha256 ok ({ms:.0f} ms)"))
    return out


def machine_checks(bind: str, port: int, home: Path) -> list[Check]:
    return [
        onnxruntime_check(),
        cuda_check(),
        gpu_check(),
        ports_check("0.0.0.0" if bind in ("", "*") else bind, port or const.DEFAULT_TASK_PORT),
        multicast_check(bind),
        *model_checks(home),
    ]


def probe_images() -> tuple[bytes, bytes]:
    """A small gradient photo and a square mask, PNG: the task ``doctor`` round-trips."""
    import io

    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    rgb = np.stack([x * 2, y * 2, (x + y)], axis=-1).astype(np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[32:64, 48:80] = 255
    out = []
    for arr in (rgb, mask):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="PNG")
        out.append(buf.getvalue())
    return out[0], out[1]
