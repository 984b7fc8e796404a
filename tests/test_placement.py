"""Placement as pure functions: completion time, not least-loaded; requirements; sessions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mesh.control import placement
from mesh.control.placement import TaskNeeds, WorkerLoad

SMALL = 512 * 512
KEY = placement.service_key("builtin", SMALL)


def gpu(credits: int = 2, assigned: int = 0) -> WorkerLoad:
    return WorkerLoad(
        "gpu", credits, 1, assigned * 40.0, {KEY: 40.0}, provider="cuda", vram_mb=24576, assigned=assigned
    )


def cpu(node: str = "cpu", credits: int = 2, assigned: int = 0) -> WorkerLoad:
    return WorkerLoad(node, credits, 2, assigned * 900.0, {KEY: 900.0}, provider="cpu", assigned=assigned)


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
    assert out[0] is None and "cpu" in out
    assert out.index("cpu") >= 15


def test_requirement_classes_and_models_filter() -> None:
    small_gpu = WorkerLoad("g4", 2, 1, 0.0, {}, provider="cuda", vram_mb=4096)
    big_gpu = WorkerLoad("g24", 2, 1, 0.0, {}, provider="cuda", vram_mb=24576)
    c = WorkerLoad("c", 2, 1, 0.0, {}, models=frozenset({"builtin"}))
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
    new = WorkerLoad("new", 2, 1, 0.0, {})
    assert placement.estimate_ms(new, TaskNeeds("builtin", SMALL), {KEY: 123.0}) == 123.0
    assert placement.estimate_ms(new, TaskNeeds("builtin", SMALL), {}) == placement.DEFAULT_SERVICE_MS


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
        f"w{i}": WorkerLoad(f"w{i}", credits[i], 1, assigned[i] * s, {KEY: s}, assigned=assigned[i])
        for i, s in enumerate(speeds)
    }
    task = TaskNeeds("builtin", SMALL)
    choice = placement.place(ws, task)
    if choice is not None:
        assert ws[choice].credits > 0
        finish = placement.expected_finish_ms(ws[choice], task)
        # the minimum, or a free worker within WAIT_GAIN_MS of a busy one that would be sooner
        assert all(finish <= placement.expected_finish_ms(w, task) + placement.WAIT_GAIN_MS for w in ws.values())
        assert all(finish <= placement.expected_finish_ms(w, task) for w in ws.values() if w.credits > 0)
    out = placement.plan(ws, [task] * 10)
    sent: dict[str, int] = {}
    for n in out:
        if n is not None:
            sent[n] = sent.get(n, 0) + 1
    assert all(sent[n] <= ws[n].credits for n in sent)


def test_a_free_worker_is_taken_over_a_busy_one_that_is_sooner_only_by_noise() -> None:
    # null-like tasks: waiting for the busy worker would gain 0.5 ms and cost a round trip
    busy = WorkerLoad("a", 0, 1, 0.0, {KEY: 0.5})
    free = WorkerLoad("b", 1, 1, 0.5, {KEY: 0.5})
    assert placement.place({"a": busy, "b": free}, TaskNeeds("builtin", SMALL)) == "b"
    # a real gain (a GPU worker 100 ms sooner even with one task queued) is still waited for
    gpu = WorkerLoad("a", 0, 1, 50.0, {KEY: 50.0})
    cpu = WorkerLoad("b", 1, 1, 0.0, {KEY: 200.0})
    assert placement.place({"a": gpu, "b": cpu}, TaskNeeds("builtin", SMALL)) is None


def test_the_leaders_own_worker_is_preferred_among_near_equals_only() -> None:
    a = WorkerLoad("a", 1, 1, 0.0, {KEY: 10.0})
    me = WorkerLoad("me", 1, 1, 0.0, {KEY: 11.0})  # 1 ms slower: within WAIT_GAIN_MS
    task = TaskNeeds("builtin", SMALL)
    assert placement.place({"a": a, "me": me}, task) == "a"  # no local node named: the soonest
    assert placement.place({"a": a, "me": me}, task, local="me") == "me"  # no image over the network
    slow_me = WorkerLoad("me", 1, 1, 0.0, {KEY: 40.0})  # 30 ms slower: the soonest wins
    assert placement.place({"a": a, "me": slow_me}, task, local="me") == "a"
    busy_me = WorkerLoad("me", 0, 1, 0.0, {KEY: 10.0})  # no credit: never chosen now
    assert placement.place({"a": a, "me": busy_me}, task, local="me") == "a"
