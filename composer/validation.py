"""Every check of a composed config beyond the schema's keys and types: devices, the load gates,
quantization, inputs, names, tasks, batching and metrics, all reported together (schema.py says why).
Nothing here imports torch or transformers: `composer plan` runs this."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from composer.schema import ComposerConfig, ConfigIssue, check_against, did_you_mean, join

DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
_DEVICE_PATTERN = re.compile(r"^(cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)$")
_FILE_INPUTS = ("jsonl", "csv", "parquet")


def check_model(model: dict, path: str, task: Any = None) -> list[ConfigIssue]:
    """A model mapping's own issues; `task` (the stage's, when known) for the task-bound keys."""
    issues = []
    length = model.get("max_seq_length")
    if isinstance(length, int) and length < 1:
        issues.append(ConfigIssue(join(path, "max_seq_length"), f"must be a positive number of tokens or null (the model's own), got {length}"))
    if length is not None and isinstance(task, str) and task != "feature-extraction":
        issues.append(ConfigIssue(join(path, "max_seq_length"), f"truncates feature-extraction inputs; task {task!r} takes its "
                                  "truncation from the pipeline's own parameters: remove it"))
    device, device_map = model.get("device"), model.get("device_map")
    if device is not None and device_map is not None:
        issues.append(
            ConfigIssue(
                join(path, "device"),
                f"set either {path}.device or {path}.device_map, not both "
                "(device_map places the model itself; set device=null)",
            )
        )
    if isinstance(device, str) and not _DEVICE_PATTERN.match(device):
        issues.append(ConfigIssue(join(path, "device"), f"unknown device {device!r}; use cpu, cuda, cuda:N, mps"))
    if isinstance(device, int) and device < -1:
        issues.append(ConfigIssue(join(path, "device"), f"device index must be >= -1, got {device}"))
    if isinstance(device_map, str) and device_map not in DEVICE_MAP_STRATEGIES:
        issues.append(
            ConfigIssue(
                join(path, "device_map"),
                f"unknown device_map {device_map!r}; use one of {', '.join(DEVICE_MAP_STRATEGIES)} "
                "or a mapping of module names to devices" + did_you_mean(device_map, DEVICE_MAP_STRATEGIES),
            )
        )
    model_kwargs = model.get("model_kwargs")
    if isinstance(model_kwargs, dict):
        issues += check_load_gates(model_kwargs, join(path, "model_kwargs"), model_path=path)
    return issues


_PICKLE = "it decides whether pickle weights, which can run code as they load, may load"
_KERNELS = "it downloads and runs compiled kernels from the Hugging Face Hub"
# Keys that decide which code or weights load: (their typed key, which the gates check and the
# manifest records, or None where composer has none; why). Set in model.model_kwargs, pipeline
# or call (or a stage's copies of them) they would pass beside the gates: before this check,
# model_kwargs.use_safetensors=false loaded pickle weights while the manifest said
# allow_pickle: false. So they are refused there, and the model stage's loader sets the gated
# ones itself (use_safetensors unless allow_pickle).
LOAD_GATES: dict[str, tuple[str | None, str]] = {
    "use_safetensors": ("{model}.allow_pickle", _PICKLE),
    "weights_only": ("{model}.allow_pickle", _PICKLE),
    "trust_remote_code": ("{model}.trust_remote_code", "it decides whether code from the model's repository runs"),
    "code_revision": ("{model}.revision", "it picks the remote code that runs"),
    "revision": ("{model}.revision", "it picks the weights and code that load"),
    "quantization_config": ("quantization=<none|bnb-8bit|bnb-4bit|torchao-int8>", "it changes the weights that load"),
    "device_map": ("{model}.device_map", "it decides where the weights load (and may offload them to disk)"),
    "dtype": ("{model}.dtype", "it changes the weights that load"),
    "torch_dtype": ("{model}.dtype", "it changes the weights that load"),
    "gguf_file": (None, "it loads GGUF weights in place of the model's safetensors"),
    "state_dict": (None, "it replaces the model's weights"),
    "from_tf": (None, "it loads a TensorFlow checkpoint in place of safetensors"),
    "from_flax": (None, "it loads a Flax checkpoint in place of safetensors"),
    "use_kernels": (None, _KERNELS),
    "kernel_config": (None, _KERNELS),
    "allow_all_kernels": (None, _KERNELS),
    "kernels_mode": (None, _KERNELS),
    "custom_generate": (None, "it runs generation code from the Hub or a folder"),
    "assistant_model": (None, "it loads a second model past the pickle and remote-code gates"),
    "assistant_tokenizer": (None, "it loads a tokenizer past the remote-code gate"),
}
# In pipeline. and call. these are refused by the task-parameter check (taskparams.MISPLACED),
# with the key to set instead; reported once.
_TASK_PARAM_CHECKED = frozenset({"quantization_config", "dtype", "torch_dtype", "device_map", "trust_remote_code", "revision"})


def check_load_gates(params: dict, path: str, model_path: str = "model") -> list[ConfigIssue]:
    """Issues for keys in `params` (model_kwargs, pipeline or call, at `path`) that decide which
    code or weights load, and so belong behind a gate (LOAD_GATES)."""
    where = path.rsplit(".", 1)[-1]
    issues = []
    for key, value in params.items():
        if where != "model_kwargs" and key in _TASK_PARAM_CHECKED:
            continue
        if key in LOAD_GATES:
            home, why = LOAD_GATES[key]
            instead = f"; set {home.format(model=model_path)} instead" if home else " (no composer setting allows it)"
            issues.append(ConfigIssue(join(path, key), f"not allowed in {where}: {why}{instead}"))
        elif key == "attn_implementation" and isinstance(value, str) and "/" in value:
            issues.append(ConfigIssue(join(path, key), f"not allowed in {where}: {value!r} names a kernel repository on the Hub, "
                                      "which would be downloaded and run; use eager, sdpa or flash_attention_2"))
    return issues


def check_quantization(quant: dict, path: str) -> list[ConfigIssue]:
    backend, params = quant.get("backend", "none"), quant.get("params") or {}
    if backend == "none" and params:
        return [ConfigIssue(join(path, "params"), "quantization backend is 'none' but params are set")]
    if backend == "bitsandbytes" and not (params.get("load_in_8bit") or params.get("load_in_4bit")):
        return [ConfigIssue(join(path, "params"), "bitsandbytes needs load_in_8bit: true or load_in_4bit: true")]
    if backend == "torchao" and "quant_type" not in params:
        return [ConfigIssue(join(path, "params.quant_type"), "torchao needs quant_type (e.g. Int8DynamicActivationInt8WeightConfig)")]
    return []


def _check_input(inp: dict, path: str) -> list[ConfigIssue]:
    kind = inp.get("type", "inline")
    issues = []
    if kind == "inline" and not inp.get("records"):
        issues.append(ConfigIssue(join(path, "records"), "input=inline needs a non-empty list of records"))
    if kind in _FILE_INPUTS:
        data_path = inp.get("path")
        if not data_path:
            issues.append(ConfigIssue(join(path, "path"), f"input={kind} needs input.path"))
        elif not Path(data_path).expanduser().is_file():
            issues.append(ConfigIssue(join(path, "path"), f"file not found: {data_path}"))
    if kind == "folder":
        folder = inp.get("path")
        if not folder:
            issues.append(ConfigIssue(join(path, "path"), "input=folder needs input.path (a folder of files)"))
        elif not Path(folder).expanduser().is_dir():
            issues.append(ConfigIssue(join(path, "path"), f"folder not found: {folder}"))
    if kind == "dataset" and not inp.get("path"):
        issues.append(
            ConfigIssue(join(path, "path"), "input=dataset needs input.path (a loader like json/csv, a local folder or a hub name)")
        )
    delimiter = inp.get("delimiter", ",")
    if kind == "csv" and delimiter != "tab" and not (isinstance(delimiter, str) and len(delimiter) == 1):
        issues.append(ConfigIssue(join(path, "delimiter"), f"a csv delimiter is one character, or tab; got {delimiter!r}"))
    limit = inp.get("limit")
    if isinstance(limit, int) and not isinstance(limit, bool) and limit < 1:
        issues.append(ConfigIssue(join(path, "limit"), f"limit must be >= 1, got {limit}"))
    return issues


_SAFE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _check_name(name: Any) -> list[ConfigIssue]:
    """The run name becomes a folder under runs_root: it may not climb out of it."""
    if isinstance(name, str) and not _SAFE_NAME.match(name):
        return [ConfigIssue("name", f"{name!r} must be a plain folder name (letters, digits, '_', '.', '-'), "
                            "since runs go to runs_root/name/...")]
    return []


def check_task(task: Any, path: str = "task") -> list[ConfigIssue]:
    from composer.tasks import task_table

    if task is None:
        return [ConfigIssue(path, f"task is required, e.g. {path}=text-classification")]
    if not isinstance(task, str):
        return [ConfigIssue(path, f"expected str, got {task!r}")]
    table = task_table()
    if table.canonical(task) is None:
        return [ConfigIssue(path, f"unknown task {task!r} for transformers' pipeline()" + did_you_mean(task, table.names()))]
    return []


def validate(config: dict) -> list[ConfigIssue]:
    """Every issue with a composed (resolved, plain) config; the stage graph is checked in graph.py."""
    config = {k: v for k, v in config.items() if k != "hydra"}
    issues = check_against(config, ComposerConfig, "")
    if isinstance(config.get("model"), dict):
        issues += check_model(config["model"], "model", config.get("task"))
    if isinstance(config.get("quantization"), dict):
        issues += check_quantization(config["quantization"], "quantization")
    if isinstance(config.get("input"), dict):
        issues += _check_input(config["input"], "input")
    issues += _check_name(config.get("name"))
    if isinstance(config.get("task"), str) or config.get("task") is None:
        issues += check_task(config.get("task"))
    for key in ("batch_size", "threads", "workers", "max_errors"):
        value = config.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value < 1:
            issues.append(ConfigIssue(key, f"{key} must be >= 1, got {value}"))
    issues += _check_batching(config)
    issues += _check_serve(config.get("serve"))
    issues += _check_executor(config.get("executor"))
    issues += _check_metrics(config.get("metrics"), config.get("objective"))
    for key in ("pipeline", "call"):
        if "batch_size" in (config.get(key) or {}):
            issues.append(ConfigIssue(f"{key}.batch_size", "set the top-level batch_size instead"))
        if isinstance(config.get(key), dict):
            issues += check_load_gates(config[key], key)
    issues += _check_stage_load_gates(config)
    return issues


def _check_stage_load_gates(config: dict) -> list[ConfigIssue]:
    """The load gates over the pipeline and call mappings of every configured stage (a stage's
    model mapping is checked with the graph, check_model)."""
    specs: list[tuple[str, Any]] = []
    for key in ("preprocess", "postprocess"):
        if isinstance(config.get(key), list):
            specs += [(f"{key}[{index}]", spec) for index, spec in enumerate(config[key])]
    if isinstance(config.get("stages"), dict):
        specs += [(f"stages.{name}", spec) for name, spec in config["stages"].items()]
    issues = []
    for path, spec in specs:
        if not isinstance(spec, dict):
            continue
        for key in ("pipeline", "call"):
            if isinstance(spec.get(key), dict):
                issues += check_load_gates(spec[key], f"{path}.{key}", model_path=f"{path}.model")
    return issues


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_batching(config: dict) -> list[ConfigIssue]:
    """sort_window, max_batch_tokens and prefetch, against each other and batch_size."""
    issues = []
    window, batch, budget, prefetch = (config.get(k) for k in ("sort_window", "batch_size", "max_batch_tokens", "prefetch"))
    if _is_int(window) and window < 0:
        issues.append(ConfigIssue("sort_window", f"sort_window must be 0 (off), auto or >= 1, got {window}"))
    elif _is_int(window) and _is_int(batch) and 0 < window < batch:
        issues.append(ConfigIssue("sort_window", f"sort_window ({window}) must be 0 (off) or at least batch_size ({batch}): "
                                  "a window smaller than a batch would cut every batch short"))
    if _is_int(budget) and budget < 1:
        issues.append(ConfigIssue("max_batch_tokens", f"max_batch_tokens must be >= 1 or null, got {budget}"))
    if _is_int(prefetch) and prefetch < 0:
        issues.append(ConfigIssue("prefetch", f"prefetch must be >= 0 (0: no background reading), got {prefetch}"))
    return issues


def _check_executor(executor: Any) -> list[ConfigIssue]:
    """The Ray executor's sizes: at least one actor, a CPU share above 0 (an actor asking for
    none could crowd a node), no negative GPUs or blocks; the Ray keys only with executor=ray."""
    if not isinstance(executor, dict):
        return []  # check_against reported it
    issues = _sizes(executor, "executor", {"actors": False, "num_cpus_per_actor": False, "num_gpus_per_actor": True, "batch_size": False})
    if executor.get("type") == "local" and executor.get("address") is not None:
        issues.append(ConfigIssue("executor.address", "executor.address is read by executor=ray only: add executor=ray"))
    return issues


def _check_serve(serve: Any) -> list[ConfigIssue]:
    """The server's bounds: a wait of 0 ms is allowed (no waiting), the rest must be positive
    (a zero queue, timeout or body limit would refuse every request)."""
    if not isinstance(serve, dict):
        return []  # check_against reported it
    return _sizes(serve, "serve", {"max_wait_ms": True, "max_queue": False, "timeout_s": False, "max_body_bytes": False})


def _sizes(section: dict, name: str, zero_ok: dict[str, bool]) -> list[ConfigIssue]:
    """`name.<key>` must be > 0 (>= 0 where zero_ok[key]) for each numeric key of `section` named
    in zero_ok; a value of another type is check_against's to report."""
    issues = []
    for key, zero in zero_ok.items():
        value = section.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and (value < 0 or (value == 0 and not zero)):
            issues.append(ConfigIssue(f"{name}.{key}", f"{name}.{key} must be {'>= 0' if zero else '> 0'}, got {value}"))
    return issues


_OBJECTIVE_ROOTS = ("throughput", "models", "quality")


def _check_metrics(metrics: Any, objective: Any) -> list[ConfigIssue]:
    """Declared metric names exist; the objective is a dotted path into metrics.json."""
    from composer.metrics import METRIC_NAMES

    issues = []
    if isinstance(metrics, str) and metrics != "auto":
        metrics = [metrics]
    if isinstance(metrics, list):
        for index, name in enumerate(metrics):
            if name not in METRIC_NAMES:
                issues.append(ConfigIssue(f"metrics[{index}]", f"unknown metric {name!r}; use auto or any of "
                                          f"{', '.join(METRIC_NAMES)}" + did_you_mean(str(name), METRIC_NAMES)))
    if isinstance(objective, str) and objective.split(".")[0] not in _OBJECTIVE_ROOTS:
        issues.append(ConfigIssue("objective", f"expected a dotted path into metrics.json starting with "
                                  f"{' or '.join(_OBJECTIVE_ROOTS)}, e.g. quality.model.macro_f1; got {objective!r}"))
    return issues
