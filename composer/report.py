"""Reports over run folders: summary.csv, report.md, report.html and PNG plots.

    composer report RUN_OR_SWEEP_DIR... [--baseline RUN] [--out DIR]

A report is built from the run folders alone (manifest.json, metrics.json, config.yaml,
.hydra/overrides.yaml, job_error.json) and is a reproducible artefact: the same folders give
the same bytes in every file, except the one "Generated:" line of report.md and report.html
(which follows SOURCE_DATE_EPOCH when it is set, making those byte-identical too). Runs are
named by their path relative to the folders' common parent, so the report does not depend on
where the folders live or where the command ran.

summary.csv is long format: one row per run; columns `run`, `status`, `exit_code`, one per
swept parameter (every override key whose value differs between the runs), one per metric (the
dotted path of each number in metrics.json, plus `counts.*`, `timings.wall_seconds` and
`peak_memory.*` from the manifest), and `error`.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from composer.sweep import JOB_ERROR, job_outcome

SUMMARY, REPORT_MD, REPORT_HTML, PLOTS = "summary.csv", "report.md", "report.html", "plots"
PLOT_FILES = ("throughput_vs_batch_size.png", "quality_vs_latency.png", "per_class.png")
MAIN_MODEL = "model"
FINISHED = ("complete", "completed_with_errors")
_SKIP_DIRS = {".hydra", PLOTS, "mlruns", ".git", "__pycache__"}
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
# Which quality number the quality-vs-latency plot uses, first found (WER/CER: lower is better).
PLOT_QUALITY = ("macro_f1", "token_f1", "accuracy", "exact_match", "wer", "cer")


# --------------------------------------------------------------------------------------------
# Reading run folders


@dataclass
class Run:
    """One run folder as the report sees it."""

    path: Path
    label: str
    status: str
    exit_code: int | None
    error: dict | None
    manifest: dict
    metrics: dict
    config: dict
    overrides: dict[str, str] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)  # flattened metric columns


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


def is_run(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).exists() for name in ("manifest.json", JOB_ERROR, ".hydra/overrides.yaml")
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


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted.key: leaf}; lists and empty dicts are leaves."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _metric_values(manifest: dict, metrics: dict) -> dict[str, Any]:
    values = {k: v for k, v in flatten(metrics).items() if _is_number(v)}
    for section in ("counts", "peak_memory"):
        for key, value in (manifest.get(section) or {}).items():
            if _is_number(value):
                values[f"{section}.{key}"] = value
    wall = (manifest.get("timings") or {}).get("wall_seconds")
    if _is_number(wall):
        values["timings.wall_seconds"] = wall
    return values


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_run(path: Path, label: str) -> Run:
    manifest, metrics = _read_json(path / "manifest.json"), _read_json(path / "metrics.json")
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
        values=_metric_values(manifest, metrics),
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


# --------------------------------------------------------------------------------------------
# Tables


def swept_parameters(runs: Sequence[Run]) -> list[str]:
    """Override keys whose value differs between runs (or that some runs do not set)."""
    keys: list[str] = []
    for run in runs:
        keys.extend(k for k in run.overrides if k not in keys)
    return [k for k in keys if len({run.overrides.get(k) for run in runs}) > 1]


def metric_columns(runs: Sequence[Run]) -> list[str]:
    columns: list[str] = []
    for run in runs:
        columns.extend(k for k in run.values if k not in columns)
    metrics_first = [c for c in columns if c.split(".")[0] in ("throughput", "models", "quality")]
    return metrics_first + [c for c in columns if c not in metrics_first]


def _error_text(error: dict | None) -> str:
    if not error:
        return ""
    message = " ".join(str(error.get("message", "")).split())  # a multi-line message on one line
    text = f"{error.get('type', 'Error')}: {message}" if message else str(error.get("type", "Error"))
    return text if len(text) <= 300 else text[:297] + "..."


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def summary_rows(runs: Sequence[Run]) -> tuple[list[str], list[list[str]]]:
    params, metrics = swept_parameters(runs), metric_columns(runs)
    header = ["run", "status", "exit_code", *params, *metrics, "error"]
    rows = [
        [run.label, run.status, _cell(run.exit_code), *(run.overrides.get(p, "") for p in params),
         *(_cell(run.values.get(m)) for m in metrics), _error_text(run.error)]
        for run in runs
    ]
    return header, rows


def flatten_config(value: Any, prefix: str = "") -> dict[str, Any]:
    """A config as {dotted.key: leaf}, list items as key[i], so a diff names the exact leaf."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten_config(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(flatten_config(item, f"{prefix}[{index}]"))
        return flat
    return {prefix: value}


