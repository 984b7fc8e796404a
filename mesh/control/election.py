"""Election: one leader per connected mesh. Pure functions over the membership view.

Every heartbeat says whom its sender follows and that leader's term; a node that leads
names itself. ``decide`` is run by every node on every tick:

1. Among the live, non-leaving members that claim leadership, the one with the highest
   term wins, ties broken by the smaller node id. So after a partition heals the higher
   term wins, and the loser steps down and follows.
2. A healthy leader is never deposed by a newcomer: a newcomer starts at term 0 and, while
   any claimant is alive, follows it; it only considers claiming after it has listened for
   ``election_wait`` seconds (the caller passes ``eligible``).
3. With no live claimant (the leader died or left), the usable member with the smallest
   node id claims, with a term one above the largest ever heard. The others wait for its
   claim; if two claim at once (views differ for a moment), rule 1 settles it.
4. A leaving leader (graceful leave) is no candidate for the others, so they elect a new
   leader at once; it keeps leading (draining) until it sees that claim, then follows.
5. Terms only grow: a follower's term is the largest of its own and its leader's; a leader
   that sees a member report a larger term than its own (a follower of a leader that died)
   takes a new term above it, so every node's term goes up, never down.
"""

from __future__ import annotations

from dataclasses import dataclass

from mesh.control.membership import View


@dataclass(frozen=True)
class Decision:
    leader: str  # node id of the leader; "" while none is known
    term: int


def decide(view: View, current: Decision, eligible: bool, leaving: bool = False) -> Decision:
    """This node's (leader, term) after looking at ``view``. ``current`` is what it said last."""
    me = view.me
    others = [m for m in view.usable() if m.node_id != me]
    claimants = [(m.hb.term, m.node_id) for m in others if m.leads]
    if current.leader == me:  # a leaving leader keeps leading until the others have elected another
        claimants.append((current.term, me))
    if claimants:
        term, leader = min(claimants, key=lambda c: (-c[0], c[1]))
        if leader != me:
            return Decision(leader, max(current.term, term))
        if leaving:
            return current
        seen = max((m.hb.term for m in others), default=0)
        if seen > current.term:
            return Decision(me, max(view.max_term, seen) + 1)
        return current
    if leaving:
        return Decision("", current.term)
    candidates = sorted(m.node_id for m in others)
    if eligible:
        candidates = sorted([*candidates, me])
    if candidates and candidates[0] == me:
        return Decision(me, max(view.max_term, current.term) + 1)
    return Decision("", current.term)
