"""Plan the stage graph: config -> checked Graph.

Planning builds every stage object from config (cheap: constructors load nothing), binds each
stage's parameters to its constructor's signature, and checks the edges and the record fields
before anything heavy happens. Executors (composer.executors) run the planned graph.

`composer plan` imports this module: nothing here imports torch, transformers or numpy.
"""

from __future__ import annotations

import graphlib
import hashlib
import inspect
import itertools
from dataclasses import dataclass
from typing import Any, cast

from composer.schema import ConfigError, ConfigIssue, ModelConfig, QuantizationConfig, check_against, did_you_mean
from composer.stages import STAGE_TYPES, load_class
from composer.stages.base import BatchedStage, ModelStage, Source, Stage

SOURCE, MODEL, SINK = "source", "model", "outputs"
TARGET_ALLOWED_PREFIXES = ("composer.",)


@dataclass
class Node:
    stage: Stage
    inputs: list[str]
    path: str  # where the stage is configured, for messages


@dataclass
class Graph:
    """Stages in execution order; the first node is the source and the last the outputs sink."""

    nodes: list[Node]
    # Records read ahead from the source as one unit: model stages order such a window by length
    # before batching, and it is what a crash can lose. batch_size when nothing sorts (both grown
    # for workers at run time: executors.local.window_for).
    window: int = 8
    prefetch: int = 1  # windows a background thread reads and preprocesses ahead (0: none)
    batch: int = 8  # records per batch (batch_size=auto: the largest size its probe tries)
    auto_window: bool = True  # the window size is composer's choice (sort_window=auto), not the user's

    @property
    def source(self) -> Source:
        return self.nodes[0].stage  # type: ignore[return-value]

    def stages(self) -> list[Stage]:
        return [node.stage for node in self.nodes]

    def model_stages(self) -> list[ModelStage]:
        return [cast(ModelStage, s) for s in self.stages() if s.kind == "model"]

    def upstream_fingerprint(self, name: str) -> str:
        """A hash of the fingerprints of every stage `name` depends on, directly or not, but
        the source: it says where records come from (a path), while a result-cache key holds
        each record's model input itself, so the same bytes read from another path hit."""
        inputs = {n.stage.name: n.inputs for n in self.nodes}
        ancestors: set[str] = set()
        pending = list(inputs[name])
        while pending:
            current = pending.pop()
            if current not in ancestors:
                ancestors.add(current)
                pending.extend(inputs[current])
        fingerprints = [n.stage.fingerprint() for n in self.nodes if n.stage.name in ancestors and n.stage.kind != "source"]
        return hashlib.sha256("".join(fingerprints).encode("ascii")).hexdigest()[:16]

    def attach_cache(self, settings: dict[str, Any]) -> Any:
        """Open the result cache when `settings` (the config's `cache`) enable it and hand it to
        every model stage; None when it is off. A run does this in its own process, the Ray
        executor in each of its actors (each opens the same SQLite file)."""
        if not settings.get("enabled"):
            return None
        from pathlib import Path

        from composer.cache import ResultCache

        cache = ResultCache(Path(settings["path"]).expanduser() if settings.get("path") else None)
        for stage in self.model_stages():
            stage.use_cache(cache, self.upstream_fingerprint(stage.name))
        return cache

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": n.stage.name,
                "kind": n.stage.kind,
                "type": type(n.stage).__name__,
                "inputs": n.inputs,
                "reads": list(n.stage.reads),
                "writes": list(n.stage.writes),
                "config": n.path,
            }
            for n in self.nodes
        ]


def constructor_params(cls: type) -> tuple[set[str], set[str]]:
    """(accepted, required) keyword names of a stage class, following **kwargs up the MRO."""
    accepted: set[str] = set()
    required: set[str] = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        signature = inspect.signature(vars(klass)["__init__"])
        forwards = False
        for parameter in signature.parameters.values():
            if parameter.name in ("self", "name", "params"):
                continue
            if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                forwards = True
            elif parameter.kind is not inspect.Parameter.VAR_POSITIONAL:
                accepted.add(parameter.name)
                if parameter.default is inspect.Parameter.empty:
                    required.add(parameter.name)
        if not forwards:
            break
    return accepted, required


