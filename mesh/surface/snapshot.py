"""One immutable picture of the mesh, built from a node's ``Status`` answer (its rows are
``NodeRow``s, the type the node builds them with, from ``wire/protocol.py``).

Every surface shows the same snapshot: ``lamamesh status`` (the live screen renders one
per refresh), ``status --json``, ``GET /api/v1/status`` and ``GET /health``. The status
answer comes from the network, so building a snapshot never trusts its shape: a field of
the wrong type reads as empty, never as a crash.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from mesh.kinds import Role
from mesh.wire.protocol import NodeRow, Status, as_float, as_str


@dataclass(frozen=True)
class Outcome:
    at: float  # unix time
    task: str
    node: str
    outcome: str  # ok or an error code
    ms: float
    error: str

    @classmethod
    def parse(cls, d: dict[str, Any]) -> Outcome:
        return cls(
            as_float(d, "at"),
            as_str(d, "task"),
            as_str(d, "node"),
            as_str(d, "outcome"),
            as_float(d, "ms"),
            as_str(d, "error"),
        )


@dataclass(frozen=True)
class Totals:
    nodes: int  # alive
    slots: int
    busy: int
    queued: int
    gpus: int
    vram_mb: int
    rate: float  # tasks/s over the last minute, the whole mesh


@dataclass(frozen=True)
class Snapshot:
    mesh: str
    leader: str
    term: int
    answered_by: str
    taken_at: float  # unix time the client received it
    nodes: tuple[NodeRow, ...]
    queued: int
    done: int
    failed: int
    outcomes: tuple[tuple[str, int], ...]
    recent: tuple[Outcome, ...]
    omitted: int = 0  # node rows the leader left out to keep its answer under the header limit

    @property
    def totals(self) -> Totals:
        alive = [n for n in self.nodes if n.alive]
        gpus = [n for n in alive if n.provider == "cuda" or n.gpu]
        return Totals(
            nodes=len(alive),
            slots=sum(n.slots for n in alive),
            busy=sum(n.busy for n in alive),
            queued=self.queued,
            gpus=len(gpus),
            vram_mb=sum(n.vram_mb for n in gpus),
            rate=round(sum(n.rate for n in alive), 3),
        )

    def to_json(self) -> dict[str, Any]:
        """The ``status --json`` / ``/api/v1/status`` body: the keys of DESIGN.md's contract, plus more."""
        return {
            "mesh": self.mesh,
            "leader": self.leader,
            "term": self.term,
            "answered_by": self.answered_by,
            "taken_at": self.taken_at,
            "nodes": [n.to_wire() for n in self.nodes],
            "queued": self.queued,
            "done": self.done,
            "failed": self.failed,
            "outcomes": dict(self.outcomes),
            "recent": [asdict(o) for o in self.recent],
            "omitted": self.omitted,
            "totals": asdict(self.totals),
        }


def from_status(status: Status, now: float | None = None) -> Snapshot:
    nodes = tuple(NodeRow.parse(d, status.leader) for d in status.nodes if isinstance(d, dict))
    outcomes = tuple(sorted((k, v) for k, v in status.outcomes.items() if isinstance(k, str) and isinstance(v, int)))
    return Snapshot(
        mesh=status.mesh,
        leader=status.leader,
        term=status.term,
        answered_by=status.node_id,
        taken_at=round(time.time() if now is None else now, 3),
        nodes=nodes,
        queued=status.queued,
        done=status.done,
        failed=status.failed,
        outcomes=outcomes,
        recent=tuple(Outcome.parse(d) for d in status.recent if isinstance(d, dict)),
        omitted=max(0, status.omitted),
    )


# ---- text shown by the live screen and by ``status --once`` (Rich markup) ----

NODE_COLUMNS = ("node", "address", "role", "provider", "slots", "queued", "done", "ms/task", "tasks/s", "heard")
ROLE_STYLE: dict[str, str] = {
    Role.LEADER: "bold green",
    Role.WORKER: "",
    Role.LEAVING: "yellow",
    Role.LEFT: "dim",
    Role.DEAD: "red",
}


def node_cells(n: NodeRow) -> tuple[str, ...]:
    provider = (
        n.provider.upper() + (f" {n.gpu}" if n.gpu else "") + (f" ({len(n.gpus)} GPUs)" if len(n.gpus) > 1 else "")
    )
    ms = ", ".join(f"{k} {v:.0f}" for k, v in n.ewma_ms) or "-"
    style = ROLE_STYLE.get(n.role, "")
    role = f"[{style}]{n.role}[/]" if style else n.role
    if not n.alive:  # a gone node's last load figures are stale: not shown
        return (n.id, f"{n.host}:{n.port}", role, provider, f"-/{n.slots}", "-", str(n.done), "-", "-",
                f"{n.last_heard_s:.1f} s ago")  # fmt: skip
    return (
        n.id,
        f"{n.host}:{n.port}",
        role,
        provider,
        f"{n.busy}/{n.slots}",
        str(n.queued),
        str(n.done) + (f" ({n.failed} failed)" if n.failed else ""),
        ms,
        f"{n.rate:.2f}",
        f"{n.last_heard_s:.1f} s ago",
    )


def summary(s: Snapshot) -> str:
    t = s.totals
    leader = s.leader or "(electing)"
    outcomes = ", ".join(f"{k} {v}" for k, v in s.outcomes) or "none yet"
    return (
        f"mesh [b]{s.mesh}[/b]  leader [b green]{leader}[/]  term {s.term}\n"
        f"{t.nodes} nodes  {t.slots} slots ({t.busy} busy)  {t.gpus} GPUs  {t.vram_mb} MiB VRAM  "
        f"queued {t.queued}  {t.rate:.2f} tasks/s over the last minute\n"
        f"tasks answered by this leader: {outcomes}"
        + (
            f"\n{s.omitted} more nodes not listed (the answer stays under 64 KiB; dead ones left out first)"
            if s.omitted
            else ""
        )
    )
