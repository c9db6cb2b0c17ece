"""The report's PNG plots: throughput vs batch size, quality vs latency, per-class precision/recall.

Drawn on matplotlib's Agg canvas with no pyplot state (a sweep callback may run in a process
that has its own figures), and saved with no date or software stamp so that the same runs give
the same bytes. matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from composer.report.names import MAIN_MODEL, PLOT_FILES, PLOTS
from composer.report.rows import Run, is_number
from composer.runstore import FINISHED

# Which quality number the quality-vs-latency plot uses, first found (WER/CER: lower is better).
PLOT_QUALITY = ("macro_f1", "token_f1", "accuracy", "exact_match", "wer", "cer")


def _figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.2), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, format="png", metadata={"Software": None})


def _model_label(run: Run) -> str:
    """The legend entry of a run's model: its id, with quantization and dtype when they are not the default."""
    model = run.config.get("model") or {}
    label = str(model.get("id") or "task default")
    backend = (run.config.get("quantization") or {}).get("backend")
    if backend and backend != "none":
        label += f" [{backend}]"
    if model.get("dtype") not in (None, "auto"):
        label += f" {model['dtype']}"
    return label


def plot_throughput(runs: Sequence[Run], path: Path) -> bool:
    """One line per model over batch sizes (the mean of repeats, each repeat a dot); False when no run has both."""
    points: dict[str, dict[int, list[float]]] = {}
    for run in runs:
        rate, batch = run.values.get("throughput.records_per_second"), run.config.get("batch_size")
        if run.status in FINISHED and is_number(rate) and isinstance(batch, int):
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
    """Each run as a labelled point (p50 latency, quality); False when no run has a quality number."""
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
    """Per-class precision and recall bars, one colour per run; False when no run has per-class numbers."""
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


_PLOTS: tuple[tuple[str, Callable[[Sequence[Run], Path], bool], str], ...] = (
    (PLOT_FILES[0], plot_throughput, "Throughput vs batch size, per model"),
    (PLOT_FILES[1], plot_quality_latency, "Quality vs batch latency (p50)"),
    (PLOT_FILES[2], plot_per_class, "Per-class precision and recall"),
)


def draw_plots(runs: Sequence[Run], out: Path) -> list[tuple[str, str]]:
    """Draw every plot the runs have data for into out/plots/; (path relative to out, caption) of each.

    A plot left by an earlier report over other runs is removed when it no longer applies, so
    the folder never shows a plot the pages do not.
    """
    plots: list[tuple[str, str]] = []
    for name, draw, caption in _PLOTS:
        target = out / PLOTS / name
        if draw(runs, target):
            plots.append((f"{PLOTS}/{name}", caption))
        elif target.exists():
            target.unlink()
    return plots
