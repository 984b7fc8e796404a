"""Placement: which worker should run a task. Pure functions over frozen data.

A task goes to the worker expected to *finish* it soonest:

    expected finish = max((work already assigned to the worker) / its slots,
                          moving this task's bytes to it) + this task's service time

(the bytes move while the worker's slots are busy with earlier tasks, hence the max)
where service times are measured per worker, per model and per image size class (an
EWMA of what its slots reported), and moving the bytes per worker in ms per MiB (an EWMA
of how long the bytes took to reach it after its slot was held for them), per size class of
bytes (a small task's time is mostly a fixed part). So a fast GPU behind a slow link is
judged as it really performs, and no worker is preferred for where it is (only a tie goes
to the leader's own node, for a ticket: ``plan_one(prefer=)``).

A client's tasks go to its *crew*: the workers it uses now, grown only as far as its link can feed
or while their slots are busy (the scheduler decides how many may join, ``Crew.grow``). A client
whose link, not the workers, is the limit then sends its bytes over as few connections as keep up
(on 100 Mbit/s links the same bytes over 4-8 workers' connections at once moved 2-4% slower than
over 2, and came back in bursts), and two such clients get workers of their own. A new client's crew
takes its first ``CREW_START`` workers at once (``NEW_CREW``); the workers that join a crew are the
soonest ones, among near-equal ones those fewest other clients' crews hold.
Least-loaded alone is wrong on a mixed GPU/CPU mesh:
a GPU node with three tasks queued still finishes a new one long before an idle CPU
node. So the best worker may be one with no free credit right now; then the task *waits*
for it (``plan`` reserves it) instead of going to a slower worker that happens to be
free. ``least_loaded`` is kept only as the contrast the benchmarks show.

Requirement classes a task may name: "" (any node), ``cpu`` (CPU-provider nodes only,
keeps GPUs free), ``gpu-low`` (any CUDA node), ``gpu-medium`` (CUDA with >= 8 GiB VRAM),
``gpu-high`` (CUDA with >= 16 GiB VRAM).
"""

from __future__ import annotations

import functools
import math
import statistics
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from mesh import const
from mesh.frozen import evolve
from mesh.kinds import MIN_VRAM_MB, Policy

DEFAULT_SERVICE_MS = 500.0  # ms assumed when no worker has run this model at this size yet
EWMA_ALPHA = 0.3  # weight of the newest service-time sample
SIZE_CLASSES = ((500_000, "s"), (2_000_000, "m"), (8_000_000, "l"))  # pixels up to -> class; above: "xl"
WAIT_GAIN_MS = 2.0  # ms: a task waits for a busy worker only when that finishes it this much sooner than a free one
WAIT_GAIN_FRACTION = 0.25  # ... and by this fraction of the soonest estimate (estimates are noisy: a LAN's
# transfer times vary by tens of percent; waiting on noise leaves credits, and links, idle)
MIB = 1024 * 1024  # bytes
_BYTES_S, _BYTES_M = 256 * 1024, 4 * MIB  # image + mask bytes up to -> bytes_class "s", "m"; above: "l"
REQUIREMENTS = MIN_VRAM_MB  # min VRAM MiB of a worker's largest GPU (-1: no GPU)
KEEPS_BUSY_MAX = 1_000_000  # workers_fed's answer for bytes that take no measurable time


def size_class(pixels: int) -> str:
    if pixels <= 0:
        return "?"
    for limit, name in SIZE_CLASSES:
        if pixels <= limit:
            return name
    return "xl"


def bytes_class(size: int) -> str:
    """The size class a task's bytes are timed by: a small task's time is mostly the fixed part (the
    placement's round trip, the client's turn), which over a fraction of a MiB reads as a slow link."""
    return "s" if size <= _BYTES_S else "m" if size <= _BYTES_M else "l"  # asked per worker per task placed


@functools.lru_cache(maxsize=4096)
def service_key(model: str, pixels: int) -> str:
    """``model@size-class``, what service times are measured by (cached: asked per worker per task placed)."""
    return f"{model}@{size_class(pixels)}"


