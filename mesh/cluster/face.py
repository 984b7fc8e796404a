"""What a surface (HTTP, metrics) may see of a running node: a narrow typed interface.

Surfaces never read a node's private attributes; they hold a ``NodeFace`` and get frozen
records from it. ``cluster.node.Node`` implements it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from mesh.wire.transport import Context

TaskObserver = Callable[[str, bool, float], None]  # (model, ok, ms in the slot), per finished task


@dataclass(frozen=True, kw_only=True)
class Health:
    """This node's state and the mesh in one record (``GET /health``)."""

    status: str  # ok | starting | leaving
    node: str
    mesh: str
    role: str  # leader | worker
    leader: str
    term: int
    nodes: int
    slots: int
    busy: int
    provider: str


@dataclass(frozen=True, kw_only=True)
class Counters:
    """The node's live figures at one instant (``GET /metrics``)."""

    tasks: Mapping[str, int]  # finished by this node's slots, by outcome
    answered: Mapping[str, int]  # answered while this node led, by outcome
    alive: int
    dead: int
    term: int
    leading: bool
    queue_depth: int
    slots: int
    slots_busy: int
    mesh_slots: int
    dropped: Mapping[str, int]  # by reason
    rate: float  # tasks/s over the last minute


class NodeFace(Protocol):
    @property
    def context(self) -> Context: ...

    @property
    def task_address(self) -> tuple[str, int]: ...

    @property
    def dead_timeout(self) -> float: ...

    def health(self) -> Health: ...

    def counters(self) -> Counters | None: ...

    def observe_tasks(self, observer: TaskObserver) -> None: ...


class Service(Protocol):
    """Something a node runs beside the mesh for as long as it runs (the HTTP API)."""

    def start(self) -> Awaitable[object]: ...

    def close(self) -> Awaitable[None]: ...