def _stage_class(spec: dict, path: str, allow_any_target: bool) -> tuple[type | None, list[ConfigIssue]]:
    if "_target_" in spec:
        target = str(spec["_target_"])
        if not allow_any_target and not target.startswith(TARGET_ALLOWED_PREFIXES):
            return None, [ConfigIssue(f"{path}._target_", f"{target!r} is outside composer's stages; set allow_any_target=true to allow it")]
        try:
            cls = load_class(target)
        except (ImportError, AttributeError, ValueError) as error:
            return None, [ConfigIssue(f"{path}._target_", f"cannot import {target!r}: {error}")]
        if not (isinstance(cls, type) and issubclass(cls, Stage)):
            return None, [ConfigIssue(f"{path}._target_", f"{target!r} is not a composer Stage subclass")]
        return cls, []
    kind = spec.get("type")
    if kind not in STAGE_TYPES:
        return None, [ConfigIssue(f"{path}.type", f"unknown stage type {kind!r}" + did_you_mean(str(kind), STAGE_TYPES))]
    return load_class(STAGE_TYPES[kind]), []


def build_stage(cls: type, name: str, params: dict, path: str) -> tuple[Stage | None, list[ConfigIssue]]:
    """Bind params to the stage's constructor, reporting every unknown or missing one."""
    accepted, required = constructor_params(cls)
    issues = [
        ConfigIssue(f"{path}.{key}", f"unknown parameter of {cls.__name__}" + did_you_mean(key, accepted))
        for key in params
        if key not in accepted
    ]
    issues += [ConfigIssue(f"{path}.{key}", f"{cls.__name__} needs {key}") for key in sorted(required - set(params))]
    if issues:
        return None, issues
    try:
        return cls(name, **params), []
    except (TypeError, ValueError) as error:
        return None, [ConfigIssue(path, str(error))]


def _spec_stage(spec: Any, path: str, default_name: str, allow_any_target: bool) -> tuple[Node | None, list[ConfigIssue]]:
    if not isinstance(spec, dict):
        return None, [ConfigIssue(path, "a stage is a mapping with `type` (or `_target_`) and its parameters")]
    spec = dict(spec)
    cls, issues = _stage_class(spec, path, allow_any_target)
    name = str(spec.pop("name", default_name))
    inputs = spec.pop("inputs", None)
    spec.pop("type", None)
    spec.pop("_target_", None)
    if cls is None:
        return None, issues
    if cls.kind == "model":
        issues += _model_spec_issues(spec, path)
        if issues:
            return None, issues
    stage, issues = build_stage(cls, name, spec, path)
    if stage is None:
        return None, issues
    if inputs is not None and (not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs)):
        return None, [ConfigIssue(f"{path}.inputs", "inputs is a list of stage names")]
    return Node(stage, inputs or [], path), []


def _model_spec_issues(spec: dict, path: str) -> list[ConfigIssue]:
    from composer.validation import check_model, check_quantization, check_task

    issues = check_task(spec.get("task"), f"{path}.task")
    if "model" in spec:
        issues += check_against(spec["model"], ModelConfig, f"{path}.model") + check_model(spec["model"], f"{path}.model", spec.get("task"))
    if "quantization" in spec:
        issues += check_against(spec["quantization"], QuantizationConfig, f"{path}.quantization")
        issues += check_quantization(spec["quantization"], f"{path}.quantization")
    return issues


def _unique(name: str, taken: set[str]) -> str:
    candidate = name
    for n in itertools.count(2):
        if candidate not in taken:
            return candidate
        candidate = f"{name}_{n}"
    raise AssertionError("unreachable")


