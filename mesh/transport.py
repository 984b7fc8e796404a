"""The only module that touches ZeroMQ sockets.

``Router`` (bound) and ``Dealer`` (connected) wrap pyzmq's asyncio sockets: they send a
``Message`` plus its data frames (zero-copy above pyzmq's copy threshold) and receive
decoded messages, dropping and counting anything that fails to decode. A receive
never raises because of what a peer sent.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Sequence
from typing import Any

import zmq
import zmq.asyncio

from . import const, protocol
from .errors import ConfigError, ProtocolError
from .protocol import BadMessages, Message

Blob = Any  # bytes, memoryview or zmq.Frame: anything send_multipart takes


class Context:
    def __init__(self) -> None:
        self.zmq = zmq.asyncio.Context()
        self.bad = BadMessages()

    def router(self) -> Router:
        return Router(self)

    def dealer(self, identity: bytes | None = None) -> Dealer:
        return Dealer(self, identity)

    def pub(self) -> Pub:
        return Pub(self)

    def sub(self) -> Sub:
        return Sub(self)

    def close(self) -> None:
        self.zmq.destroy(linger=const.SOCKET_LINGER)


class _Socket:
    kind = zmq.ROUTER

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sock: zmq.asyncio.Socket = ctx.zmq.socket(self.kind)
        self.sock.setsockopt(zmq.LINGER, const.SOCKET_LINGER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, const.MAX_FRAME_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)

    def close(self) -> None:
        self.sock.close(linger=const.SOCKET_LINGER)

    def _decode(self, peer: str, frames: list[zmq.Frame]) -> tuple[Message, list[zmq.Frame]] | None:
        try:
            msg, blobs = protocol.decode_frames([f.buffer for f in frames])
        except ProtocolError as exc:
            self.ctx.bad.note(peer, exc)
            return None
        return msg, frames[1 : 1 + len(blobs)]


class _Bound(_Socket):
    def bind(self, host: str, port: int) -> int:
        """Bind and return the port (an ephemeral one when ``port`` is 0)."""
        try:
            if port == 0:
                return int(self.sock.bind_to_random_port(f"tcp://{host}", min_port=20000, max_port=60000))
            self.sock.bind(f"tcp://{host}:{port}")
            return port
        except zmq.ZMQError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use: stop the other node or pick --port"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


class Router(_Bound):
    """A bound ROUTER: ``recv()`` -> (peer identity, message, data frames)."""

    kind = zmq.ROUTER

    async def recv(self) -> tuple[bytes, Message, list[zmq.Frame]]:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            if len(frames) < 2:
                continue
            identity = frames[0].bytes
            got = self._decode(identity.hex(), frames[1:])
            if got is not None:
                return identity, got[0], got[1]

    async def send(self, peer: bytes, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        await self.sock.send_multipart([peer, protocol.encode(msg), *blobs], copy=False)


class Dealer(_Socket):
    """A connected DEALER: ``recv()`` -> (message, data frames)."""

    kind = zmq.DEALER

    def __init__(self, ctx: Context, identity: bytes | None = None) -> None:
        super().__init__(ctx)
        if identity:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.peer = ""

    def connect(self, host: str, port: int) -> None:
        self.peer = f"{host}:{port}"
        self.sock.connect(f"tcp://{host}:{port}")

    def disconnect(self) -> None:
        if self.peer:
            self.sock.disconnect(f"tcp://{self.peer}")
            self.peer = ""

    async def recv(self) -> tuple[Message, list[zmq.Frame]]:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            got = self._decode(self.peer, frames)
            if got is not None:
                return got

    async def send(self, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        await self.sock.send_multipart([protocol.encode(msg), *blobs], copy=False)


class Pub(_Bound):
    """The gossip publisher: a bound PUB every peer's SUB connects to. Sends never block:
    a slow subscriber loses heartbeats (the next one supersedes them) rather than stalling."""

    kind = zmq.PUB

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.sock.setsockopt(zmq.SNDHWM, const.GOSSIP_HWM)

    async def send(self, msg: Message) -> None:
        with contextlib.suppress(zmq.Again):
            await self.sock.send(protocol.encode(msg), flags=zmq.NOBLOCK)


class Sub(_Socket):
    """The gossip subscriber: one SUB connected to the PUB of every known peer."""

    kind = zmq.SUB

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.sock.setsockopt(zmq.MAXMSGSIZE, const.MAX_HEADER_BYTES)
        self.sock.setsockopt(zmq.RCVHWM, const.GOSSIP_HWM)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"")
        self.endpoints: set[str] = set()

    def connect(self, host: str, port: int) -> bool:
        """Connect to a peer's PUB; False when already connected."""
        ep = f"tcp://{host}:{port}"
        if ep in self.endpoints:
            return False
        self.sock.connect(ep)
        self.endpoints.add(ep)
        return True

    def disconnect(self, host: str, port: int) -> None:
        ep = f"tcp://{host}:{port}"
        if ep in self.endpoints:
            self.endpoints.discard(ep)
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disconnect(ep)

    async def recv(self) -> Message:
        while True:
            frames = await self.sock.recv_multipart(copy=False)
            got = self._decode("gossip", frames)
            if got is not None:
                return got[0]