def config_differences(runs: Sequence[Run]) -> list[str]:
    """Config keys (dotted) whose values are not the same in every run."""
    flats = [flatten_config(run.config) for run in runs]
    keys: list[str] = []
    for flat in flats:
        keys.extend(k for k in flat if k not in keys)
    return [k for k in keys if len({_cell(f[k]) if k in f else "\0unset" for f in flats}) > 1]


def _config_value(run: Run, key: str, limit: int = 120) -> str:
    flat = flatten_config(run.config)
    text = _cell(flat[key]) if key in flat else "(unset)"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format(value: Any, fmt: str) -> str:
    if not _is_number(value):
        return ""
    if fmt == "mib":
        return f"{value / 2**20:.0f}"
    return fmt.format(value)


def _headline(runs: Sequence[Run]) -> list[tuple[str, str, str]]:
    return [h for h in HEADLINE if any(h[0] in run.values for run in runs)]


def _model_rows(runs: Sequence[Run]) -> list[list[str]]:
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


def _version_rows(runs: Sequence[Run]) -> list[list[str]]:
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


def _baseline_rows(runs: Sequence[Run], baseline: Run) -> tuple[list[str], list[list[str]]]:
    columns = [h for h in _headline([*runs, baseline]) if h[0] in baseline.values]
    header = ["run", *(title for _, title, _ in columns), "config differences from the baseline"]
    rows = [["baseline", *(_format(baseline.values.get(c), f) for c, _, f in columns), ""]]
    for run in runs:
        cells = []
        for column, _, fmt in columns:
            value, base = run.values.get(column), baseline.values.get(column)
            if not _is_number(value):
                cells.append("")
                continue
            delta = value - base
            relative = f", {delta / base * 100:+.1f}%" if base else ""
            scale = 2**20 if fmt == "mib" else 1
            cells.append(f"{_format(value, fmt)} ({_format(delta / scale, '{:+.4g}')}{relative})")
        changed = config_differences([baseline, run])
        diff = "; ".join(f"{k}: {_config_value(baseline, k)} → {_config_value(run, k)}" for k in changed)
        rows.append([run.label, *cells, diff])
    return header, rows


# --------------------------------------------------------------------------------------------
# Plots (matplotlib's Agg canvas, no pyplot state; PNGs carry no date or software stamp)


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def _model_label(run: Run) -> str:
    model = run.config.get("model") or {}
    label = str(model.get("id") or "task default")
    backend = (run.config.get("quantization") or {}).get("backend")
    if backend and backend != "none":
        label += f" [{backend}]"
    if model.get("dtype") not in (None, "auto"):
        label += f" {model['dtype']}"
    return label


def plot_throughput(runs: Sequence[Run], path: Path) -> bool:
    points: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        rate, batch = run.values.get("throughput.records_per_second"), run.config.get("batch_size")
        if run.status in FINISHED and _is_number(rate) and isinstance(batch, int):
            points.setdefault(_model_label(run), {}).setdefault(batch, []).append(rate)
    if not points:
        return False
    figure = _figure()
    axes = figure.add_subplot()
    batches = sorted({b for per_model in points.values() for b in per_model})
    for label, per_batch in points.items():
        xs = sorted(per_batch)
        axes.plot(xs, [sum(per_batch[x]) / len(per_batch[x]) for x in xs], marker="o", label=label)
        for x in xs:
            if len(per_batch[x]) > 1:
                axes.scatter([x] * len(per_batch[x]), per_batch[x], s=12, alpha=0.5)
    if len(batches) > 1 and batches[-1] / max(batches[0], 1) >= 8:
        axes.set_xscale("log", base=2)
    axes.set_xticks(batches, [str(b) for b in batches])
    axes.set_xlabel("batch size")
    axes.set_ylabel("records/s")
    axes.set_title("Throughput vs batch size")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="small")
    _save(figure, path)
    return True


def plot_quality_latency(runs: Sequence[Run], path: Path) -> bool:
    metric = next((m for m in PLOT_QUALITY if any(f"quality.{MAIN_MODEL}.{m}" in r.values for r in runs)), None)
    latency = f"models.{MAIN_MODEL}.latency.p50_ms"
    points = [(run.values[latency], run.values[f"quality.{MAIN_MODEL}.{metric}"], run.label) for run in runs
              if metric and latency in run.values and f"quality.{MAIN_MODEL}.{metric}" in run.values]
    if not points:
        return False
    figure = _figure()
    axes = figure.add_subplot()
    axes.scatter([p[0] for p in points], [p[1] for p in points])
    for x, y, label in points:
        axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize="small")
    axes.set_xlabel("batch latency p50 (ms)")
    axes.set_ylabel(metric + (" (lower is better)" if metric in ("wer", "cer") else ""))
    axes.set_title(f"Quality ({metric}) vs latency")
    axes.grid(True, alpha=0.3)
    _save(figure, path)
    return True


