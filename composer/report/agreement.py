"""How far each run's outputs moved from a reference run's, record by record: the numbers a
speed-for-quality trade (quantization, another backend, a smaller model) has to be judged by
beside its speed.

For each output field both runs wrote, matched by record id:
- a vector of numbers (an `embedding`): the cosine similarity of each record's two vectors,
  reported as the minimum and the mean;
- a prediction with labels (classification, zero-shot, embedding_classify): the share of records
  whose best label is the same.
Other fields (inputs carried along, generated text, boxes) are left out: equality says little
about them. The reference is the report's baseline when one is given, else the first run (a
sweep's job 0).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

from composer.report.rows import Run, is_number
from composer.runstore import OUTPUTS, RunFolderError, iter_jsonl

Table = tuple[list[str], list[list[str]]]


def top_label(value: Any) -> str | None:
    """The best label of a prediction, in the shapes pipelines write: {labels, scores} (best
    first), [{label, score}, ...] (a list, possibly wrapped once more) or {label, score}."""
    if isinstance(value, dict):
        if isinstance(value.get("labels"), list) and value["labels"]:
            return str(value["labels"][0])
        return str(value["label"]) if "label" in value else None
    if isinstance(value, list) and len(value) == 1 and isinstance(value[0], list):
        value = value[0]
    if isinstance(value, list) and value and all(isinstance(v, dict) and "label" in v for v in value):
        return str(max(value, key=lambda v: v.get("score") if is_number(v.get("score")) else -math.inf)["label"])
    return None


def _vector(value: Any) -> list[float] | None:
    if isinstance(value, list) and value and all(is_number(v) for v in value):
        return [float(v) for v in value]
    return None


def _cosine(a: list[float], b: list[float]) -> float | None:
    if len(a) != len(b):
        return None
    norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b)) / norms if norms else None


def _records(run: Run) -> Iterator[dict]:
    """The run's output records; a damaged line ends them (a report never stops for one folder)."""
    try:
        yield from iter_jsonl(run.path / OUTPUTS)
    except RunFolderError:
        return


def _compare(reference: dict[str, dict], run: Run) -> list[list[str]]:
    """One row per field the two runs can be compared on."""
    cosines: dict[str, list[float]] = {}
    labels: dict[str, list[bool]] = {}
    for record in _records(run):
        theirs = reference.get(str(record.get("id")))
        if theirs is None:
            continue
        for field, value in record.items():
            if field == "id" or field not in theirs:
                continue
            ours, base = _vector(value), _vector(theirs[field])
            if ours is not None and base is not None:
                cosine = _cosine(ours, base)
                if cosine is not None:
                    cosines.setdefault(field, []).append(cosine)
                continue
            label, base_label = top_label(value), top_label(theirs[field])
            if label is not None and base_label is not None:
                labels.setdefault(field, []).append(label == base_label)
    rows = [[run.label, field, str(len(values)), f"cosine min {min(values):.6f}, mean {sum(values) / len(values):.6f}"]
            for field, values in cosines.items()]
    rows += [[run.label, field, str(len(same)), f"same best label {sum(same) / len(same):.1%} ({sum(same)} of {len(same)})"]
             for field, same in labels.items()]
    return rows


def agreement_rows(runs: Sequence[Run], baseline: Run | None) -> tuple[str, Table] | None:
    """(how the reference is named, the table) comparing every other run's outputs with the
    reference's; None when there is nothing to compare."""
    reference = baseline or (runs[0] if len(runs) > 1 else None)
    if reference is None:
        return None
    by_id = {str(record.get("id")): record for record in _records(reference)}
    if not by_id:
        return None
    rows = [row for run in runs if run is not reference for row in _compare(by_id, run)]
    if not rows:
        return None
    name = "the baseline" if baseline is not None else f"run {reference.label}"
    return name, (["run", "field", "records compared", f"agreement with {name}"], rows)
