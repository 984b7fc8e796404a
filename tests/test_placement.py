"""Placement as pure functions: completion time, not least-loaded; requirements; sessions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.control import placement
from mesh.control.placement import Fleet, TaskNeeds, WorkerLoad

SMALL = 512 * 512
KEY = placement.service_key("builtin", SMALL)


def wl(
    node_id: str, credits: int, slots: int, assigned_ms: float = 0.0, service: dict | None = None, **kw
) -> WorkerLoad:
    return WorkerLoad(
        node_id=node_id, credits=credits, slots=slots, assigned_ms=assigned_ms, service_ms=service or {}, **kw
    )


def gpu(credits: int = 2, assigned: int = 0) -> WorkerLoad:
    return wl("gpu", credits, 1, assigned * 40.0, {KEY: 40.0}, provider="cuda", vram_mb=24576, assigned=assigned)


def cpu(node: str = "cpu", credits: int = 2, assigned: int = 0) -> WorkerLoad:
    return wl(node, credits, 2, assigned * 900.0, {KEY: 900.0}, provider="cpu", assigned=assigned)


def test_busy_gpu_beats_idle_cpu_where_least_loaded_picks_the_cpu() -> None:
    ws = {"gpu": gpu(credits=1, assigned=3), "cpu": cpu()}
    task = TaskNeeds("builtin", SMALL)
    assert placement.place(ws, task) == "gpu"  # 3 x 40 ms queued + 40 ms  <<  900 ms
    assert placement.least_loaded(ws, task) == "cpu"


def test_task_waits_for_the_fast_worker_rather_than_going_to_a_slow_free_one() -> None:
    ws = {"gpu": gpu(credits=0, assigned=2), "cpu": cpu()}
    assert placement.place(ws, TaskNeeds("builtin", SMALL)) is None  # hold: the GPU frees up in ~80 ms


def test_plan_reserves_the_fast_worker_then_spills_to_the_slow_one() -> None:
    ws = {"gpu": gpu(credits=0, assigned=1), "cpu": cpu()}
    tasks = [TaskNeeds("builtin", SMALL)] * 40
    out = placement.plan(ws, tasks)
    # the GPU (busy) is reserved for the first ones; once 20+ are reserved the CPU is worth using
    assert out[0] is None and any(p is not None and p.node_id == "cpu" for p in out)
    first_cpu = next(i for i, p in enumerate(out) if p is not None and p.node_id == "cpu")
    assert first_cpu >= 15


def test_requirement_classes_and_models_filter() -> None:
    small_gpu = wl("g4", 2, 1, 0.0, {}, provider="cuda", vram_mb=4096)
    big_gpu = wl("g24", 2, 1, 0.0, {}, provider="cuda", vram_mb=24576)
    c = wl("c", 2, 1, 0.0, {}, models=frozenset({"builtin"}))
    ws = {"g4": small_gpu, "g24": big_gpu, "c": c}
    assert placement.best(ws, TaskNeeds("builtin", requires="gpu-high")) == "g24"
    assert placement.best(ws, TaskNeeds("builtin", requires="gpu-medium")) == "g24"
    assert placement.best(ws, TaskNeeds("builtin", requires="cpu")) == "c"
    assert placement.best(ws, TaskNeeds("lama", requires="cpu")) is None  # c lacks the model
    assert placement.best({"c": c}, TaskNeeds("builtin", requires="gpu-low")) is None


def test_session_sticks_to_its_node_while_it_can_run_it() -> None:
    ws = {"gpu": gpu(), "cpu": cpu()}
    assert placement.best(ws, TaskNeeds("builtin", SMALL, session="s1"), {"s1": "cpu"}) == "cpu"
    assert placement.best({"gpu": gpu()}, TaskNeeds("builtin", SMALL, session="s1"), {"s1": "cpu"}) == "gpu"


def test_unmeasured_worker_is_estimated_from_the_fleet() -> None:
    new = wl("new", 2, 1, 0.0, {})
    assert placement.service_estimate_ms(new, TaskNeeds("builtin", SMALL), Fleet({KEY: 123.0})) == 123.0
    assert placement.service_estimate_ms(new, TaskNeeds("builtin", SMALL), Fleet()) == placement.DEFAULT_SERVICE_MS


def test_size_classes() -> None:
    assert [placement.size_class(p) for p in (0, 512 * 512, 1024 * 1024, 2048 * 2048, 8000 * 8000)] == [
        "?",
        "s",
        "m",
        "l",
        "xl",
    ]


@settings(max_examples=200, deadline=None)
@given(
    speeds=st.lists(st.floats(min_value=1, max_value=1000), min_size=1, max_size=6),
    assigned=st.lists(st.integers(min_value=0, max_value=8), min_size=6, max_size=6),
    credits=st.lists(st.integers(min_value=0, max_value=3), min_size=6, max_size=6),
)
def test_placement_never_sends_beyond_credit_and_picks_the_minimum_finish(
    speeds: list[float], assigned: list[int], credits: list[int]
) -> None:
    ws = {
        f"w{i}": wl(f"w{i}", credits[i], 1, assigned[i] * s, {KEY: s}, assigned=assigned[i])
        for i, s in enumerate(speeds)
    }
    task = TaskNeeds("builtin", SMALL)
    choice = placement.place(ws, task)
    if choice is not None:
        assert ws[choice].credits > 0
        finish = placement.expected_finish_ms(ws[choice], task)
        # the minimum, or a free worker within the wait margin of a busy one that would be sooner
        assert all(
            finish
            <= placement.expected_finish_ms(w, task)
            + max(placement.WAIT_GAIN_MS, placement.WAIT_GAIN_FRACTION * placement.expected_finish_ms(w, task))
            for w in ws.values()
        )
        assert all(finish <= placement.expected_finish_ms(w, task) for w in ws.values() if w.credits > 0)
    out = placement.plan(ws, [task] * 10)
    sent: dict[str, int] = {}
    for p in out:
        if p is not None:
            sent[p.node_id] = sent.get(p.node_id, 0) + 1

    assert all(sent[n] <= ws[n].credits for n in sent)


def test_a_free_worker_is_taken_over_a_busy_one_that_is_sooner_only_by_noise() -> None:
    # null-like tasks: waiting for the busy worker would gain 0.5 ms and cost a round trip
    busy = wl("a", 0, 1, 0.0, {KEY: 0.5})
    free = wl("b", 1, 1, 0.5, {KEY: 0.5})
    assert placement.place({"a": busy, "b": free}, TaskNeeds("builtin", SMALL)) == "b"
    # a real gain (a GPU worker 100 ms sooner even with one task queued) is still waited for
    gpu = wl("a", 0, 1, 50.0, {KEY: 50.0})
    cpu = wl("b", 1, 1, 0.0, {KEY: 200.0})
    assert placement.place({"a": gpu, "b": cpu}, TaskNeeds("builtin", SMALL)) is None


def test_no_worker_is_preferred_for_where_it_is() -> None:
    """The leader's own node has no edge: among near-equals the soonest wins, whoever it is."""
    a = wl("a", 1, 1, 0.0, {KEY: 10.0})
    me = wl("me", 1, 1, 0.0, {KEY: 11.0})
    task = TaskNeeds("builtin", SMALL)
    assert placement.place({"a": a, "me": me}, task) == "a"
    busy_a = wl("a", 0, 1, 0.0, {KEY: 10.0})  # no credit: never chosen now
    assert placement.place({"a": busy_a, "me": me}, task) == "me"