@dataclass(frozen=True, kw_only=True)
class WorkerLoad:
    node_id: str
    credits: int  # tasks the worker will still accept now
    slots: int
    assigned_ms: float = 0.0  # expected ms of the tasks sent to it and not answered yet
    service_ms: Mapping[str, float] = field(default_factory=dict)  # EWMA per service_key
    models: frozenset[str] | None = None  # None = unknown (assume it holds any)
    provider: str = "cpu"
    vram_mb: int = 0
    assigned: int = 0  # how many tasks that is
    ms_per_mib: float | None = None  # EWMA of moving a task's bytes to it, per MiB (None: not measured)
    rates: Mapping[str, float] = field(default_factory=dict)  # the same per bytes_class (those measured)
    floor_ms: float = 0.0  # the least a task holds one of its slots, as seen (ms between answers while busy)


@dataclass(frozen=True)
class TaskNeeds:
    model: str
    pixels: int = 0
    session: str = ""
    requires: str = ""
    size: int = 0  # bytes of image + mask
    avoid: str = ""  # node id of a worker that let this task pass its deadline: placed elsewhere if possible
    client: bytes = b""  # whose task (its crew is looked up by it); b"": no crew


@dataclass(frozen=True)
class Crew:
    """The workers one client's tasks go to now, and how many more may join it in this pass (the
    scheduler grants that from what the client's link can feed and how busy the members are)."""

    members: frozenset[str] = frozenset()
    grow: int = 0

    def joined(self, node_id: str) -> Crew:
        if node_id in self.members:
            return self
        return Crew(self.members | {node_id}, max(0, self.grow - 1))


@dataclass(frozen=True)
class Fleet:
    """The capable workers' means, for a worker not measured yet: service ms per key, ms per MiB moved."""

    service_ms: Mapping[str, float] = field(default_factory=dict)
    ms_per_mib: float = 0.0
    rates: Mapping[str, float] = field(default_factory=dict)  # per bytes_class


@dataclass(frozen=True)
class Placement:
    node_id: str
    estimate_ms: float  # the slot time choosing it was judged to cost; the scheduler charges exactly this


NEW_CREW = Crew(grow=const.CREW_START)  # a client's with no tasks held yet


def capable(w: WorkerLoad, task: TaskNeeds) -> bool:
    if task.avoid and w.node_id == task.avoid:
        return False
    if w.models is not None and task.model not in w.models:
        return False
    need = REQUIREMENTS.get(task.requires, 0)
    if need < 0:
        return w.provider != "cuda"
    if need > 0:
        return w.provider == "cuda" and w.vram_mb >= need
    return True


def service_estimate_ms(w: WorkerLoad, task: TaskNeeds, fleet: Fleet | None = None) -> float:
    """Expected service time of ``task`` on ``w``: its own measurement for this model and size,
    else its measurement for this model at another size (scaled by pixels is not known, so
    as is), else the fleet's mean for this key, else the default; never under the time a task
    has been seen to hold a slot there (``floor_ms``: model time alone misses the rest of a task's
    turn, which decides when a busy worker's queue really clears)."""
    return max(_model_estimate_ms(w, task, fleet), w.floor_ms)


def _model_estimate_ms(w: WorkerLoad, task: TaskNeeds, fleet: Fleet | None) -> float:
    key = service_key(task.model, task.pixels)
    got = w.service_ms.get(key)
    if got is not None:
        return got
    same_model = [v for k, v in w.service_ms.items() if _model_of(k) == task.model]
    if same_model:
        return sum(same_model) / len(same_model)
    if fleet is not None and key in fleet.service_ms:
        return fleet.service_ms[key]
    return DEFAULT_SERVICE_MS


def transfer_estimate_ms(w: WorkerLoad, task: TaskNeeds, fleet: Fleet | None = None) -> float:
    """Expected ms to move ``task``'s bytes to ``w``, at a rate per MiB: its own for bytes of this size
    class; else its own at other sizes, scaled by how the fleet's rates differ between those sizes and
    this one (64 KiB tasks read 10 ms per MiB on loopback where 1 MiB ones read 1-2: taken as they are,
    a worker that had run only small tasks looked 8 ms slower for a big one than one that had not);
    else its rate over all sizes; else the fleet's for this class or over all; else nothing."""
    return transfer_rate(w, task, fleet) * task.size / MIB


