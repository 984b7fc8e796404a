"""The only module that touches ZeroMQ sockets.

``Router`` (bound) and ``Dealer`` (connected) wrap pyzmq's asyncio sockets: they send a
``Message`` plus its data frames (zero-copy above pyzmq's copy threshold) and receive
decoded messages, dropping and counting anything that fails to decode. A receive
never raises because of what a peer sent.

The mesh key (``--secret-file``): a CurveZMQ secret key every member holds. With it,
every socket speaks CURVE: bound sockets are CURVE servers with the key pair derived from
it, connecting sockets are clients with the same pair (so they must know the server's
public key, which is never sent anywhere), and a ZAP handler admits a client only if
it proved it holds the mesh secret. A peer without the key fails the handshake before a
single message is read; ``watch_refusals`` logs one line per refused address a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from zmq.utils.monitor import recv_monitor_message

from mesh import const
from mesh.errors import ConfigError, ProtocolError
from mesh.wire import protocol
from mesh.wire.protocol import BadMessages, Message

Blob = Any  # bytes, memoryview or zmq.Frame: anything send_multipart takes
log = logging.getLogger("lamamesh.transport")
# pyzmq's flags are enum.Flag members, and every `|` or `&` on one builds a new member in Python (a few
# microseconds, several times per message on every hop): the hot paths use plain ints
_NOBLOCK, _SNDMORE = int(zmq.NOBLOCK), int(zmq.SNDMORE)
_POLLIN, _POLLOUT = int(zmq.POLLIN), int(zmq.POLLOUT)
KEY_HEADER = "lamamesh mesh key v1"


@dataclass(frozen=True)
class MeshKey:
    public: bytes  # Z85, 40 characters
    secret: bytes  # Z85, 40 characters

    def __repr__(self) -> str:  # never print the secret by accident
        return f"MeshKey(public={self.public.decode()[:8]}...)"


def new_key_text() -> str:
    """The text of a new mesh key file (``lamamesh keygen > mesh.key``)."""
    _, secret = zmq.curve_keypair()
    return f"# {KEY_HEADER}: give this file to every machine of the mesh, and to no one else\n{secret.decode()}\n"


def load_key(path: str | Path) -> MeshKey:
    """Read a key file; every problem is one ``ConfigError`` line."""
    p = Path(path).expanduser()
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"mesh key file {p} does not exist (make one with: lamamesh keygen > {p})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read mesh key file {p}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1 or len(lines[0]) != 40:
        raise ConfigError(f"{p} is not a lamamesh mesh key (make one with: lamamesh keygen > {p})")
    secret = lines[0].encode()
    try:
        public = zmq.curve_public(secret)
    except (zmq.ZMQError, ValueError):
        raise ConfigError(f"{p} is not a lamamesh mesh key (make one with: lamamesh keygen > {p})") from None
    if os.name == "posix" and p.stat().st_mode & 0o077:
        log.warning("mesh key file %s can be read by other users of this machine (chmod 600 %s)", p, p)
    return MeshKey(public, secret)


class _Admit:
    """ZAP credentials provider: only the mesh key's own public key is admitted."""

    def __init__(self, key: MeshKey) -> None:
        self.key = key

    def callback(self, domain: str, client_key: bytes) -> bool:
        return bool(client_key == self.key.public)


