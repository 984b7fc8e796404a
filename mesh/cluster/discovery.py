"""Discovery over mDNS: the only module that imports zeroconf.

A node advertises ``<node id>._lamamesh._tcp.local.`` with its task port as the service
port and a TXT record of node id, mesh name, protocol version, gossip port and task port
(never a key). It browses the same type and reports every peer of its mesh through
``on_found``; a goodbye (the peer unregistered on leave) through ``on_gone``. Peers of
another mesh are ignored; a peer speaking another protocol version is refused with one
log line naming both versions. The node binds its sockets before it advertises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zeroconf import IPVersion, ServiceStateChange, Zeroconf
from zeroconf.asyncio import AsyncServiceBrowser, AsyncServiceInfo, AsyncZeroconf

from mesh import const

log = logging.getLogger("lamamesh.discovery")
REQUEST_TIMEOUT_MS = 2000  # ms to wait for a found service's records


@dataclass(frozen=True)
class Found:
    node_id: str
    mesh: str
    hosts: tuple[str, ...]  # IPv4 addresses it advertised
    task_port: int
    gossip_port: int


def _text(props: dict[Any, Any], key: str) -> str:
    raw = props.get(key.encode(), b"")
    return raw.decode(errors="replace") if isinstance(raw, bytes) else ""


def _int(props: dict[Any, Any], key: str) -> int:
    value = _text(props, key)
    return int(value) if value.isdigit() else 0


class Discovery:
    """Advertise this node (if ``node_id`` is set) and browse for peers of ``mesh``."""

    def __init__(
        self,
        mesh: str,
        on_found: Callable[[Found], None],
        on_gone: Callable[[str], None] | None = None,
        interface: str = "",
    ) -> None:
        self.mesh = mesh
        self.on_found = on_found
        self.on_gone = on_gone
        self.interface = interface  # "" = every interface
        self.azc: AsyncZeroconf | None = None
        self.browser: AsyncServiceBrowser | None = None
        self.info: AsyncServiceInfo | None = None
        self.names: dict[str, str] = {}  # service name -> node id
        self._refused: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        interfaces: Any = [self.interface] if self.interface else None
        kwargs: dict[str, Any] = {"ip_version": IPVersion.V4Only}
        if interfaces:
            kwargs["interfaces"] = interfaces
        self.azc = AsyncZeroconf(**kwargs)
        self.browser = AsyncServiceBrowser(self.azc.zeroconf, const.MDNS_SERVICE, handlers=[self._on_change])

    async def advertise(self, node_id: str, hosts: list[str], task_port: int, gossip_port: int) -> None:
        assert self.azc is not None
        self.info = AsyncServiceInfo(
            const.MDNS_SERVICE,
            f"{node_id}.{const.MDNS_SERVICE}",
            port=task_port,
            properties={
                "id": node_id,
                "mesh": self.mesh,
                "v": str(const.PROTOCOL_VERSION),
                "gp": str(gossip_port),
                "tp": str(task_port),
            },
            server=f"{node_id}.local.",
            addresses=[socket.inet_aton(h) for h in hosts],
        )
        await self.azc.async_register_service(self.info, allow_name_change=False)
        log.info("advertising %s on mDNS at %s (task port %d)", node_id, ", ".join(hosts), task_port)

    def _on_change(self, zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange) -> None:
        if state_change is ServiceStateChange.Removed:
            node_id = self.names.pop(name, "")
            if node_id and self.on_gone is not None:
                self.on_gone(node_id)
            return
        t = asyncio.get_running_loop().create_task(self._resolve(service_type, name))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _resolve(self, service_type: str, name: str) -> None:
        if self.azc is None:
            return
        info = AsyncServiceInfo(service_type, name)
        try:
            if not await info.async_request(self.azc.zeroconf, REQUEST_TIMEOUT_MS):
                return
        except Exception as exc:  # a malformed record from the network must not stop discovery
            log.debug("could not resolve %s: %s", name, exc)
            return
        props = info.properties or {}
        version, mesh, node_id = _text(props, "v"), _text(props, "mesh"), _text(props, "id")
        if not node_id or (self.info is not None and name == self.info.name):
            return
        if mesh != self.mesh:
            return
        if version != str(const.PROTOCOL_VERSION):
            if name not in self._refused:
                self._refused.add(name)
                log.warning(
                    "refused peer %s: it speaks protocol version %s, this node speaks version %d",
                    node_id,
                    version or "?",
                    const.PROTOCOL_VERSION,
                )
            return
        hosts = tuple(a for a in info.parsed_addresses(IPVersion.V4Only))
        gossip, task = _int(props, "gp"), _int(props, "tp") or (info.port or 0)
        if not hosts or not gossip or not task:
            return
        self.names[name] = node_id
        self.on_found(Found(node_id, mesh, hosts, task, gossip))

    async def close(self) -> None:
        """Say goodbye (unregister) and stop browsing; bounded."""
        for t in list(self._tasks):
            t.cancel()
        if self.azc is None:
            return
        with contextlib.suppress(Exception, TimeoutError):
            async with asyncio.timeout(3):
                if self.browser is not None:
                    await self.browser.async_cancel()
                if self.info is not None:
                    await self.azc.async_unregister_service(self.info)
                await self.azc.async_close()
        self.azc = None


async def browse(mesh: str, seconds: float, interface: str = "") -> list[Found]:
    """Look for nodes of ``mesh`` for ``seconds`` (a client with no --peer)."""
    found: dict[str, Found] = {}
    got = asyncio.Event()

    def on_found(f: Found) -> None:
        found[f.node_id] = f
        got.set()

    d = Discovery(mesh, on_found, interface=interface)
    try:
        await d.start()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await got.wait()
                await asyncio.sleep(0.2)  # let the other nodes' answers to the same query arrive
    finally:
        await d.close()
    return list(found.values())
