"""glibc malloc tuned for model inference on CPU (config `tune_malloc`, default on).

Each forward pass allocates and frees megabytes of activations. glibc hands freed memory at the
top of a heap back to the kernel once more than its trim threshold is free there, and its
dynamic thresholds stay far below one forward's working set (they only rise as large mmapped
chunks are freed), so the next forward page-faults the same memory back in: 450k-800k minor
faults and up to 1.2 s of system time in a 6-second run of the small bench model. With the
thresholds fixed at glibc's own ceiling (mmap at 32 MiB, the largest mallopt accepts on 64-bit,
trim at twice that, the ratio glibc keeps), freed activations are reused: faults drop threefold
and the small bench model runs 5-10% faster (bench/RESULTS.md; at bert-base size, where the
matrix products dominate, nothing measurable), outputs unchanged. Chunks over 32 MiB are still
mmapped and returned at once. The price is memory kept: each heap (one per thread that
allocates) may keep up to 64 MiB free at its top, and chunks under 32 MiB come from the heaps.
The tuning applies to every run, a GPU run's host memory included, where there is little to gain.

mallopt is process-wide and glibc cannot go back to its dynamic thresholds, so a later run in
the same process with tune_malloc=false says it found the tuning in place. A user who sets these
thresholds through the environment, or preloads another allocator, is left alone.
"""

from __future__ import annotations

import ctypes
import os
import platform
from typing import Any

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 32 * 2**20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit: the most mallopt takes
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD
# The settings that decide when freed memory goes back to the kernel, as environment variables
# and as glibc tunables (GLIBC_TUNABLES=glibc.malloc.<name>=...).
_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")
_TUNABLES = ("glibc.malloc.mmap_threshold", "glibc.malloc.trim_threshold", "glibc.malloc.top_pad", "glibc.malloc.mmap_max")
_OTHER_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")

_tuned: dict[str, Any] | None = None  # what this process set, once set


def tune_malloc(enabled: bool) -> dict[str, Any]:
    """Fix glibc's mmap and trim thresholds (once per process) unless told or found not to;
    returns what holds, for the manifest."""
    global _tuned
    if _tuned is not None:
        return dict(_tuned) if enabled else {**_tuned, "note": "set by an earlier run in this process; glibc keeps it"}
    if not enabled:
        return {"tuned": False, "because": "tune_malloc=false"}
    try:
        why = leave_alone_because()
        if why:
            return {"tuned": False, "because": why}
        mallopt = ctypes.CDLL(None).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        if not (mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
            return {"tuned": False, "because": "glibc's mallopt refused the thresholds"}
    except (OSError, AttributeError) as error:  # a speed-up only: never the reason a run fails
        return {"tuned": False, "because": f"{type(error).__name__}: {error}"}
    _tuned = {"tuned": True, "mmap_threshold": MMAP_THRESHOLD, "trim_threshold": TRIM_THRESHOLD}
    return dict(_tuned)


def leave_alone_because() -> str | None:
    """Why this process's malloc is not composer's to tune (None: it is)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return f"not glibc ({platform.system()} {' '.join(platform.libc_ver()).strip() or 'unknown libc'})"
    own = [name for name in _ENVIRONMENT if name in os.environ]
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    own += [f"GLIBC_TUNABLES {name}" for name in _TUNABLES if name in tunables]
    if own:
        return f"the environment sets malloc's thresholds ({', '.join(own)})"
    preload = os.environ.get("LD_PRELOAD", "")
    if os.path.exists("/etc/ld.so.preload"):
        with open("/etc/ld.so.preload", encoding="utf-8", errors="replace") as handle:
            preload += " " + handle.read()
    preloaded = [name for name in _OTHER_ALLOCATORS if name in preload]
    if preloaded:
        return f"another allocator is preloaded ({preloaded[0]})"
    return None