class Context:
    def __init__(self, key: MeshKey | None = None, max_frame_bytes: int = const.MAX_FRAME_BYTES) -> None:
        self.zmq = zmq.asyncio.Context()
        self.max_frame_bytes = max_frame_bytes  # a bigger message is dropped by ZeroMQ before it is read
        self.bad = BadMessages()
        self.key = key
        self._auth: Any = None
        self.refused: dict[str, int] = {}  # peer address -> handshakes refused
        self._refused_logged: dict[str, float] = {}
        self.sockets: set[_Socket] = set()  # open, closed before the context is destroyed

    def _start_auth(self) -> None:
        """The ZAP handler, started with the first bound socket (it needs the running loop)."""
        if self.key is None or self._auth is not None:
            return
        from zmq.auth.asyncio import AsyncioAuthenticator

        self._auth = AsyncioAuthenticator(self.zmq)
        self._auth.log.setLevel(logging.WARNING)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=_Admit(self.key))

    def note_refused(self, address: str) -> None:
        """Count a refused handshake; log once per address per ``BAD_MESSAGE_LOG_INTERVAL``."""
        self.refused[address] = self.refused.get(address, 0) + 1
        now = time.monotonic()
        if now - self._refused_logged.get(address, -1e9) >= const.BAD_MESSAGE_LOG_INTERVAL:
            if len(self._refused_logged) >= const.BAD_MESSAGE_SEEN_MAX:
                self._refused_logged.clear()
            self._refused_logged[address] = now
            log.warning(
                "refused a connection from %s: it does not hold this mesh's key (%d so far)",
                address,
                self.refused[address],
            )

    def router(self, sndhwm: int = const.ROUTER_SNDHWM) -> Router:
        return Router(self, sndhwm)

    def dealer(self, identity: bytes | None = None) -> Dealer:
        return Dealer(self, identity)

    def pub(self) -> Pub:
        return Pub(self)

    def sub(self) -> Sub:
        return Sub(self)

    def close(self) -> None:
        for sock in list(self.sockets):
            sock.close()
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        self.zmq.destroy(linger=const.SOCKET_LINGER)


