"""One Hydra job inside a Ray task, in whichever worker process and node Ray picked: set up as
Hydra's own launchers set up a job in another process (its globals, the submitting process's
Singleton state, the job's config with its id), then Hydra's run_job, which configures the job's
logging, calls the Hydra callbacks and the task function (composer.hydrajob.hydra_job)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, run_job, setup_globals
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write


def run_job_in_task(hydra_context: HydraContext, task_function: TaskFunction, singleton_state: dict[Any, Any],
                    sweep_config: DictConfig, cwd: str) -> tuple[JobReturn, dict[str, Any]]:
    """The job's JobReturn, and where it ran ({task, node, host, pid}) for the launcher's log.
    Its hydra.job.id is its Ray task id (.hydra/hydra.yaml in the job folder keeps it)."""
    import ray

    context = ray.get_runtime_context()
    where = {"task": context.get_task_id(), "node": context.get_node_id(), "host": socket.gethostname(), "pid": os.getpid()}
    setup_globals()
    Singleton.set_state(singleton_state)
    with read_write(sweep_config.hydra), open_dict(sweep_config):  # the submitting process left it read-only
        sweep_config.hydra.job.id = where["task"]
    HydraConfig.instance().set_config(sweep_config)
    with _working_dir(cwd, where):
        job_return = run_job(hydra_context=hydra_context, task_function=task_function, config=sweep_config,
                             job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    return job_return, where


@contextmanager
def _working_dir(cwd: str, where: dict[str, Any]) -> Iterator[None]:
    """Run in the folder the sweep was started from, as the other launchers' jobs do: relative
    paths (the sweep folder under runs/, input.path=data.jsonl) then mean what they meant to the
    command. A Ray worker starts elsewhere and runs other tasks after this one, so it goes back."""
    if not Path(cwd).is_dir():
        raise FileNotFoundError(
            f"{cwd}, the folder the sweep was started from, is not on {where['host']} (Ray node {where['node']}): "
            "each job runs from it and writes into the sweep folder, so every node of the cluster needs it at the "
            "same path (a shared filesystem)")
    before = os.getcwd()
    os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(before)