def transfer_rate(w: WorkerLoad, task: TaskNeeds, fleet: Fleet | None = None) -> float:
    """The ms per MiB ``transfer_estimate_ms`` moves ``task``'s bytes to ``w`` at (see there)."""
    cls = bytes_class(task.size)
    own = w.rates.get(cls)
    if own is not None:
        return own
    shape = fleet.rates if fleet is not None else {}
    if cls in shape:
        scaled = [v * shape[cls] / shape[k] for k, v in w.rates.items() if shape.get(k)]
        if scaled:
            return sum(scaled) / len(scaled)
    if w.ms_per_mib is not None:
        return w.ms_per_mib
    if fleet is None:
        return 0.0
    return shape.get(cls, fleet.ms_per_mib)


def fleet_means(workers: Iterable[WorkerLoad]) -> Fleet:
    sums: dict[str, list[float]] = {}
    rates: list[float] = []
    by_class: dict[str, list[float]] = {}
    for w in workers:
        for k, v in w.service_ms.items():
            sums.setdefault(k, []).append(v)
        if w.ms_per_mib is not None:
            rates.append(w.ms_per_mib)
        for k, v in w.rates.items():
            by_class.setdefault(k, []).append(v)
    return Fleet(
        {k: sum(v) / len(v) for k, v in sums.items()},
        sum(rates) / len(rates) if rates else 0.0,
        {k: sum(v) / len(v) for k, v in by_class.items()},
    )


def expected_finish_ms(w: WorkerLoad, task: TaskNeeds, fleet: Fleet | None = None) -> float:
    """From now until ``w`` would finish ``task``: its bytes move while the slots work off what is
    assigned, then the task runs."""
    queued = w.assigned_ms / max(1, w.slots)
    return max(queued, transfer_estimate_ms(w, task, fleet)) + service_estimate_ms(w, task, fleet)


def best(
    workers: Mapping[str, WorkerLoad],
    task: TaskNeeds,
    affinity: Mapping[str, str] | None = None,
    fleet: Fleet | None = None,
    crew: Crew | None = None,
    shared: Mapping[str, int] | None = None,
    finishes: dict[str, float] | None = None,
) -> str | None:
    """The capable worker that will finish ``task`` soonest (credit or not), or None if none can run it.

    Estimates within ``WAIT_GAIN_MS`` and ``WAIT_GAIN_FRACTION`` of the soonest count as equal: a worker with credit is
    preferred to a busy one that would finish less than that sooner (waiting for a gain in the
    noise of the estimates only costs a round trip), and among those the soonest.
    ``fleet``: the capable workers' means, when the caller already has them. ``crew``: the task's
    client's; only its members are looked at unless it may grow (or none of them can run the task);
    when it may, a worker outside it goes first among near-equal ones, and of those the one fewest
    other crews hold (``shared``: how many crews hold each worker). ``finishes``: filled with the expected
    finish of each worker scored (``plan_one`` compares its preferred worker by them)."""
    able = [w for w in workers.values() if capable(w, task)]
    if not able:
        return None
    if task.session and affinity:
        sticky = affinity.get(task.session)
        if sticky is not None and any(w.node_id == sticky for w in able):
            return sticky
    means = fleet_means(able) if fleet is None else fleet
    if crew is not None and crew.grow <= 0:
        inner = [w for w in able if w.node_id in crew.members]
        able = inner or able  # none of its workers can run this one: the crew grows for it
    scored = [(expected_finish_ms(w, task, means), w.node_id, w.credits > 0) for w in able]
    if finishes is not None:
        finishes.update((node, ms) for ms, node, _ in scored)
    top = min(scored)
    near = [s for s in scored if s[2] and s[0] <= top[0] + max(WAIT_GAIN_MS, WAIT_GAIN_FRACTION * top[0])]
    if not near:
        return top[1]  # no worker with credit comes close: wait for the soonest
    if crew is None or crew.grow <= 0:
        return min(near)[1]
    # the crew may grow because its members are busy: a worker outside it goes first among near-equal
    # ones (the members' own credits come back with every answer, so they would always be there too)
    counts = shared or {}
    return min(near, key=lambda s: (s[1] in crew.members, counts.get(s[1], 0), s))[1]


def place(workers: Mapping[str, WorkerLoad], task: TaskNeeds, affinity: Mapping[str, str] | None = None) -> str | None:
    """The worker to send ``task`` to now, or None: it should wait (the best one is busy) or no one can run it."""
    node = best(workers, task, affinity)
    if node is None or workers[node].credits <= 0:
        return None
    return node