def plan(config: dict, run_dir: str | None = None, deep: bool = False) -> Graph:
    """Build and check the graph of a config; raise ConfigError with every issue, the model
    stages' own checks (ModelStage.check; `deep` for the ones that import transformers) among
    them, so one message names every mistake."""
    from composer.tasks import task_table

    issues: list[ConfigIssue] = []
    nodes: list[Node] = []
    allow_any = bool(config.get("allow_any_target"))
    source_spec = dict(config["input"])
    kind = source_spec.pop("type", "inline")
    source, found = build_stage(load_class(STAGE_TYPES[kind]), SOURCE, source_spec, "input")
    issues += [ConfigIssue(i.path, i.message + f" (for input={kind})") for i in found]
    # Stages that failed to build are reported once, not again as unknown inputs of others.
    failed: set[str] = set()
    if source is not None:
        nodes.append(Node(source, [], "input"))
    else:
        failed.add(SOURCE)
    chain_tail = SOURCE

    def add_chain(key: str) -> None:
        nonlocal chain_tail
        for index, spec in enumerate(config.get(key) or []):
            default = spec.get("type", "stage") if isinstance(spec, dict) else "stage"
            node, found = _spec_stage(spec, f"{key}[{index}]", _unique(str(default), {n.stage.name for n in nodes}), allow_any)
            issues.extend(found)
            if node is not None:
                node.inputs = node.inputs or [chain_tail]
                nodes.append(node)
                chain_tail = node.stage.name

    add_chain("preprocess")
    task = task_table().canonical(config["task"]) or config["task"]
    model_params = dict(
        task=task,
        model=config["model"],
        quantization=config["quantization"],
        pipeline=config["pipeline"],
        call=config["call"],
        input_field=config.get("model_input") or config["input"].get("field", "text"),
        output_field=config.get("model_output", "prediction"),
        batch_size=config["batch_size"],
        **_stage_runtime_params(config),
    )
    model_node = Node(load_class(STAGE_TYPES["model"])(MODEL, **model_params), [chain_tail], "model")
    nodes.append(model_node)
    chain_tail = MODEL
    add_chain("postprocess")
    for name, spec in (config.get("stages") or {}).items():
        path = f"stages.{name}"
        if isinstance(spec, dict) and spec.get("type") == "model":
            spec = {"batch_size": config["batch_size"], **_stage_runtime_params(config), **spec}
        node, found = _spec_stage(spec, path, str(name), allow_any)
        issues.extend(found)
        if node is None:
            failed.add(str(name))
        else:
            if not node.inputs:
                issues.append(ConfigIssue(f"{path}.inputs", f"name the stages it reads from, e.g. inputs: [{SOURCE}]"))
            nodes.append(node)
    _pool_in_model(nodes, model_node, model_params)
    issues += _check_edges(nodes, failed)
    issues += _check_workers(config.get("workers", "auto"), nodes)
    by_name = {node.stage.name: node.stage for node in nodes}
    issues += [ConfigIssue(f"{node.path}.{i.path}", i.message) for node in nodes for i in node.stage.bind(by_name)]
    issues += [issue for node in nodes if node.stage.kind == "model" for issue in cast(ModelStage, node.stage).check(deep)]
    if issues:
        raise ConfigError(issues)
    ordered = _topological(nodes)
    sink = load_class(STAGE_TYPES[SINK])(SINK, run_dir=run_dir)
    consumed = {i for n in ordered for i in n.inputs}
    ordered.append(Node(sink, [n.stage.name for n in ordered if n.stage.name not in consumed], "(run folder)"))
    batch = config["batch_size"] if isinstance(config["batch_size"], int) else max(load_class(STAGE_TYPES["model"]).PROBE_SIZES)
    return Graph(ordered, window=window_size(config, [n.stage for n in ordered]), prefetch=int(config.get("prefetch", 1)),
                 batch=batch, auto_window=config.get("sort_window", "auto") == "auto")


def _pool_in_model(nodes: list[Node], model_node: Node, model_params: dict[str, Any]) -> None:
    """Hand a pooling stage's work to the feature-extraction model stage it reads from, when it
    is the only reader of the model's output and drops the token states (keep_input false): the
    model stage then pools each record's states inside the batch (PipelineStage's `pooling`),
    and what leaves it is one vector per record instead of tokens x hidden floats. The outputs
    are the same; the model stage is rebuilt with `pooling` so that its fingerprint (and so
    its result-cache entries) says what it hands on."""
    model = model_node.stage
    if getattr(model, "task", None) != "feature-extraction":
        return
    readers = [node for node in nodes if MODEL in node.inputs]
    if len(readers) != 1 or readers[0].inputs != [MODEL]:
        return
    pooler = readers[0].stage
    if not isinstance(pooler, load_class(STAGE_TYPES["mean_pool"])) or pooler.keep_input or pooler.field != model.output_field:
        return
    model_node.stage = type(model)(MODEL, **model_params, pooling=pooler.pooling())
    pooler.pooled_upstream(MODEL)


