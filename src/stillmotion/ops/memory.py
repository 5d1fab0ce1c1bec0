"""How the process's C heap hands memory back (glibc only; elsewhere nothing changes).

Image inputs, decoded frames and base64 create bodies are megabytes each. glibc raises its mmap
threshold dynamically up to 32 MiB after the first large block is freed, so from then on such
buffers come from the heap arenas, one arena per worker thread, and stay resident after they are
freed: a burst of submissions leaves the process at its high-water mark. A fixed threshold of
1 MiB keeps every large buffer in its own mapping, returned to the system when it is freed, and
two arenas bound the per-thread caches (the same effect `MALLOC_ARENA_MAX=2` had in bench section 2).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1024 * 1024
ARENAS = 2
_DONE: list[bool] = []


def bound_malloc() -> bool:
    """Set the fixed mmap threshold and the arena cap once per process; True when glibc took them."""
    if _DONE:
        return _DONE[0]
    ok = False
    name = ctypes.util.find_library("c")
    if name is not None:
        try:
            libc = ctypes.CDLL(name)
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
            mallopt.restype = ctypes.c_int
            ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_ARENA_MAX, ARENAS))
    _DONE.append(ok)
    log.debug("malloc bounded: %s", ok)
    return ok
