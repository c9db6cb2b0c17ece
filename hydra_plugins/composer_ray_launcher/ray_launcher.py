"""The plugin class of composer's Ray launcher (`hydra/launcher=ray`), which Hydra's plugin scan
imports on every command (`composer plan` included): it imports nothing heavy; Ray comes with
the first launch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hydra.core.utils import JobReturn
from hydra.errors import CompactHydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class RayLaunchError(CompactHydraException):
    """A sweep the Ray launcher cannot start (Ray missing, no cluster at the address, an unknown
    key under hydra.launcher.ray): Hydra prints the message alone, no traceback."""


class ComposerRayLauncher(Launcher):
    """Each job as a Ray task: `ray.init` keys go to ray.init, `ray.remote` keys to the task's
    .options (num_cpus, num_gpus, memory, resources, max_retries, ...);
    configs/hydra/launcher/ray.yaml says what each does."""

    def __init__(self, ray: DictConfig) -> None:
        self.ray = ray
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise RayLaunchError('hydra/launcher=ray needs Ray: pip install "pipeline-composer[ray]"')
        from hydra_plugins.composer_ray_launcher._core import launch

        return launch(self, job_overrides, initial_job_idx)

    def settings(self, key: str) -> dict[str, Any]:
        """`hydra.launcher.ray.<key>` (init or remote) as plain keyword arguments."""
        from omegaconf import OmegaConf

        node = self.ray.get(key) if self.ray is not None else None
        return dict(OmegaConf.to_container(node, resolve=True)) if node is not None else {}