DEFAULT_SORT_WINDOW = 256
AUTO_BATCH_WINDOW = 128  # batch_size=auto without length sorting: records per window (the probe needs some)


def _stage_runtime_params(config: dict) -> dict[str, Any]:
    """Length sorting, token budget and oneDNN linear layers for model stages: sort_window=auto
    leaves the choice to each stage's task (PipelineStage.SORTED_TASKS), 0 turns sorting off, a
    number turns it on."""
    sort_window = config.get("sort_window", "auto")
    return {
        "sort_by_length": None if sort_window == "auto" else bool(sort_window),
        "max_batch_tokens": config.get("max_batch_tokens"),
        "onednn_linear": config.get("onednn_linear", True),
    }


def window_size(config: dict, stages: list[Stage]) -> int:
    """Records read ahead per window: sort_window when some model stage sorts by length (auto:
    DEFAULT_SORT_WINDOW, rounded up to whole batches), else one batch."""
    batch_size = config["batch_size"]
    batch = batch_size if isinstance(batch_size, int) else AUTO_BATCH_WINDOW
    sorts = any(isinstance(stage, BatchedStage) and stage.sorts_by_length for stage in stages)
    sort_window = config.get("sort_window", "auto")
    if not sorts:
        return batch
    if sort_window == "auto":
        return -(-max(DEFAULT_SORT_WINDOW, batch) // batch) * batch
    return max(int(sort_window), 1)


def _check_workers(workers: Any, nodes: list[Node]) -> list[ConfigIssue]:
    """workers > 1 only where batches may run side by side (PipelineStage.configured_blocker):
    elsewhere an output could change with the order batches finish in (sampled generation), or
    threads would get in each other's way (a model spread over devices, quantized weights)."""
    if not isinstance(workers, int) or workers <= 1:
        return []
    issues = []
    for node in nodes:
        why = node.stage.configured_blocker() if isinstance(node.stage, BatchedStage) else None
        if why:
            issues.append(ConfigIssue("workers", f"stage {node.stage.name!r} runs one batch at a time ({why}), so workers must be 1 or auto"))
    return issues


def _check_edges(nodes: list[Node], failed: set[str]) -> list[ConfigIssue]:
    issues = []
    by_name: dict[str, Node] = {}
    for node in nodes:
        if node.stage.name in by_name:
            issues.append(ConfigIssue(node.path, f"stage name {node.stage.name!r} is used twice"))
        by_name[node.stage.name] = node
    known_inputs: dict[str, list[str]] = {}
    for node in nodes:
        for name in node.inputs:
            if name not in by_name and name not in failed:
                issues.append(ConfigIssue(f"{node.path}.inputs", f"unknown stage {name!r}" + did_you_mean(name, by_name)))
        # Unknown inputs are reported above; the field checks below go on without them.
        known_inputs[node.stage.name] = [name for name in node.inputs if name in by_name]
    sorter = graphlib.TopologicalSorter(known_inputs)
    try:
        order = list(sorter.static_order())
    except graphlib.CycleError as error:
        return issues + [ConfigIssue("stages", f"the stages form a cycle: {' -> '.join(error.args[1])}")]
    available: dict[str, set[str]] = {}
    for name in order:
        node = by_name[name]
        inputs = known_inputs[name]
        before: set[str] = set().union(*(available[i] for i in inputs)) if inputs else set()
        for read in node.stage.reads if len(inputs) == len(node.inputs) else ():
            if read not in before:
                have = ", ".join(sorted(before)) or "none"
                issues.append(
                    ConfigIssue(node.path, f"stage {name!r} reads field {read!r}, which no upstream stage writes (available: {have})")
                )
        available[name] = node.stage.fields_after(before)
    return issues


def _topological(nodes: list[Node]) -> list[Node]:
    """Execution order: dependencies first, otherwise the order the config lists the stages."""
    position = {n.stage.name: i for i, n in enumerate(nodes)}
    sorter = graphlib.TopologicalSorter({n.stage.name: n.inputs for n in nodes})
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        order.extend(ready)
        sorter.done(*ready)
    by_name = {n.stage.name: n for n in nodes}
    return [by_name[name] for name in order]
