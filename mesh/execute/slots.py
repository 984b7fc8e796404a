"""Supervised slot processes: each holds ONNX Runtime sessions and runs one task at a time.

Inference never runs on the event loop: a slot is a child process (spawned, not forked,
so no event-loop or thread state is copied) that talks to its node over a pipe. The
blocking pipe exchange runs in a thread. A slot that dies mid-task is restarted and the
task retried up to ``SLOT_MAX_RETRIES`` times, then the task fails with a clear error.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from mesh import const
from mesh.config import Config
from mesh.errors import MeshError, ModelError, Overloaded, TaskFailed
from mesh.execute.capabilities import Capabilities, default_slots
from mesh.kinds import MIN_VRAM_MB
from mesh.wire.protocol import HUNG, TaskSpec

log = logging.getLogger("lamamesh.slots")
_MP = mp.get_context("spawn")
Connection = multiprocessing.connection.Connection


@dataclass(frozen=True)
class SlotSettings:
    home: Path
    device: str = "auto"
    threads: int = 1  # ORT intra-op threads in each slot
    max_pixels: int = const.MAX_IMAGE_PIXELS
    max_result_bytes: int = const.MAX_RESULT_BYTES
    preload: tuple[str, ...] = ("builtin",)
    device_ids: tuple[int, ...] = ()  # CUDA device of slot i: device_ids[i % len]; () = device 0
    device_vram: tuple[int, ...] = ()  # MiB of each of those devices (a task's requirement class picks the slot)
    cpu_after: int = 0  # > 0: slots from this index on run on the CPU, beside the GPU ones (join --cpu-slots)


@dataclass(frozen=True)
class SlotResult:
    ok: bool
    data: bytes | memoryview = b""  # the benchmark executor hands back the input frame uncopied
    out_format: str = ""
    model_ms: float = 0.0
    total_ms: float = 0.0
    error_code: str = ""
    error: str = ""
    notes: tuple[str, ...] = ()


def _slot_main(conn: Connection, settings: SlotSettings, device_id: int = 0, device: str = "") -> None:
    """Entry point of a slot process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the node decides when slots stop
    logging.basicConfig(level=logging.WARNING)
    from mesh.execute import engine
    from mesh.execute.models import Registry

    registry = Registry(settings.home)
    engines: dict[str, engine.Engine] = {}

    def load(name: str) -> engine.Engine:
        if name not in engines:
            spec, path = registry.resolve(name)
            engines[name] = engine.Engine(spec, path, device or settings.device, settings.threads, device_id)
        return engines[name]

    try:
        _slot_loop(conn, settings, load)
    except (BrokenPipeError, ConnectionResetError, EOFError):
        return  # the node is gone (killed): nobody to answer, and nothing to say in its log


def _slot_loop(conn: Connection, settings: SlotSettings, load: Callable[[str], Any]) -> None:
    from mesh.execute import engine, inpaint
    from mesh.execute.pipeline import ModelShape

    try:
        first = [load(n) for n in settings.preload]
        choice = first[0].choice if first else engine.ProviderChoice("cpu", "")
        conn.send({"ready": True, "provider": choice.provider, "reason": choice.reason, "pid": os.getpid()})
    except MeshError as exc:
        conn.send({"ready": False, "error_code": exc.code, "error": str(exc)})
        return
    while True:
        try:
            header = conn.recv()
        except EOFError:
            return
        if header is None:
            return
        image, mask = conn.recv_bytes(), conn.recv_bytes()
        spec = TaskSpec(**header)
        try:
            eng = load(spec.model)
            shape = ModelShape(eng.spec.size, eng.spec.multiple)
            out = inpaint.run(spec, image, mask, shape, eng.infer, settings.max_pixels)
            if len(out.data) > settings.max_result_bytes:
                raise Overloaded(
                    f"the result is {len(out.data):,} bytes, over the limit of {settings.max_result_bytes:,} "
                    "(max_result_bytes); ask for JPEG or WebP output"
                )
            conn.send(
                {
                    "ok": True,
                    "out_format": out.out_format,
                    "model_ms": out.model_ms,
                    "total_ms": out.total_ms,
                    "notes": out.notes,
                }
            )
            conn.send_bytes(out.data)
        except MeshError as exc:
            conn.send({"ok": False, "error_code": exc.code, "error": str(exc)})
        except Exception as exc:  # a bug or an ORT failure: report it, keep the slot
            conn.send({"ok": False, "error_code": "failed", "error": f"{type(exc).__name__}: {exc}"})


