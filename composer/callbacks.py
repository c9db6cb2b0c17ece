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
        from composer.runstore import RunStatus
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
        failed = sum(run.status != RunStatus.COMPLETE for run in report.runs)
        print(f"sweep report: {len(report.runs)} runs ({failed} not complete): {sweep_dir / 'report.html'}",
              file=sys.stderr)


# What Hydra itself may instantiate from a run's config (callbacks, launcher, sweeper and its
# sampler): composer's own classes and Hydra's plugins; anything else needs allow_any_target.
HYDRA_TARGET_PREFIXES = ("composer.", "hydra._internal.core_plugins.", "hydra_plugins.", "optuna.samplers.", "optuna.pruners.")
# Classes Hydra's logging config (logging.config.dictConfig) may build.
LOGGING_CLASS_PREFIXES = ("logging.", "colorlog.")


def hydra_issues(overrides: list[str], extra_dir: Path | None = None, multirun: bool = False) -> list[Any]:
    """ConfigIssues in what Hydra acts on itself before a job starts, where its own errors are
    a traceback and exit 1: a `_target_` under hydra (callbacks, launcher, sweeper) outside
    HYDRA_TARGET_PREFIXES, a logging class outside LOGGING_CLASS_PREFIXES, and a run folder
    composer may not write into (a file such as /dev/null, another program's folder). Empty
    when the config does not compose: the config check reports that."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import DictConfig, ListConfig, OmegaConf

    from composer import configuration, runstore
    from composer.configuration import CONFIG_NAME, config_dir, open_mapping_overrides
    from composer.schema import ConfigIssue

    # The experiment a bare run gets, as the config check composes it (where configuration has it).
    with_default = getattr(configuration, "with_default_experiment", list)
    try:
        # A sweep's ranges do not compose; Hydra's own settings do not depend on them.
        chosen = [o.input_line for o in OverridesParser.create().parse_overrides(with_default(list(overrides)))
                  if not o.is_sweep_override()]
        search = [f"hydra.searchpath=[file://{extra_dir.resolve()}]"] if extra_dir else []
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose(CONFIG_NAME, overrides=[*open_mapping_overrides(chosen), *search], return_hydra_config=True)
    except Exception:  # noqa: BLE001 - composition mistakes are the config check's to report
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
