"""The sweep of composer's Optuna sweeper: ask a batch of trials, launch it, tell each result;
and, for a study in a storage that already holds this sweep folder's trials, resume it.

Trial numbers are job numbers: job folder N holds trial N (each trial records its sweep folder
and job number as system attributes, so that a study shared by several folders, with an explicit
study_name, still finds its own trials). The sampler is pickled into the study after each batch
is asked and before it is launched, so that a resumed study samples on as an uninterrupted one
would (Optuna's advice for reproducible resumes: a fresh seeded sampler would start its random
sequence over).

On a resume (the study exists in its storage): the folder's COMPLETE, FAIL and PRUNED trials
count toward n_trials and keep their folders; RUNNING ones (a kill left them so) run again with
their own parameters into their own folders, where the run-level resume finishes them, and are
told their result; then only the trials still missing are asked, numbered on.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import math
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf
from optuna.trial import Trial, TrialState

from hydra_plugins.composer_optuna_sweeper._search_space import SearchSpace, params_overrides, search_space
from hydra_plugins.composer_optuna_sweeper._storage import StorageUnavailable, open_storage, study_name

log = logging.getLogger(__name__)
# System attributes: each trial's sweep folder and job number; the study's pickled sampler, one
# per sweep folder (key SAMPLER_ATTR + a hash of the folder).
SWEEP_DIR_ATTR, JOB_ATTR, SAMPLER_ATTR = "composer:sweep_dir", "composer:job", "composer:sampler:"
DIRECTIONS = ("minimize", "maximize")


def directions(direction: Any) -> list[str]:
    """`direction` (minimize, maximize, or a list of them for several objectives) as a list."""
    found = list(direction) if isinstance(direction, (list, tuple, ListConfig)) else [direction]
    names = [getattr(d, "name", d) for d in found]
    wrong = [d for d in names if str(d).lower() not in DIRECTIONS]
    if not names or wrong:
        raise ValueError(f"hydra.sweeper.direction: {direction!r} is not minimize, maximize or a list of them")
    return [str(d).lower() for d in names]


def make_sampler(config: Any, space: SearchSpace) -> optuna.samplers.BaseSampler | None:
    """The sampler of `hydra.sweeper.sampler` (hydra.utils.instantiate); a grid sampler without
    a search_space gets the search space's grid. None: Optuna's default."""
    if config is None or isinstance(config, optuna.samplers.BaseSampler):
        return config
    is_config = isinstance(config, (dict, DictConfig))
    target = str(config.get("_target_", "")) if is_config else getattr(getattr(config, "func", None), "__name__", "")
    extra = {}
    if target.endswith("GridSampler") and (not is_config or config.get("search_space") is None):
        extra["search_space"] = space.grid()
    sampler = instantiate(config, **extra) if is_config else config(**extra)
    if callable(sampler) and not isinstance(sampler, optuna.samplers.BaseSampler):  # _partial_: true
        sampler = sampler(**({} if is_config else extra))
    return sampler


def grid_size(sampler: Any) -> int | None:
    if not isinstance(sampler, optuna.samplers.GridSampler):
        return None
    return len(sampler._all_grids)  # noqa: SLF001 - the number of grid points, as the sampler counts them


def _suggest(trial: Trial, name: str, distribution: Any) -> Any:
    """The value of param `name` for `trial`: drawn from `distribution` (its stored value when
    the trial has one already: a trial run again gets its own)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, step=distribution.step, log=distribution.log)
    raise TypeError(f"{name}: no suggestion for {distribution!r}")


def _values(job: JobReturn, count: int) -> tuple[list[float] | None, str | None]:
    """A job's objective values ([float] per direction), or None and why the trial failed: the
    job raised, returned no number, NaN (a run that did not finish, a missing metric) or the
    wrong count of values."""
    try:
        value = job.return_value  # raises the job's exception when it failed
    except Exception as error:  # noqa: BLE001 - one trial's failure is the study's to record
        return None, f"the job failed: {type(error).__name__}: {error}"
    try:
        values = [float(value)] if count == 1 else [float(v) for v in value]
    except (TypeError, ValueError):
        hint = " (no `objective` set?)" if value is None else ""
        return None, f"the job returned {value!r}, not {'a number' if count == 1 else f'{count} numbers'}{hint}"
    if len(values) != count:
        return None, f"the job returned {len(values)} values for {count} directions"
    if any(math.isnan(v) for v in values):
        return None, "its objective is NaN (the run did not finish, or the metric is missing)"
    return values, None


