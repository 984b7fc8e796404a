"""mesh.aio.run: a coroutine's value comes back without being formatted (Python 3.11's asyncio.run
reprs the main task's result on its way out: a photo's bytes, for a submit)."""

from __future__ import annotations

import asyncio

from mesh import aio


class Loud:
    """Counts each time something formats it."""

    def __init__(self) -> None:
        self.reprs = 0

    def __repr__(self) -> str:
        self.reprs += 1
        return "<Loud>"


async def _value(x: Loud) -> tuple[Loud, list[bytes]]:
    await asyncio.sleep(0)
    return x, [b"\0" * 64]


def test_the_value_comes_back_unformatted() -> None:
    x = Loud()
    got, data = aio.run(_value(x))
    assert got is x and data == [b"\0" * 64]
    assert x.reprs == 0


def test_an_exception_comes_through_as_itself() -> None:
    async def fails() -> None:
        raise KeyError("k")

    try:
        aio.run(fails())
    except KeyError as exc:
        assert exc.args == ("k",)
    else:
        raise AssertionError("no KeyError")
