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

Within a run, stages that build the identical pipeline share the one in use: the default job's
embedding_classify encodes its label descriptions with the main model's MiniLM instead of a
second copy. A shared pipeline is kept for the next run only when its last holder closes.
"""

from __future__ import annotations

import hashlib
import weakref
from typing import Any

from composer.records import canonical_json

_kept: list[tuple[str, Any]] = []
# key -> [weak reference to the pipeline, number of stages holding it]. Weak: a stage dropped
# without close() (a notebook, a test) must not keep its model alive here.
_live: dict[str, list[Any]] = {}


def pipeline_key(arguments: dict[str, Any]) -> str:
    """A stable key for `pipeline()` arguments given as plain JSON values."""
    return hashlib.sha256(canonical_json(arguments).encode("utf-8")).hexdigest()


def take(key: str) -> Any | None:
    """The pipeline built from the same arguments that a stage of this run holds, or one a finished
    run kept, or None. Kept pipelines with other arguments are dropped first, so that loading a
    new model never doubles memory."""
    global _kept
    shared = _live[key][0]() if key in _live else None
    if shared is not None:
        _live[key][1] += 1
        return shared
    matching = [entry for entry in _kept if entry[0] == key]
    _kept = matching[1:]
    if not matching:
        return None
    hold(key, matching[0][1])
    return matching[0][1]


def hold(key: str, pipe: Any) -> None:
    """Register a freshly loaded pipeline as in use, so that identical stages share it."""
    _live[key] = [weakref.ref(pipe), 1]


def release(key: str, pipe: Any) -> None:
    """A stage is done with `pipe`; once no stage holds it, keep it for the next run."""
    entry = _live.get(key)
    if entry is not None and entry[0]() is pipe:
        entry[1] -= 1
        if entry[1] > 0:
            return
        del _live[key]
    _kept.append((key, pipe))


def clear() -> None:
    """Drop every kept pipeline (its memory is freed once nothing else holds it)."""
    _kept.clear()
    _live.clear()
