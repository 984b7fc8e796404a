"""A peer that speaks the protocol and lies: forged heartbeats on its own gossip PUB (the nodes
subscribe to it after a Ping that names it), forged Ready on a leader's backend, a flood of idle
connections, a client that never reads its results. Used by tests/test_hostile.py against real node
processes on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any

import zmq

from mesh.wire.protocol import Data, Heartbeat, Ping, Place, Ready, Submit, decode_bundle, encode
from mesh.wire.transport import Context, Dealer


class HostilePeer:
    def __init__(self, mesh: str) -> None:
        self.mesh = mesh
        self.ctx = Context()
        self.pub = self.ctx.pub()
        self.gossip_port = self.pub.bind("127.0.0.1", 0)
        self.dealers: list[Dealer] = []

    async def introduce(self, task_port: int, node_id: str) -> None:
        """Ping a node's task port naming ``node_id`` at our gossip PUB: it subscribes to us."""
        d = self.dealer()
        d.connect("127.0.0.1", task_port)
        await d.send(Ping(0, node_id, "127.0.0.1", self.gossip_port, self.mesh))

    def dealer(self, identity: bytes | None = None) -> Dealer:
        d = self.ctx.dealer(identity=identity)
        self.dealers.append(d)
        return d

    def heartbeat(self, node_id: str, **fields: Any) -> Heartbeat:
        base: dict[str, Any] = {
            "node_id": node_id,
            "incarnation": 1,
            "mesh": self.mesh,
            "host": "127.0.0.1",
            "task_port": 1,
            "gossip_port": self.gossip_port,
            "slots": 1,
            "provider": "cpu",
        }
        return Heartbeat(**{**base, **fields})

    async def gossip(self, beats: list[Heartbeat], seconds: float, every: float = 0.1) -> None:
        """Publish ``beats`` again and again for ``seconds`` (a SUB that connects late gets them)."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            for hb in beats:
                await self.pub.send(hb)
            await asyncio.sleep(every)

    async def ready(self, backend_port: int, identity: bytes, **fields: Any) -> Dealer:
        d = self.dealer(identity)
        d.connect("127.0.0.1", backend_port)
        await d.send(Ready(**fields))
        return d

    def close(self) -> None:
        for d in self.dealers:
            d.close()
        self.pub.close()
        self.ctx.close()


@contextlib.contextmanager
def idle_connections(port: int, n: int) -> Iterator[list[socket.socket]]:
    """``n`` TCP connections to 127.0.0.1:``port`` that never send a byte."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.settimeout(5)
            s.connect(("127.0.0.1", port))
            socks.append(s)
        yield socks
    finally:
        for s in socks:
            s.close()


def unread_results(port: int, n: int, size: int, tick: Callable[[], None]) -> int:
    """A client that reads its places (on one connection, as a real client does) and sends the
    bytes on a second connection whose results it never reads. ``tick`` runs between messages (the
    test samples the node's memory there). Returns the tasks whose bytes it sent."""
    ctx = zmq.Context()
    lead = ctx.socket(zmq.DEALER)
    lead.connect(f"tcp://127.0.0.1:{port}")
    data = ctx.socket(zmq.DEALER)
    for opt, v in ((zmq.RCVHWM, 1), (zmq.RCVBUF, 4096), (zmq.SNDHWM, 0), (zmq.LINGER, 0)):
        data.setsockopt(opt, v)
    lead.setsockopt(zmq.LINGER, 0)
    data.connect(f"tcp://127.0.0.1:{port}")
    image = bytes(size)
    sent = placed = 0
    t0 = last_ping = time.monotonic()
    try:
        while placed < n and time.monotonic() - t0 < 60:
            while sent < n and sent - placed < 64:
                lead.send_multipart([encode(Submit(task_id=f"u{sent:06d}", size=size + 1))])
                sent += 1
            if lead.poll(100):
                for msg in decode_bundle(lead.recv_multipart()[0]):  # a placement pass's Places come as one
                    if isinstance(msg, Place):
                        data.send_multipart([encode(Data(msg.task_id, msg.attempt)), image, b"m"])
                        placed += 1
            if time.monotonic() - last_ping > 1:  # it stays a live client: its tasks are not dropped
                lead.send_multipart([encode(Ping(0))])
                last_ping = time.monotonic()
            tick()
        return placed
    finally:
        lead.close()
        data.close()
        ctx.term()
