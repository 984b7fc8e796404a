"""The test harness's own guards work: a blocking call on a running event loop in lamamesh code
fails the test (blockbuster, tests/conftest.py), and the same call in a thread does not."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from blockbuster import BlockingError

from mesh.execute.models import sha256_file


def test_a_blocking_call_on_the_loop_is_caught_and_off_the_loop_is_not(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)

    async def on_loop() -> str:
        return sha256_file(f)  # mesh code reading a file on the loop thread

    with pytest.raises(BlockingError):
        asyncio.run(on_loop())

    async def in_thread() -> str:
        return await asyncio.to_thread(sha256_file, f)

    assert len(asyncio.run(in_thread())) == 64
