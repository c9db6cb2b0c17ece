"""Post transforms over model outputs.

Pipelines return labelled scores in three shapes: one `{label, score}` dict, a list of them
(top_k, token classification, fill-mask), or zero-shot's `{sequence, labels, scores}`. Each
transform here handles all three through `_scored` / `_rebuild`, so one config works across tasks.
A list of such lists (text-classification's `[[...]]` for a lone string when top_k is a build-time
parameter) is transformed list by list.
"""

from __future__ import annotations

from typing import Any

from composer.records import Record
from composer.stages.base import FieldStage, Stage, require_field


def _scored(prediction: Any) -> tuple[str, list[dict[str, Any]]]:
    """(shape, list of {label, score, ...}) for a prediction of any of the three shapes."""
    if isinstance(prediction, dict) and "labels" in prediction and "scores" in prediction:
        return "zero-shot", [{"label": l, "score": s} for l, s in zip(prediction["labels"], prediction["scores"])]
    if isinstance(prediction, dict):
        return "single", [prediction]
    if isinstance(prediction, list) and all(isinstance(item, dict) for item in prediction):
        return "list", list(prediction)
    raise TypeError(f"expected label/score predictions, got {type(prediction).__name__}")


def _rebuild(shape: str, original: Any, items: list[dict[str, Any]]) -> Any:
    if shape == "zero-shot":
        return {**original, "labels": [i["label"] for i in items], "scores": [i["score"] for i in items]}
    if shape == "single":
        return items[0] if items else None
    return items


class _OnField(FieldStage):
    """A post transform reading one field and writing the result to `output_field` (default: same)."""

    def transform(self, prediction: Any) -> Any:
        raise NotImplementedError

    def _apply(self, prediction: Any) -> Any:
        if isinstance(prediction, list) and prediction and all(isinstance(inner, list) for inner in prediction):
            return [self.transform(inner) for inner in prediction]
        return self.transform(prediction)

    def compute(self, record: Record) -> Any:
        return self._apply(require_field(record, self.field, self.name))


class TopK(_OnField):
    """Keep the k highest-scoring labels (k=1 on a list gives a list of one)."""

    def __init__(self, name: str, *, k: int = 1, field: str = "prediction", output_field: str | None = None):
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        super().__init__(name, field, output_field)
        self.k = k

    def transform(self, prediction: Any) -> Any:
        shape, items = _scored(prediction)
        ranked = sorted(items, key=lambda item: item.get("score", 0.0), reverse=True)[: self.k]
        return _rebuild(shape, prediction, ranked)


class MapLabels(_OnField):
    """Rename labels (`LABEL_0: negative`); labels not in the mapping are kept unless strict."""

    def __init__(
        self, name: str, *, mapping: dict[str, str], field: str = "prediction", output_field: str | None = None, strict: bool = False
    ):
        super().__init__(name, field, output_field)
        self.mapping, self.strict = {str(k): v for k, v in mapping.items()}, strict

    def _map(self, label: Any) -> Any:
        if str(label) in self.mapping:
            return self.mapping[str(label)]
        if self.strict:
            raise KeyError(f"label {label!r} is not in map_labels.mapping ({', '.join(self.mapping)})")
        return label

    def _map_item(self, item: dict[str, Any]) -> dict[str, Any]:
        # Token classification names its label `entity` (or `entity_group` when aggregated).
        key = next((k for k in _LABEL_KEYS if k in item), None)
        if key is None:
            if self.strict:
                raise KeyError(f"prediction {item!r} has no label ({', '.join(_LABEL_KEYS)}) to map")
            return item
        return {**item, key: self._map(item[key])}

    def transform(self, prediction: Any) -> Any:
        if isinstance(prediction, (str, int)):
            # A bare label, e.g. a gold label column (`field: label`), which `datasets` often
            # holds as a class index: `mapping: {0: negative, 1: positive}`.
            return self._map(prediction)
        shape, items = _scored(prediction)
        return _rebuild(shape, prediction, [self._map_item(item) for item in items])


_LABEL_KEYS = ("label", "entity_group", "entity")


class Threshold(_OnField):
    """Drop labels scoring below `min_score`; a single prediction below it gets `fallback_label`."""

    def __init__(
        self,
        name: str,
        *,
        min_score: float,
        fallback_label: str | None = None,
        field: str = "prediction",
        output_field: str | None = None,
    ):
        super().__init__(name, field, output_field)
        self.min_score, self.fallback_label = min_score, fallback_label

    def transform(self, prediction: Any) -> Any:
        shape, items = _scored(prediction)
        if shape == "single":
            item = items[0]
            return item if item.get("score", 0.0) >= self.min_score else {**item, "label": self.fallback_label}
        return _rebuild(shape, prediction, [i for i in items if i.get("score", 0.0) >= self.min_score])


class Select(Stage):
    """Keep only the listed fields in each record (`id` is always kept)."""

    def __init__(self, name: str, *, fields: list[str]):
        super().__init__(name)
        self.fields = [f for f in fields if f != "id"]
        self.reads = tuple(self.fields)

    def fields_after(self, available: set[str]) -> set[str]:
        return {"id", *self.fields}

    def process(self, records: list[Record]) -> list[Record]:
        # Read every record before changing any, so a failed batch can be retried record by record.
        kept = [{"id": r["id"], **{f: require_field(r, f, self.name) for f in self.fields}} for r in records]
        for record, values in zip(records, kept):
            record.clear()
            record.update(values)
        return records


class Rename(Stage):
    """Rename fields: `mapping: {prediction: sentiment}`."""

    def __init__(self, name: str, *, mapping: dict[str, str]):
        super().__init__(name)
        if "id" in mapping or "id" in mapping.values():
            raise ValueError("the id field cannot be renamed, nor another field renamed to id")
        targets = list(mapping.values())
        if len(set(targets)) != len(targets):
            twice = next(t for t in targets if targets.count(t) > 1)
            raise ValueError(f"two fields are renamed to {twice!r}")
        self.mapping = dict(mapping)
        self.reads, self.writes = tuple(self.mapping), tuple(self.mapping.values())

    def fields_after(self, available: set[str]) -> set[str]:
        return (available - set(self.mapping)) | set(self.mapping.values())

    def process(self, records: list[Record]) -> list[Record]:
        # Read every record before changing any, so a failed batch can be retried record by record.
        values = [{old: require_field(r, old, self.name) for old in self.mapping} for r in records]
        for record, old_values in zip(records, values):
            # Remove every old name before writing any new one, so swaps ({a: b, b: a}) and
            # chains ({a: b, b: c}) keep every value.
            for old in self.mapping:
                del record[old]
            for old, new in self.mapping.items():
                record[new] = old_values[old]
        return records
