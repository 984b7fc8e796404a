"""``evolve``: a frozen dataclass with some fields changed, for the per-task paths.

``dataclasses.replace`` builds the new object through ``__init__`` with every field as a keyword
(10-20 us for a message of a dozen fields); a task's header is copied like this on every
placement, and the placement pass copies a worker's load per task it places. ``evolve`` copies the
instance dict instead (about 1 us). Only for frozen dataclasses without ``__slots__`` or
``__post_init__`` (the messages and the placement records): nothing is checked again, so the
changes must have the fields' types."""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def evolve(obj: T, **changes: Any) -> T:
    cls = type(obj)
    new = cls.__new__(cls)
    d = new.__dict__
    d.update(obj.__dict__)
    for name in changes:
        if name not in d:
            raise TypeError(f"{cls.__name__} has no field {name!r}")
    d.update(changes)
    return new
