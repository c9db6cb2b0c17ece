"""What report.md and report.html say, in order: a list of `Section`s built once from the runs
and rendered by both pages, so the two never disagree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from composer.report.agreement import agreement_rows
from composer.report.rows import Run, cell, config_differences, config_value, swept_parameters
from composer.report.tables import Table, baseline_rows, error_text, format_value, headline, model_rows, version_rows
from composer.runstore import RunStatus


@dataclass
class Section:
    """One titled part of a page: a paragraph, an optional table, and images (plots)."""

    title: str
    text: str = ""
    table: Table | None = None
    images: list[tuple[str, str]] = field(default_factory=list)  # (relative path, caption)


def build_sections(runs: Sequence[Run], baseline: Run | None, plots: list[tuple[str, str]]) -> list[Section]:
    """The sections of a report, leaving out those with nothing to say (no failures, no baseline, no plots)."""
    params = swept_parameters(runs)
    columns = headline(runs)
    sections = [
        Section(
            "Runs",
            "One row per run: swept parameters, then headline metrics (summary.csv has every metric).",
            (["run", "status", *params, *(t for _, t, _ in columns)],
             [[r.label, r.status, *(r.overrides.get(p, "") for p in params),
               *(format_value(r.values.get(c), f) for c, _, f in columns)] for r in runs]),
        )
    ]
    failed = [r for r in runs if r.status != RunStatus.COMPLETE]
    if failed:
        sections.append(Section(
            "Failures and record errors",
            f"{len(failed)} of {len(runs)} runs did not complete cleanly; the others are unaffected.",
            (["run", "status", "exit code", "records failed", "error"],
             [[r.label, r.status, cell(r.exit_code), cell(r.values.get("counts.records_failed")), error_text(r.error)]
              for r in failed]),
        ))
    if baseline is not None:
        sections.append(Section(
            "Against the baseline",
            f"Baseline: {baseline.path.name} ({baseline.status}). Each cell: value (change vs baseline).",
            baseline_rows(runs, baseline),
        ))
    agreement = agreement_rows(runs, baseline)
    if agreement is not None:
        reference, table = agreement
        sections.append(Section(
            "Outputs against " + reference,
            f"Record by record (matched by id), how far each run's outputs are from those of {reference}: the cosine of "
            "vector fields (embeddings) and the share of records with the same best label. A faster setting "
            "(quantization, another backend) is only a gain where these stay close.",
            table,
        ))
    if plots:
        sections.append(Section("Plots", images=plots))
    differing = config_differences(runs)
    sections.append(Section(
        "Config differences",
        "Only the resolved config keys whose values differ between runs." if differing
        else "All runs have the same resolved config.",
        (["run", *differing], [[r.label, *(config_value(r, k) for k in differing)] for r in runs]) if differing else None,
    ))
    loaded = model_rows([*runs, *([baseline] if baseline else [])])
    if loaded:
        sections.append(Section(
            "Models",
            "The weights each run loaded: hub revision (commit sha) or content sha256 of a local folder.",
            (["run", "stage", "requested", "source", "revision", "content sha256", "dtype", "quantization", "class"],
             loaded),
        ))
    versions = version_rows([*runs, *([baseline] if baseline else [])])
    if versions:
        sections.append(Section("Library versions", "", (["package", "version"], versions)))
    return sections
