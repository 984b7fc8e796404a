"""Hostile input for a live node's sockets (used by tests/test_fuzz.py and bench/fuzz.py).

``frames()`` is a hypothesis strategy for one multipart message: random bytes, truncated
and version-bumped encodings of real messages, valid msgpack of the wrong shape, msgpack
that claims huge lengths, real messages with absurd field values, bundles of them, and frames
out of order.
``Fuzzer`` sends them with raw pyzmq sockets (the package's transport would refuse to) to
a node's task ROUTER, its worker ROUTER and, through a PUB the node subscribes to, its
gossip input.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing as mp
import time
import typing
from collections import Counter
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mesh import const
from mesh.surface.client import Client, Job
from mesh.wire import protocol
from mesh.wire.protocol import MESSAGES, Ping
from mesh.wire.transport import Context

from .cluster import cluster, png, status, wait_mesh, wait_until

ints = st.one_of(st.integers(-(2**63), 2**64 - 1), st.sampled_from([0, -1, 1, 2**31, 2**53, 10**12]))
values = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(),
    st.text(max_size=30),
    st.binary(max_size=30),
    st.lists(ints, max_size=5),
    st.dictionaries(st.text(max_size=5), ints, max_size=5),
)


@st.composite
def real_message(draw: st.DrawFn) -> dict[str, Any]:
    """A message of a real type with every field drawn from anything (so often the wrong type)."""
    cls = draw(st.sampled_from(sorted(MESSAGES.values(), key=lambda c: c.t)))
    body: dict[str, Any] = {"v": const.PROTOCOL_VERSION, "t": cls.t}
    for f in dataclasses.fields(cls):
        if draw(st.booleans()):
            hint = typing.get_type_hints(cls)[f.name]
            body[f.name] = draw(ints if hint is int else st.text(max_size=20) if hint is str else values)
    return body


def packed(body: Any) -> bytes:
    return bytes(msgpack.packb(body, use_bin_type=True))


@st.composite
def header(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 7))
    if kind == 0:
        return draw(st.binary(max_size=200))  # random bytes
    if kind == 1:
        full = packed(draw(real_message()))
        return full[: draw(st.integers(0, max(0, len(full) - 1)))]  # truncated
    if kind == 2:
        body = draw(real_message())
        body["v"] = draw(st.one_of(st.integers(-5, 99), st.text(max_size=3), st.none()))  # wrong version
        return packed(body)
    if kind == 3:  # valid msgpack, wrong shape
        keys = st.one_of(st.text(max_size=8), ints, st.none())
        return packed(draw(st.one_of(values, st.lists(values, max_size=4), st.dictionaries(keys, values, max_size=6))))
    if kind == 4:  # claims a huge length: str32 / bin32 / array32 / map32 headers with little behind them
        return draw(st.sampled_from([b"\xdb", b"\xc6", b"\xdd", b"\xdf"])) + b"\xff\xff\xff\xf0" + b"x" * 8
    if kind == 5:  # a real message type with absurd values
        return packed(draw(real_message()))
    if kind == 6:  # a bundle (protocol v5): real message types with absurd values, any count, maybe nested
        items = st.one_of(real_message(), values, st.lists(real_message(), max_size=2))
        return packed(draw(st.lists(items, max_size=const.BUNDLE_MAX + 2)))
    return protocol.encode(Ping(draw(st.integers(0, 2**31))))  # a valid one, so real paths run too


@st.composite
def frames(draw: st.DrawFn) -> list[bytes]:
    """One multipart message: a header among data frames, sometimes out of order or too many."""
    head = draw(header())
    blobs = draw(st.lists(st.binary(max_size=64), max_size=const.MAX_FRAMES + 1))
    at = draw(st.integers(0, len(blobs)))  # 0: in order; else data frames come first
    return [*blobs[:at], head, *blobs[at:]] if at else [head, *blobs]


class Fuzzer:
    """Raw sockets aimed at one node: its task and worker ROUTERs and its gossip input."""

    def __init__(self, host: str, task_port: int, backend_port: int, mesh: str) -> None:
        self.ctx = zmq.Context()
        self.front = self.ctx.socket(zmq.DEALER)
        self.back = self.ctx.socket(zmq.DEALER)
        self.pub = self.ctx.socket(zmq.PUB)
        for s in (self.front, self.back, self.pub):
            s.setsockopt(zmq.LINGER, 0)
            s.setsockopt(zmq.SNDHWM, 100_000)
        self.front.connect(f"tcp://{host}:{task_port}")
        self.back.connect(f"tcp://{host}:{backend_port}")
        self.gossip_port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        # a Ping carrying our gossip endpoint makes the node subscribe to our PUB
        self.front.send(protocol.encode(Ping(1, "fuzzer-node", "127.0.0.1", self.gossip_port, mesh)))
        self.sent: Counter[str] = Counter()

    def send(self, target: str, msg: list[bytes]) -> None:
        sock = {"front": self.front, "back": self.back, "gossip": self.pub}[target]
        try:
            sock.send_multipart(msg, flags=zmq.NOBLOCK)
            self.sent[target] += 1
        except zmq.Again:
            pass

    def drain(self) -> int:
        """Read (and drop) whatever the node answered; returns how many messages."""
        n = 0
        for s in (self.front, self.back):
            while s.poll(0):
                s.recv_multipart()
                n += 1
        return n

    def close(self) -> None:
        self.ctx.destroy(linger=0)


class RealTasks:
    """Real tasks, one after another, through the node while it is fuzzed. A separate process
    (spawned), so the fuzzer's tight loop in this process cannot starve its event loop of the GIL."""

    def __init__(self, port: int) -> None:
        ctx = mp.get_context("spawn")
        self._ok = ctx.Value("i", 0)
        self._failed = ctx.Queue()
        self.stop = ctx.Event()
        self.proc = ctx.Process(target=_real_tasks, args=(port, self._ok, self._failed, self.stop), name="real-tasks")
        self.failed: list[str] = []

    @property
    def ok(self) -> int:
        return int(self._ok.value)

    def start(self) -> None:
        self.proc.start()

    def join(self, timeout: float) -> None:
        self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        while not self._failed.empty():
            self.failed.append(self._failed.get())