def plot_per_class(runs: Sequence[Run], path: Path) -> bool:
    per_run = [(run.label, (run.metrics.get("quality") or {}).get(MAIN_MODEL, {}).get("per_class") or {}) for run in runs]
    per_run = [(label, classes) for label, classes in per_run if classes]
    if not per_run:
        return False
    classes = sorted({c for _, per_class in per_run for c in per_class})
    figure = _figure()
    width = 0.8 / len(per_run)
    for index, measure in enumerate(("precision", "recall")):
        axes = figure.add_subplot(1, 2, index + 1)
        for offset, (label, per_class) in enumerate(per_run):
            xs = [i - 0.4 + width * (offset + 0.5) for i in range(len(classes))]
            axes.bar(xs, [float(per_class.get(c, {}).get(measure, 0.0)) for c in classes], width=width, label=label)
        axes.set_xticks(range(len(classes)), classes, rotation=30 if len(classes) > 4 else 0, fontsize="small")
        axes.set_ylim(0, 1.05)
        axes.set_title(f"per-class {measure}")
        if index == 0:
            axes.legend(fontsize="x-small", title="run", title_fontsize="x-small")
    _save(figure, path)
    return True


# --------------------------------------------------------------------------------------------
# Writing


def generated_at() -> str:
    """The report's own timestamp: SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], klass: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>\n" for row in rows)
    attr = f' class="{klass}"' if klass else ""
    return f"<table{attr}>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>\n"


@dataclass
class Section:
    title: str
    text: str = ""
    table: tuple[list[str], list[list[str]]] | None = None
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)


def _sections(runs: Sequence[Run], baseline: Run | None, plots: list[tuple[str, str]]) -> list[Section]:
    params = swept_parameters(runs)
    headline = _headline(runs)
    sections = [
        Section(
            "Runs",
            "One row per run: swept parameters, then headline metrics (summary.csv has every metric).",
            (["run", "status", *params, *(t for _, t, _ in headline)],
             [[r.label, r.status, *(r.overrides.get(p, "") for p in params),
               *(_format(r.values.get(c), f) for c, _, f in headline)] for r in runs]),
        )
    ]
    failed = [r for r in runs if r.status != "complete"]
    if failed:
        sections.append(Section(
            "Failures and record errors",
            f"{len(failed)} of {len(runs)} runs did not complete cleanly; the others are unaffected.",
            (["run", "status", "exit code", "records failed", "error"],
             [[r.label, r.status, _cell(r.exit_code), _cell(r.values.get("counts.records_failed")), _error_text(r.error)]
              for r in failed]),
        ))
    if baseline is not None:
        sections.append(Section(
            "Against the baseline",
            f"Baseline: {baseline.path.name} ({baseline.status}). Each cell: value (change vs baseline).",
            _baseline_rows(runs, baseline),
        ))
    if plots:
        sections.append(Section("Plots", images=plots))
    differing = config_differences(runs)
    sections.append(Section(
        "Config differences",
        "Only the resolved config keys whose values differ between runs." if differing
        else "All runs have the same resolved config.",
        (["run", *differing], [[r.label, *(_config_value(r, k) for k in differing)] for r in runs]) if differing else None,
    ))
    model_rows = _model_rows([*runs, *([baseline] if baseline else [])])
    if model_rows:
        sections.append(Section(
            "Models",
            "The weights each run loaded: hub revision (commit sha) or content sha256 of a local folder.",
            (["run", "stage", "requested", "source", "revision", "content sha256", "dtype", "quantization", "class"],
             model_rows),
        ))
    version_rows = _version_rows([*runs, *([baseline] if baseline else [])])
    if version_rows:
        sections.append(Section("Library versions", "", (["package", "version"], version_rows)))
    return sections


def _render_md(title: str, stamp: str, sections: Sequence[Section], count: str) -> str:
    parts = [f"# {title}\n", f"_Generated: {stamp}_\n", f"{count} Files: [summary.csv]({SUMMARY}), [report.html]({REPORT_HTML}).\n"]
    for section in sections:
        parts.append(f"## {section.title}\n")
        if section.text:
            parts.append(section.text + "\n")
        if section.table:
            parts.append(_md_table(*section.table))
        for image, caption in section.images:
            parts.append(f"![{caption}]({image})\n")
    return "\n".join(parts)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222;max-width:80rem}
table{border-collapse:collapse;margin:0.5rem 0 1.5rem;font-size:0.9rem}
th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;vertical-align:top}
th{background:#f3f3f3}tr:nth-child(even) td{background:#fafafa}
figure{display:inline-block;margin:0 1rem 1rem 0}img{max-width:100%;border:1px solid #ddd}
.generated{color:#666;font-size:0.85rem}"""


