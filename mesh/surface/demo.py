"""``lamamesh demo``: a whole mesh on this machine (the "unified mode" of tool servers).

Starts N ``lamamesh join`` processes on 127.0.0.1 (a private mesh name, no mDNS, so it
never mixes with a real mesh on the LAN), waits until they have elected a leader and
their slots are up, inpaints the bundled samples through them like any ``submit``, and
stops every node with SIGTERM (their graceful leave), SIGKILL past a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mesh.errors import MeshError, NoMesh
from mesh.surface.client import Client
from mesh.surface.snapshot import Snapshot
from mesh.wire.transport import Context

START_TIMEOUT = 90.0  # s for every node to be up (slot processes load ONNX Runtime on a slow CPU)
STOP_TIMEOUT = 20.0  # s a node has to leave after SIGTERM before it is killed


_HANDED: dict[int, float] = {}  # port -> when this process handed it out in a block
_HOLD_S = 60.0  # a block handed out is not handed out again for this long (its node may not have bound it yet)
_RANDOM = random.SystemRandom()  # not the module's generator: a test (hypothesis) may seed that one


def free_port_block(n: int = 3, host: str = "127.0.0.1") -> int:
    """A port P with P..P+n-1 free (a node takes its task, backend and gossip ports).

    Taken below the kernel's ephemeral range where there is room: a port the kernel picks for an
    outgoing connection (a ZeroMQ socket retrying a node that is still starting) can land in the block
    of a node that has not bound it yet. And not part of a block this process handed out in the last
    minute: nodes started one after another bind their ports a second later (Python's start)."""
    now = time.monotonic()
    for p, t in list(_HANDED.items()):
        if now - t > _HOLD_S:
            del _HANDED[p]
    low, high = _PORTS_BELOW_EPHEMERAL
    for _ in range(200):
        p = _RANDOM.randrange(low, high - n) if high - low > 1000 else _kernel_port(host)
        if p + n >= 65536 or any(p + i in _HANDED for i in range(n)):
            continue
        if all(_bindable(host, p + i) for i in range(n)):
            _HANDED.update({p + i: now for i in range(n)})
            return p
    raise MeshError("no free block of ports on 127.0.0.1")


def _below_ephemeral() -> tuple[int, int]:
    """Ports 10000 up to the kernel's ephemeral range (Linux's is 32768-60999 unless changed)."""
    try:
        first = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0, 0
    return 10_000, first


_PORTS_BELOW_EPHEMERAL = _below_ephemeral()  # read once, at import (it may be called on an event loop)


def _kernel_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


@dataclass
class LocalNode:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path


@contextlib.contextmanager
def local_mesh(n: int, logs: Path, slots: int = 1, extra: tuple[str, ...] = ()) -> Iterator[list[LocalNode]]:
    """``n`` node processes joined by --peer to the first; all stopped on the way out."""
    logs.mkdir(parents=True, exist_ok=True)
    mesh = f"demo-{secrets.token_hex(3)}"
    nodes: list[LocalNode] = []

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)  # SIGTERM unwinds like Ctrl-C, so the nodes are stopped below

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        for i in range(n):
            port = free_port_block()
            seed = nodes[0].port if nodes else port
            cmd = [
                sys.executable, "-m", "mesh", "join", "--mesh", mesh, "--bind", "127.0.0.1",
                "--port", str(port), "--peer", f"127.0.0.1:{seed}", "--no-mdns", "--slots", str(slots),
                "--log-level", "info", *extra,
            ]  # fmt: skip
            log = logs / f"node-{i + 1}.log"
            with log.open("wb") as fh:
                proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
            nodes.append(LocalNode(port, proc, log))
        yield nodes
    finally:
        stop(nodes)
        signal.signal(signal.SIGTERM, previous)


def stop(nodes: list[LocalNode]) -> None:
    for nd in nodes:
        if nd.proc.poll() is None:
            nd.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for nd in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            nd.proc.wait(max(0.1, deadline - time.monotonic()))
        if nd.proc.poll() is None:
            nd.proc.kill()
            nd.proc.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(nd.proc.pid, signal.SIGKILL)  # a slot process that outlived its node


async def wait_ready(nodes: list[LocalNode], timeout: float = START_TIMEOUT) -> tuple[Client, Context, Snapshot]:
    """A client connected to the mesh once every node is alive with its slots up."""
    ctx = Context()
    deadline = time.monotonic() + timeout
    client: Client | None = None
    try:
        while True:
            for nd in nodes:
                if nd.proc.poll() is not None:
                    tail = nd.log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                    raise MeshError(f"a demo node exited with code {nd.proc.returncode}: {tail[0]}")
            try:
                if client is None:
                    client = Client(ctx, [("127.0.0.1", nodes[0].port)], find_timeout=2.0)
                    await client.connect()
                snap = await client.snapshot()
                ready = [r for r in snap.nodes if r.alive and r.ready]  # registered with the leader
                if snap.leader and len(ready) == len(nodes):
                    return client, ctx, snap
            except NoMesh:
                if client is not None:
                    client.close()
                    client = None
            if time.monotonic() > deadline:
                raise NoMesh(f"the {len(nodes)} demo nodes did not form a mesh within {timeout:g} s")
            await asyncio.sleep(0.2)
    except BaseException:
        if client is not None:
            client.close()
        ctx.close()
        raise