def _real_tasks(port: int, ok: Any, failed: Any, stop: Any) -> None:
    async def main() -> None:
        ctx = Context()
        client = Client(ctx, [("127.0.0.1", port)])
        rng = np.random.default_rng(5)
        mask = np.zeros((48, 64), np.uint8)
        mask[10:30, 20:40] = 255
        try:
            await client.connect()
            while not stop.is_set():
                job = Job(png((rng.random((48, 64, 3)) * 255).astype(np.uint8)), png(mask))
                (r,) = await client.run([job], timeout=60)
                if r.ok:
                    with ok.get_lock():
                        ok.value += 1
                else:
                    failed.put(r.error)
        finally:
            client.close()
            ctx.close()

    asyncio.run(main())


def fuzz_node(root: Path, examples: int) -> dict[str, Any]:
    """Start one node (real model, 1 slot), run real tasks through it one after another, and send it
    ``examples`` hostile messages spread over its sockets; returns the figures."""
    started = time.monotonic()
    with cluster(root, extra=["--slots", "1", "--device", "cpu"]) as c:
        (node,) = c.start(1)
        wait_mesh(c, 1)
        tasks = RealTasks(node.port)
        tasks.start()
        fz = Fuzzer("127.0.0.1", node.port, node.port + 1, c.name)  # --port P: the worker ROUTER is P+1
        try:
            wait_until(lambda: tasks.ok >= 3, 30, "real tasks to flow")
            ok_before = tasks.ok

            @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
            @given(frames(), st.sampled_from(["front", "back", "gossip"]))
            def blast(msg: list[bytes], target: str) -> None:
                fz.send(target, msg)
                fz.drain()

            blast()
            during = tasks.ok - ok_before
            after = tasks.ok
            wait_until(lambda: tasks.ok >= after + 5, 60, "real tasks to go on after the fuzzing")
        finally:
            tasks.stop.set()
            tasks.join(90)
            fz.close()
        dropped = wait_until(lambda: status(node.port)["nodes"][0]["dropped"], 10, "the drop counter")
        return {
            "messages_sent": sum(fz.sent.values()),
            "by_socket": dict(fz.sent),
            "dropped_by_node": dropped,
            "real_tasks_ok": tasks.ok,
            "real_tasks_ok_while_fuzzing": during,
            "real_tasks_failed": len(tasks.failed),
            "failures": tasks.failed[:5],
            "node_alive": node.alive,
            "traceback_in_log": "Traceback" in node.text(),
            "seconds": round(time.monotonic() - started, 1),
        }
