"""The Hydra task function: one job's run (or resume) into Hydra's output folder, and, in a
sweep, the job's part in the sweep's record (sweep.json): a resumed sweep's job decides from its
own folder whether to run, resume or keep what is there.

No exception leaves a job: one that cannot run records why in its folder (job_error.json) and
the sweep goes on. Exit codes of the jobs run in this process are collected in `exit_codes`
(jobs in other processes are read back from their folders by the sweep's callback).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from composer.runstore import EXIT_INTERRUPTED, RunStatus
from composer.schema import ConfigError

exit_codes: list[int] = []


def print_issues(error: ConfigError) -> None:
    print(f"composer: {error}", file=sys.stderr)


def print_summary(run_dir: Path) -> None:
    """The end-of-run summary on stdout (run.log in the folder ends with the same lines)."""
    from composer.summary import summary_lines

    print("\n".join(summary_lines(run_dir)), flush=True)


def hydra_job(cfg) -> float | None:
    """The Hydra task function: one run per job, into Hydra's output folder.

    No exception leaves it: a job that cannot run records why in its folder (job_error.json)
    and the sweep goes on. It returns the config's `objective` (for sweepers such as Optuna).
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from composer.configuration import resolve

    hydra_cfg = HydraConfig.get()
    job_dir, task_overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    plain, issues = resolve(cfg)
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return _run_job(plain, issues, job_dir, task_overrides)
    from omegaconf import OmegaConf

    from composer.callbacks import active_sweep
    from composer.sweep import RUNNING, folder_state, job_decision, request_stop, set_job_state, stop_requested

    sweep_dir, number = Path(str(hydra_cfg.sweep.dir)), int(hydra_cfg.job.num)
    if active_sweep.get("stop") or stop_requested(sweep_dir):  # Ctrl-C: no new job starts; resume runs it
        print(f"composer: job {number} not started: the sweep was interrupted", file=sys.stderr)
        exit_codes.append(EXIT_INTERRUPTED)
        return _objective(plain, None)
    retry_failed = bool(OmegaConf.select(hydra_cfg, "callbacks.report.retry_failed", default=False))
    decision = job_decision(job_dir, retry_failed)
    if decision != "run":  # finished before, or failed and not retried: the folder stays as it is
        return _kept_job(plain, job_dir, sweep_dir, number, decision)
    set_job_state(sweep_dir, number, RUNNING, job_dir)
    objective = _run_job(plain, issues, job_dir, task_overrides)
    state = folder_state(job_dir)
    set_job_state(sweep_dir, number, state, job_dir)
    if state == RunStatus.INTERRUPTED:  # Ctrl-C stopped this job's run: the whole sweep stops
        if active_sweep.get("pid") == os.getpid():
            active_sweep["stop"] = True
        request_stop(sweep_dir)
    return objective


def _kept_job(plain, job_dir: Path, sweep_dir: Path, number: int, decision: str) -> float | None:
    """A job of a resumed sweep whose folder says it finished (or failed, without
    --retry-failed): nothing runs; its exit code and objective count as before."""
    from composer.sweep import folder_state, job_outcome, set_job_state

    outcome, state = job_outcome(job_dir), folder_state(job_dir)
    set_job_state(sweep_dir, number, state, job_dir)
    exit_codes.append(outcome["exit_code"])
    if decision == "skip":
        print(f"composer: job {number} finished before ({state}), kept: {job_dir}", file=sys.stderr)
        print_summary(job_dir)
        return _objective(plain, job_dir)
    print(f"composer: job {number} {state} before, kept (--retry-failed runs it again): {job_dir}", file=sys.stderr)
    return _objective(plain, None)


def _run_job(plain, issues: list, job_dir: Path, task_overrides: list[str]) -> float | None:
    """Run (or resume) one job's run into `job_dir`; every failure is recorded, none raised."""
    from composer import api
    from composer.runstore import ResumeRefused
    from composer.validation import validate

    try:
        if plain is not None:
            issues += validate(plain)
        if issues:
            raise ConfigError(issues)
        result = api.execute_config(plain, job_dir, task_overrides)
    except ConfigError as error:
        print_issues(error)
        return _job_failed(job_dir, error, api.EXIT_CONFIG, task_overrides, plain)
    except ResumeRefused as error:
        print(f"composer: {error}", file=sys.stderr)
        exit_codes.append(api.EXIT_CONFIG)  # the folder holds another run: leave it untouched
        return _objective(plain, None)
    except Exception as error:  # noqa: BLE001 - one job's failure must not end the sweep
        print(f"composer: job failed before its run started: {type(error).__name__}: {error}", file=sys.stderr)
        return _job_failed(job_dir, error, api.EXIT_FAILED, task_overrides, plain)
    print_summary(result.run_dir)
    exit_codes.append(result.exit_code)
    return _objective(plain, result.run_dir)


def _job_failed(job_dir: Path, error: Exception, exit_code: int, overrides: list[str], plain) -> float | None:
    from composer.sweep import record_job_error

    record_job_error(job_dir, error, exit_code, overrides)
    exit_codes.append(exit_code)
    return _objective(plain, None)


def _objective(plain, run_dir: Path | None) -> float | None:
    """The value of `objective` (a metrics.json path) for this job; NaN when it did not finish."""
    from composer.sweep import objective_value

    objective = (plain or {}).get("objective")
    if not objective:
        return None
    return objective_value(run_dir, objective) if run_dir is not None else float("nan")
