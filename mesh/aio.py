"""``run``: ``asyncio.run`` for a coroutine whose value may hold a photo's bytes.

On its way out, Python 3.11's ``asyncio.run`` formats the main task's repr twice, its result included
(its SIGINT handler is a ``functools.partial`` bound to the task, and ``signal.getsignal`` builds a
``ValueError`` message with ``%r`` of it: CPython issue 112559, fixed in 3.12). For a result that holds
a ``Job``, that is a repr of the image's bytes, four times their size: ``lamamesh submit`` of a 4.7 MB
JPEG took 0.71 s instead of 0.56 s and 113 MB of memory instead of 75. ``run`` keeps the value out of
the main task, so nothing big is formatted."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    box: list[T] = []

    async def main() -> None:
        box.append(await coro)

    asyncio.run(main())
    return box[0]
