"""Real node processes on 127.0.0.1 for tests and benchmarks: start, find, kill, always clean up."""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mesh.surface.demo import free_port_block


def png(arr: np.ndarray) -> bytes:
    """An array as PNG bytes (test and benchmark inputs)."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def wait_until(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@dataclass
class NodeProc:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the node; with SIGKILL its slot processes die with it (they watch their pipe)."""
        if self.alive:
            self.proc.send_signal(sig)

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Cluster:
    root: Path
    extra: Sequence[str] = ()
    env: dict[str, str] = field(default_factory=dict)
    nodes: list[NodeProc] = field(default_factory=list)
    # a mesh name of its own, as `lamamesh demo` has: a node of another test can never join this one
    name: str = field(default_factory=lambda: f"test-{secrets.token_hex(3)}")

    def _spawn(self, port: int, seed: int, args: Sequence[str], mode: str = "wb") -> subprocess.Popen[bytes]:
        log = self.root / f"node-{port}.log"
        cmd = [
            sys.executable, "-m", "mesh", "join", "--mesh", self.name, "--bind", "127.0.0.1", "--port", str(port),
            "--peer", f"127.0.0.1:{seed}", "--no-mdns", "--log-level", "info", *self.extra, *args,
        ]  # fmt: skip
        env = {**os.environ, "LAMAMESH_HOME": str(self.root / "home"), **self.env}
        with log.open(mode) as fh:
            return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def start(self, n: int = 1, peer: int | None = None, args: Sequence[str] = ()) -> list[NodeProc]:
        started = []
        for _ in range(n):
            port = free_port_block()
            seed = peer or (self.nodes[0].port if self.nodes else port)
            node = NodeProc(port, self._spawn(port, seed, args), self.root / f"node-{port}.log")
            self.nodes.append(node)
            started.append(node)
        return started

    def restart(self, node: NodeProc, args: Sequence[str] = ()) -> NodeProc:
        """A new node process on the port of ``node`` (which must have exited); its log goes on."""
        seed = next((n.port for n in self.nodes if n.alive and n is not node), node.port)
        node.proc = self._spawn(node.port, seed, args, "ab")
        return node

    def by_port(self, port: int) -> NodeProc:
        return next(n for n in self.nodes if n.port == port)

    def close(self) -> None:
        for n in self.nodes:
            if n.alive:
                n.proc.send_signal(signal.SIGKILL)
        for n in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(10)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(n.proc.pid, signal.SIGKILL)  # its slot processes, if any outlived it


@contextlib.contextmanager
def cluster(root: Path, extra: Sequence[str] = (), env: dict[str, str] | None = None) -> Iterator[Cluster]:
    root.mkdir(parents=True, exist_ok=True)
    c = Cluster(root, extra, env or {})
    try:
        yield c
    finally:
        c.close()


def status(port: int) -> dict[str, Any]:
    """`lamamesh status --json` through the node at ``port`` ({} when it does not answer)."""
    p = subprocess.run(
        [sys.executable, "-m", "mesh", "status", "--json", "--peer", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return json.loads(p.stdout) if p.returncode == 0 else {}  # type: ignore[no-any-return]


class NodeExited(AssertionError):
    """A node process of the cluster ended while the test waited for it."""


def wait_mesh(c: Cluster, n: int, timeout: float = 90) -> dict[str, Any]:
    """Wait until a leader is elected and ``n`` nodes are alive with their slots up (registered with it).

    Fails at once when a node process has exited, and on a timeout says what the mesh last looked like
    and how each node's log ends (a flaky start must say why)."""
    seen: dict[str, Any] = {}

    def ok() -> dict[str, Any]:
        nonlocal seen
        dead = [nd for nd in c.nodes if not nd.alive and nd.proc.returncode not in (None, -signal.SIGKILL)]
        if dead:
            raise NodeExited(f"node {dead[0].port} exited ({dead[0].proc.returncode}):\n{_tail(dead[0])}")
        s = status(c.nodes[0].port)
        seen = s or seen
        ready = [x for x in s.get("nodes", []) if x["alive"] and x.get("ready")]
        return s if s.get("leader") and len(ready) == n else {}

    try:
        got: dict[str, Any] = wait_until(ok, timeout, f"{n} nodes registered with a leader")
    except NodeExited:
        raise
    except AssertionError as e:
        rows = [(x.get("port"), x.get("role"), x.get("alive"), x.get("ready")) for x in seen.get("nodes", [])]
        logs = "\n".join(f"--- node {nd.port} (alive {nd.alive}):\n{_tail(nd)}" for nd in c.nodes)
        raise AssertionError(f"{e}; last status: leader {seen.get('leader')!r}, nodes {rows}\n{logs}") from None
    return got


def _tail(node: NodeProc, lines: int = 15) -> str:
    return "\n".join(node.text().splitlines()[-lines:])
