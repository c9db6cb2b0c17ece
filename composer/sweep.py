"""Sweep plumbing shared by the Hydra job function, the end-of-multirun callback and reports.

A job that fails before its run starts (a config mistake in one combination, an exception
outside the run) leaves no manifest.json; it writes `job_error.json` instead, so that its
folder still says what happened and the sweep goes on to the next job. Every launcher runs the
job function in some process (the same one, joblib workers, submitit/Slurm jobs), so the
sweep's exit code is read back from the job folders, not from the process that ran them.

A sweep folder also records itself in `sweep.json` (runstore.SWEEP_STATE): the command's
overrides, each job's overrides in Hydra's order, the launcher and sweeper, and each job's state
as it goes. It is written atomically under a lock on the sweep folder (joblib workers and
submitit jobs update it at once). The job folders stay the truth about what ran: a resumed
sweep is the same multirun again into the same folder (Hydra gives every job its old number),
and each job decides from its own folder what to do (`job_decision`); sweep.json is the sweep's
identity, checked before a resume, and a readable record of where each job stands.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import math
import os
import socket
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from composer.runstore import (
    EXIT_CONFIG,
    EXIT_FAILED,
    FINISHED,
    JOB_ERROR,
    MANIFEST,
    METRICS,
    SWEEP_STATE,
    RunStatus,
    differences,
    read_json,
    read_manifest,
    write_json,
)


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


# ---- the sweep's own record: sweep.json ----

# A job's state in sweep.json: PENDING (not started), RUNNING, or how its run ended (a RunStatus
# value: complete, completed_with_errors, failed, config_error, aborted, interrupted).
PENDING, RUNNING = "pending", str(RunStatus.RUNNING)
# The sweep's own status: running (or killed while it ran), interrupted (Ctrl-C), finished.
SWEEP_RUNNING, SWEEP_INTERRUPTED, SWEEP_FINISHED = "running", str(RunStatus.INTERRUPTED), "finished"
BASIC_SWEEPER = "hydra._internal.core_plugins.basic_sweeper.BasicSweeper"
# hydra/sweeper=optuna, composer's own (hydra_plugins/composer_optuna_sweeper): resumed from its
# study's storage, or without one by replaying its seeded sampler over the trial folders
# (multirun.refusal says when neither can be done).
OPTUNA_SWEEPER = "hydra_plugins.composer_optuna_sweeper.optuna_sweeper.ComposerOptunaSweeper"
# Hydra's own Optuna sweeper (hydra-optuna-sweeper), which composer used before: its sweeps are not resumed.
HYDRA_OPTUNA_SWEEPER = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
# hydra/launcher=ray and ray_cluster, composer's own (hydra_plugins/composer_ray_launcher): each job a Ray task.
RAY_LAUNCHER = "hydra_plugins.composer_ray_launcher.ray_launcher.ComposerRayLauncher"
# Hydra settings that say where a sweep is and how to resume it, not what it is: never recorded.
RESUME_SETTINGS = ("hydra.sweep.dir", "hydra.mode", "hydra.callbacks.report.retry_failed")
# Job folder states a resume leaves alone unless asked (--retry-failed).
FAILED_STATES = (str(RunStatus.FAILED), str(RunStatus.CONFIG_ERROR), str(RunStatus.ABORTED))
_STATE_VERSION = 1


class SweepStateError(ValueError):
    """sweep.json cannot be read or is not what composer writes; the message names the file and
    says what to do."""


def override_key(override: str) -> str:
    """The key an override sets (`model`, `call.top_k`, `hydra/launcher`), without +, ++ or ~."""
    return override.lstrip("+~").split("=", 1)[0]


def is_hydra_override(override: str) -> bool:
    return override_key(override).startswith(("hydra.", "hydra/"))


def is_resume_setting(override: str) -> bool:
    return override_key(override) in RESUME_SETTINGS


def job_list(task_overrides: list[str], params: dict[str, Any] | None = None) -> list[list[str]] | None:
    """Every job's overrides in Hydra's order, as its basic sweeper expands them: the sweeper's
    `params` (hydra.sweeper.params, set in config files) first, then `task_overrides` (the
    command's overrides that are not Hydra's own; a key in both takes the command's value, in the
    params' place). None when that sweeper cannot expand them (the ranges of another sweeper,
    such as Optuna's)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    arguments = [f"{key}={value}" for key, value in (params or {}).items()] + list(task_overrides)  # as BasicSweeper.sweep
    try:
        batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(arguments), None)
    except HydraException:
        return None
    return batches[0]


