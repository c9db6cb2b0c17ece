"""Metrics for metrics.json: quality against gold labels, and throughput/latency always."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from composer.records import Record


def predicted_label(prediction: Any) -> Any:
    """The top label of a classification output, whatever its shape (dict, list, zero-shot)."""
    if isinstance(prediction, dict):
        if "labels" in prediction:
            return prediction["labels"][0] if prediction["labels"] else None
        return prediction.get("label")
    if isinstance(prediction, list) and prediction:
        if isinstance(prediction[0], list):  # a lone string's text-classification result with top_k
            return predicted_label(prediction[0])
        best = max(prediction, key=lambda item: item.get("score", 0.0) if isinstance(item, dict) else 0.0)
        return best.get("label") if isinstance(best, dict) else None
    return prediction if isinstance(prediction, str) else None


class QualityAccumulator:
    """Collects (gold, predicted) label pairs as batches finish; scores them at the end."""

    def __init__(self, output_field: str):
        self.output_field = output_field
        self.gold: list[str] = []
        self.predicted: list[str] = []

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.get("label") is not None and self.output_field in record:
                self.gold.append(str(record["label"]))
                self.predicted.append(str(predicted_label(record[self.output_field])))

    def result(self) -> dict[str, Any] | None:
        if not self.gold:
            return None
        from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

        labels = sorted(set(self.gold) | set(self.predicted))
        precision, recall, f1, support = precision_recall_fscore_support(
            self.gold, self.predicted, labels=labels, zero_division=0
        )
        return {
            "n": len(self.gold),
            "accuracy": float(accuracy_score(self.gold, self.predicted)),
            "macro_f1": float(f1_score(self.gold, self.predicted, labels=sorted(set(self.gold)), average="macro", zero_division=0)),
            "per_class": {
                label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                for label, p, r, f, s in zip(labels, precision, recall, f1, support)
            },
        }


def latency_summary(seconds: list[float]) -> dict[str, Any]:
    """Batch latency percentiles in milliseconds (the first batch, a warm-up, is reported apart)."""
    if not seconds:
        return {"batches": 0}
    import numpy as np

    steady = seconds[1:] or seconds
    ms = np.asarray(steady) * 1000.0
    return {
        "batches": len(seconds),
        "first_batch_ms": seconds[0] * 1000.0,
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
    }
