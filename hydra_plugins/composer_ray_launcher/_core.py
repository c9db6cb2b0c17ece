"""A batch of sweep jobs as Ray tasks: each submitted with the task options of
hydra.launcher.ray.remote, their returns collected as they end.

Ctrl-C goes to the submitting process only (Ray's workers never see the terminal's signal), so
this passes it on as Ray does: once composer marks the sweep stopped (composer.callbacks), the
jobs not started are cancelled and the running ones get a KeyboardInterrupt from ray.cancel,
which their run takes as Ctrl-C (it finishes its batches and records `interrupted`); a second
Ctrl-C here ends them at once. A job Ray itself could not run (its worker or node died after
Ray's retries, its task failed outside the job) gets job_error.json in its folder, as a job that
failed before its run started does, and the sweep goes on.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import DictConfig, OmegaConf, open_dict
from ray.exceptions import RayError, RayTaskError, TaskCancelledError

from hydra_plugins.composer_ray_launcher._session import ray_session
from hydra_plugins.composer_ray_launcher._task import run_job_in_task
from hydra_plugins.composer_ray_launcher.ray_launcher import ComposerRayLauncher, RayLaunchError

log = logging.getLogger(__name__)
# How often the submitting process looks whether the sweep was stopped while jobs run.
POLL_SECONDS = 0.5


@dataclass
class _Job:
    """One job as the submitting process knows it: enough to report it when Ray brings back nothing."""

    number: int
    overrides: list[str]
    config: DictConfig  # its sweep config (the job's config with Hydra's)
    folder: Path


def launch(launcher: ComposerRayLauncher, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list[JobReturn]:
    """Run the jobs as Ray tasks and return their JobReturns in the order given."""
    assert launcher.config is not None and launcher.hydra_context is not None and launcher.task_function is not None
    setup_globals()
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    remote = launcher.settings("remote")
    try:  # checked before Ray starts
        task = ray.remote(run_job_in_task).options(**remote)
    except (TypeError, ValueError) as error:  # an option Ray's tasks do not take, or a wrong value
        raise RayLaunchError(f"hydra.launcher.ray.remote={remote}: {error}") from None
    with ray_session(launcher.settings("init")) as where:
        options = ", ".join(f"{key}={value}" for key, value in remote.items()) or "Ray's defaults"
        log.info(f"Ray launcher: {len(job_overrides)} jobs as Ray tasks ({options}) on {where}, "
                 f"sweep output dir: {sweep_dir}")
        jobs = [_job(launcher, initial_job_idx + index, list(overrides)) for index, overrides in enumerate(job_overrides)]
        shared = [ray.put(launcher.hydra_context), ray.put(launcher.task_function), ray.put(Singleton.get_state())]
        submitted = {task.remote(*shared, job.config, os.getcwd()): job for job in jobs}
        returns = _collect(submitted, sweep_dir)
    return [returns[job.number] for job in jobs]


def _job(launcher: ComposerRayLauncher, number: int, overrides: list[str]) -> _Job:
    """Job `number`'s sweep config, composed here (a composition error stops the sweep before
    any job runs, as with Hydra's launchers), and its folder."""
    log.info(f"\t#{number} : {' '.join(filter_overrides(overrides))}")
    config = launcher.hydra_context.config_loader.load_sweep_config(launcher.config, overrides)
    with open_dict(config):
        config.hydra.job.num = number
    HydraConfig.instance().set_config(config)  # its folder may interpolate Hydra's settings
    folder = Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(OmegaConf.select(config, "hydra.sweep.subdir"))
    return _Job(number, overrides, config, folder)


def _collect(submitted: dict[Any, _Job], sweep_dir: Path) -> dict[int, JobReturn]:
    """Each job's JobReturn as its task ends; Ctrl-C passed on to the tasks (module docstring)."""
    from composer.callbacks import sweep_stopped

    returns: dict[int, JobReturn] = {}
    waiting, stopping = list(submitted), False
    try:
        while waiting:
            done, waiting = ray.wait(waiting, num_returns=1, timeout=POLL_SECONDS)
            for ref in done:
                job = submitted[ref]
                returns[job.number] = _job_return(ref, job)
            if waiting and not stopping and sweep_stopped(sweep_dir):
                stopping = True
                log.warning(f"Ray launcher: the sweep was stopped: {len(waiting)} jobs not finished are cancelled "
                            "(running ones finish their batches and record `interrupted`)")
                for ref in waiting:
                    ray.cancel(ref)
    except KeyboardInterrupt:  # a second Ctrl-C: the running jobs stop at once, their folders say interrupted
        for ref in waiting:
            ray.cancel(ref, force=True)
        raise
    return returns


def _job_return(ref: Any, job: _Job) -> JobReturn:
    """The job's own JobReturn, or, when Ray did not bring one back, a stand-in whose folder
    says what happened."""
    from composer.runstore import EXIT_FAILED, FINISHED
    from composer.sweep import folder_state, record_job_error

    try:
        job_return, where = ray.get(ref)
    except TaskCancelledError:  # the sweep was stopped: the job never started, or its run recorded `interrupted`
        log.info(f"\t#{job.number} stopped ({folder_state(job.folder)}): {job.folder}")
        return _stand_in(job)
    except RayError as error:
        cause = error.cause if isinstance(error, RayTaskError) and error.cause is not None else error
        log.error(f"\t#{job.number} failed in Ray: {type(cause).__name__}: {cause}")
        if folder_state(job.folder) not in (str(status) for status in FINISHED):  # a finished run stays the truth
            record_job_error(job.folder, cause, EXIT_FAILED, job.overrides)
        return _stand_in(job)
    log.info(f"\t#{job.number} ran as Ray task {where['task']} on node {where['node']} ({where['host']}, pid {where['pid']})")
    return job_return


def _stand_in(job: _Job) -> JobReturn:
    """A JobReturn for a job whose task brought none back: completed for Hydra's sweepers (the
    sweep goes on; the job's folder holds the truth), returning what composer's task function
    returns for a job that did not finish (NaN where the config sets an `objective`)."""
    objective = OmegaConf.select(job.config, "objective", default=None)
    return JobReturn(overrides=job.overrides, working_dir=str(job.folder), task_name=str(job.config.hydra.job.name),
                     status=JobStatus.COMPLETED, _return_value=math.nan if objective else None)
