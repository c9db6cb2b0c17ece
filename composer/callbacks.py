"""Hydra callbacks: a report at the end of every multirun (configs/config.yaml, hydra.callbacks).

The callback runs in the process that ran the sweep, whatever launcher ran the jobs, after the
last job; it reads the job folders (never the jobs' memory), so it works the same for the basic
launcher, joblib workers and submitit. It also leaves the jobs' exit codes for `composer run -m`
to return: jobs that ran in other processes cannot report them any other way.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
# Exit codes of the jobs of the last multirun in this process (read by composer.cli).
last_sweep_exit_codes: list[int] = []


class SweepReport(Callback):
    """Writes summary.csv, report.md, report.html and plots/ into the sweep folder."""

    def __init__(self, enabled: bool = True, baseline: str | None = None) -> None:
        self.enabled, self.baseline = enabled, baseline

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        last_sweep_exit_codes.clear()

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from composer.report import find_runs, write_report
        from composer.sweep import job_outcome

        sweep_dir = Path(str(config.hydra.sweep.dir))
        jobs = find_runs(sweep_dir) if sweep_dir.is_dir() else []
        last_sweep_exit_codes[:] = [job_outcome(job)["exit_code"] for job in jobs]
        if not self.enabled or not jobs:
            return
        try:
            report = write_report([sweep_dir], out=sweep_dir, baseline=self.baseline)
        except Exception as error:  # noqa: BLE001 - a report problem must not hide the sweep's results
            print(f"composer: could not write the sweep report: {type(error).__name__}: {error}", file=sys.stderr)
            return
        failed = sum(run.status != "complete" for run in report.runs)
        print(f"sweep report: {len(report.runs)} runs ({failed} not complete): {sweep_dir / 'report.html'}",
              file=sys.stderr)