def _render_html(title: str, stamp: str, sections: Sequence[Section], count: str) -> str:
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        f'<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>\n{_CSS}\n</style>\n</head>',
        "<body>",
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="generated">Generated: {html.escape(stamp)}</p>',
        f'<p>{html.escape(count)} Files: <a href="{SUMMARY}">summary.csv</a>, <a href="{REPORT_MD}">report.md</a>.</p>',
    ]
    for section in sections:
        parts.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        if section.table:
            parts.append(_html_table(*section.table).rstrip("\n"))
        for image, caption in section.images:
            parts.append(f'<figure><a href="{html.escape(image)}"><img src="{html.escape(image)}" alt="{html.escape(caption)}">'
                         f"</a><figcaption>{html.escape(caption)}</figcaption></figure>")
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


@dataclass
class Report:
    out: Path
    runs: list[Run]
    files: list[Path]


def write_report(paths: Sequence[str | Path], out: str | Path | None = None, baseline: str | Path | None = None,
                 title: str | None = None) -> Report:
    """Write summary.csv, report.md, report.html and plots/ for the runs under `paths`.

    `out` defaults to the folder given when there is one sweep folder, `<run>/report` for one
    run, and ./report for several. Raises FileNotFoundError when no run folder is found.
    """
    runs = collect(paths)
    if not runs:
        raise FileNotFoundError(f"no run folders under {', '.join(str(p) for p in paths)}")
    baseline_run = None
    if baseline is not None:
        if not is_run(Path(baseline)):
            raise FileNotFoundError(f"baseline {baseline} is not a run folder (no manifest.json)")
        baseline_run = load_run(Path(baseline).resolve(), "baseline")
    if out is None:
        given = Path(paths[0])
        out = (given if not is_run(given) else given / "report") if len(paths) == 1 else Path("report")
    out = Path(out)
    (out / PLOTS).mkdir(parents=True, exist_ok=True)

    header, rows = summary_rows(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    files = [out / SUMMARY]
    (out / SUMMARY).write_text(buffer.getvalue(), encoding="utf-8")

    plots: list[tuple[str, str]] = []
    for name, draw, caption in (
        (PLOT_FILES[0], plot_throughput, "Throughput vs batch size, per model"),
        (PLOT_FILES[1], plot_quality_latency, "Quality vs batch latency (p50)"),
        (PLOT_FILES[2], plot_per_class, "Per-class precision and recall"),
    ):
        target = out / PLOTS / name
        if draw(runs, target):
            plots.append((f"{PLOTS}/{name}", caption))
            files.append(target)
        elif target.exists():
            target.unlink()  # a plot from an earlier report that no longer applies

    title = title or f"Report: {Path(os.path.commonpath([str(r.path) for r in runs])).name or 'runs'}"
    complete = sum(r.status == "complete" for r in runs)
    count = f"{len(runs)} runs: {complete} complete, {len(runs) - complete} not."
    sections = _sections(runs, baseline_run, plots)
    stamp = generated_at()
    (out / REPORT_MD).write_text(_render_md(title, stamp, sections, count), encoding="utf-8")
    (out / REPORT_HTML).write_text(_render_html(title, stamp, sections, count), encoding="utf-8")
    files += [out / REPORT_MD, out / REPORT_HTML]
    return Report(out, runs, files)


def main(argv: Sequence[str]) -> int:
    """`composer report`: exit 0 with the files listed, 2 when there is nothing to report."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="composer report",
        description="summary.csv, report.md and report.html (with plots) over run and sweep folders",
    )
    parser.add_argument("paths", nargs="+", type=Path, help="run folders, sweep folders, or folders holding them")
    parser.add_argument("--baseline", type=Path, help="a run folder to compare every run against")
    parser.add_argument("--out", type=Path, help="where to write (default: the sweep folder, <run>/report, or ./report)")
    parser.add_argument("--title", help="the report's title")
    args = parser.parse_args(list(argv))
    try:
        report = write_report(args.paths, args.out, args.baseline, args.title)
    except FileNotFoundError as error:
        print(f"composer: {error}", file=sys.stderr)
        return 2
    failed = sum(r.status != "complete" for r in report.runs)
    print(f"report over {len(report.runs)} runs ({failed} not complete) in {report.out}:", file=sys.stderr)
    for path in report.files:
        print(f"  {path}", file=sys.stderr)
    return 0
