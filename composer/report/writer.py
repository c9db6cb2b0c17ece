"""Writing a report: `write_report` puts summary.csv, plots/, report.md and report.html in one
folder, and `main` is the `composer report` command around it."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from composer.report.htmlpage import render_html
from composer.report.markdown import render_markdown
from composer.report.names import PLOTS, REPORT_HTML, REPORT_MD, SUMMARY
from composer.report.plots import draw_plots
from composer.report.rows import Run, collect, is_run, load_run
from composer.report.sections import build_sections
from composer.report.tables import write_summary
from composer.runstore import RunStatus


@dataclass
class Report:
    """What `write_report` wrote: where, over which runs, and the files in the order written."""

    out: Path
    runs: list[Run]
    files: list[Path]


def generated_at() -> str:
    """The report's own timestamp: SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    moment = dt.datetime.fromtimestamp(int(epoch), dt.timezone.utc) if epoch else dt.datetime.now(dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


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

    write_summary(runs, out / SUMMARY)
    plots = draw_plots(runs, out)

    title = title or f"Report: {Path(os.path.commonpath([str(r.path) for r in runs])).name or 'runs'}"
    complete = sum(r.status == RunStatus.COMPLETE for r in runs)
    count = f"{len(runs)} runs: {complete} complete, {len(runs) - complete} not."
    sections = build_sections(runs, baseline_run, plots)
    stamp = generated_at()
    (out / REPORT_MD).write_text(render_markdown(title, stamp, sections, count), encoding="utf-8")
    (out / REPORT_HTML).write_text(render_html(title, stamp, sections, count), encoding="utf-8")
    files = [out / SUMMARY, *(out / image for image, _ in plots), out / REPORT_MD, out / REPORT_HTML]
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
    failed = sum(r.status != RunStatus.COMPLETE for r in report.runs)
    print(f"report over {len(report.runs)} runs ({failed} not complete) in {report.out}:", file=sys.stderr)
    for path in report.files:
        print(f"  {path}", file=sys.stderr)
    return 0
