"""lamamesh: the machines on a LAN as one inpainting cluster.

The names below are imported on first use (PEP 562), so a slot process that imports
``mesh.execute.slots`` does not pay for the client, the node and zeroconf.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mesh.cluster.node import Node, embedded
    from mesh.config import Config
    from mesh.errors import InputError, MeshError, ModelError, NoMesh, TaskFailed
    from mesh.surface.client import Client, Job, JobResult

__version__ = "0.1.0"
_WHERE = {
    "Client": "surface.client",
    "Job": "surface.client",
    "JobResult": "surface.client",
    "embedded": "cluster.node",
    "Config": "config",
    "InputError": "errors",
    "MeshError": "errors",
    "ModelError": "errors",
    "NoMesh": "errors",
    "TaskFailed": "errors",
    "Node": "cluster.node",
}
__all__ = [
    "Client",
    "Config",
    "InputError",
    "Job",
    "JobResult",
    "MeshError",
    "ModelError",
    "NoMesh",
    "Node",
    "TaskFailed",
    "embedded",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'mesh' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
