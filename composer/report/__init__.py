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

The package's parts, each with one job: `rows` (run folders -> `Run`s, and which overrides and
config keys differ), `tables` (summary.csv and the tables' rows), `plots`, `sections` (what the
pages say), `markdown` and `htmlpage` (the two pages), `writer` (`write_report` and the
`composer report` command). This module names what callers use.
"""

from __future__ import annotations

from composer.report.rows import Run, find_runs, metric_values
from composer.report.writer import Report, main, write_report

__all__ = ["Report", "Run", "find_runs", "main", "metric_values", "write_report"]
