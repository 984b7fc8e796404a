"""The null task the alternatives run in bench/overhead.py (importable by RQ and Dask workers)."""

from __future__ import annotations


def echo(payload: bytes) -> bytes:
    return payload
