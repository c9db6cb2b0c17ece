"""Run folders -> rows: find the runs under some paths, read each folder into a `Run`, and name
the override and config keys that differ between runs.

A report needs nothing but the folders (manifest.json, metrics.json, config.yaml,
.hydra/overrides.yaml, job_error.json); anything missing or unreadable reads as empty, so one
damaged folder still shows up as a row instead of stopping the report.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from composer.report.names import PLOTS
from composer.runstore import JOB_ERROR, MANIFEST, METRICS, Manifest, flatten, read_manifest
from composer.sweep import job_outcome

_SKIP_DIRS = {".hydra", PLOTS, "mlruns", ".git", "__pycache__"}


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    label: str
    status: str
    exit_code: int | None
    error: dict | None
    manifest: Manifest
    metrics: dict
    config: dict
    overrides: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # flattened metric columns


def _natural_key(path: Path) -> list:
    """Sort job folders 2 before 10, as a person counts them."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def is_run(path: Path) -> bool:
    """A folder a run or a sweep job left: a manifest, a job error, or at least Hydra's overrides."""
    return path.is_dir() and any(
        (path / name).exists() for name in (MANIFEST, JOB_ERROR, ".hydra/overrides.yaml")
    )


def find_runs(path: Path) -> list[Path]:
    """The run folders at or under `path` (a run, a sweep, or a folder of either), in natural order."""
    path = Path(path)
    if is_run(path):
        return [path]
    if not path.is_dir():
        return []
    found: list[Path] = []
    for child in sorted((c for c in path.iterdir() if c.is_dir() and c.name not in _SKIP_DIRS and not c.name.startswith(".")), key=_natural_key):
        found.extend(find_runs(child))
    return found


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    except (OSError, ValueError):
        return {}


def _read_manifest(path: Path) -> Manifest:
    try:
        return read_manifest(path)
    except (OSError, ValueError):
        return {}


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None
    except (OSError, yaml.YAMLError):
        return None


def _parse_overrides(items: Iterable[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        if sep and not key.startswith("hydra."):
            parsed[key] = re.sub(r"\\(.)", r"\1", value)  # Hydra escapes `:` and friends in overrides.yaml
    return parsed




def metric_values(manifest: dict, metrics: dict) -> dict[str, Any]:
    """A run's numbers as {dotted.column: number}: every number in metrics.json, plus the
    manifest's counts, peak memory and wall time. The report's columns and MLflow's metrics are
    both these, so the two always name a number the same way."""
    values = {k: v for k, v in flatten(metrics).items() if is_number(v)}
    for section in ("counts", "peak_memory"):
        for key, value in (manifest.get(section) or {}).items():
            if is_number(value):
                values[f"{section}.{key}"] = value
    wall = (manifest.get("timings") or {}).get("wall_seconds")
    if is_number(wall):
        values["timings.wall_seconds"] = wall
    return values


def is_number(value: Any) -> bool:
    """An int or float but not a bool (JSON's true/false are not metrics)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_run(path: Path, label: str) -> Run:
    """Read one run folder; the overrides come from Hydra's file, else the manifest, else job_error.json."""
    manifest, metrics = _read_manifest(path), _read_json(path / METRICS)
    config = _read_yaml(path / "config.yaml") or _read_yaml(path / ".hydra" / "config.yaml") or {}
    config = {k: v for k, v in config.items() if k != "hydra"} if isinstance(config, dict) else {}
    overrides_list = _read_yaml(path / ".hydra" / "overrides.yaml")
    if overrides_list is None:
        overrides_list = manifest.get("overrides") or _read_json(path / JOB_ERROR).get("overrides") or []
    outcome = job_outcome(path)
    return Run(
        path=path,
        label=label,
        status=outcome["status"],
        exit_code=outcome["exit_code"],
        error=outcome["error"],
        manifest=manifest,
        metrics=metrics,
        config=config,
        overrides=_parse_overrides(overrides_list),
        values=metric_values(manifest, metrics),
    )


def collect(paths: Sequence[str | Path]) -> list[Run]:
    """Every run under the given paths, each once, labelled relative to their common parent."""
    folders: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        for run in find_runs(Path(path)):
            resolved = run.resolve()
            if resolved not in seen:
                seen.add(resolved)
                folders.append(resolved)
    if not folders:
        return []
    root = Path(os.path.commonpath([str(p) for p in folders]))
    if len(folders) == 1:
        root = folders[0].parent
    return [load_run(p, p.relative_to(root).as_posix() or p.name) for p in folders]


def swept_parameters(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (or that some runs do not set)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.overrides if k not in keys)
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def metric_columns(runs: Sequence[Run]) -> list[str]:
    """Every metric column any run has, in first-seen order, the run's own metrics before the manifest's."""
    columns: list[str] = []
    for run in runs:
        columns.extend(k for k in run.values if k not in columns)
    metrics_first = [c for c in columns if c.split(".")[0] in ("throughput", "models", "quality")]
    return metrics_first + [c for c in columns if c not in metrics_first]


def cell(value: Any) -> str:
    """One value as table text: exact (repr for floats) and stable (sorted JSON for containers)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def config_differences(runs: Sequence[Run]) -> list[str]:
    """Config keys (dotted) whose values are not the same in every run."""
    flats = [flatten(run.config, lists=True) for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    return [k for k in keys if len({cell(f[k]) if k in f else "\0unset" for f in flats}) > 1]


def config_value(run: Run, key: str, limit: int = 120) -> str:
    """One config leaf of a run as table text, cut to `limit` so a long list does not swamp a table."""
    flat = flatten(run.config, lists=True)
    text = cell(flat[key]) if key in flat else "(unset)"
    return text if len(text) <= limit else text[: limit - 1] + "…"
