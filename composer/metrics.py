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
        """Accuracy, macro-F1 over the gold labels, and precision/recall/F1/support per label
        (a ratio with nothing to divide is 0), as scikit-learn defines them (a test checks it
        against sklearn.metrics): computed here because importing sklearn, which pulls in
        scipy and pandas, cost every labelled run more than a second."""
        if not self.gold:
            return None
        from collections import Counter

        pairs = list(zip(self.gold, self.predicted))
        hits = Counter(gold for gold, predicted in pairs if gold == predicted)
        gold_counts, predicted_counts = Counter(self.gold), Counter(self.predicted)
        per_class = {}
        for label in sorted(set(self.gold) | set(self.predicted)):
            precision = hits[label] / predicted_counts[label] if predicted_counts[label] else 0.0
            recall = hits[label] / gold_counts[label] if gold_counts[label] else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            per_class[label] = {"precision": precision, "recall": recall, "f1": f1, "support": gold_counts[label]}
        return {
            "n": len(self.gold),
            "accuracy": sum(hits.values()) / len(pairs),
            "macro_f1": sum(per_class[label]["f1"] for label in gold_counts) / len(gold_counts),
            "per_class": per_class,
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


# ---------------------------------------------------------------------------------------------
# Declared quality metrics (`metrics:` in the config): classification and text/speech outputs.

CLASSIFICATION_METRICS = ("accuracy", "macro_f1", "per_class")
TEXT_METRICS = ("exact_match", "token_f1", "wer", "cer")
METRIC_NAMES = CLASSIFICATION_METRICS + TEXT_METRICS
# Tasks whose output is text that can be compared with a reference string.
TEXT_OUTPUT_TASKS = frozenset(
    {
        "text-generation", "image-text-to-text", "image-to-text", "any-to-any", "document-question-answering",
        "table-question-answering", "visual-question-answering", "question-answering", "summarization",
        "text2text-generation", "translation", "fill-mask",
    }
)
SPEECH_TASKS = frozenset({"automatic-speech-recognition"})
_TEXT_KEYS = ("generated_text", "summary_text", "translation_text", "answer", "text", "token_str", "label")


def default_metrics(task: str) -> tuple[str, ...]:
    """The metrics `metrics: auto` computes for a task when the input has gold labels."""
    from composer.tasks import LABELLED_TASKS, task_table

    canonical = task_table().canonical(task) or task
    if canonical in LABELLED_TASKS:
        return CLASSIFICATION_METRICS
    if canonical in SPEECH_TASKS:
        return ("wer", "cer")
    if canonical in TEXT_OUTPUT_TASKS or canonical.startswith("translation"):
        return ("exact_match", "token_f1")
    return ()


def declared_metrics(declared: Any, task: str) -> tuple[str, ...]:
    """The metric names a config asks for: `auto` (by task), a name, or a list of names."""
    if declared in (None, "auto"):
        return default_metrics(task)
    names = [declared] if isinstance(declared, str) else list(declared)
    return tuple(name for name in METRIC_NAMES if name in names)


def predicted_text(prediction: Any) -> str | None:
    """The text of a text-producing pipeline's (top) output: generated, summary, answer, transcript."""
    if isinstance(prediction, str):
        return prediction
    if isinstance(prediction, list):
        return predicted_text(prediction[0]) if prediction else None
    if isinstance(prediction, dict):
        for key in _TEXT_KEYS:
            if key in prediction:
                value = prediction[key]
                if isinstance(value, list) and value and isinstance(value[-1], dict):  # chat: the last message
                    value = value[-1].get("content")
                return value if isinstance(value, str) else predicted_text(value)
    return None


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    import re
    import string

    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token-overlap F1 between normalised prediction and reference."""
    from collections import Counter

    predicted, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not predicted or not gold:
        return float(predicted == gold)
    common = sum((Counter(predicted) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def _references(label: Any) -> list[str]:
    """A gold label as a list of acceptable references (a list label means any of them)."""
    if isinstance(label, (list, tuple)):
        return [str(item) for item in label]
    return [str(label)]


class MetricsAccumulator:
    """The declared quality metrics over (gold, prediction) pairs, collected as batches finish.

    Classification metrics (accuracy, macro-F1, per-class precision/recall/F1) compare the top
    predicted label; text metrics compare the output text: exact match and token F1 (SQuAD
    normalisation, best over a list of references), WER and CER (jiwer, corpus level, on the
    text as written: normalise it in a transform if the references are normalised).
    """

    def __init__(self, output_field: str, names: Iterable[str]):
        self.output_field = output_field
        self.names = tuple(names)
        self.labels = QualityAccumulator(output_field)
        self.gold: list[Any] = []
        self.texts: list[str] = []

    def add(self, records: Iterable[Record]) -> None:
        for record in records:
            if record.get("label") is None or self.output_field not in record:
                continue
            prediction = record[self.output_field]
            if any(name in CLASSIFICATION_METRICS for name in self.names):
                self.labels.add([record])
            self.gold.append(record["label"])
            self.texts.append(predicted_text(prediction) or "")

    def result(self) -> dict[str, Any] | None:
        if not self.gold:
            return None
        result: dict[str, Any] = {"n": len(self.gold)}
        if any(name in CLASSIFICATION_METRICS for name in self.names):
            labels = self.labels.result() or {}
            result.update({name: labels[name] for name in CLASSIFICATION_METRICS if name in self.names and name in labels})
        if "exact_match" in self.names:
            scores = [max(exact_match(text, ref) for ref in _references(gold)) for gold, text in zip(self.gold, self.texts)]
            result["exact_match"] = sum(scores) / len(scores)
        if "token_f1" in self.names:
            scores = [max(token_f1(text, ref) for ref in _references(gold)) for gold, text in zip(self.gold, self.texts)]
            result["token_f1"] = sum(scores) / len(scores)
        if "wer" in self.names or "cer" in self.names:
            result.update(error_rates(self.texts, [_references(gold)[0] for gold in self.gold], self.names))
        return result


def error_rates(hypotheses: list[str], references: list[str], names: Iterable[str] = ("wer", "cer")) -> dict[str, Any]:
    """Corpus-level word and character error rates (jiwer); empty references are left out."""
    import jiwer

    pairs = [(ref, hyp) for ref, hyp in zip(references, hypotheses) if ref.strip()]
    out: dict[str, Any] = {}
    if not pairs:
        return out
    refs, hyps = [ref for ref, _ in pairs], [hyp for _, hyp in pairs]
    if "wer" in names:
        out["wer"] = float(jiwer.wer(refs, hyps))
    if "cer" in names:
        out["cer"] = float(jiwer.cer(refs, hyps))
    return out


def quality_accumulator(task: str, output_field: str, declared: Any = "auto") -> MetricsAccumulator | None:
    """The accumulator for the metrics a config declares for this task, or None if there are none."""
    names = declared_metrics(declared, task)
    return MetricsAccumulator(output_field, names) if names else None
