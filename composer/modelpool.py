"""A loaded pipeline kept for the next run in the same process (sweep jobs, API loops).

A Hydra multirun with the basic launcher runs every job in one process (joblib's workers are
reused across jobs too), and most sweeps vary things that do not change the model: batch_size,
call parameters, post transforms. Loading is often the slowest part of a small job. So a run
that ends hands its pipeline back here, and the next run that would build an identical one
(the same `pipeline()` arguments, down to the resolved weights, dtype, device, quantization and
build-time task parameters) takes it instead of loading again.

Memory stays bounded: what is kept is what the last run released, and a run that loads a
different model first drops everything kept that it cannot use, so two models never share the
memory (or the GPU) because of this pool. The usual sweep order (Hydra varies the first override
slowest, so `model=a,b batch_size=1,8` runs both batch sizes of `a` before `b`) reuses each model
for all of its jobs.
A pipeline's call-time parameters are passed per call and never stored on it, so a reused
pipeline behaves exactly as a fresh one; the run re-seeds after setup so that sampling does not
depend on whether loading consumed random numbers.
"""

from __future__ import annotations

import hashlib
from typing import Any

from composer.records import canonical_json

_kept: list[tuple[str, Any]] = []


def pipeline_key(arguments: dict[str, Any]) -> str:
    """A stable key for `pipeline()` arguments given as plain JSON values."""
    return hashlib.sha256(canonical_json(arguments).encode("utf-8")).hexdigest()


def take(key: str) -> Any | None:
    """A kept pipeline built from the same arguments, or None; either way, every kept pipeline
    with other arguments is dropped first, so that loading a new model never doubles memory."""
    global _kept
    matching = [entry for entry in _kept if entry[0] == key]
    _kept = matching[1:]
    return matching[0][1] if matching else None


def release(key: str, pipe: Any) -> None:
    """Keep `pipe` for the next run in this process."""
    _kept.append((key, pipe))


def clear() -> None:
    """Drop every kept pipeline (its memory is freed once nothing else holds it)."""
    _kept.clear()