def least_loaded(workers: Mapping[str, WorkerLoad], task: TaskNeeds) -> str | None:
    """The contrast: the capable worker with credit and the fewest tasks, whatever its speed."""
    able = [w for w in workers.values() if capable(w, task) and w.credits > 0]
    if not able:
        return None
    return min(able, key=lambda w: (w.assigned / max(1, w.slots), w.node_id)).node_id


def _choose(
    loads: Mapping[str, WorkerLoad],
    task: TaskNeeds,
    affinity: Mapping[str, str] | None,
    policy: str,
    fleets: dict[tuple[str, str, str] | None, Fleet],
    crews: Mapping[bytes, Crew] | None = None,
    finishes: dict[str, float] | None = None,
) -> tuple[str | None, Fleet]:
    """The worker ``policy`` picks for ``task`` (None: none can run it) and the fleet means it was judged
    by: every worker's for the least-loaded contrast, else the capable ones' (``fleets`` keeps them by
    kind of task for the rest of a pass). ``crews``: per client (none given: no crews, every worker
    is looked at; a client not in it has an empty crew, which its first task starts). ``finishes``: see ``best``."""
    if policy == Policy.LEAST_LOADED:
        if None not in fleets:
            fleets[None] = fleet_means(loads.values())
        return least_loaded(loads, task), fleets[None]
    kind = (task.model, task.requires, task.avoid)
    if kind not in fleets:
        fleets[kind] = fleet_means(w for w in loads.values() if capable(w, task))
    crew = None if crews is None or not task.client else crews.get(task.client, NEW_CREW)
    shared: dict[str, int] | None = None
    if crews is not None and crew is not None and crew.grow > 0 and len(crews) > 1:  # only a growing one looks
        shared = {}
        for c in crews.values():
            for node in c.members:
                shared[node] = shared.get(node, 0) + 1
    return best(loads, task, affinity, fleets[kind], crew, shared, finishes), fleets[kind]


def plan(
    workers: Mapping[str, WorkerLoad],
    tasks: Iterable[TaskNeeds],
    affinity: Mapping[str, str] | None = None,
    policy: str = Policy.COMPLETION,
    crews: Mapping[bytes, Crew] | None = None,
) -> list[Placement | None]:
    """Place queued tasks in priority order, one pass: each task either goes to a worker with
    credit now, or waits and *reserves* its best worker (its expected work counts against
    that worker for the tasks behind it). Returns a ``Placement`` (the worker and the estimate
    that chose it, which the caller charges) or None per task looked at: the pass stops when no
    credit is left, so ``tasks`` may be a lazy iterator over a long queue,
    and the tasks after the last one returned are not consumed. ``crews``: each client's (see ``best``);
    a worker a task is sent to joins its client's crew for the rest of the pass (the caller keeps the same)."""
    loads = dict(workers)
    crews = None if crews is None else dict(crews)
    # service times do not change during a pass: the capable workers' means, once per kind of task
    fleets: dict[tuple[str, str, str] | None, Fleet] = {}
    credits = sum(max(0, w.credits) for w in loads.values())
    out: list[Placement | None] = []
    if credits <= 0:
        return out
    for task in tasks:
        node, fleet = _choose(loads, task, affinity, policy, fleets, crews)
        if node is None:
            out.append(None)
            continue
        w = loads[node]
        est = service_estimate_ms(w, task, fleet)  # the slot time of the estimate that chose it
        sent = w.credits > 0
        credits -= sent
        if sent and crews is not None and task.client:
            crews[task.client] = crews.get(task.client, NEW_CREW).joined(node)
        out.append(Placement(node, est) if sent else None)
        loads[node] = evolve(
            w, credits=w.credits - 1 if sent else w.credits, assigned_ms=w.assigned_ms + est, assigned=w.assigned + 1
        )
        if credits <= 0:  # nothing more can be sent in this pass; the rest waits
            break
    return out