def sweeper_settings(node: Any) -> dict[str, Any]:
    """A composed `hydra.sweeper` as plain data, without its class (recorded apart): what decides
    the jobs besides the command, such as the job ranges or search space in `params` and
    Optuna's sampler, direction and n_trials. Interpolations resolved where they can be."""
    from omegaconf import OmegaConf

    if node is None:
        return {}
    try:
        data = OmegaConf.to_container(node, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation of a value Hydra sets at run time: as written
        data = OmegaConf.to_container(node, resolve=False)
    return {key: value for key, value in (data or {}).items() if key != "_target_"}


def new_state(task_overrides: list[str], hydra_overrides: list[str], launcher: str, sweeper: str,
              settings: dict[str, Any], source: dict[str, str | None]) -> dict[str, Any]:
    """A sweep's sweep.json as it starts: its identity, every job pending. `settings` are the
    sweeper's (sweeper_settings), `source` the configs' folder and name (callbacks.config_source)."""
    jobs = job_list(task_overrides, settings.get("params")) if sweeper == BASIC_SWEEPER else None
    return {
        "version": _STATE_VERSION,
        "status": SWEEP_RUNNING,
        "overrides": list(task_overrides),
        "hydra_overrides": [o for o in hydra_overrides if not is_resume_setting(o)],
        "launcher": launcher,
        "sweeper": sweeper,
        "sweeper_settings": settings,
        **source,
        "cwd": os.getcwd(),  # relative paths in the overrides (input.path=...) are read from here
        "jobs": [{"job": number, "overrides": job, "status": PENDING} for number, job in enumerate(jobs or [])],
        "attempts": [],
    }


def _damaged(path: Path, why: str) -> SweepStateError:
    return SweepStateError(
        f"{path} {why}: it is not the sweep record composer writes (edited or damaged). Restore it from a "
        "copy, or delete it and run the sweep's original `composer run -m ...` again with "
        f"hydra.sweep.dir={path.parent}: finished jobs are kept, the rest run or resume."
    )


def read_state(sweep_dir: Path) -> dict[str, Any]:
    """The sweep.json of `sweep_dir`; SweepStateError naming the file when it is damaged."""
    path = Path(sweep_dir) / SWEEP_STATE
    try:
        state = read_json(path)
    except UnicodeDecodeError as error:
        raise _damaged(path, f"is not UTF-8 ({error.reason})") from None
    except ValueError as error:
        raise _damaged(path, f"is not valid JSON ({error})") from None
    if not isinstance(state, dict):
        raise _damaged(path, "does not hold a JSON object")
    for key, kind in (("overrides", list), ("hydra_overrides", list), ("jobs", list), ("launcher", str), ("sweeper", str),
                      ("status", str), ("attempts", list)):
        if not isinstance(state.get(key), kind):
            raise _damaged(path, f"has no valid `{key}` (a {kind.__name__} is expected)")
    for index, job in enumerate(state["jobs"]):
        if not (isinstance(job, dict) and job.get("job") == index and isinstance(job.get("overrides"), list)
                and all(isinstance(o, str) for o in job["overrides"]) and isinstance(job.get("status"), str)):
            raise _damaged(path, f"has a damaged entry jobs[{index}] (job, overrides and status are expected)")
    return state


@contextmanager
def _locked(sweep_dir: Path) -> Iterator[None]:
    """An exclusive lock on the sweep folder itself (flock on its descriptor), so that jobs in
    other processes never interleave their read-modify-write of sweep.json. On a filesystem
    without flock the update goes on unlocked: each write is still whole (temp file + rename),
    and the end of the sweep reads every job's state back from its folder."""
    descriptor = os.open(sweep_dir, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            pass
        yield
    finally:
        os.close(descriptor)  # releases the lock


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def begin_sweep(sweep_dir: Path, started: dict[str, Any]) -> dict[str, Any]:
    """Record the start of a multirun in `sweep_dir`: a new sweep.json from `started` (new_state),
    or, for a sweep resumed into its folder, the recorded one saying `running` again."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with _locked(sweep_dir):
        state = read_state(sweep_dir) if (sweep_dir / SWEEP_STATE).exists() else started
        state["status"] = SWEEP_RUNNING
        state["attempts"].append({"started_at": _now(), "launcher": started["launcher"], "host": socket.gethostname(),
                                  "pid": os.getpid()})
        write_json(sweep_dir / SWEEP_STATE, state)
    return state


def update_state(sweep_dir: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to sweep.json under the lock; nothing when the folder has none (a sweep
    started before composer recorded sweeps) or it cannot be read (it is reported at resume)."""
    sweep_dir = Path(sweep_dir)
    if not (sweep_dir / SWEEP_STATE).exists():
        return
    try:
        with _locked(sweep_dir):
            state = read_state(sweep_dir)
            change(state)
            write_json(sweep_dir / SWEEP_STATE, state)
    except (OSError, SweepStateError) as error:  # the record is informative: the sweep goes on
        print(f"composer: could not update {sweep_dir / SWEEP_STATE}: {error}", file=sys.stderr)


def set_job_state(sweep_dir: Path, number: int, status: str, job_dir: Path | None = None) -> None:
    """Record job `number`'s state (and its folder, relative to the sweep folder)."""

    def change(state: dict[str, Any]) -> None:
        jobs = state["jobs"]
        while len(jobs) <= number:  # a sweeper whose jobs are not known up front (Optuna)
            jobs.append({"job": len(jobs), "overrides": [], "status": PENDING})
        jobs[number]["status"] = str(status)
        if job_dir is not None:
            jobs[number]["dir"] = os.path.relpath(job_dir, sweep_dir)

    update_state(sweep_dir, change)


def end_sweep(sweep_dir: Path, status: str) -> None:
    """Record how the multirun ended: `finished` (each job's state read back from its folder,
    whichever process ran it) or `interrupted` (jobs still running marked interrupted)."""
    sweep_dir = Path(sweep_dir)

    def change(state: dict[str, Any]) -> None:
        state["status"] = status
        if state["attempts"]:
            state["attempts"][-1].update(finished_at=_now(), status=status)
        for job in state["jobs"]:
            folder = sweep_dir / job.get("dir", str(job["job"]))
            if status == SWEEP_FINISHED or job["status"] == RUNNING:
                job["status"] = folder_state(folder)

    update_state(sweep_dir, change)


def request_stop(sweep_dir: Path) -> None:
    """Ctrl-C: the sweep says `interrupted`, so that no job starts from now on, in any process."""

    def change(state: dict[str, Any]) -> None:
        state["status"] = SWEEP_INTERRUPTED

    update_state(sweep_dir, change)


def still_running(state: dict[str, Any]) -> int | None:
    """The process id of the composer command that runs this sweep now, on this machine, if
    one does (its last attempt has not ended and that process is alive); else None."""
    attempt = state["attempts"][-1] if state["attempts"] else {}
    pid = attempt.get("pid")
    if state["status"] != SWEEP_RUNNING or not isinstance(pid, int) or pid == os.getpid() \
            or attempt.get("host") != socket.gethostname():
        return None
    try:
        import psutil

        command = " ".join(psutil.Process(pid).cmdline())
    except Exception:  # noqa: BLE001 - gone, or not ours to read: not running
        return None
    return pid if "composer" in command else None


def stop_requested(sweep_dir: Path) -> bool:
    """Whether the sweep in `sweep_dir` was stopped (Ctrl-C) since it started (read without the
    lock: sweep.json is replaced whole, never written in place)."""
    try:
        return read_state(sweep_dir).get("status") == SWEEP_INTERRUPTED
    except (OSError, SweepStateError):
        return False


def folder_state(job_dir: Path) -> str:
    """A job's state as its folder tells it: pending (nothing ran), interrupted (a run left
    `running` by a process that died, or stopped by Ctrl-C), or how its run ended."""
    if not ((job_dir / MANIFEST).exists() or (job_dir / JOB_ERROR).exists()):
        return PENDING
    try:
        status = str(job_outcome(job_dir)["status"])
    except (OSError, ValueError, KeyError):
        return str(RunStatus.UNKNOWN)
    return str(RunStatus.INTERRUPTED) if status == RunStatus.RUNNING else status


def job_decision(job_dir: Path, retry_failed: bool) -> str:
    """What a job of a sweep run again into its folder does: "skip" (its run finished: kept as it
    is), "keep" (it failed and --retry-failed was not given: kept as it is), or "run" (nothing
    ran yet, or its run was interrupted or killed and the run-level resume continues it; or it
    failed and is retried: its job_error.json goes, its run resumes)."""
    state = folder_state(job_dir)
    if state in (str(s) for s in FINISHED):
        return "skip"
    if state in FAILED_STATES:
        if not retry_failed:
            return "keep"
        (job_dir / JOB_ERROR).unlink(missing_ok=True)
    return "run"


def identity_differences(state: dict[str, Any], task_overrides: list[str], sweeper: str, settings: dict[str, Any],
                         source: dict[str, str | None], neutral: frozenset[str] = frozenset()) -> list[str]:
    """What makes this command another sweep than the one recorded in `state`: another sweeper,
    other configs (--config-dir, --config-name: callbacks.config_source), or another job list (overrides
    of the `neutral` settings, which change no output, aside) as the basic sweeper expands the
    command and its `settings`' params; for a sweeper whose jobs are not known up front (Optuna),
    other sweeper settings (search space, sampler, ...) or other overrides."""
    if sweeper != state["sweeper"]:
        return [f"sweeper: {state['sweeper']} -> {sweeper}"]
    lines = [f"--{key.replace('_', '-')}: {state.get(key) or '(none)'} -> {source[key] or '(none)'}"
             for key in ("config_dir", "config_name") if state.get(key) != source[key]]

    def kept(job: list[str]) -> list[str]:
        return sorted(o for o in job if override_key(o).split(".")[0] not in neutral)

    if sweeper != BASIC_SWEEPER:
        if "sweeper_settings" in state:  # sweeps recorded before it was: their overrides only
            lines += [f"hydra.sweeper.{line}" for line in differences(state["sweeper_settings"], settings)]
        old, new = kept(state["overrides"]), kept(list(task_overrides))
        if old != new:
            lines.append(f"overrides: {' '.join(o for o in old if o not in new) or '(nothing)'} -> "
                         f"{' '.join(o for o in new if o not in old) or '(nothing)'}")
        return lines
    jobs = job_list(task_overrides, settings.get("params")) or []
    recorded = [job["overrides"] for job in state["jobs"]]
    if len(jobs) != len(recorded):
        lines.append(f"the sweep has {len(recorded)} jobs, this command makes {len(jobs)}")
    for number, (old, new) in enumerate(zip(recorded, jobs)):
        if kept(old) != kept(new):
            gone = [o for o in kept(old) if o not in kept(new)] or ["(nothing)"]
            added = [o for o in kept(new) if o not in kept(old)] or ["(nothing)"]
            lines.append(f"job {number}: {' '.join(gone)} -> {' '.join(added)}")
    return lines
