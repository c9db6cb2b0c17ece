"""Hydra callbacks: a report at the end of every multirun (configs/config.yaml, hydra.callbacks).

The callback runs in the process that ran the sweep, whatever launcher ran the jobs, after the
last job; it reads the job folders (never the jobs' memory), so it works the same for the basic
launcher, joblib workers and submitit. It also leaves the jobs' exit codes for `composer run -m`
to return: jobs that ran in other processes cannot report them any other way.

It also keeps the sweep folder's record of itself, sweep.json (composer.sweep): written when the
multirun starts (or marked running again when a sweep is resumed into its folder), and closed
with each job's state read back from its folder when the multirun ends.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

log = logging.getLogger(__name__)
# Exit codes of the jobs of the last multirun in this process (read by composer.cli).
last_sweep_exit_codes: list[int] = []
# The multirun under way in this process: {"dir": its sweep folder, "stop": Ctrl-C was pressed}.
active_sweep: dict[str, Any] = {}
# The last multirun that ended in this process: {"dir", "interrupted": stopped by Ctrl-C} (composer.cli).
last_sweep: dict[str, Any] = {}
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _on_stop_signal(signum: int, frame: Any) -> None:
    """Ctrl-C (or SIGTERM) in the process that runs the sweep, outside a run: no new job starts
    (the sweep's record says `interrupted`, which jobs in other processes read before they
    start); runs under way get the signal themselves and stop after their batches. A second one
    stops at once."""
    if active_sweep.get("stop"):
        raise KeyboardInterrupt
    active_sweep["stop"] = True
    print("\ncomposer: stopping the sweep: running jobs finish their batches, no new job starts "
          "(press Ctrl-C again to stop at once)", file=sys.stderr)
    from composer.sweep import request_stop

    # Not here: the lock on sweep.json may be held by the code this handler interrupted.
    marker = threading.Thread(target=request_stop, args=(active_sweep["dir"],), daemon=True)
    active_sweep["marker"] = marker
    marker.start()


def sweep_stopped(sweep_dir: Path) -> bool:
    """Whether the multirun in `sweep_dir` was stopped: Ctrl-C in this process, or its record
    says so (a job that Ctrl-C interrupted, in whichever process it ran). Sweepers and launchers
    that run jobs elsewhere ask this to start no more."""
    from composer.sweep import stop_requested

    return bool(active_sweep.get("stop")) or stop_requested(sweep_dir)


class SweepReport(Callback):
    """Writes summary.csv, report.md, report.html and plots/ into the sweep folder."""

    def __init__(self, enabled: bool = True, baseline: str | None = None, retry_failed: bool = False) -> None:
        # retry_failed is read by each job from its Hydra config (composer.hydrajob.hydra_job), so
        # that it reaches jobs in every launcher's processes; `composer resume --retry-failed`.
        self.enabled, self.baseline, self.retry_failed = enabled, baseline, retry_failed

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        from omegaconf import OmegaConf

        from composer.sweep import begin_sweep, new_state, sweeper_settings

        last_sweep_exit_codes.clear()
        sweep_dir = Path(str(config.hydra.sweep.dir))
        overrides = OmegaConf.to_container(config.hydra.overrides, resolve=False)
        # --config-dir is Hydra's config source from the command line (already an absolute path).
        extra_dir = next((str(source.path) for source in config.hydra.runtime.config_sources
                          if source.provider == "command-line"), None)
        started = new_state(list(overrides.get("task") or []), list(overrides.get("hydra") or []),
                            str(OmegaConf.select(config, "hydra.launcher._target_", default="")),
                            str(OmegaConf.select(config, "hydra.sweeper._target_", default="")),
                            sweeper_settings(OmegaConf.select(config, "hydra.sweeper")),
                            config_source(extra_dir, OmegaConf.select(config, "hydra.job.config_name")))
        active_sweep.clear()
        active_sweep.update(dir=sweep_dir, pid=os.getpid(), stop=False)
        last_sweep.clear()
        begin_sweep(sweep_dir, started)
        if threading.current_thread() is threading.main_thread():
            active_sweep["handlers"] = {signum: signal.signal(signum, _on_stop_signal) for signum in _STOP_SIGNALS}

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        from composer.report import find_runs, write_report
        from composer.runstore import RunStatus
        from composer.sweep import SWEEP_FINISHED, SWEEP_INTERRUPTED, end_sweep, job_outcome, stop_requested

        sweep_dir = Path(str(config.hydra.sweep.dir))
        for signum, handler in active_sweep.get("handlers", {}).items():
            signal.signal(signum, handler)
        if active_sweep.get("marker") is not None:
            active_sweep["marker"].join()
        stopped = bool(active_sweep.get("stop")) or stop_requested(sweep_dir)
        active_sweep.clear()
        last_sweep.update(dir=sweep_dir, interrupted=stopped)
        if sweep_dir.is_dir():
            end_sweep(sweep_dir, SWEEP_INTERRUPTED if stopped else SWEEP_FINISHED)
        jobs = find_runs(sweep_dir) if sweep_dir.is_dir() else []
        last_sweep_exit_codes[:] = [job_outcome(job)["exit_code"] for job in jobs]
        if not self.enabled or not jobs:
            return
        try:
            report = write_report([sweep_dir], out=sweep_dir, baseline=self.baseline)
        except Exception as error:  # noqa: BLE001 - a report problem must not hide the sweep's results
            print(f"composer: could not write the sweep report: {type(error).__name__}: {error}", file=sys.stderr)
            return
        failed = sum(run.status != RunStatus.COMPLETE for run in report.runs)
        print(f"sweep report: {len(report.runs)} runs ({failed} not complete): {sweep_dir / 'report.html'}",
              file=sys.stderr)


# What Hydra itself may instantiate from a run's config (callbacks, launcher, sweeper and its
# sampler): composer's own classes and Hydra's plugins; anything else needs allow_any_target.
HYDRA_TARGET_PREFIXES = ("composer.", "hydra._internal.core_plugins.", "hydra_plugins.", "optuna.samplers.", "optuna.pruners.")
# Classes Hydra's logging config (logging.config.dictConfig) may build.
LOGGING_CLASS_PREFIXES = ("logging.", "colorlog.")


def _hydra_config(overrides: list[str], extra_dir: Path | None) -> Any:
    """The config with Hydra's own part, composed from `overrides` without their sweep ranges
    (Hydra's settings do not depend on them); None when it does not compose."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from composer import configuration
    from composer.configuration import CONFIG_NAME, config_dir, open_mapping_overrides

    # The experiment a bare run gets, as the config check composes it (where configuration has it).
    with_default = getattr(configuration, "with_default_experiment", list)
    try:
        chosen = [o.input_line for o in OverridesParser.create().parse_overrides(with_default(list(overrides)))
                  if not o.is_sweep_override()]
        search = [f"hydra.searchpath=[file://{extra_dir.resolve()}]"] if extra_dir else []
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            return compose(CONFIG_NAME, overrides=[*open_mapping_overrides(chosen), *search], return_hydra_config=True)
    except Exception:  # noqa: BLE001 - composition mistakes are the config check's to report
        return None


def sweep_settings(overrides: list[str], extra_dir: Path | None = None) -> dict[str, Any] | None:
    """Where a multirun of `overrides` writes (hydra.sweep.dir), which sweeper runs it, its
    settings (sweep.sweeper_settings: the params set in config files, ...), that sweeper's
    storage and sampler seed (Optuna's), and which launcher runs its jobs; None when that cannot
    be worked out here (the config check or Hydra reports why)."""
    from omegaconf import OmegaConf

    from composer.sweep import sweeper_settings

    cfg = _hydra_config(overrides, extra_dir)
    try:
        return {"dir": str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                "sweeper": str(OmegaConf.select(cfg, "hydra.sweeper._target_", default="")),
                "settings": sweeper_settings(OmegaConf.select(cfg, "hydra.sweeper")),
                "storage": OmegaConf.select(cfg, "hydra.sweeper.storage", default=None),
                "seed": OmegaConf.select(cfg, "hydra.sweeper.sampler.seed", default=None),
                "launcher": str(OmegaConf.select(cfg, "hydra.launcher._target_", default=""))}
    except Exception:  # noqa: BLE001 - an interpolation that resolves only at run time
        return None


def hydra_issues(overrides: list[str], extra_dir: Path | None = None, multirun: bool = False) -> list[Any]:
    """ConfigIssues in what Hydra acts on itself before a job starts, where its own errors are
    a traceback and exit 1: a `_target_` under hydra (callbacks, launcher, sweeper) outside
    HYDRA_TARGET_PREFIXES, a logging class outside LOGGING_CLASS_PREFIXES, and a run folder
    composer may not write into (a file such as /dev/null, another program's folder). Empty
    when the config does not compose: the config check reports that."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from composer import runstore
    from composer.schema import ConfigIssue

    cfg = _hydra_config(overrides, extra_dir)
    if cfg is None:
        return []
    issues = []
    allow_any = bool(cfg.get("allow_any_target"))

    def written(node: DictConfig, key: str) -> str:
        try:
            return str(node[key])
        except Exception:  # noqa: BLE001 - an interpolation of a value Hydra sets at run time: what is written
            return str(OmegaConf.to_container(node, resolve=False)[key])

    def walk(node: Any, path: str) -> None:
        if isinstance(node, ListConfig):
            for index in range(len(node)):
                walk(node._get_node(index), f"{path}[{index}]")
        if not isinstance(node, DictConfig):
            return
        logging_config = path.startswith(("hydra.job_logging", "hydra.hydra_logging"))
        for key in node.keys():
            where, child = f"{path}.{key}", node._get_node(key)
            if isinstance(child, (DictConfig, ListConfig)):
                walk(child, where)
            elif key == "_target_" and not allow_any and not written(node, key).startswith(HYDRA_TARGET_PREFIXES):
                issues.append(ConfigIssue(where, f"{written(node, key)!r} is not a class Hydra may instantiate for composer "
                                                 f"(allowed: {', '.join(HYDRA_TARGET_PREFIXES)}); set allow_any_target=true to allow it"))
            elif key in ("()", "class") and logging_config and not written(node, key).startswith(LOGGING_CLASS_PREFIXES):
                issues.append(ConfigIssue(where, f"{written(node, key)!r} is not a logging class "
                                                 f"(allowed: {', '.join(LOGGING_CLASS_PREFIXES)})"))

    walk(cfg.hydra, "hydra")
    # The Optuna sweeper's custom_search_space names a function it calls: the same gate.
    custom = OmegaConf.select(cfg, "hydra.sweeper.custom_search_space", default=None)
    if custom and not allow_any and not str(custom).startswith(HYDRA_TARGET_PREFIXES):
        issues.append(ConfigIssue("hydra.sweeper.custom_search_space",
                                  f"{str(custom)!r} is not a function Hydra may call for composer (allowed: "
                                  f"{', '.join(HYDRA_TARGET_PREFIXES)}); set allow_any_target=true to allow it"))
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    try:
        folder = Path(str(OmegaConf.select(cfg, key)))
        if multirun:
            if folder.exists() and not folder.is_dir():
                raise runstore.FolderRefused(f"{folder} is not a folder (a file or device is there); set {key} to a folder")
        else:
            runstore.check_run_folder(folder)
    except runstore.FolderRefused as error:
        issues.append(ConfigIssue(key, str(error)))
    except Exception:  # noqa: BLE001 - a folder that cannot be worked out here is Hydra's to report
        pass
    return issues


def config_source(config_dir: str | None, config_name: str | None) -> dict[str, str | None]:
    """Where a sweep's configs come from: --config-dir (absolute, so that it means the same from
    any folder; None without one) and --config-name (None: composer's own `config`)."""
    from composer.configuration import CONFIG_NAME

    return {"config_dir": os.path.abspath(config_dir) if config_dir else None,
            "config_name": config_name if config_name and config_name != CONFIG_NAME else None}
