"""The closed sets of names the mesh uses, as StrEnums: each member *is* its string, so it goes on
the wire, into config files and JSON unchanged, and a typo in code is an AttributeError."""

from __future__ import annotations

from enum import StrEnum


class Priority(StrEnum):
    """A task's place in the leader's queue: interactive ahead of batch, FIFO within each."""

    INTERACTIVE = "interactive"
    BATCH = "batch"


class Requirement(StrEnum):
    """Which nodes may run a task (``""``: any)."""

    ANY = ""
    CPU = "cpu"
    GPU_LOW = "gpu-low"
    GPU_MEDIUM = "gpu-medium"
    GPU_HIGH = "gpu-high"


# the GPU memory (MiB) a requirement class needs of the slot that runs it (-1: a CPU node only)
MIN_VRAM_MB: dict[str, int] = {
    Requirement.ANY: 0,
    Requirement.CPU: -1,
    Requirement.GPU_LOW: 1,
    Requirement.GPU_MEDIUM: 8192,
    Requirement.GPU_HIGH: 16384,
}


class Policy(StrEnum):
    """How the leader places: by expected completion, or the benchmarks' least-loaded contrast."""

    COMPLETION = "completion"
    LEAST_LOADED = "least-loaded"


class Role(StrEnum):
    """A node as ``status`` shows it."""

    LEADER = "leader"
    WORKER = "worker"
    LEAVING = "leaving"
    LEFT = "left"  # stopped after saying so (Ctrl-C, SIGTERM): not a failure
    DEAD = "dead"  # went silent without a word (crash, kill -9, power, network)