def plan_one(
    workers: Mapping[str, WorkerLoad],
    task: TaskNeeds,
    affinity: Mapping[str, str] | None = None,
    policy: str = Policy.COMPLETION,
    crews: Mapping[bytes, Crew] | None = None,
    prefer: str = "",
) -> Placement | None:
    """``plan(workers, [task])``'s answer for one task, without the pass's bookkeeping (the leader asks
    it for every ticket it offers: one at a time, that is once a task). ``prefer``: a worker that gets
    the task instead when it has credit and would finish it within ``WAIT_GAIN_MS`` of the chosen one
    (equal, within the estimates' noise)."""
    if sum(max(0, w.credits) for w in workers.values()) <= 0:
        return None
    finishes: dict[str, float] = {}  # what choosing found; a worker it did not score (sticky, crew) is asked
    node, fleet = _choose(workers, task, affinity, policy, {}, crews, finishes)
    if node is None or workers[node].credits <= 0:
        return None
    own = workers.get(prefer) if prefer != node else None
    if own is not None and own.credits > 0 and capable(own, task):

        def finish(w: WorkerLoad) -> float:
            got = finishes.get(w.node_id)
            return expected_finish_ms(w, task, fleet) if got is None else got

        if finish(own) <= finish(workers[node]) + WAIT_GAIN_MS:
            node = prefer
    return Placement(node, service_estimate_ms(workers[node], task, fleet))


def keeps_busy(workers: Iterable[WorkerLoad], task: TaskNeeds) -> int:
    """How many workers one client's link keeps busy with tasks like ``task``, judged from what the mesh
    measured before (any client's tasks): the median model time of the workers that ran this model over
    the time its bytes take to reach one (the workers' mean ms per MiB at its size), times
    ``CREW_HEADROOM``. 0 when either is not measured yet (a fresh mesh's first batch: its crew starts
    with ``CREW_START``)."""
    able = [w for w in workers if capable(w, task)]
    fleet = fleet_means(able)
    rates = [transfer_rate(w, task, fleet) for w in able if w.rates or w.ms_per_mib is not None]
    models = [_model_estimate_ms(w, task, None) for w in able if _ran(w, task.model)]
    if task.size <= 0 or not rates or not models:
        return 0
    move_ms = sum(rates) / len(rates) * task.size / MIB
    return workers_fed(statistics.median(models), max(move_ms, 0.01))


def _model_of(key: str) -> str:
    return key.split("@", 1)[0]


def _ran(w: WorkerLoad, model: str) -> bool:
    """``w`` has a service time measured for ``model`` (at any size)."""
    return any(_model_of(k) == model for k in w.service_ms)


def data_wait_s(size: int) -> float:
    """How long a worker holds a slot for a task's bytes (``size``: image + mask) before it gives the
    slot back: ``DATA_WAIT``, plus the time to move them at ``DATA_MIN_RATE`` (a slow link's photo)."""
    return const.DATA_WAIT + max(0, size) / const.DATA_MIN_RATE


def deadline_s(finish_ms: float, measured: bool, size: int = 0) -> float:
    """How long a placed task may go unanswered before the leader places it elsewhere: the time its
    bytes may take to come (``data_wait_s``) plus ``TASK_DEADLINE_FACTOR`` x its expected finish
    (the queue at its worker and its service time), within ``TASK_DEADLINE_MIN``..``MAX``; a kind of
    task no worker has measured yet (its estimate is a guess) gets the cap."""
    if not measured:
        return const.TASK_DEADLINE_MAX
    wanted = data_wait_s(size) + const.TASK_DEADLINE_FACTOR * finish_ms / 1000
    return min(const.TASK_DEADLINE_MAX, max(const.TASK_DEADLINE_MIN, wanted))


def measured(workers: Iterable[WorkerLoad], task: TaskNeeds) -> bool:
    """Some worker has run this model (at any size): the service estimates are not a guess."""
    return any(_ran(w, task.model) for w in workers)


def ewma(old: float | None, sample: float, alpha: float = EWMA_ALPHA) -> float:
    return sample if old is None else (1 - alpha) * old + alpha * sample


def workers_fed(model_ms: float, bytes_ms: float) -> int:
    """How many workers one client's link keeps busy: a task's model time over the time its bytes take
    on that link, times ``CREW_HEADROOM`` (``bytes_ms`` > 0; the callers floor it)."""
    return min(KEEPS_BUSY_MAX, math.ceil(const.CREW_HEADROOM * model_ms / bytes_ms))