def test_a_fast_gpu_behind_a_slow_link_is_judged_as_it_performs() -> None:
    """Moving the bytes counts: 8 MiB to a GPU at 800 ms/MiB (10 Mbit/s) takes longer than the
    whole task on a CPU node on a fast link; a small image still goes to the GPU."""
    far_gpu = wl("gpu", 1, 1, 0.0, {KEY: 40.0, "builtin@m": 40.0}, provider="cuda", ms_per_mib=800.0)
    near_cpu = wl("cpu", 1, 1, 0.0, {KEY: 900.0, "builtin@m": 900.0}, ms_per_mib=10.0)
    big = TaskNeeds("builtin", 1_000_000, size=8 * placement.MIB)
    small = TaskNeeds("builtin", SMALL, size=placement.MIB // 8)
    assert placement.place({"gpu": far_gpu, "cpu": near_cpu}, big) == "cpu"
    assert placement.place({"gpu": far_gpu, "cpu": near_cpu}, small) == "gpu"
    # the bytes move while its slot works off what it holds: a queue shorter than the transfer costs nothing
    queued = wl("gpu", 1, 1, 50.0, {KEY: 40.0}, provider="cuda", ms_per_mib=800.0)
    assert placement.expected_finish_ms(queued, small) == placement.expected_finish_ms(far_gpu, small)


def test_plan_charges_the_estimate_that_chose() -> None:
    ws = {"a": wl("a", 2, 1, 0.0, {KEY: 30.0}), "b": wl("b", 2, 1, 0.0, {KEY: 70.0})}
    out = placement.plan(ws, [TaskNeeds("builtin", SMALL)] * 3)
    assert next((p.node_id, p.estimate_ms) for p in out if p is not None) == ("a", 30.0)


def test_a_busy_workers_queue_counts_the_time_a_task_really_holds_a_slot() -> None:
    """Found on loopback (a null model, 64 KiB tasks): the leader's own worker, busy with 4 tasks of
    0.001 ms model time, looked free forever, so every task waited for it while the other worker,
    judged 5 ms slower at moving bytes, sat idle with 4 credits (and each pass read 36-44 queued
    tasks to place one). With the turn a task has been seen to take there (``floor_ms``), the busy
    worker's queue is 4 ms and the idle one gets the task now."""
    task = TaskNeeds("m", size=64 * 1024)
    busy = dict(credits=0, slots=1, assigned_ms=0.004, assigned=4, service_ms={"m@?": 0.001}, ms_per_mib=12.0)
    idle = WorkerLoad(node_id="idle", credits=4, slots=1, service_ms={"m@?": 0.001}, ms_per_mib=80.0)
    before = {"busy": WorkerLoad(node_id="busy", **busy), "idle": idle}  # type: ignore[arg-type]
    assert placement.plan(before, [task]) == [None]  # waits for the busy one
    charged = dict(busy, assigned_ms=4.0)  # its 4 tasks charged at the turn they take
    after = {"busy": WorkerLoad(node_id="busy", floor_ms=1.0, **charged), "idle": idle}  # type: ignore[arg-type]
    (got,) = placement.plan(after, [task])
    assert got is not None and got.node_id == "idle"
    assert placement.service_estimate_ms(after["busy"], task) == 1.0  # never under the floor


worker_loads = st.builds(
    wl,
    node_id=st.sampled_from(["a", "b", "c", "d"]),
    credits=st.integers(-1, 3),
    slots=st.integers(1, 4),
    assigned_ms=st.floats(0, 5000),
    service=st.dictionaries(st.sampled_from([KEY, "other@s"]), st.floats(0.1, 2000), max_size=2),
    provider=st.sampled_from(["cpu", "cuda"]),
    vram_mb=st.sampled_from([0, 6144, 24576]),
    ms_per_mib=st.one_of(st.none(), st.floats(0, 500)),
    floor_ms=st.floats(0, 300),
)


@given(
    st.lists(worker_loads, max_size=4, unique_by=lambda w: w.node_id),
    st.sampled_from(["", "cpu", "gpu-low", "gpu-high"]),
    st.sampled_from(["", "s1"]),
    st.sampled_from(list(placement.Policy)),
)
def test_plan_one_answers_as_a_pass_over_one_task(
    ws: list[WorkerLoad], requires: str, session: str, policy: str
) -> None:
    """The leader's ticket offer asks plan_one; it must choose as a placement pass would."""
    workers = {w.node_id: w for w in ws}
    task = TaskNeeds("builtin", SMALL, session, requires, size=1 << 20)
    affinity = {"s1": "b"}
    got = placement.plan(workers, [task], affinity, policy)
    assert placement.plan_one(workers, task, affinity, policy) == (got[0] if got else None)


@given(
    st.lists(worker_loads, max_size=4, unique_by=lambda w: w.node_id),
    st.sampled_from(["", "cpu", "gpu-low"]),
    st.sampled_from(["", "s1"]),
    st.sampled_from(list(placement.Policy)),
    st.sampled_from(["a", "b", "c", "zz"]),
)
def test_plan_one_gives_its_preferred_worker_the_task_by_the_rule_as_written(
    ws: list[WorkerLoad], requires: str, session: str, policy: str, prefer: str
) -> None:
    """``prefer``: the worker gets the task when it has credit, can run it and would finish it within
    ``WAIT_GAIN_MS`` of the one chosen. plan_one compares by the finishes its choice computed; here
    they are computed afresh (a sticky session's or a least-loaded choice computes none)."""
    workers = {w.node_id: w for w in ws}
    task = TaskNeeds("builtin", SMALL, session, requires, size=1 << 20)
    affinity = {"s1": "b"}
    plain = placement.plan_one(workers, task, affinity, policy)
    got = placement.plan_one(workers, task, affinity, policy, prefer=prefer)
    if plain is None:
        assert got is None
        return
    own = workers.get(prefer)
    fleet = placement.fleet_means(
        workers.values() if policy == placement.Policy.LEAST_LOADED else [w for w in ws if placement.capable(w, task)]
    )
    takes = (
        own is not None
        and own.credits > 0
        and placement.capable(own, task)
        and placement.expected_finish_ms(own, task, fleet)
        <= placement.expected_finish_ms(workers[plain.node_id], task, fleet) + placement.WAIT_GAIN_MS
    )
    node = prefer if takes else plain.node_id
    assert got == placement.Placement(node, placement.service_estimate_ms(workers[node], task, fleet))


def test_a_clients_tasks_stay_with_its_crew_until_it_may_grow() -> None:
    """A client's tasks go to its crew's workers (waiting for them when they have no credit), not
    to idle ones outside it: a client whose link is the limit gains nothing from more connections."""
    ws = {n: wl(n, 4, 1, 0.0, {KEY: 100.0}) for n in "abcd"}
    task = TaskNeeds("builtin", SMALL, client=b"c")
    out = placement.plan(ws, [task] * 6, crews={b"c": placement.Crew(frozenset("a"))})
    assert [p.node_id if p else None for p in out] == ["a"] * 4 + [None, None]
    # allowed to grow by one: an outside worker goes first among near-equal ones, then the crew is two
    out = placement.plan(ws, [task] * 6, crews={b"c": placement.Crew(frozenset("a"), grow=1)})
    chosen = [p.node_id for p in out if p]
    assert chosen[0] != "a" and set(chosen) == {"a", chosen[0]} and len(chosen) == 6
    # no crews given (the least-loaded contrast, or a caller without clients): every worker is looked at
    assert {p.node_id for p in placement.plan(ws, [task] * 8) if p} == set("abcd")


def test_a_new_clients_first_tasks_start_its_crew() -> None:
    """A crew starts with CREW_START workers (2): the soonest, then the soonest other one."""
    ws = {n: wl(n, 2, 1, 0.0, {KEY: 100.0 + 10 * i}) for i, n in enumerate("abc")}
    out = placement.plan(ws, [TaskNeeds("builtin", SMALL, client=b"new")] * 5, crews={})
    assert [p.node_id if p else None for p in out] == ["a", "b", "a", "b", None]


def test_a_growing_crew_takes_the_worker_fewest_other_crews_hold() -> None:
    """Two link-bound clients get workers of their own: the one another crew holds goes last."""
    ws = {n: wl(n, 4, 1, 0.0, {KEY: 100.0}) for n in "abc"}
    crews = {b"one": placement.Crew(frozenset("a"), grow=1), b"two": placement.Crew(frozenset("b"))}
    out = placement.plan(ws, [TaskNeeds("builtin", SMALL, client=b"one")], crews=crews)
    assert out[0] is not None and out[0].node_id == "c"
    # a much faster worker is still taken, whoever holds it: near-equal is within the estimates' noise
    ws["b"] = wl("b", 4, 1, 0.0, {KEY: 10.0})
    out = placement.plan(ws, [TaskNeeds("builtin", SMALL, client=b"one")], crews=crews)
    assert out[0] is not None and out[0].node_id == "b"


def test_a_crew_none_of_whose_workers_can_run_a_task_grows_for_it() -> None:
    ws = {"a": wl("a", 4, 1, 0.0, {KEY: 100.0}, models=frozenset({"other"})), "b": wl("b", 4, 1, 0.0, {KEY: 100.0})}
    crew = placement.Crew(frozenset("a"))
    task = TaskNeeds("builtin", SMALL, client=b"c")
    assert placement.plan_one(ws, task, crews={b"c": crew}) == placement.Placement("b", 100.0)


def test_keeps_busy_weighs_the_models_time_against_its_bytes_from_what_was_measured() -> None:
    mib = placement.MIB
    task = TaskNeeds("builtin", SMALL, size=mib)
    # LaMa on CPUs (1 s a task) and bytes that take 10 ms: far more workers than any mesh has
    slow = [wl(n, 4, 1, 0.0, {KEY: 1000.0}, ms_per_mib=10.0) for n in "ab"]
    assert placement.keeps_busy(slow, task) == 130
    # the bytes take as long as the model: two workers (with headroom) keep up with one client's link
    linked = [wl(n, 4, 1, 0.0, {KEY: 100.0}, ms_per_mib=90.0) for n in "ab"]
    assert placement.keeps_busy(linked, task) == 2
    # the model's time is that of the workers that ran it (a median); one that has not does not count
    mixed = [*slow, wl("c", 4, 1, 0.0, {}, ms_per_mib=10.0)]
    assert placement.keeps_busy(mixed, task) == 130
    # nothing to judge by: a fresh mesh, bytes never timed, a task of unknown size, a model never run
    assert placement.keeps_busy([wl("a", 4, 1, 0.0, {})], task) == 0
    assert placement.keeps_busy([wl("a", 4, 1, 0.0, {KEY: 1000.0})], task) == 0
    assert placement.keeps_busy(slow, TaskNeeds("builtin", SMALL)) == 0
    assert placement.keeps_busy(slow, TaskNeeds("other", SMALL, size=mib)) == 0


def test_plan_one_gives_the_preferred_worker_a_tie_within_the_estimates_noise() -> None:
    """The leader names its own node for a ticket: between equal workers it takes the task (its hold
    and answer go by a call), never one that would finish it noticeably later or has no credit."""
    ws = {"a": wl("a", 4, 1, 0.0, {KEY: 100.0}), "own": wl("own", 4, 1, 0.0, {KEY: 101.0})}
    task = TaskNeeds("builtin", SMALL)
    assert placement.plan_one(ws, task) == placement.Placement("a", 100.0)
    assert placement.plan_one(ws, task, prefer="own") == placement.Placement("own", 101.0)
    ws["own"] = wl("own", 4, 1, 0.0, {KEY: 100.0 + 2 * placement.WAIT_GAIN_MS})
    assert placement.plan_one(ws, task, prefer="own").node_id == "a"  # type: ignore[union-attr]
    ws["own"] = wl("own", 0, 1, 0.0, {KEY: 100.0})
    assert placement.plan_one(ws, task, prefer="own").node_id == "a"  # type: ignore[union-attr]
    assert placement.plan_one(ws, task, prefer="gone").node_id == "a"  # type: ignore[union-attr]


def test_bytes_are_timed_per_size_class_and_a_class_not_seen_is_scaled_by_the_fleets() -> None:
    """A 64 KiB task's time is mostly its fixed part: per MiB it read 10 ms on loopback where 1 MiB
    tasks read 1.5. A worker that ran only small tasks is judged for a big one by its small figure
    scaled as the fleet's figures scale, not as if the fixed part grew with the bytes."""
    mib = placement.MIB
    assert [placement.bytes_class(n) for n in (0, 64 * 1024, 256 * 1024, mib, 4 * mib, 8 * mib)] == [
        "s", "s", "s", "m", "m", "l"
    ]  # fmt: skip
    small_only = wl("a", 4, 1, 0.0, {KEY: 1.0}, ms_per_mib=10.0, rates={"s": 10.0})
    both = wl("b", 4, 1, 0.0, {KEY: 1.0}, ms_per_mib=1.5, rates={"s": 10.0, "m": 1.5})
    fleet = placement.fleet_means([small_only, both])
    assert fleet.rates == {"s": 10.0, "m": 1.5}
    big = TaskNeeds("builtin", SMALL, size=mib)
    assert placement.transfer_estimate_ms(both, big, fleet) == 1.5
    assert placement.transfer_estimate_ms(small_only, big, fleet) == 1.5  # 10 x 1.5 / 10
    # so the two are equal for it: before, 10 ms against 1.5
    assert placement.plan_one({"a": small_only, "b": both}, big, prefer="a").node_id == "a"  # type: ignore[union-attr]
    # no figure per class (a caller that keeps one rate): that rate; nothing at all: the fleet's for the class
    assert placement.transfer_estimate_ms(wl("c", 4, 1, 0.0, {}, ms_per_mib=80.0), big, fleet) == 80.0
    assert placement.transfer_estimate_ms(wl("d", 4, 1, 0.0, {}), big, fleet) == 1.5
    assert placement.transfer_estimate_ms(wl("d", 4, 1, 0.0, {}), big) == 0.0
