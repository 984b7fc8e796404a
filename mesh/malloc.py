"""``keep_freed_memory``: glibc's allocator told to keep freed memory for the next task's buffers.

Each message of a task's bytes is one buffer of its size (1-12 MB for a photo), allocated by ZeroMQ's
I/O thread as it arrives and freed when the task is answered. By default glibc gives such memory back to
the kernel at once (a freed chunk above ``M_MMAP_THRESHOLD`` is unmapped, and a thread arena's top above
``M_TRIM_THRESHOLD`` is cut), so the next buffer of the same size is new pages: a page fault and a
zeroed page every 4 KiB before any byte is copied in. Profiles of 1 MiB null tasks on loopback showed
that in every process (``clear_page_rep``, ``exc_page_fault``, ``unmap_page_range``: 5-7% of all
samples). Here buffers up to ``MMAP_MAX`` come from the heap and up to ``TRIM`` bytes freed at an
arena's top stay with the process: its memory stays at its peak of bytes in flight instead of going up
and down each task.

Only the ``lamamesh`` command does this, for its own process (``main`` in ``surface/cli.py``): a
program that embeds a node or a ``Client`` keeps its allocator as it set it. Nothing happens where the C
library is not glibc, or where the user tuned it already (``GLIBC_TUNABLES`` or ``MALLOC_*_`` set)."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_MAX = 32 << 20  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (HEAP_MAX_SIZE / 2)
TRIM = 128 << 20


def keep_freed_memory(environ: dict[str, str] | None = None) -> bool:
    """Set the two thresholds; True when glibc took both."""
    env = os.environ if environ is None else environ
    if not sys.platform.startswith("linux") or "GLIBC_TUNABLES" in env or any(k.startswith("MALLOC_") for k in env):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018  glibc only: musl has no such call (and a mallopt that does nothing)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_MAX)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM))
