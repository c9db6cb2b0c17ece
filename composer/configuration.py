"""Compose `configs/` with Hydra and turn composition failures into located config issues.

Hydra stops at the first bad override; `compose_config` instead records the problem, sets that
override aside (or re-adds it so the schema can name it with a did-you-mean) and composes again,
so one `composer plan` shows every mistake. No torch or transformers import happens here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from composer.schema import DEFAULTS_NODE, ConfigIssue, defaults, did_you_mean, prune_input

CONFIG_NAME = "config"
# Mappings that are open by design: their keys are the task's or a backend's own parameters, so
# `pipeline.top_k=3` must work without Hydra's `+` prefix (which users would otherwise need).
OPEN_MAPPINGS = ("pipeline.", "call.", "model.model_kwargs.", "quantization.params.", "stages.")
# The default experiment (support-tickets, the demo job) applies only to a bare `composer run`:
# an override of one of these keys says the user is building a job of their own, which then
# starts from `experiment=base` instead of inheriting the demo's input and embedding stages.
JOB_DEFINING_KEYS = ("task", "model", "model.id", "input", "input.path", "input.records", "model_input",
                     "preprocess", "postprocess", "stages")
_NOT_IN_STRUCT = re.compile(r"Could not override '([^']+)'")
_MISSING_CONFIG = re.compile(r"Could not find '([^']+)/([^']+)'")


def config_dir() -> Path:
    """The shipped configs: inside the installed package, or `configs/` of a source checkout."""
    packaged = Path(str(resources.files("composer"))) / "configs"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "configs"


def data_path(relative: str) -> str:
    """Absolute path of a file shipped in `composer/data/` (the `${composer_data:...}` resolver)."""
    return str(Path(str(resources.files("composer"))) / "data" / relative)


OmegaConf.register_new_resolver("composer_data", data_path, replace=True)


def register_defaults() -> None:
    """Put the schema's defaults in Hydra's ConfigStore as the node config.yaml composes first.
    Hydra hands the ConfigStore to the processes of its launchers (joblib, submitit, ray)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=DEFAULTS_NODE, node=defaults(composed=True))


register_defaults()


def open_mapping_overrides(overrides: list[str]) -> list[str]:
    """Prefix overrides into open mappings with `++` (add or replace), leaving others untouched."""
    rewritten = []
    for override in overrides:
        if override.startswith(OPEN_MAPPINGS):
            override = "++" + override
        rewritten.append(override)
    return rewritten


def with_default_experiment(overrides: list[str]) -> list[str]:
    """`overrides`, plus `experiment=base` when they define a job of their own (a task, model,
    input or stages) without naming an experiment; otherwise unchanged (the demo job runs)."""
    keys = {_override_key(override) for override in overrides}
    if "experiment" in keys or not any(key in JOB_DEFINING_KEYS or key.startswith("stages.") for key in keys):
        return list(overrides)
    return ["experiment=base", *overrides]


@dataclass
class Composed:
    """A composed config: the OmegaConf object (for printing), its plain resolved form, issues."""

    cfg: DictConfig | None
    plain: dict[str, Any] | None
    issues: list[ConfigIssue]


def _unset_missing(node: Any) -> Any:
    """Replace OmegaConf's '???' markers by None: they are reported once, as 'required'."""
    if isinstance(node, dict):
        return {k: _unset_missing(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_unset_missing(v) for v in node]
    return None if node == "???" else node


def resolve(cfg: DictConfig) -> tuple[dict[str, Any] | None, list[ConfigIssue]]:
    """The config as plain Python with interpolations resolved, `hydra` left out, and the input
    keys its input type does not read dropped while they hold their default (schema.prune_input)."""
    from omegaconf.errors import OmegaConfBaseException

    issues = [
        ConfigIssue(key, f"required: set it on the command line, e.g. {key}=...")
        for key in sorted(OmegaConf.missing_keys(cfg))
        if not key.startswith("hydra.")
    ]
    body = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        plain = OmegaConf.to_container(body, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as error:
        key = getattr(error, "full_key", "") or ""
        return None, issues + [ConfigIssue(key, f"cannot resolve: {str(error).splitlines()[0]}")]
    return prune_input(_unset_missing(plain)), issues


def _group_options(group: str) -> list[str]:
    folder = config_dir() / group
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def _compose_once(overrides: list[str], config_path: Path) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(config_path), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=overrides)


def _override_key(override: str) -> str:
    return override.lstrip("+~").split("=", 1)[0]


def compose_config(overrides: list[str], config_path: Path | None = None) -> Composed:
    """Compose the root config with overrides, collecting every composition problem."""
    from hydra.errors import HydraException, MissingConfigException, OverrideParseException

    config_path = config_path or config_dir()
    pending = open_mapping_overrides(with_default_experiment(list(overrides)))
    issues: list[ConfigIssue] = []
    for _ in range(len(pending) + 1):
        try:
            cfg = _compose_once(pending, config_path)
            break
        except MissingConfigException as error:
            match = _MISSING_CONFIG.search(str(error))
            group, option = match.groups() if match else ("", "")
            culprit = next((o for o in pending if _override_key(o) == group), None)
            options = _group_options(group)
            issues.append(
                ConfigIssue(
                    group,
                    f"no config {option!r} in configs/{group}/ (options: {', '.join(options)})"
                    + did_you_mean(option, options),
                )
            )
            if culprit is None:
                return Composed(None, None, issues)
            pending.remove(culprit)
        except OverrideParseException as error:
            bad = next((o for o in pending if o in str(error)), None)
            issues.append(ConfigIssue("", f"cannot parse override {bad or ''!r}: {error}".replace(" ''", "")))
            if bad is None:
                return Composed(None, None, issues)
            pending.remove(bad)
        except HydraException as error:
            match = _NOT_IN_STRUCT.search(str(error))
            culprit = next((o for o in pending if match and _override_key(o) == match.group(1)), None)
            if culprit is None:
                message = str(error).split("\n")[0]
                key_culprit = next((o for o in pending if o in str(error)), None)
                issues.append(ConfigIssue(_override_key(key_culprit) if key_culprit else "", message))
                if key_culprit is None:
                    return Composed(None, None, issues)
                pending.remove(key_culprit)
                continue
            # Let the schema report it: it knows the valid keys and suggests the closest one.
            pending[pending.index(culprit)] = "++" + culprit.lstrip("+")
    else:  # pragma: no cover - each round removes or rewrites one override
        return Composed(None, None, issues)
    plain, resolve_issues = resolve(cfg)
    return Composed(cfg, plain, issues + resolve_issues)
