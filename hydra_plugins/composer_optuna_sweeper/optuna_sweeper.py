"""The plugin class of composer's Optuna sweeper (`hydra/sweeper=optuna`), which Hydra's plugin
scan imports on every command: it imports nothing heavy; Optuna comes with the first sweep."""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


class ComposerOptunaSweeper(Sweeper):
    """Hydra's Optuna sweeper's settings (configs/hydra/sweeper/optuna.yaml says what each does),
    on Optuna 5, resumable from the study's storage (_study.StudySweep)."""

    def __init__(self, sampler: Any = None, direction: Any = "minimize", storage: str | None = None,
                 study_name: str | None = None, n_trials: int = 20, n_jobs: int = 2, max_failure_rate: float = 1.0,
                 params: Any = None, custom_search_space: str | None = None) -> None:
        self.sampler, self.direction, self.storage, self.study_name = sampler, direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params, self.custom_search_space = params, custom_search_space
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(config=config, hydra_context=hydra_context,
                                                                task_function=task_function)

    def sweep(self, arguments: list[str]) -> None:
        try:
            from hydra_plugins.composer_optuna_sweeper._study import StudySweep
        except ModuleNotFoundError as error:
            if error.name != "optuna":
                raise
            raise RuntimeError('hydra/sweeper=optuna needs Optuna: pip install "pipeline-composer[optuna]"') from None
        StudySweep(self, list(arguments)).run()
