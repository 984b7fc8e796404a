"""One flat error hierarchy. Each error carries a message a user can act on."""

from __future__ import annotations


class MeshError(Exception):
    """Base of every lamamesh error. ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    code = "error"


class InputError(MeshError):
    """Bad input the user can fix: missing file, not an image, mask of the wrong size."""

    exit_code = 2
    code = "input"


class ConfigError(MeshError):
    """A bad flag, environment variable or config file value."""

    exit_code = 2
    code = "config"


class ModelError(MeshError):
    """Unknown model, missing model file, wrong checksum, model that fails to load."""

    exit_code = 2
    code = "model"


class TaskFailed(MeshError):
    """A task ran and failed (a slot crashed too often, inference raised)."""

    exit_code = 1
    code = "failed"


class TimedOut(MeshError):
    """No answer within the time the caller allowed (``--timeout``)."""

    exit_code = 1
    code = "timeout"


class NoMesh(MeshError):
    """No node answered, or none can run the task."""

    exit_code = 3
    code = "no_mesh"


class NoCapableNode(NoMesh):
    code = "no_capable_node"


class ProtocolError(MeshError):
    """A message that could not be decoded (malformed, oversized, wrong shape)."""

    code = "protocol"


class VersionMismatch(ProtocolError):
    code = "version"


class Overloaded(MeshError):
    """A limit was reached (queue per client, frame size); try again later or smaller."""

    exit_code = 1
    code = "overloaded"


ERRORS_BY_CODE: dict[str, type[MeshError]] = {
    cls.code: cls
    for cls in (
        MeshError,
        InputError,
        ConfigError,
        ModelError,
        TaskFailed,
        TimedOut,
        NoMesh,
        NoCapableNode,
        ProtocolError,
        VersionMismatch,
        Overloaded,
    )
}


def from_code(code: str, message: str) -> MeshError:
    """Rebuild an error sent over the wire as ``(code, message)``."""
    return ERRORS_BY_CODE.get(code, MeshError)(message)
