"""Sweep plumbing shared by the Hydra job function, the end-of-multirun callback and reports.

A job that fails before its run starts (a config mistake in one combination, an exception
outside the run) leaves no manifest.json; it writes `job_error.json` instead, so that its
folder still says what happened and the sweep goes on to the next job. Every launcher runs the
job function in some process (the same one, joblib workers, submitit/Slurm jobs), so the
sweep's exit code is read back from the job folders, not from the process that ran them.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from pathlib import Path
from typing import Any

from composer.runstore import EXIT_CONFIG, EXIT_FAILED, FINISHED, JOB_ERROR, MANIFEST, METRICS, RunStatus, read_manifest


def record_job_error(job_dir: Path, error: BaseException, exit_code: int, overrides: list[str]) -> None:
    """Write job_error.json: why this job produced no run (its manifest, if any, is left as is)."""
    status = RunStatus.CONFIG_ERROR if exit_code == EXIT_CONFIG else RunStatus.FAILED
    data = {
        "status": status,
        "exit_code": exit_code,
        "overrides": list(overrides),
        "error": {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()},
    }
    temporary = job_dir / (JOB_ERROR + ".tmp")
    try:
        job_dir.mkdir(parents=True, exist_ok=True)
        temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        os.replace(temporary, job_dir / JOB_ERROR)
    except OSError as write_error:  # a full disk or a folder that is no folder: say so, the sweep goes on
        temporary.unlink(missing_ok=True)
        print(f"composer: could not record the job's failure in {job_dir / JOB_ERROR}: {write_error}", file=sys.stderr)


def job_outcome(job_dir: Path) -> dict[str, Any]:
    """{status, exit_code, error} of one job folder from its manifest or job_error.json."""
    manifest, job_error = job_dir / MANIFEST, job_dir / JOB_ERROR
    if job_error.exists():  # written after the manifest, if both exist: it is the last word
        data = json.loads(job_error.read_text(encoding="utf-8"))
        return {"status": data["status"], "exit_code": data["exit_code"], "error": data.get("error")}
    if manifest.exists():
        data = read_manifest(job_dir)
        exit_code = data.get("exit_code")
        if data.get("status") == RunStatus.RUNNING:  # the process died mid-run (killed, out of memory)
            exit_code = EXIT_FAILED
        return {"status": data.get("status", RunStatus.UNKNOWN), "exit_code": exit_code, "error": data.get("error")}
    return {"status": RunStatus.MISSING, "exit_code": EXIT_FAILED,
            "error": {"type": "Missing", "message": "the job left neither manifest.json nor job_error.json"}}


def lookup(data: Any, dotted: str) -> Any:
    """The value at a dotted path (`quality.model.macro_f1`) in nested dicts, or None."""
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


def objective_value(job_dir: Path, objective: str) -> float:
    """The number a sweeper optimises, read from the job's metrics.json; NaN when the run did not
    finish or the metric is missing (Optuna then marks the trial failed and goes on)."""
    outcome = job_outcome(job_dir)
    if outcome["status"] not in FINISHED or not (job_dir / METRICS).exists():
        return math.nan
    value = lookup(json.loads((job_dir / METRICS).read_text(encoding="utf-8")), objective)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
