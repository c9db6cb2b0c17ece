"""glibc malloc tuned for inference (composer.allocator, config tune_malloc)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from composer import allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"

# Activations of several sizes allocated and freed batch after batch, as a forward pass does.
CHURN = """
import ctypes, resource, sys
ctypes.CDLL(None).prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: faults counted in 4 KiB pages, whatever the host's THP setting
import numpy as np
if sys.argv[1] == "tune":
    from composer.allocator import tune_malloc
    assert tune_malloc(True)["tuned"]
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    live = [np.ones(n) for n in (1_500_000, 500_000, 3_000_000, 700_000)]
    del live[0]
    live.append(np.ones(2_000_000))
    del live
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuned_malloc_reuses_freed_memory_instead_of_faulting_it_back():
    def faults(mode: str) -> int:
        environment = {**os.environ, "NUMPY_MADVISE_HUGEPAGE": "0"}
        done = subprocess.run([sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True, env=environment)
        return int(done.stdout.split()[-1])

    plain, tuned = faults("plain"), faults("tune")
    assert plain > 50_000  # glibc's own thresholds: each round faults most of its ~80 MB back in
    assert tuned < plain / 10


@pytest.fixture
def fresh(monkeypatch):
    """This process's tuning state set aside, and no malloc settings in the environment."""
    monkeypatch.setattr(allocator, "_tuned", None)
    for name in (*allocator._ENVIRONMENT, "GLIBC_TUNABLES", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(allocator.os.path, "exists", lambda path: False if path == "/etc/ld.so.preload" else os.path.lexists(path))
    mallopt = _Mallopt()
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda _: type("libc", (), {"mallopt": mallopt})())
    return mallopt


class _Mallopt:
    """glibc's mallopt as composer calls it: (int, int) -> int, 1 when accepted."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []
        self.accepts = True

    def __call__(self, parameter: int, value: int) -> int:
        assert self.argtypes == [allocator.ctypes.c_int, allocator.ctypes.c_int] and self.restype is allocator.ctypes.c_int
        self.calls.append((parameter, value))
        return int(self.accepts)


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_tuning_sets_both_thresholds_once_and_a_later_run_that_turns_it_off_is_told(fresh):
    expected = {"tuned": True, "mmap_threshold": 32 * 2**20, "trim_threshold": 64 * 2**20}
    assert allocator.tune_malloc(True) == expected
    assert allocator.tune_malloc(True) == expected
    assert fresh.calls == [(allocator.M_MMAP_THRESHOLD, 32 * 2**20), (allocator.M_TRIM_THRESHOLD, 64 * 2**20)]  # once
    later = allocator.tune_malloc(False)
    assert later["tuned"] is True and "earlier run" in later["note"]


@pytest.mark.parametrize(("variable", "value", "because"), [
    ("MALLOC_TRIM_THRESHOLD_", "1000000", "the environment sets malloc's thresholds (MALLOC_TRIM_THRESHOLD_)"),
    ("GLIBC_TUNABLES", "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=4096",
     "the environment sets malloc's thresholds (GLIBC_TUNABLES glibc.malloc.mmap_threshold)"),
    ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "another allocator is preloaded (jemalloc)"),
])
@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_a_user_who_tunes_malloc_or_brings_another_allocator_is_left_alone(fresh, monkeypatch, variable, value, because):
    monkeypatch.setenv(variable, value)
    assert allocator.tune_malloc(True) == {"tuned": False, "because": because}
    assert fresh.calls == []


@pytest.mark.skipif(not GLIBC, reason="glibc's malloc only")
def test_other_settings_of_malloc_do_not_stop_the_tuning(fresh, monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.arena_max=2")
    assert allocator.tune_malloc(True)["tuned"] is True


def test_tune_malloc_false_touches_nothing(fresh):
    assert allocator.tune_malloc(False) == {"tuned": False, "because": "tune_malloc=false"}
    assert fresh.calls == []


def test_without_glibc_or_when_mallopt_refuses_the_run_goes_on_untuned(fresh, monkeypatch):
    with monkeypatch.context() as patch:
        patch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
        assert allocator.tune_malloc(True)["because"].startswith("not glibc")
    if GLIBC:
        fresh.accepts = False
        assert allocator.tune_malloc(True) == {"tuned": False, "because": "glibc's mallopt refused the thresholds"}
        assert allocator._tuned is None  # a later run tries again
