"""Keep freed CPU memory for reuse: large tensors without a page fault per 4 KiB.

Why. glibc's ``malloc`` serves a request of at least ``M_MMAP_THRESHOLD`` bytes with a fresh ``mmap`` and gives
it back to the kernel with ``munmap`` on ``free``. The threshold adapts to freed sizes but is capped at 32 MiB
on 64-bit Linux, and the top of the heap is given back too once more than ``M_TRIM_THRESHOLD`` is free (at most
64 MiB). So every CPU tensor larger than 32 MiB -- one conv activation of a DreamerV3 update, 1,024 frames x
32 x 32 x 8 floats, is 33.5 MiB -- arrives as untouched pages, and the first write to each 4 KiB page is a page
fault in which the kernel zeroes it. Measured on the 2-core CI machine (AMD EPYC, 1 thread): ``x * x`` on 8.4M
floats 35 ms with glibc's default, 6 ms with freed memory kept; the DreamerV3 ``tiny`` update 2,187 -> 1,567 ms.

What. :func:`keep_freed_memory` sets two ``mallopt`` parameters of the running process: ``M_MMAP_MAX = 0``
(large requests come from the heap, not from ``mmap``) and ``M_TRIM_THRESHOLD`` = 2 GiB (up to that much freed
memory stays at the top of the heap for the next request). ``import wmkit`` calls it on Linux with glibc unless the
environment sets ``WMKIT_KEEP_FREED_MEMORY=0``. The glibc environment variables ``MALLOC_MMAP_MAX_=0
MALLOC_TRIM_THRESHOLD_=2147483647`` do the same for a whole process from its start.

The cost. The process keeps its peak memory (RSS does not shrink after a large step), and the heap can
fragment when large and small long-lived blocks interleave. The first reuses can miss: PyTorch asks for 64-byte
aligned blocks, so a request is a little larger than the block freed before it, and a freed block that cannot
merge into the top of the heap is skipped. In a loop of 64 MiB tensors glibc settles within a few rounds on a
handful of blocks that it then reuses with no page faults, and RSS stays flat (``tests/test_malloc.py``).
PyTorch's CPU tuning guide reaches the same end by preloading jemalloc or tcmalloc; this needs no extra library.
GPUs are untouched (PyTorch caches CUDA memory itself). macOS, Windows and musl have other allocators: there the
call does nothing and returns False.

``wmkit bench malloc`` (``wmkit.dreamer.bench.malloc_run``) times a DreamerV3 update in two worker processes, one
with glibc's default and one with this setting, alternately, and prints the ratio and the page faults per call.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameter numbers, from glibc's <malloc.h>
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
KEEP_TRIM_THRESHOLD = 2**31 - 1        # mallopt takes an int: 2 GiB, above any step's working set in the cpu profile
ENV = "WMKIT_KEEP_FREED_MEMORY"

_state = {"applied": False}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse in this process (see the module docstring). Returns True when the
    setting is in force, False where the allocator is not glibc's. Calling it again is harmless."""
    libc = _glibc()
    if libc is None:
        return False
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, KEEP_TRIM_THRESHOLD) == 1 and ok
    _state["applied"] = ok
    return ok


def applied() -> bool:
    """Whether :func:`keep_freed_memory` is in force in this process."""
    return _state["applied"]


def apply_default() -> bool:
    """What ``import wmkit`` does: keep freed memory unless ``WMKIT_KEEP_FREED_MEMORY=0``."""
    value = os.environ.get(ENV, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{ENV} must be 0 or 1, got {value!r}")
    return keep_freed_memory() if value == "1" else False

