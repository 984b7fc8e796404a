"""Placement: which worker should run a task. Pure functions over frozen data.

A task goes to the worker expected to finish it soonest:
``(tasks already assigned + this one) / slots x measured service time`` for the
task's model, among workers with a free credit that hold the model. Least-loaded
alone is wrong on a mixed GPU/CPU mesh: a GPU node with three queued tasks can still
finish a new one long before an idle CPU node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_SERVICE_MS = 500.0  # ms assumed for a model a worker has not run yet
EWMA_ALPHA = 0.3  # weight of the newest service-time sample


@dataclass(frozen=True)
class WorkerLoad:
    node_id: str
    credits: int  # tasks the worker will still accept now
    assigned: int  # tasks sent to it and not answered yet
    slots: int
    service_ms: Mapping[str, float] = field(default_factory=dict)  # EWMA per model
    models: frozenset[str] | None = None  # None = unknown (assume it can fetch/hold any)


@dataclass(frozen=True)
class TaskNeeds:
    model: str
    session: str = ""


def expected_finish_ms(w: WorkerLoad, model: str) -> float:
    per_task = w.service_ms.get(model)
    if per_task is None:
        # unknown model on this worker: use its mean over other models, else the default
        per_task = sum(w.service_ms.values()) / len(w.service_ms) if w.service_ms else DEFAULT_SERVICE_MS
    return (w.assigned + 1) / max(1, w.slots) * per_task


def place(workers: Mapping[str, WorkerLoad], task: TaskNeeds, affinity: Mapping[str, str] | None = None) -> str | None:
    """The worker that will finish ``task`` soonest, or None if no worker can take it now."""
    able = [w for w in workers.values() if w.credits > 0 and (w.models is None or task.model in w.models)]
    if not able:
        return None
    if task.session and affinity:
        sticky = affinity.get(task.session)
        if sticky is not None and any(w.node_id == sticky for w in able):
            return sticky
    return min(able, key=lambda w: (expected_finish_ms(w, task.model), w.node_id)).node_id


def ewma(old: float | None, sample: float) -> float:
    return sample if old is None else (1 - EWMA_ALPHA) * old + EWMA_ALPHA * sample
