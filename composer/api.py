"""The Python API, mirroring the CLI verbs, for notebooks and scripts.

    from composer import api
    result = api.run(["task=fill-mask", "model=tiny-fill-mask", "input=inline", "input.records=[Hi [MASK]]"])
    result.outputs()          # the records of outputs.jsonl
    result.metrics()["throughput"]

`execute_config` (composer.run) is the one place a run happens; the CLI's Hydra job calls it too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from composer import runstore
from composer.configuration import compose_config
from composer.executors import executor_issues
from composer.plan import Graph, plan as plan_graph
from composer.run import (  # noqa: F401 - the API's names for them
    EXIT_ABORTED,
    EXIT_CONFIG,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RECORD_ERRORS,
    RunResult,
    _quiet_library_noise,
    execute_config,
)
from composer.schema import ConfigError
from composer.validation import validate

__all__ = ["EXIT_ABORTED", "EXIT_CONFIG", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_RECORD_ERRORS",
           "RunResult", "compose", "execute_config", "plan", "resume", "run"]


def compose(overrides: Sequence[str] = (), config_path: Path | None = None) -> dict[str, Any]:
    """The validated, resolved config for these overrides; raises ConfigError listing every issue."""
    return _checked(overrides, config_path)[0]


def _checked(overrides: Sequence[str], config_path: Path | None, deep: bool = False) -> tuple[dict[str, Any], Any, Graph]:
    """Compose, validate and plan: (config, the OmegaConf config, the graph). Every phase runs
    even when an earlier one found mistakes, so one ConfigError names all of them: a typo in
    a key, a model that is nowhere to be found and a task parameter the pipeline would ignore."""
    composed = compose_config(list(overrides), config_path)
    issues = list(composed.issues)
    if composed.plain is not None:
        issues += validate(composed.plain)
    # A key reported by composition (e.g. a required value) is not reported again by the schema.
    first_per_path = {issue.path: issue for issue in reversed(issues)}
    issues = [issue for issue in issues if first_per_path[issue.path] is issue]
    graph = None
    if composed.plain is not None:
        try:
            graph = plan_graph(composed.plain, deep=deep)
            issues += executor_issues(composed.plain, graph)
        except ConfigError as error:
            reported = {issue.path for issue in issues}  # one message per key: the schema's (pipeline.use_safetensors)
            issues += [issue for issue in error.issues if issue.path not in reported]
        except Exception:  # noqa: BLE001 - a config the schema faults (batch_size=0) may not plan; its issues say why
            if not issues:
                raise
    if issues:
        raise ConfigError(issues)
    return composed.plain, composed.cfg, graph


def plan(overrides: Sequence[str] = (), deep: bool = False, config_path: Path | None = None) -> tuple[dict[str, Any], Graph]:
    """Validate and build the stage graph without loading models. Plain plan checks task
    parameters and that each model can be found (no torch import); `deep` adds the checks
    that import transformers (quantization arguments) and pins the model as a run does."""
    if deep:
        _quiet_library_noise()
    config, _, graph = _checked(overrides, config_path, deep)
    return config, graph


def run(overrides: Sequence[str] = (), run_dir: str | Path | None = None, config_path: Path | None = None) -> RunResult:
    """Compose, check and execute a run; the folder defaults to runs/<name>/<timestamp>."""
    config, cfg, _ = _checked(overrides, config_path)
    if run_dir is None:
        stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
        run_dir = Path(config["runs_root"]) / str(config["name"]) / stamp
    run_dir = Path(run_dir)
    runstore.check_run_folder(run_dir)  # before anything is written into it
    run_dir.joinpath(".hydra").mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create(list(overrides)), run_dir / ".hydra" / "overrides.yaml")
    return execute_config(config, run_dir, list(overrides))


def resume(run_dir: str | Path) -> RunResult:
    """Continue the run in `run_dir` with the config it was started with."""
    run_dir = Path(run_dir)
    if not (run_dir / runstore.MANIFEST).exists():
        raise FileNotFoundError(f"{run_dir} holds no run (no manifest.json)")
    runstore.check_run_folder(run_dir)
    config = runstore.read_config(run_dir)
    issues = validate(config)
    if issues:
        raise ConfigError(issues)
    return execute_config(config, run_dir, runstore.read_manifest(run_dir).get("overrides", []))
