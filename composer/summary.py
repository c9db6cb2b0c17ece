"""The end-of-run summary: what happened in a run, in a dozen lines, read from its folder alone.

The CLI prints it on stdout (logs and progress go to stderr) and the run's log (run.log) ends
with the same text, so what a user saw on the console stays with the run. It names the folder,
the counts, why records failed (the top error types with a few record ids), what the result
cache and a resume saved, what post-processing found (near-duplicates), quality and speed.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from composer import runstore

_SCORE_NAMES = {"macro_f1": "macro-F1", "exact_match": "exact match", "token_f1": "token F1", "wer": "WER", "cer": "CER"}
TOP_ERROR_TYPES = 3  # error types listed, most frequent first
IDS_PER_ERROR_TYPE = 3  # record ids shown for each


def summary_lines(run_dir: Path) -> list[str]:
    """The summary of the run in `run_dir` (its manifest, metrics and errors.jsonl)."""
    manifest = runstore.read_manifest(run_dir)
    metrics_path = run_dir / runstore.METRICS
    metrics = runstore.read_json(metrics_path) if metrics_path.exists() else {}
    counts = manifest.get("counts") or {}
    lines = [f"run {manifest['status']}: {run_dir}"]
    stages = manifest.get("stages") or {}
    for name, stage in stages.items():
        lines += _stage_notes(name, stage)
    skipped = sum(attempt.get("skipped", 0) for attempt in manifest.get("attempts", [])[-1:])
    resumed = f" ({skipped} done by an earlier attempt, skipped)" if skipped else ""
    failed = counts.get("records_failed", 0)
    lines.append(f"  records: {counts.get('records_ok', 0)} ok, {failed} failed" + (f" ({runstore.ERRORS})" if failed else "") + resumed)
    lines += _error_lines(run_dir / runstore.ERRORS, failed)
    for name, quality in (metrics.get("quality") or {}).items():
        scores = ", ".join(f"{_SCORE_NAMES.get(key, key)} {value:.3f}" for key, value in quality.items() if isinstance(value, float))
        lines.append(f"  {name}: {scores} on {quality['n']} labelled")
        lines += _per_class_table(quality.get("per_class"))
    rate = (metrics.get("throughput") or {}).get("records_per_second")
    if rate:
        lines.append(f"  throughput: {rate:.1f} records/s")
    for warning in manifest.get("warnings") or []:
        if warning["count"] > 1:
            lines.append(f"  warned {warning['count']} times (shown once): {warning['message'][:200]}")
    if manifest.get("error"):
        lines.append(f"  error: {manifest['error']['type']}: {manifest['error']['message']}")
    lines.append(f"  details: {run_dir / runstore.MANIFEST}, {run_dir / runstore.METRICS}")
    return lines


def _stage_notes(name: str, stage: dict[str, Any]) -> list[str]:
    """What one stage's manifest facts say that a user should see: the model's notice (a
    fallback, a test model), why it ran one record per batch, cache use, near-duplicates."""
    lines = []
    note = (stage.get("model") or {}).get("note") if stage.get("kind") == "model" else None
    if note:
        lines.append(f"  note ({name}): {note}")
    one_record_because = (stage.get("batching") or {}).get("one_record_because")
    if one_record_because:
        lines.append(f"  note ({name}): one record per batch: {one_record_because}")
    cache = stage.get("cache")
    if cache:
        lines.append(f"  cache ({name}): {cache['hits']} hits, {cache['misses']} misses ({cache['path']})")
    duplicates = stage.get("near_duplicates")
    if duplicates:
        examples = ", ".join(f"{pair['id']} ~ {pair['duplicate_of']} ({pair['score']:.2f})" for pair in duplicates["examples"])
        lines.append(f"  near-duplicates ({name}): {duplicates['records']} records repeat an earlier one, in "
                     f"{duplicates['groups']} groups" + (f"; e.g. {examples}" if examples else ""))
    return lines


def _error_lines(path: Path, failed: int) -> list[str]:
    """The most frequent error types, each with a few record ids, and where the rest are."""
    if not failed or not path.exists():
        return []
    kinds: Counter[tuple[str, str]] = Counter()
    ids: dict[tuple[str, str], list[str]] = {}
    messages: dict[tuple[str, str], str] = {}
    for error in runstore.iter_jsonl(path):
        kind = (str(error.get("stage")), str(error.get("error_type")))
        kinds[kind] += 1
        ids.setdefault(kind, [])
        if len(ids[kind]) < IDS_PER_ERROR_TYPE:
            ids[kind].append(str(error.get("id")))
        messages.setdefault(kind, _shortened(str(error.get("message") or "")))
    lines = []
    for (stage, error_type), count in kinds.most_common(TOP_ERROR_TYPES):
        more = ", ..." if count > len(ids[(stage, error_type)]) else ""
        lines.append(f"    {count} x {error_type} in {stage}: {messages[(stage, error_type)]} "
                     f"(ids: {', '.join(ids[(stage, error_type)])}{more})")
    others = len(kinds) - TOP_ERROR_TYPES
    if others > 0:
        lines.append(f"    and {others} more error types")
    lines.append(f"    every failed record, with its reason: {path}")
    return lines


def _shortened(message: str, width: int = 160) -> str:
    """The first line of an error message, cut at `width` characters with '...' where cut."""
    first = message.splitlines()[0] if message else ""
    return first if len(first) <= width else first[: width - 3] + "..."


def _per_class_table(per_class: dict | None) -> list[str]:
    """The per-label results as a small table (metrics.json holds the same numbers)."""
    if not per_class:
        return []
    width = max(5, *(len(str(label)) for label in per_class))
    rows = [f"    {'label':<{width}}  precision  recall     f1  support"]
    for label, scores in per_class.items():
        rows.append(f"    {label:<{width}}  {scores['precision']:>9.3f}  {scores['recall']:>6.3f}  {scores['f1']:>5.3f}  {scores['support']:>7d}")
    return rows
