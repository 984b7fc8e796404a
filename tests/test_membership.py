"""Membership and election as pure functions: time passed in, no sockets, no sleeps."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh import const
from mesh.control import election, membership
from mesh.control.election import Decision
from mesh.control.membership import Goodbye, Heard, Tick, View
from mesh.wire.protocol import Heartbeat

DEAD = 2.0


def hb(node: str, term: int = 0, leader: str = "", inc: int = 1, port: int = 0, **kw: object) -> Heartbeat:
    return Heartbeat(
        node_id=node,
        mesh="m",
        incarnation=inc,
        host="10.0.0.1",
        task_port=port or hash(node) % 60000,
        term=term,
        leader=leader,
        **kw,
    )  # type: ignore[arg-type]


def view(me: str = "a") -> View:
    return View(me, "m", dead_timeout=DEAD, forget_after=10.0)


def test_silent_peer_dies_after_the_dead_timeout_and_is_forgotten_later() -> None:
    v = membership.apply(view(), Heard(hb("b")), 100.0)
    assert v.members["b"].alive
    v = membership.apply(v, Tick(), 100.0 + DEAD - 0.01)
    assert v.members["b"].alive
    v2 = membership.apply(v, Tick(), 100.0 + DEAD + 0.01)
    assert not v2.members["b"].alive
    joined, died = membership.changes(v, v2)
    assert [m.node_id for m in died] == ["b"] and not joined
    assert "b" not in membership.apply(v2, Tick(), 111.0).members


def test_goodbye_kills_at_once_and_heartbeat_revives() -> None:
    v = membership.apply(view(), Heard(hb("b")), 0.0)
    v = membership.apply(v, Goodbye("b"), 0.1)
    assert not v.members["b"].alive
    v = membership.apply(v, Heard(hb("b")), 0.2)
    assert v.members["b"].alive


def test_other_mesh_ignored_and_stale_incarnation_ignored() -> None:
    v = membership.apply(view(), Heard(replace(hb("b"), mesh="other")), 0.0)
    assert "b" not in v.members
    v = membership.apply(v, Heard(hb("b", inc=5, term=3)), 0.0)
    v = membership.apply(v, Heard(hb("b", inc=4, term=1)), 0.1)  # a zombie of an older run
    assert v.members["b"].hb.term == 3 and v.members["b"].last_heard == 0.0


def test_restarted_endpoint_replaces_its_old_entry() -> None:
    v = membership.apply(view(), Heard(hb("b-old", inc=1, port=5555)), 0.0)
    v = membership.apply(v, Heard(hb("b-new", inc=2, port=5555)), 0.5)
    assert "b-old" not in v.members and v.members["b-new"].alive


def test_max_term_only_grows() -> None:
    v = membership.apply(view(), Heard(hb("b", term=7)), 0.0)
    v = membership.apply(v, Heard(hb("b", term=3, inc=2)), 0.1)
    assert v.max_term == 7


# ---- election over a simulated mesh -------------------------------------------------------


@dataclass
class SimNode:
    node_id: str
    started: float
    view: View
    decision: Decision = field(default_factory=lambda: Decision("", 0))
    terms: list[int] = field(default_factory=list)
    leaders: list[str] = field(default_factory=list)

    def heartbeat(self) -> Heartbeat:
        return hb(self.node_id, self.decision.term, self.decision.leader)


STEP = 0.1  # s of simulated time per round
WAIT = 1.0  # s election wait


class Sim:
    def __init__(self, ids: list[str]) -> None:
        self.now = 0.0
        self.nodes = {i: SimNode(i, 0.0, View(i, "m", dead_timeout=DEAD, forget_after=60.0)) for i in ids}
        self.groups: list[set[str]] = [set(ids)]

    def add(self, node_id: str) -> None:
        self.nodes[node_id] = SimNode(node_id, self.now, View(node_id, "m", dead_timeout=DEAD, forget_after=60.0))
        self.groups[0].add(node_id)

    def partition(self, groups: list[set[str]]) -> None:
        self.groups = groups

    def step(self) -> None:
        self.now += STEP
        beats = {i: n.heartbeat() for i, n in self.nodes.items()}
        for g in self.groups:
            for i in g:
                n = self.nodes[i]
                for j in g:
                    n.view = membership.apply(n.view, Heard(beats[j]), self.now)
        for n in self.nodes.values():
            n.view = membership.apply(n.view, Tick(), self.now)
            eligible = self.now - n.started >= WAIT
            n.decision = election.decide(n.view, n.decision, eligible)
            n.terms.append(n.decision.term)
            n.leaders.append(n.decision.leader)

    def run(self, seconds: float) -> None:
        for _ in range(round(seconds / STEP)):
            self.step()

    def leaders_of(self, group: set[str]) -> set[str]:
        return {self.nodes[i].decision.leader for i in group}


def test_three_nodes_elect_one_leader_and_a_newcomer_does_not_depose_it() -> None:
    sim = Sim(["n2", "n3", "n4"])
    sim.run(WAIT + 1.0)
    assert sim.leaders_of({"n2", "n3", "n4"}) == {"n2"}
    sim.add("n1")  # a smaller id: it would win a fresh election, but the leader is healthy
    sim.run(5.0)
    assert sim.leaders_of({"n1", "n2", "n3", "n4"}) == {"n2"}
    assert all(leader == "n2" for leader in sim.nodes["n3"].leaders[-50:])


def test_leader_death_elects_a_new_leader_with_a_larger_term() -> None:
    sim = Sim(["a", "b", "c"])
    sim.run(WAIT + 1.0)
    term = sim.nodes["b"].decision.term
    sim.partition([{"b", "c"}, {"a"}])  # a is cut off (as good as dead to b and c)
    sim.run(DEAD + 1.0)
    assert sim.leaders_of({"b", "c"}) == {"b"} and sim.nodes["b"].decision.term > term


def test_after_a_heal_the_higher_term_wins() -> None:
    sim = Sim(["a", "b", "c", "d"])
    sim.run(WAIT + 1.0)
    sim.partition([{"a"}, {"b", "c", "d"}])
    sim.run(DEAD + 1.0)
    sim.partition([{"a", "b", "c", "d"}])
    sim.run(1.0)
    assert sim.leaders_of({"a", "b", "c", "d"}) == {"b"}  # b's term grew in its partition; a's did not


groups_strategy = st.lists(
    st.lists(st.integers(min_value=0, max_value=5), min_size=6, max_size=6),  # component label per node
    min_size=1,
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(layouts=groups_strategy, settle=st.floats(min_value=0.0, max_value=3.0))
def test_any_partitions_and_heals_converge_to_one_leader_per_component(layouts: list[list[int]], settle: float) -> None:
    ids = [f"n{i}" for i in range(6)]
    sim = Sim(ids)
    sim.run(WAIT + 0.5)
    for labels in [*layouts, [0] * 6]:  # random partitions, then a full heal
        comps: dict[int, set[str]] = {}
        for node, label in zip(ids, labels, strict=True):
            comps.setdefault(label, set()).add(node)
        sim.partition(list(comps.values()))
        sim.run(settle)
    sim.run(DEAD + WAIT + 2.0)
    # exactly one leader for the healed mesh, and it leads itself
    (leader,) = sim.leaders_of(set(ids))
    assert leader and sim.nodes[leader].decision.leader == leader
    for n in sim.nodes.values():
        assert n.terms == sorted(n.terms), f"{n.node_id}'s term went down"
    # no flapping: a stable mesh keeps its leader
    before = sim.nodes["n0"].decision
    sim.run(3.0)
    assert sim.nodes["n0"].decision == before


@settings(max_examples=30, deadline=None)
@given(layouts=groups_strategy)
def test_each_connected_component_has_exactly_one_leader(layouts: list[list[int]]) -> None:
    ids = [f"n{i}" for i in range(6)]
    sim = Sim(ids)
    for labels in layouts:
        comps: dict[int, set[str]] = {}
        for node, label in zip(ids, labels, strict=True):
            comps.setdefault(label, set()).add(node)
        sim.partition(list(comps.values()))
        sim.run(DEAD + WAIT + 1.0)
        for comp in comps.values():
            (leader,) = sim.leaders_of(comp)
            assert leader in comp, f"{comp} follows {leader}, outside it"
            terms = {sim.nodes[i].decision.term for i in comp}
            assert len(terms) == 1, f"{comp} disagrees on the term: {terms}"


def test_a_term_no_node_could_send_on_is_never_adopted() -> None:
    """Finding 1 of the hostile-peer probe: one heartbeat with term 2**31 (not even a claim) made
    every node elect itself at 2**31 + 1, a term the decoder refuses, so the mesh fell apart."""
    v = membership.apply(view(), Heard(hb("a", term=3, leader="a")), 1.0)
    v = membership.apply(v, Heard(hb("b", term=3, leader="a")), 1.0)
    for term in (2**31, const.TERM_CEILING + 1, 3 + const.TERM_LEAP + 1):
        after = membership.apply(v, Heard(hb("evil", term=term, leader="")), 1.1)
        assert "evil" not in after.members and after.max_term == 3
        d = election.decide(after, Decision("a", 3), eligible=True)
        assert d == Decision("a", 3)
    near = membership.apply(v, Heard(hb("c", term=3 + const.TERM_LEAP, leader="")), 1.1)
    assert "c" in near.members  # a leap within the bound is a real (if odd) member


def test_a_node_alone_joins_a_long_lived_mesh_whatever_its_term_up_to_the_ceiling() -> None:
    v = membership.apply(view(), Heard(hb("a")), 1.0)
    v = membership.apply(v, Heard(hb("b", term=50_000, leader="b")), 1.1)
    assert election.decide(v, Decision("", 0), eligible=True) == Decision("b", 50_000)
    lone = membership.apply(view(), Heard(hb("a")), 1.0)
    assert "x" not in membership.apply(lone, Heard(hb("x", term=2**31, leader="x")), 1.1).members
