"""mesh.malloc.keep_freed_memory: a photo-sized buffer comes from the heap, not a fresh mapping, once
the lamamesh command has set glibc's thresholds; nothing is set where the user tuned glibc already."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest

from mesh import malloc

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="glibc only"
)

# a child process allocates 4 MiB and reports the bytes glibc holds in mmap'ed chunks (mallinfo2's hblkhd)
_CHILD = """
import ctypes, ctypes.util, sys
from mesh import malloc
if sys.argv[1] == "tuned":
    assert malloc.keep_freed_memory({})
NAMES = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in NAMES]
libc = ctypes.CDLL(ctypes.util.find_library("c"))
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
p = libc.malloc(4 << 20)
print(libc.mallinfo2().hblkhd)
libc.free(ctypes.c_void_p(p))
"""


def _mapped(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode], capture_output=True, text=True, timeout=60, check=True)
    return int(out.stdout.strip())


def test_a_photo_sized_buffer_comes_from_the_heap() -> None:
    if not hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2"):
        pytest.skip("glibc before 2.33 has no mallinfo2")
    assert _mapped("default") >= 4 << 20  # glibc's default: a fresh mapping, unmapped again on free
    assert _mapped("tuned") < 4 << 20


def test_a_user_setting_is_left_alone() -> None:
    assert not malloc.keep_freed_memory({"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=0"})
    assert not malloc.keep_freed_memory({"MALLOC_ARENA_MAX": "2"})