class _Slot:
    def __init__(self, index: int, settings: SlotSettings) -> None:
        self.index = index
        self.settings = settings
        ids = settings.device_ids
        self.device_id = ids[index % len(ids)] if ids else 0  # the GPU this slot's sessions run on
        vram = settings.device_vram
        self.vram_mb = vram[index % len(vram)] if vram else 0
        self.device = ""  # "" = the node's --device
        if settings.cpu_after and index >= settings.cpu_after:
            self.device, self.device_id, self.vram_mb = "cpu", 0, 0
        self.proc: Any = None
        self.conn: Connection | None = None
        self.info: dict[str, Any] = {}

    def spawn(self) -> None:
        """Start the process (it loads its model meanwhile); ``start()`` waits until it is ready."""
        parent, child = _MP.Pipe(duplex=True)
        self.proc = _MP.Process(
            target=_slot_main,
            args=(child, self.settings, self.device_id, self.device),
            name=f"lamamesh-slot-{self.index}",
            daemon=True,
        )
        self.proc.start()
        child.close()
        self.conn = parent

    async def start(self) -> dict[str, Any]:
        if self.proc is None or self.conn is None:
            await asyncio.to_thread(self.spawn)  # starting a process reads the disk: off the loop
        try:
            ready = await asyncio.wait_for(asyncio.to_thread(self._recv_ready), const.SLOT_START_TIMEOUT)
        except (TimeoutError, EOFError, OSError):
            await asyncio.to_thread(self.kill)
            raise ModelError(f"slot {self.index} did not start (exit code {self.proc.exitcode})") from None
        if not ready.get("ready"):
            await asyncio.to_thread(self.kill)
            raise ModelError(ready.get("error", "slot failed to start"))
        self.info = ready
        return ready

    def _recv_ready(self) -> dict[str, Any]:
        assert self.conn is not None
        # poll in short steps so a cancelled start does not leave a thread blocked forever
        deadline = time.monotonic() + const.SLOT_START_TIMEOUT
        while time.monotonic() < deadline:
            if self.conn.poll(0.1):
                got: dict[str, Any] = self.conn.recv()
                return got
            if not self.proc.is_alive():
                raise EOFError
        raise TimeoutError

    def exchange(self, header: dict[str, Any], image: Any, mask: Any) -> SlotResult:
        """Blocking: send one task, wait for its answer. Raises EOFError/OSError if the slot dies."""
        assert self.conn is not None
        self.conn.send(header)
        self.conn.send_bytes(image)
        self.conn.send_bytes(mask)
        reply: dict[str, Any] = self.conn.recv()
        if reply.get("ok"):
            data = self.conn.recv_bytes()
            return SlotResult(
                True, data, reply["out_format"], reply["model_ms"], reply["total_ms"], notes=reply.get("notes", ())
            )
        return SlotResult(False, error_code=reply.get("error_code", "failed"), error=reply.get("error", ""))

    def kill(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.close()
            self.conn = None
        if self.proc is not None and self.proc.is_alive():
            self.proc.kill()
        if self.proc is not None:
            self.proc.join(5)

    def stop(self, timeout: float = 3.0) -> None:
        if self.conn is not None and self.proc is not None and self.proc.is_alive():
            with contextlib.suppress(OSError):
                self.conn.send(None)
            self.proc.join(timeout)
        self.kill()


class SlotPool:
    """``n`` slot processes; ``run()`` waits for a free one and returns the task's outcome."""

    def __init__(self, n: int, settings: SlotSettings) -> None:
        self.settings = settings
        self.slots = [_Slot(i, settings) for i in range(max(1, n))]
        self._free: list[_Slot] = []
        self._freed = asyncio.Condition()
        self.provider = "cpu"
        self.reason = ""
        self.restarts = 0
        self.busy = 0

    @property
    def size(self) -> int:
        return len(self.slots)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.slots if s.proc is not None and s.proc.is_alive()]

    def spawn(self) -> None:
        """Start every slot process now, before the caller's own start-up work (``join`` does this
        before importing the node), so the slots load ONNX Runtime and their model meanwhile."""
        for s in self.slots:
            if s.proc is None:
                s.spawn()

    async def start(self) -> None:
        try:
            infos = await asyncio.gather(*(s.start() for s in self.slots))
        except BaseException:
            await self.close()
            raise
        self.provider, self.reason = infos[0]["provider"], infos[0]["reason"]
        self._free = list(self.slots)

    async def run(self, spec: TaskSpec, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
        """Run one task in a free slot. ``timeout`` (s in the slot): past it the slot is hung (a wedged
        driver, a stopped process): it is killed and started again, and the task answers ``hung``."""
        header = {f.name: getattr(spec, f.name) for f in fields(TaskSpec)}
        slot = await self._take(MIN_VRAM_MB.get(spec.requires, 0))
        self.busy += 1
        try:
            for attempt in range(const.SLOT_MAX_RETRIES + 1):
                try:
                    return await asyncio.wait_for(asyncio.to_thread(slot.exchange, header, image, mask), timeout)
                except TimeoutError:
                    return await self._hung(slot, spec, timeout or 0.0)
                except (EOFError, OSError):
                    code = slot.proc.exitcode if slot.proc is not None else None
                    await asyncio.to_thread(slot.kill)
                    self.restarts += 1
                    log.warning(
                        "slot %d died running task %s (exit code %s); restarting it", slot.index, spec.task_id, code
                    )
                    try:
                        await slot.start()
                    except MeshError as exc:
                        return SlotResult(False, error_code="failed", error=f"slot could not restart: {exc}")
                    if attempt == const.SLOT_MAX_RETRIES:
                        raise TaskFailed(
                            f"the slot process crashed {attempt + 1} times running this task (last exit code {code})"
                        ) from None
            raise AssertionError("unreachable")
        except TaskFailed as exc:
            return SlotResult(False, error_code=exc.code, error=str(exc))
        finally:
            self.busy -= 1
            await self._give(slot)

    async def _take(self, need_mb: int) -> _Slot:
        """A free slot whose GPU has ``need_mb`` MiB (a requirement class), waiting for one: on a box
        of 24/12/6 GiB GPUs a gpu-high task runs on the 24 GiB one only."""
        async with self._freed:
            while True:
                for s in self._free:
                    if need_mb <= 0 or s.vram_mb >= need_mb:
                        self._free.remove(s)
                        return s
                await self._freed.wait()

    async def _give(self, slot: _Slot) -> None:
        async with self._freed:
            self._free.append(slot)
            self._freed.notify_all()

    async def _hung(self, slot: _Slot, spec: TaskSpec, timeout: float) -> SlotResult:
        log.warning(
            "slot %d ran task %s past its deadline (%g s): hung; restarting it", slot.index, spec.task_id, timeout
        )
        await asyncio.to_thread(slot.kill)  # closes its pipe: the thread waiting on it ends
        self.restarts += 1
        try:
            await slot.start()
        except MeshError as exc:
            log.error("slot %d could not restart after a hang: %s", slot.index, exc)
        return SlotResult(False, error_code=HUNG, error=f"the slot ran the task past its deadline ({timeout:g} s)")

    async def close(self) -> None:
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.slots))


