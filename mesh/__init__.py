"""lamamesh: the machines on a LAN as one inpainting cluster."""

from .client import Client, Job, JobResult, embedded
from .config import Config
from .errors import InputError, MeshError, ModelError, NoMesh, TaskFailed
from .node import Node

__version__ = "0.1.0"
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