class _Socket:
    """A blocking-API ZeroMQ socket driven by the asyncio loop.

    Every send and receive is tried at once without waiting (``NOBLOCK``): under load a
    message is nearly always there, so no Future is made per message. Only when a receive
    finds nothing (or a send would block) does the caller wait on a Future that the loop
    resolves when ZeroMQ's file descriptor signals. That descriptor only says *something
    changed* (ZeroMQ's edge semantics): after arming a wait the socket's EVENTS are read
    again, and after every send or receive, which can consume the signal another waiter on
    this socket needs, the waiters whose event is ready are woken. (pyzmq's own asyncio socket
    does the same with a Future, a poller update and a scheduled callback per call; this is
    the part of each task's cost that the leader pays four times.)"""

    kind = zmq.ROUTER

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.sock: zmq.Socket[bytes] = zmq.Socket(ctx.zmq, self.kind)
        ctx.sockets.add(self)
        self.sock.setsockopt(zmq.LINGER, const.SOCKET_LINGER)
        self.sock.setsockopt(zmq.MAXMSGSIZE, ctx.max_frame_bytes + const.MAX_HEADER_BYTES)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        if ctx.key is not None:
            self.sock.curve_publickey = ctx.key.public
            self.sock.curve_secretkey = ctx.key.secret
            if isinstance(self, _Bound):
                self.sock.curve_server = True
            else:
                self.sock.curve_serverkey = ctx.key.public
        self._loop: asyncio.AbstractEventLoop | None = None
        self._fd = -1
        self._readers: list[asyncio.Future[None]] = []
        self._writers: list[asyncio.Future[None]] = []
        self._held: deque[tuple[Message, list[Any]]] = deque()  # the rest of a bundle read (see _decode)

    def close(self, linger: int = const.SOCKET_LINGER) -> None:
        self.ctx.sockets.discard(self)
        if self.sock.closed:
            return
        if self._loop is not None:
            with contextlib.suppress(Exception):  # the loop may be closed already
                self._loop.remove_reader(self._fd)
            self._loop = None
        for fut in (*self._readers, *self._writers):
            if not fut.done():
                fut.cancel()
        self.sock.close(linger=linger)

    # ---- the loop integration ---------------------------------------------------------------
    def _events(self) -> int:
        return int(self.sock.getsockopt(zmq.EVENTS))  # the option as its enum member: pyzmq looks an int up

    def _on_fd(self) -> None:
        if not self.sock.closed:
            self._wake(self._events())

    def _wake(self, events: int) -> None:
        for waiters, bit in ((self._readers, _POLLIN), (self._writers, _POLLOUT)):
            if waiters and events & bit:
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
                waiters.clear()

    def _after_io(self) -> None:
        if self._readers or self._writers:
            self._wake(self._events())

    def _watch(self) -> asyncio.AbstractEventLoop:
        """The running loop, watching this socket's ZeroMQ FD (registered on the first wait, or again
        when the socket moved to another loop: a new ``asyncio.run``)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(self._fd)
            self._loop = loop
            self._fd = int(self.sock.getsockopt(zmq.FD))
            loop.add_reader(self._fd, self._on_fd)
        return loop

    async def _wait(self, waiters: list[asyncio.Future[None]], bit: int) -> None:
        loop = self._watch()
        fut: asyncio.Future[None] = loop.create_future()
        waiters.append(fut)
        try:
            if self._events() & bit:  # ready already: the signal may have gone to an earlier call
                return
            await fut
        finally:
            if fut in waiters:
                waiters.remove(fut)

    async def _recv_frames(self) -> list[zmq.Frame]:
        while True:
            frames = self._recv_ready()
            if frames is None:
                await self._wait(self._readers, _POLLIN)
                continue
            return frames

    def _recv_ready(self) -> list[zmq.Frame] | None:
        """The next message if one is here, else None. Asks ZeroMQ first (a plain int) rather than
        trying a read: an empty socket's ``Again`` costs an exception object per look, and a client
        looks at every worker it uses for each message it reads. The parts are read while a frame says
        more follows (``recv_multipart`` asks the socket for ``RCVMORE`` after each, an option call and
        an enum: 16.5 -> 11.0 us for a 3-part message here)."""
        if not self._events() & _POLLIN:
            return None
        recv = self.sock.recv
        try:
            frame = recv(_NOBLOCK, copy=False)
        except zmq.Again:
            return None
        frames = [frame]
        while frame.more:  # a multipart message is here whole: the rest cannot raise Again
            frame = recv(_NOBLOCK, copy=False)
            frames.append(frame)
        self._after_io()
        return frames

    async def _send_frames(self, parts: Sequence[Blob], flags: int = 0) -> None:
        while True:
            try:
                self._send_parts(parts, flags)
            except zmq.Again:
                await self._wait(self._writers, _POLLOUT)
                continue
            self._after_io()
            return

    async def _send_bundles(self, head: list[Blob], msgs: Sequence[Message]) -> None:
        """``msgs`` (no data frames) as bundles of ``BUNDLE_MAX``, each after ``head`` (a ROUTER's peer)."""
        for i in range(0, len(msgs), const.BUNDLE_MAX):
            await self._send_frames([*head, protocol.encode_bundle(msgs[i : i + const.BUNDLE_MAX])])

    def _send_parts(self, parts: Sequence[Blob], flags: int) -> None:
        """``send_multipart(parts, NOBLOCK | flags, copy=False)`` without its per-part flag arithmetic.
        ZeroMQ takes a multipart message whole or not at all: only the first part can raise ``Again``."""
        send, last = self.sock.send, len(parts) - 1
        more = _NOBLOCK | _SNDMORE | int(flags)
        for i, part in enumerate(parts):
            send(part, more if i < last else _NOBLOCK | int(flags), copy=False)

    def _decode(self, peer: str, frames: list[zmq.Frame]) -> tuple[Message, list[zmq.Frame]] | None:
        """The message in ``frames``; a bundle's first message, the rest kept in ``_held`` (read next)."""
        try:
            got = protocol.decode_frames([f.buffer for f in frames], self.ctx.max_frame_bytes)
        except ProtocolError as exc:
            self.ctx.bad.note(peer, exc)
            return None
        if len(got) > 1:  # the data frames are the last message's: held as frames, as a lone message's are
            self._held.extend(got[1:-1])
            self._held.append((got[-1][0], frames[1 : 1 + len(got[-1][1])]))
        msg, blobs = got[0]
        return msg, frames[1 : 1 + len(blobs)]


class _Bound(_Socket):
    def bind(self, host: str, port: int) -> int:
        """Bind and return the port (an ephemeral one when ``port`` is 0)."""
        self.ctx._start_auth()
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

    async def watch_refusals(self) -> None:
        """With a mesh key: log peers whose handshake failed (no key, another key, no CURVE)."""
        if self.ctx.key is None:
            return
        failed = zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
        failed |= zmq.EVENT_HANDSHAKE_FAILED_AUTH
        endpoint = f"inproc://lamamesh-monitor-{id(self):x}"
        self.sock.monitor(endpoint, failed | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED)
        mon = self.ctx.zmq.socket(zmq.PAIR)
        mon.connect(endpoint)
        # a refused peer shows as ACCEPTED(fd), HANDSHAKE_FAILED(errno) and DISCONNECTED(fd), the last
        # two in either order: the address is read from the fd when accepted and charged when a
        # failure and a disconnect meet (best effort: the count is exact, the address nearly always)
        peers: dict[int, str] = {}
        failures = 0
        gone: tuple[str, float] | None = None  # last disconnect not yet matched with a failure
        try:
            while True:
                ev = await recv_monitor_message(mon)
                value = int(ev.get("value", -1))
                now = time.monotonic()
                if ev["event"] == zmq.EVENT_ACCEPTED:
                    if len(peers) > 4096:
                        peers.clear()
                    peers[value] = _peer_host(value)
                elif ev["event"] == zmq.EVENT_DISCONNECTED:
                    host = peers.pop(value, "") or "an unknown address"
                    if failures:
                        failures -= 1
                        self.ctx.note_refused(host)
                    else:
                        gone = (host, now)
                elif gone is not None and now - gone[1] < 1.0:
                    self.ctx.note_refused(gone[0])
                    gone = None
                else:
                    failures += 1
        finally:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disable_monitor()
            mon.close(linger=0)


def _peer_host(fd: int) -> str:
    """The remote host of an accepted connection's file descriptor (read through a dup)."""
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            return str(s.getpeername()[0])
    except OSError:
        return ""


class Router(_Bound):
    """A bound ROUTER: ``recv()`` -> (peer identity, message, data frames). At most
    ``sndhwm`` messages wait for one peer; past that ZeroMQ drops what is sent to it (a peer that
    never reads cannot grow the node's memory; a live client's resend recovers a lost answer)."""

    kind = zmq.ROUTER

    def __init__(self, ctx: Context, sndhwm: int = const.ROUTER_SNDHWM) -> None:
        super().__init__(ctx)
        self.sock.setsockopt(zmq.SNDHWM, sndhwm)
        self._from = b""  # the peer whose bundle's rest is held

    async def recv(self) -> tuple[bytes, Message, list[zmq.Frame]]:
        if self._held:
            return self._held_routed()
        while True:
            got = self._routed(await self._recv_frames())
            if got is not None:
                return got

    def recv_now(self) -> tuple[bytes, Message, list[zmq.Frame]] | None:
        """A message already here, or None (never waits)."""
        if self._held:
            return self._held_routed()
        while (frames := self._recv_ready()) is not None:
            got = self._routed(frames)
            if got is not None:
                return got
        return None

    def _routed(self, frames: list[zmq.Frame]) -> tuple[bytes, Message, list[zmq.Frame]] | None:
        """(peer identity, message, data frames), or None for a message to drop."""
        if len(frames) < 2:
            return None
        identity = frames[0].bytes
        got = self._decode(identity.hex(), frames[1:])
        if got is None:
            return None
        self._from = identity  # whose the held rest of a bundle is
        return identity, got[0], got[1]

    def _held_routed(self) -> tuple[bytes, Message, list[zmq.Frame]]:
        msg, blobs = self._held.popleft()
        return self._from, msg, blobs

    async def send(self, peer: bytes, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        await self._send_frames([peer, protocol.encode(msg), *blobs])

    async def send_bundle(self, peer: bytes, msgs: Sequence[Message], blobs: Sequence[Blob] = ()) -> None:
        """Messages without data frames to ``peer``, ``BUNDLE_MAX`` to a ZeroMQ message. With ``blobs``:
        one ZeroMQ message, ``BUNDLE_MAX`` messages at most, the frames the last one's."""
        if blobs:
            await self._send_frames([peer, protocol.encode_bundle(msgs), *blobs])
        else:
            await self._send_bundles([peer], msgs)


class Dealer(_Socket):
    """A connected DEALER: ``recv()`` -> (message, data frames)."""

    def send_now(self, msg: Message) -> bool:
        """Queue ``msg`` without waiting (for a caller that is closing, maybe outside the loop);
        False when ZeroMQ cannot take it now."""
        try:
            self.sock.send(protocol.encode(msg), zmq.NOBLOCK)
        except zmq.ZMQError:
            return False
        return True

    kind = zmq.DEALER

    def __init__(self, ctx: Context, identity: bytes | None = None) -> None:
        super().__init__(ctx)
        if identity:
            self.sock.setsockopt(zmq.IDENTITY, identity)
        self.peer = ""
        self._endpoint = ""

    def connect(self, host: str, port: int) -> None:
        self.connect_endpoint(f"tcp://{host}:{port}")

    def connect_endpoint(self, endpoint: str) -> None:
        """Connect to a ZeroMQ endpoint (``tcp://host:port`` or an ``inproc://`` name)."""
        self.peer = endpoint.removeprefix("tcp://")
        self._endpoint = endpoint
        self.sock.connect(endpoint)

    def disconnect(self) -> None:
        if self.peer:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disconnect(self._endpoint)
            self.peer = ""

    async def recv(self) -> tuple[Message, list[zmq.Frame]]:
        if (held := self.held_now()) is not None:
            return held
        while True:
            got = self._decode(self.peer, await self._recv_frames())
            if got is not None:
                return got

    def held_now(self) -> tuple[Message, list[zmq.Frame]] | None:
        """The next message of the bundle read last, or None: reads nothing from the socket."""
        return self._held.popleft() if self._held else None

    def recv_now(self) -> tuple[Message, list[zmq.Frame]] | None:
        """A message already here, or None (never waits)."""
        if (held := self.held_now()) is not None:
            return held
        while True:
            frames = self._recv_ready()
            if frames is None:
                return None
            got = self._decode(self.peer, frames)
            if got is not None:
                return got

    async def send(self, msg: Message, blobs: Sequence[Blob] = ()) -> None:
        await self._send_frames([protocol.encode(msg), *blobs])

    async def send_bundle(self, msgs: Sequence[Message]) -> None:
        """Messages without data frames, ``BUNDLE_MAX`` to a ZeroMQ message."""
        await self._send_bundles([], msgs)


class Pub(_Bound):
    """The gossip publisher: a bound PUB every peer's SUB connects to. Sends never block:
    a slow subscriber loses heartbeats (the next one supersedes them) rather than stalling."""

    kind = zmq.PUB

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.sock.setsockopt(zmq.SNDHWM, const.GOSSIP_HWM)

    async def send(self, msg: Message) -> None:
        try:
            self.sock.send(protocol.encode(msg), zmq.NOBLOCK)
        except zmq.Again:
            return
        self._after_io()


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
            frames = await self._recv_frames()
            got = self._decode("gossip", frames)
            self._held.clear()  # gossip is one heartbeat per message: a bundle there is no peer's
            if got is not None:
                return got[0]


async def recv_any(
    socks: Sequence[Dealer], timeout: float, start: int = 0
) -> tuple[Dealer, Message, list[zmq.Frame]] | None:
    """The first message waiting on any of ``socks`` (looked at from ``start``, so a busy socket
    cannot starve the others), waiting ``timeout`` s at most for one; None when none came. A wait
    cut short loses nothing (the sockets' waits take a signal, never a message)."""
    n = len(socks)
    for k in range(n):
        s = socks[(start + k) % n]
        got = s.recv_now()
        if got is not None:
            return s, got[0], got[1]
    if timeout <= 0 or not n:
        return None
    # one future in every socket's waiter list (its FD callback resolves it), not a task per socket
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()
    for s in socks:
        s._watch()
        s._readers.append(fut)

    def expire() -> None:
        if not fut.done():
            fut.set_result(None)

    timer = loop.call_later(timeout, expire)
    try:
        # the FD is edge-triggered: a message that came after recv_now looked may have signalled already
        if not any(s._events() & _POLLIN for s in socks):
            await fut
    finally:
        timer.cancel()
        for s in socks:
            if fut in s._readers:
                s._readers.remove(fut)
    for k in range(n):
        s = socks[(start + k) % n]
        got = s.recv_now()
        if got is not None:
            return s, got[0], got[1]
    return None