class Executor(Protocol):
    """What a worker runs tasks on: ``SlotPool`` (the real thing) or ``SleepPool`` (benchmarks)."""

    provider: str
    reason: str
    busy: int

    @property
    def size(self) -> int: ...

    async def start(self) -> None: ...

    async def run(self, spec: TaskSpec, image: Any, mask: Any, timeout: float | None = None) -> SlotResult: ...

    async def close(self) -> None: ...


class SleepPool:
    """BENCHMARK ONLY (``join --bench-delay-ms MS``): each task takes ``delay_ms`` of wall time and no CPU,
    and its "result" is the input image unchanged. It lets bench/ measure the mesh (overhead,
    scaling, placement on mixed speeds) with many nodes on a 2-core machine. Never a default."""

    def __init__(self, n: int, delay_ms: float) -> None:
        self.n = max(1, n)
        self.delay = delay_ms / 1000
        self.provider = "cpu"
        self.reason = f"BENCHMARK executor: every task sleeps {delay_ms:g} ms and returns its input"
        self.busy = 0
        self._sem = asyncio.Semaphore(self.n)

    @property
    def size(self) -> int:
        return self.n

    def pids(self) -> list[int]:
        return []

    async def start(self) -> None:
        return None

    async def run(self, spec: TaskSpec, image: Any, mask: Any, timeout: float | None = None) -> SlotResult:
        async with self._sem:
            self.busy += 1
            t0 = time.perf_counter()
            try:
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                ms = (time.perf_counter() - t0) * 1000
                return SlotResult(True, image, spec.out_format or "png", ms, ms)
            finally:
                self.busy -= 1

    async def close(self) -> None:
        return None


def make_executor(cfg: Config, caps: Capabilities) -> Executor:
    """The slots of a node: processes running the model, or the benchmark's sleep executor."""
    gpus = caps.gpus if cfg.device != "cpu" else ()
    slots = cfg.slots or default_slots(caps)
    cpu_after = slots if gpus and cfg.cpu_slots else 0  # CPU slots only beside GPU ones, and only if asked
    slots += cfg.cpu_slots if gpus else 0
    if cfg.bench_delay_ms >= 0:
        return SleepPool(slots, cfg.bench_delay_ms)
    threads = max(1, caps.cores // slots)
    limit = min(cfg.max_result_bytes, cfg.max_frame_bytes)
    ids, vram = tuple(g.index for g in gpus), tuple(g.vram_mb for g in gpus)
    settings = SlotSettings(
        cfg.home, cfg.device, threads, cfg.max_pixels, limit, device_ids=ids, device_vram=vram, cpu_after=cpu_after
    )
    return SlotPool(slots, settings)
