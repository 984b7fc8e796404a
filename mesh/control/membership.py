"""Membership: who is in the mesh and who is alive. Pure functions over frozen data.

``apply(view, event, now) -> view`` is the only way the view changes. Events come from
gossip (a heartbeat heard), discovery (an mDNS goodbye) and the clock (a tick). Time is
passed in, never read here, so every rule is tested without sockets or sleeps.

Rules:
- a peer silent for ``dead_timeout`` seconds is dead; an mDNS goodbye or a heartbeat
  that says it is leaving marks it at once (leaving: alive but out of elections/placement);
- a heartbeat from another mesh is ignored (the caller filters versions: a message of
  another protocol version never decodes);
- a heartbeat with a *smaller* incarnation than the entry's is a stale process (a zombie
  that was stopped and resumed after its restart) and is ignored;
- a new node id heard at the address of a known entry with a larger incarnation is the
  same endpoint restarted: it replaces the old entry at once;
- a dead entry is forgotten ``forget_after`` seconds after it was last heard;
- a new node id is ignored while the view holds ``max_members`` (a flood of fake ids stops there);
- a heartbeat whose term is above ``const.TERM_CEILING``, or (while the observer is in a mesh
  with other live members) more than ``const.TERM_LEAP`` above every other live member's term,
  is ignored: no node then adopts a term it could not send, and one forged heartbeat cannot
  move the whole mesh to a term of its choosing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from mesh import const
from mesh.wire.protocol import Heartbeat


@dataclass(frozen=True)
class Member:
    hb: Heartbeat  # the newest heartbeat heard from it
    last_heard: float  # s, monotonic clock of the observer
    alive: bool = True

    @property
    def node_id(self) -> str:
        return self.hb.node_id

    @property
    def address(self) -> tuple[str, int]:
        return self.hb.host, self.hb.task_port

    @property
    def leads(self) -> bool:
        return self.hb.leader == self.hb.node_id

    @property
    def usable(self) -> bool:
        """Alive and not leaving: may lead, may be given work."""
        return self.alive and not self.hb.leaving


@dataclass(frozen=True)
class View:
    me: str  # the observer's node id
    mesh: str
    members: Mapping[str, Member] = field(default_factory=lambda: MappingProxyType({}))
    dead_timeout: float = 2.0  # s
    forget_after: float = 60.0  # s
    max_term: int = 0  # the largest term ever heard in this mesh (terms only grow)
    max_members: int = 256  # a new node id beyond this many members is ignored (a flood of fake ids)

    def alive(self) -> list[Member]:
        return [m for m in self.members.values() if m.alive]

    def usable(self) -> list[Member]:
        return [m for m in self.members.values() if m.usable]

    def get(self, node_id: str) -> Member | None:
        return self.members.get(node_id)


@dataclass(frozen=True)
class Heard:
    hb: Heartbeat


@dataclass(frozen=True)
class Goodbye:
    node_id: str


@dataclass(frozen=True)
class Tick:
    pass


Event = Heard | Goodbye | Tick


def _with(view: View, members: dict[str, Member], max_term: int | None = None) -> View:
    term = view.max_term if max_term is None else max_term
    return replace(view, members=MappingProxyType(members), max_term=term)


def apply(view: View, event: Event, now: float) -> View:
    """The view after ``event`` at time ``now``."""
    match event:
        case Heard(hb):
            return _heard(view, hb, now)
        case Goodbye(node_id):
            m = view.members.get(node_id)
            if m is None or node_id == view.me or not m.alive:
                return view
            return _with(view, {**view.members, node_id: replace(m, alive=False)})
        case Tick():
            return _tick(view, now)
    raise TypeError(f"not a membership event: {event!r}")


def _believable_term(view: View, hb: Heartbeat) -> bool:
    if hb.term > const.TERM_CEILING:
        return False
    terms = [m.hb.term for k, m in view.members.items() if m.alive and k != hb.node_id]
    if len(terms) < 2:  # the observer alone (or no own heartbeat yet): it may be joining a long-lived mesh
        return True
    return hb.term <= max(terms) + const.TERM_LEAP


def _heard(view: View, hb: Heartbeat, now: float) -> View:
    if hb.mesh != view.mesh or not hb.node_id or not _believable_term(view, hb):
        return view
    old = view.members.get(hb.node_id)
    if old is not None and hb.incarnation < old.hb.incarnation:
        return view  # a stale process under an id that has restarted
    restarted: list[str] = []
    if old is None:
        addr = (hb.host, hb.task_port)
        restarted = [k for k, o in view.members.items() if o.address == addr and o.hb.incarnation < hb.incarnation]
        if len(view.members) - len(restarted) >= view.max_members:
            return view  # checked before any copy: a flood of new ids costs one scan each, no more
    members = dict(view.members)
    for k in restarted:
        del members[k]  # the same endpoint, restarted under a new id
    members[hb.node_id] = Member(hb, now, alive=True)
    return _with(view, members, max_term=max(view.max_term, hb.term))


def _tick(view: View, now: float) -> View:
    changed = False
    members: dict[str, Member] = {}
    for node_id, m in view.members.items():
        silent = now - m.last_heard
        if node_id != view.me and silent > view.forget_after:
            changed = True
            continue
        alive = node_id == view.me or (m.alive and silent <= view.dead_timeout)
        if alive != m.alive:
            changed = True
            m = replace(m, alive=alive)
        members[node_id] = m
    return _with(view, members) if changed else view


def changes(before: View, after: View) -> tuple[list[Member], list[Member]]:
    """(members that became alive, members that died) between two views; for logging and routing."""
    joined = [m for k, m in after.members.items() if m.alive and not _was_alive(before, k, m)]
    died = [m for k, m in before.members.items() if m.alive and not (k in after.members and after.members[k].alive)]
    return joined, died


def _was_alive(view: View, node_id: str, now_member: Member) -> bool:
    m = view.members.get(node_id)
    return m is not None and m.alive and m.hb.incarnation == now_member.hb.incarnation
