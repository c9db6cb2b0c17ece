"""Records: the plain dicts that flow through the stage graph, and how they become JSON."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]


@dataclass
class RecordFailure:
    """One record that could not be processed: the line written to errors.jsonl."""

    id: str
    stage: str
    error_type: str
    message: str

    @classmethod
    def from_exception(cls, record_id: str, stage: str, error: BaseException) -> RecordFailure:
        return cls(id=record_id, stage=stage, error_type=type(error).__name__, message=str(error) or repr(error))


def to_jsonable(value: Any) -> Any:
    """Turn pipeline outputs (numpy/torch scalars and arrays, tuples) into plain JSON values.

    Outputs must be JSON-clean so that outputs.jsonl can be read back by any tool; non-finite
    floats become None because JSON has no NaN.
    """
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, (list, tuple)):
        if value and all(type(v) is float for v in value) and all(map(math.isfinite, value)):
            return list(value)  # a vector already made of finite floats: no walk item by item
        return [to_jsonable(v) for v in value]
    if hasattr(value, "__json__"):  # values that summarise themselves (decoded audio: no million floats)
        return to_jsonable(value.__json__())
    if hasattr(value, "tolist"):  # numpy arrays and scalars, torch tensors
        plain = _finite_numbers(value)
        return plain if plain is not None else to_jsonable(value.tolist())
    if hasattr(value, "item"):
        return to_jsonable(value.item())
    if type(value).__module__.startswith("PIL.") and hasattr(value, "tobytes"):
        return image_summary(value)
    return str(value)


def _finite_numbers(array: Any) -> list | None:
    """A real-valued numpy array or torch tensor with no NaN/inf as nested lists, in one C call:
    walking its items one by one (token embeddings: a million floats a batch) would cost far
    more than the model. None for anything else (the caller walks it)."""
    dtype = getattr(array, "dtype", None)
    if dtype is None or getattr(array, "ndim", 0) == 0:
        return None
    if hasattr(dtype, "is_complex"):  # torch
        try:
            finite = not dtype.is_complex and bool(array.isfinite().all())
        except (NotImplementedError, RuntimeError):  # e.g. float8 has no isfinite: walk it
            return None
        return array.tolist() if finite else None
    kind = getattr(dtype, "kind", "")
    if kind not in "biuf" or not kind:
        return None
    if kind == "f":
        import numpy as np

        if not np.isfinite(array).all():
            return None
    return array.tolist()


def image_summary(image: Any) -> dict[str, Any]:
    """A PIL image as JSON: mode, size and a hash of its pixels. Its repr would carry a memory
    address, which would make content ids and cache keys differ between identical images."""
    pixels = hashlib.sha256(image.tobytes()).hexdigest()[:16]
    return {"mode": image.mode, "width": image.width, "height": image.height, "sha256": pixels}


def canonical_json(value: Any) -> str:
    return json.dumps(to_jsonable(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def content_id(row: Any) -> str:
    """A stable id for a record without one: a hash of its content, the same on every run."""
    return hashlib.sha256(canonical_json(row).encode("utf-8")).hexdigest()[:16]