class StudySweep:
    """One sweep of composer's Optuna sweeper (composer_optuna_sweeper.optuna_sweeper)."""

    def __init__(self, sweeper: Any, arguments: list[str]) -> None:
        self.sweeper, self.launcher, self.config = sweeper, sweeper.launcher, sweeper.config
        self.folder = Path(str(self.config.hydra.sweep.dir)).resolve()
        self.space = search_space([*params_overrides(sweeper.params), *arguments])
        self.directions = directions(sweeper.direction)
        self.sampler = make_sampler(sweeper.sampler, self.space)
        self.n_trials = int(sweeper.n_trials)
        size = grid_size(self.sampler)
        if size is not None and size < self.n_trials:
            log.info(f"n_trials {self.n_trials} -> {size}: the grid has {size} points")
            self.n_trials = size
        self.n_jobs = max(1, int(sweeper.n_jobs))
        self.custom = None
        if sweeper.custom_search_space:
            self.custom = instantiate({"_target_": str(sweeper.custom_search_space), "_partial_": True})
        if sweeper.storage is None:
            self.storage, self.name = optuna.storages.InMemoryStorage(), sweeper.study_name
        else:
            try:
                self.storage = open_storage(sweeper.storage)
            except StorageUnavailable as error:
                raise RuntimeError(f"hydra.sweeper.storage={sweeper.storage} cannot be opened: {error}") from None
            self.name = study_name(sweeper.study_name, self.folder)
        self.sampler_key = SAMPLER_ATTR + hashlib.sha256(str(self.folder).encode()).hexdigest()[:16]
        self.study: optuna.Study | None = None
        self.study_id = -1

    # ---- the study ----

    def open_study(self) -> list[optuna.trial.FrozenTrial]:
        """Create the study, or load it with the sampler it saved for this folder; this folder's
        trials so far, by job number."""
        saved = None
        try:
            study_id = self.storage.get_study_id_from_name(self.name) if self.name else None
        except KeyError:
            study_id = None
        if study_id is not None:
            saved = self.storage.get_study_system_attrs(study_id).get(self.sampler_key)
            if saved is not None:
                self.sampler = pickle.loads(base64.b64decode(saved["sampler"]))
            self.study = optuna.load_study(study_name=self.name, storage=self.storage, sampler=self.sampler)
            found = [d.name.lower() for d in self.study.directions]
            if found != self.directions:
                raise RuntimeError(f"the study {self.name!r} in {self.sweeper.storage} optimises {found}, and "
                                   f"hydra.sweeper.direction says {self.directions}")
        else:
            self.study = optuna.create_study(study_name=self.name, storage=self.storage, sampler=self.sampler,
                                             directions=self.directions)
        self.study_id = self.storage.get_study_id_from_name(self.study.study_name)
        log.info(f"Study name: {self.study.study_name}")
        log.info(f"Storage: {self.sweeper.storage}")
        log.info(f"Sampler: {type(self.study.sampler).__name__}")
        log.info(f"Directions: {self.directions}")
        mine = [t for t in self.study.get_trials(deepcopy=False)
                if t.system_attrs.get(SWEEP_DIR_ATTR) == str(self.folder) and JOB_ATTR in t.system_attrs]
        return sorted(mine, key=lambda t: t.system_attrs[JOB_ATTR])

    def _trial_id(self, number: int) -> int:
        return self.storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def configure(self, trial: Trial) -> list[str]:
        """Draw `trial`'s params (a trial run again gets its own back) and return its overrides."""
        for name, distribution in self.space.distributions.items():
            _suggest(trial, name, distribution)
        for key, line in self.space.fixed.items():
            trial.set_user_attr(key, line.split("=", 1)[1] if "=" in line else None)
        if self.custom is not None:
            self.custom(self.config, trial)
        overlap = sorted(trial.params.keys() & self.space.fixed.keys())
        if overlap:
            raise ValueError(f"the custom search space draws {', '.join(overlap)}, which the sweep also fixes")
        return self.space.overrides(trial.params)

    def save_sampler(self, last_job: int) -> None:
        """The sampler as it is now (after asking through job `last_job`), into the study."""
        if isinstance(self.storage, optuna.storages.InMemoryStorage):
            return  # nothing outlives the sweep: nothing to resume
        self.storage.set_study_system_attr(self.study_id, self.sampler_key, {
            "sweep_dir": str(self.folder), "job": last_job,
            "sampler": base64.b64encode(pickle.dumps(self.study.sampler)).decode("ascii")})

    # ---- the sweep ----

    def run(self) -> None:
        mine = self.open_study()
        running = [t for t in mine if t.state == TrialState.RUNNING]
        if mine:
            log.info(f"Resuming study {self.name}: {len(mine) - len(running)} trials finished, {len(running)} "
                     f"interrupted, {max(0, self.n_trials - len(mine))} to ask")
        self.fail_orphans()
        for batch in self.relaunch_batches(running):
            if self.launch([Trial(self.study, self._trial_id(t.number)) for t in batch], batch[0].system_attrs[JOB_ATTR]):
                return
        job = 1 + max((t.system_attrs[JOB_ATTR] for t in mine), default=-1)
        left = self.n_trials - len(mine)
        while left > 0:
            size = min(left, self.n_jobs)
            trials = []
            for number in range(job, job + size):
                trial = self.study.ask()
                trial_id = self._trial_id(trial.number)
                # The job number first: a trial is this folder's once it has both (a kill between them
                # leaves one without a folder, which fail_orphans ends).
                self.storage.set_trial_system_attr(trial_id, JOB_ATTR, number)
                self.storage.set_trial_system_attr(trial_id, SWEEP_DIR_ATTR, str(self.folder))
                trials.append(trial)
            if self.launch(trials, job, fresh=True):
                return
            job, left = job + size, left - size
        self.write_results()

    def fail_orphans(self) -> None:
        """Trials of this folder's own study that a kill left RUNNING between being asked and
        being given their folder never ran: they fail, so that they do not stay RUNNING."""
        if self.sweeper.study_name or isinstance(self.storage, optuna.storages.InMemoryStorage):
            return
        for trial in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if SWEEP_DIR_ATTR not in trial.system_attrs:
                log.warning(f"Trial {trial.number} was asked but never launched (the sweep was killed): failed")
                self.study.tell(trial.number, state=TrialState.FAIL)

    def relaunch_batches(self, running: list[optuna.trial.FrozenTrial]) -> list[list[optuna.trial.FrozenTrial]]:
        """RUNNING trials in launches of consecutive job numbers (a launch numbers its jobs on from
        its first), at most n_jobs each."""
        batches: list[list[optuna.trial.FrozenTrial]] = []
        for trial in running:
            last = batches[-1] if batches else None
            if last and len(last) < self.n_jobs and last[-1].system_attrs[JOB_ATTR] + 1 == trial.system_attrs[JOB_ATTR]:
                last.append(trial)
            else:
                batches.append([trial])
        return batches

    def launch(self, trials: list[Trial], first_job: int, fresh: bool = False) -> bool:
        """Run `trials` as jobs first_job, first_job + 1, ... and tell the study their results;
        True when Ctrl-C stopped the sweep (trials without a result are left RUNNING: the resume
        runs them again)."""
        overrides = [self.configure(trial) for trial in trials]
        if fresh:
            self.save_sampler(first_job + len(trials) - 1)
        returns = self.launcher.launch(overrides, initial_job_idx=first_job)
        from composer.callbacks import sweep_stopped  # Ctrl-C: composer marks it in its process and in sweep.json

        stopped = sweep_stopped(self.folder)
        failed = 0
        for trial, job in zip(trials, returns):
            values, why = _values(job, len(self.directions))
            if values is None and stopped:
                continue
            if values is None:
                failed += 1
                log.warning(f"Trial {trial.number} failed: {why}")
            self._tell(trial, values)
        if stopped:
            log.warning("The sweep was stopped: no more trials are asked")
            return True
        rate = failed / len(trials)
        if rate > float(self.sweeper.max_failure_rate):
            log.error(f"{failed} of {len(trials)} trials failed, more than max_failure_rate="
                      f"{self.sweeper.max_failure_rate}: no more trials are asked")
            self.write_results()
            return True
        return False

    def _tell(self, trial: Trial, values: Sequence[float] | None) -> None:
        try:
            if values is None:
                self.study.tell(trial, state=TrialState.FAIL)
            else:
                self.study.tell(trial, values=values)
        except RuntimeError as error:
            # The grid sampler stops the study when its grid is done, which Optuna allows only
            # inside study.optimize; the trial's state is stored before that.
            if "Study.stop" not in str(error):
                raise

    def write_results(self) -> None:
        """optimization_results.yaml in the sweep folder, as Hydra's Optuna sweeper writes it: the
        best params and value, or for several objectives the Pareto solutions."""
        if len(self.directions) == 1:
            try:
                best = self.study.best_trial
            except ValueError:
                log.error("No trial completed: optimization_results.yaml has no best trial")
                results: dict[str, Any] = {"name": "optuna", "best_params": None, "best_value": None}
            else:
                results = {"name": "optuna", "best_params": best.params, "best_value": best.value}
                log.info(f"Best parameters: {best.params}")
                log.info(f"Best value: {best.value}")
        else:
            best_trials = self.study.best_trials
            results = {"name": "optuna", "solutions": [{"params": t.params, "values": t.values} for t in best_trials]}
            log.info(f"Number of Pareto solutions: {len(best_trials)}")
        OmegaConf.save(OmegaConf.create(results), self.folder / "optimization_results.yaml")
