"""The report's tables as rows of text: summary.csv (every number of every run), the headline
columns, the baseline comparison, the models each run loaded and the library versions.

Rows are plain lists of strings so that the markdown and the HTML page render the very same
cells, and summary.csv's floats keep every digit (repr) for anyone who reads it back.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from composer.report.names import MAIN_MODEL
from composer.report.rows import Run, cell, config_differences, config_value, is_number, metric_columns, swept_parameters

# Headline numbers for the report tables: (column, heading, format). summary.csv has them all.
HEADLINE = (
    ("throughput.records_per_second", "records/s", "{:.1f}"),
    ("throughput.tokens_per_second", "tokens/s", "{:.0f}"),
    (f"models.{MAIN_MODEL}.latency.p50_ms", "p50 ms", "{:.2f}"),
    (f"models.{MAIN_MODEL}.latency.p90_ms", "p90 ms", "{:.2f}"),
    (f"models.{MAIN_MODEL}.latency.p99_ms", "p99 ms", "{:.2f}"),
    (f"models.{MAIN_MODEL}.load_seconds", "load s", "{:.3f}"),
    ("peak_memory.rss_bytes", "peak RSS MiB", "mib"),
    (f"quality.{MAIN_MODEL}.accuracy", "accuracy", "{:.4f}"),
    (f"quality.{MAIN_MODEL}.macro_f1", "macro-F1", "{:.4f}"),
    (f"quality.{MAIN_MODEL}.exact_match", "exact match", "{:.4f}"),
    (f"quality.{MAIN_MODEL}.token_f1", "token F1", "{:.4f}"),
    (f"quality.{MAIN_MODEL}.wer", "WER", "{:.4f}"),
    (f"quality.{MAIN_MODEL}.cer", "CER", "{:.4f}"),
)

Table = tuple[list[str], list[list[str]]]  # (header, rows)


def error_text(error: dict | None) -> str:
    """Why a run failed, on one line of at most 300 characters, so one traceback does not swamp a table."""
    if not error:
        return ""
    message = " ".join(str(error.get("message", "")).split())  # a multi-line message on one line
    text = f"{error.get('type', 'Error')}: {message}" if message else str(error.get("type", "Error"))
    return text if len(text) <= 300 else text[:297] + "..."


def summary_rows(runs: Sequence[Run]) -> Table:
    """summary.csv's header and rows: run, status, exit code, swept parameters, every metric, error."""
    params, metrics = swept_parameters(runs), metric_columns(runs)
    header = ["run", "status", "exit_code", *params, *metrics, "error"]
    rows = [
        [run.label, run.status, cell(run.exit_code), *(run.overrides.get(p, "") for p in params),
         *(cell(run.values.get(m)) for m in metrics), error_text(run.error)]
        for run in runs
    ]
    return header, rows


def write_summary(runs: Sequence[Run], path: Path) -> None:
    """Write summary.csv with "\\n" line ends on every platform, so the file's bytes do not depend on it."""
    header, rows = summary_rows(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")


def format_value(value: Any, fmt: str) -> str:
    """A headline number in its column's format ("mib": bytes as MiB); blank when it is not a number."""
    if not is_number(value):
        return ""
    if fmt == "mib":
        return f"{value / 2**20:.0f}"
    return fmt.format(value)


def headline(runs: Sequence[Run]) -> list[tuple[str, str, str]]:
    """The headline columns that at least one run has, so a text task's report has no WER column."""
    return [h for h in HEADLINE if any(h[0] in run.values for run in runs)]


def model_rows(runs: Sequence[Run]) -> list[list[str]]:
    """One row per model stage of each run: what was asked for, what was loaded (revision or content hash), how."""
    rows = []
    for run in runs:
        for name, stage in (run.manifest.get("stages") or {}).items():
            if stage.get("kind") != "model":
                continue
            model = stage.get("model") or {}
            quant = stage.get("quantization")
            backend = quant.get("backend", json.dumps(quant, sort_keys=True)) if isinstance(quant, dict) else (quant or "none")
            digest = model.get("content_sha256") or ""
            rows.append([run.label, name, str(model.get("requested") or ""), str(model.get("source") or ""),
                         str(model.get("revision") or ""), digest[:12], str(stage.get("dtype") or ""), str(backend),
                         str(stage.get("model_class") or "")])
    return rows


def version_rows(runs: Sequence[Run]) -> list[list[str]]:
    """One row per package (and the git commit): one version when all runs agree, else which runs had which."""
    packages: list[str] = []
    for run in runs:
        packages.extend(p for p in (run.manifest.get("versions") or {}) if p not in packages)
    rows = []
    for package in packages:
        by_version: dict[str, list[str]] = {}
        for run in runs:
            if run.manifest:
                version = (run.manifest.get("versions") or {}).get(package)
                by_version.setdefault(str(version) if version is not None else "not installed", []).append(run.label)
        if len(by_version) == 1:
            rows.append([package, next(iter(by_version))])
        else:
            rows.append([package, "; ".join(f"{v} (runs {', '.join(labels)})" for v, labels in by_version.items())])
    commits: dict[str, list[str]] = {}
    for run in runs:
        git = run.manifest.get("git") or {}
        if run.manifest:
            text = (git.get("commit") or "no git")[:12] + (" (dirty)" if git.get("dirty") else "")
            commits.setdefault(text, []).append(run.label)
    if commits:
        rows.append(["git commit", next(iter(commits)) if len(commits) == 1 else
                     "; ".join(f"{c} (runs {', '.join(labels)})" for c, labels in commits.items())])
    return rows


def baseline_rows(runs: Sequence[Run], baseline: Run) -> Table:
    """Each run's headline numbers as value (change vs the baseline), and the config keys it changed."""
    columns = [h for h in headline([*runs, baseline]) if h[0] in baseline.values]
    header = ["run", *(title for _, title, _ in columns), "config differences from the baseline"]
    rows = [["baseline", *(format_value(baseline.values.get(c), f) for c, _, f in columns), ""]]
    for run in runs:
        cells = []
        for column, _, fmt in columns:
            value, base = run.values.get(column), baseline.values.get(column)
            if not is_number(value):
                cells.append("")
                continue
            delta = value - base
            relative = f", {delta / base * 100:+.1f}%" if base else ""
            scale = 2**20 if fmt == "mib" else 1
            cells.append(f"{format_value(value, fmt)} ({format_value(delta / scale, '{:+.4g}')}{relative})")
        changed = config_differences([baseline, run])
        diff = "; ".join(f"{k}: {config_value(baseline, k)} → {config_value(run, k)}" for k in changed)
        rows.append([run.label, *cells, diff])
    return header, rows
