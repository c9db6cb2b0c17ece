"""Plan and execute the stage graph.

Planning builds every stage object from config (cheap: constructors load nothing), binds each
stage's parameters to its constructor's signature, and checks the edges and the record fields
before anything heavy happens. Execution streams batches from the source through the stages in
topological order, isolating failures to the records that caused them.
"""

from __future__ import annotations

import graphlib
import hashlib
import inspect
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from composer.records import Record, RecordFailure
from composer.schema import ConfigError, ConfigIssue, ModelConfig, QuantizationConfig, check_against, did_you_mean
from composer.stages import STAGE_TYPES, load_class
from composer.stages.base import Source, Stage

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
    # for workers at run time: _window_for).
    window: int = 8
    prefetch: int = 1  # windows a background thread reads and preprocesses ahead (0: none)
    batch: int = 8  # records per batch (batch_size=auto: the largest size its probe tries)
    auto_window: bool = True  # the window size is composer's choice (sort_window=auto), not the user's

    @property
    def source(self) -> Source:
        return self.nodes[0].stage  # type: ignore[return-value]

    def stages(self) -> list[Stage]:
        return [node.stage for node in self.nodes]

    def model_stages(self) -> list[Stage]:
        return [s for s in self.stages() if s.kind == "model"]

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
    from composer.schema import check_model, check_quantization, check_task

    issues = check_task(spec.get("task"), f"{path}.task")
    if "model" in spec:
        issues += check_against(spec["model"], ModelConfig, f"{path}.model") + check_model(spec["model"], f"{path}.model")
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
    model_stage = load_class(STAGE_TYPES["model"])(
        MODEL,
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
    nodes.append(Node(model_stage, [chain_tail], "model"))
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
    issues += _check_edges(nodes, failed)
    issues += _check_workers(config.get("workers", "auto"), nodes)
    by_name = {node.stage.name: node.stage for node in nodes}
    issues += [ConfigIssue(f"{node.path}.{i.path}", i.message) for node in nodes for i in node.stage.bind(by_name)]
    issues += [issue for node in nodes if node.stage.kind == "model" for issue in node.stage.check(deep)]
    if issues:
        raise ConfigError(issues)
    ordered = _topological(nodes)
    sink = load_class(STAGE_TYPES[SINK])(SINK, run_dir=run_dir)
    consumed = {i for n in ordered for i in n.inputs}
    ordered.append(Node(sink, [n.stage.name for n in ordered if n.stage.name not in consumed], "(run folder)"))
    batch = config["batch_size"] if isinstance(config["batch_size"], int) else max(load_class(STAGE_TYPES["model"]).PROBE_SIZES)
    return Graph(ordered, window=window_size(config, [n.stage for n in ordered]), prefetch=int(config.get("prefetch", 1)),
                 batch=batch, auto_window=config.get("sort_window", "auto") == "auto")


DEFAULT_SORT_WINDOW = 256
AUTO_BATCH_WINDOW = 128  # batch_size=auto without length sorting: records per window (the probe needs some)
BATCHES_PER_WORKER = 8  # an automatic window holds at least this many batches per worker
QUEUED_PER_WORKER = 2  # batches submitted per model worker: one running, one waiting its turn


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
    sorts = any(getattr(stage, "sorts_by_length", False) for stage in stages)
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
        why = node.stage.configured_blocker() if hasattr(node.stage, "configured_blocker") else None
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


class RunAborted(Exception):
    """on_error=fail met a bad record, or max_errors was reached."""


@dataclass
class ExecutionStats:
    records_in: int = 0
    records_ok: int = 0
    records_failed: int = 0
    records_skipped: int = 0  # finished by an earlier attempt of a resumed run
    batches: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _run_stage(stage: Stage, records: list[Record]) -> tuple[list[Record], list[RecordFailure]]:
    """Run a batch; if it fails, retry record by record so only the bad records fail. When no
    record fails alone, the batch itself was the problem: a stage that can run smaller batches
    hears of it (`batch_failed_alone_ok`)."""
    try:
        return stage.process(records), []
    except Exception as error:  # noqa: BLE001 - any stage error is a record error, isolated below
        if len(records) == 1:
            return [], [RecordFailure.from_exception(str(records[0].get("id")), stage.name, error)]
        # Only its type and message: the exception's traceback would keep the failed batch's
        # tensors alive while its records are retried.
        batch_error = (type(error), str(error))
    survivors: list[Record] = []
    failures: list[RecordFailure] = []
    for record in records:
        kept, failed = _run_stage(stage, [record])
        survivors += kept
        failures += failed
    hook = getattr(stage, "batch_failed_alone_ok", None)
    if not failures and hook is not None:
        hook(len(records), *batch_error)
    return survivors, failures


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


@dataclass
class ExecutionPolicy:
    """How a run treats failures, what it skips, and when it stops."""

    on_error: str = "skip"
    max_errors: int | None = None
    errors_before: int = 0  # failures recorded by earlier attempts (they count toward max_errors)
    skip_ids: Any = field(default_factory=set)  # finished by an earlier attempt: a runstore.Written, or a set of ids
    should_stop: Callable[[], bool] = lambda: False  # checked between batches (Ctrl-C, SIGTERM)


class RunInterrupted(Exception):
    """A stop was requested; the batches in flight were finished and the input-order prefix written."""


def execute(
    graph: Graph,
    stats: ExecutionStats,
    policy: ExecutionPolicy,
    on_failures: Callable[[list[RecordFailure]], None],
    advance: Callable[[int], None] = lambda n: None,
) -> None:
    """Stream the source through the stages, counting into `stats` as batches finish (so the
    counts stay true when the run is aborted); records leave in input order."""
    stats.stage_seconds = {s.name: 0.0 for s in graph.stages()}
    started = time.perf_counter()
    try:
        _execute_batches(graph, stats, policy, on_failures, advance)
    finally:
        stats.seconds = time.perf_counter() - started


def _unfinished(items: Iterator[Record | RecordFailure], skip_ids: Any, stats: ExecutionStats) -> Iterator[Any]:
    """The items no earlier attempt finished: `skip_ids` is a runstore.Written (which matches a
    source's failures line by line) or a plain set of ids."""
    skips = getattr(skip_ids, "skips", None) or (lambda item: (item.id if isinstance(item, RecordFailure) else item["id"]) in skip_ids)
    for item in items:
        if skips(item):
            stats.records_skipped += 1
            continue
        yield item


@dataclass
class _Window:
    """Records read from the source together, after the light transforms that precede the first
    model stage. `positions` maps a record id to its place in the input, which is the order the
    window's records leave in; `lengths` holds, per model stage, each record's input length,
    measured ahead by the prefetch thread."""

    size: int
    records: list[Record]
    failures: list[tuple[int, RecordFailure]]
    positions: dict[str, int]
    lengths: dict[str, dict[str, int]]


def _split_head(nodes: list[Node]) -> tuple[list[Node], list[Node]]:
    """The leading transforms cheap and safe to run in the prefetch thread, and the rest."""
    head = 0
    while head < len(nodes) and getattr(nodes[head].stage, "prefetchable", False):
        head += 1
    return nodes[:head], nodes[head:]


def _with_positions(failed: list[RecordFailure], positions: dict[str, int]) -> list[tuple[int, RecordFailure]]:
    return [(positions.get(str(f.id), len(positions)), f) for f in failed]


def _read_windows(graph: Graph, head: list[Node], stats: ExecutionStats, policy: ExecutionPolicy, window: int,
                  first: Stage | None = None, stop: threading.Event | None = None) -> Iterator[_Window]:
    """Windows of unfinished records with the head transforms applied and input lengths measured:
    the work that can overlap with the model's forward passes. The model stage that comes right
    after the head (`first`) also tokenizes its inputs here (its `prepare`). `stop` (an Event
    set when the run stops) ends it between stages, so the prefetch thread never outlives the run."""
    model_stages = [n.stage for n in graph.nodes if hasattr(n.stage, "input_lengths")]
    items = _unfinished(graph.source.iter_records(), policy.skip_ids, stats)
    stopped = stop.is_set if stop is not None else (lambda: False)
    for batch in _batches(items, window):
        if stopped():
            return
        records: list[Record] = []
        failures: list[tuple[int, RecordFailure]] = []
        positions: dict[str, int] = {}
        for position, item in enumerate(batch):
            if isinstance(item, RecordFailure):
                failures.append((position, item))
            else:
                records.append(item)
                positions[str(item["id"])] = position
        for node in head:
            if not records or stopped():
                break
            stage_started = time.perf_counter()
            records, failed = _run_stage(node.stage, records)
            stats.stage_seconds[node.stage.name] += time.perf_counter() - stage_started
            failures += _with_positions(failed, positions)
        if stopped():
            return
        lengths: dict[str, dict[str, int]] = {}
        for stage in model_stages:
            if stage is first and hasattr(stage, "prepare"):
                try:
                    lengths[stage.name] = stage.prepare(records)
                except Exception:  # noqa: BLE001 - the stage then tokenizes in process()
                    pass
            elif getattr(stage, "wants_lengths", False):
                try:
                    lengths[stage.name] = stage.input_lengths(records)
                except Exception:  # noqa: BLE001 - a field written later in the graph; measured then
                    pass
        yield _Window(len(batch), records, failures, positions, lengths)


_DONE = object()


def _prefetched(windows: Iterator[_Window], depth: int, stopping: threading.Event) -> Iterator[_Window]:
    """Produce `windows` in a background thread, at most `depth` ahead of the consumer, so that
    reading, light transforms and tokenizing overlap with the model (torch and the tokenizers
    release the GIL). Memory stays bounded: depth + 2 windows exist at any time. When the
    consumer stops, `stopping` (which `windows` watches) is set and the thread is waited for,
    so no stage code runs after the run closes its stages."""
    import queue

    handoff: queue.Queue = queue.Queue(maxsize=depth)

    def put(item: Any) -> bool:
        while not stopping.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for window in windows:
                if not put(window):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(error)
        finally:
            windows.close()  # the source's file closes now, in this thread, not at garbage collection

    worker = threading.Thread(target=produce, name="composer-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopping.set()
        # At most one head stage's work on one window remains; a second Ctrl-C interrupts the wait.
        worker.join()


def _run_batched(
    stage: Stage,
    records: list[Record],
    positions: dict[str, int],
    lengths: dict[str, int] | None,
    halt: Callable[[int], bool],
    on_batch: Callable[[int], None],
    workers: ThreadPoolExecutor | None = None,
) -> tuple[list[Record], list[tuple[int, RecordFailure]], int | None]:
    """Run a model stage over a window in the batches it plans (length-sorted, under a token
    budget), each batch with per-record error isolation; survivors come back in input order.
    With `workers`, up to the stage's `workers` batches run at once, each on a worker thread
    (torch releases the GIL in the forward pass), and as many more wait in the pool's queue, so
    a worker that finishes a batch starts the next at once instead of waiting for this thread
    to wake and hand it over. A plan item that is a tuple of batches is a round (batch_size=auto's
    probe): its batches run side by side and all finish before the plan is asked for the next
    item, so the plan can time the round.

    After each batch `halt(failures so far)` may stop the window early: batches already running
    finish, queued ones are dropped, and the third value is the input position of the first
    record left undone (None when all were run)."""
    plan = stage.plan_batches(records, lengths)  # type: ignore[attr-defined]
    done = [False] * len(records)
    kept_ids: set[str] = set()
    failures: list[tuple[int, RecordFailure]] = []
    running: dict[Future, list[int]] = {}

    def collect(finished: set[Future]) -> None:
        for future in finished:
            indices = running.pop(future)
            kept, failed = future.result()
            kept_ids.update(str(r["id"]) for r in kept)
            failures.extend(_with_positions(failed, positions))
            for i in indices:
                done[i] = True
            on_batch(len(indices))

    halted = False
    try:
        width = getattr(stage, "workers", 1) if workers is not None else 1
        in_flight = width * QUEUED_PER_WORKER if width > 1 else 1
        for item in plan:
            for indices in item if isinstance(item, tuple) else (item,):
                batch = [records[i] for i in indices]
                if width > 1:
                    running[workers.submit(_run_stage, stage, batch)] = indices  # type: ignore[union-attr]
                else:
                    future: Future = Future()
                    future.set_result(_run_stage(stage, batch))
                    running[future] = indices
            while running and (isinstance(item, tuple) or len(running) >= in_flight):
                collect(wait(running, return_when=FIRST_COMPLETED).done)
            if not all(done) and halt(len(failures)):
                halted = True
                for future in [f for f in running if f.cancel()]:  # queued, not started
                    del running[future]
                break
        collect(wait(running).done)
    finally:
        for future in running:
            future.cancel()
        wait(running)  # no stage code runs once the run moves on (or closes its stages)
        close = getattr(plan, "close", None)
        if close is not None:
            close()
    if halted and not all(done):
        undone = min(positions[str(records[i]["id"])] for i, finished in enumerate(done) if not finished)
        return [r for r in records if str(r["id"]) in kept_ids], failures, undone
    # Outputs of a stage that returns new dicts are found by id, in input order.
    kept_by_id = {str(r["id"]): r for r in records if str(r["id"]) in kept_ids}
    return list(kept_by_id.values()), failures, None


def _execute_batches(
    graph: Graph,
    stats: ExecutionStats,
    policy: ExecutionPolicy,
    on_failures: Callable[[list[RecordFailure]], None],
    advance: Callable[[int], None],
) -> None:
    """Windows of records go through the stages (model stages batch each window their own way)
    and leave in input order. A window is written once done; stopping early (on_error=fail,
    max_errors, a stop request) writes the records before the first one left undone or failed,
    so outputs.jsonl stays an input-order prefix that resume continues."""
    *transforms, sink = graph.nodes[1:]
    head, tail = _split_head(transforms)
    stop = threading.Event()
    width = max((getattr(node.stage, "workers", 1) for node in tail), default=1)
    windows = _read_windows(graph, head, stats, policy, _window_for(graph, tail, width), tail[0].stage if tail else None, stop)
    if graph.prefetch > 0:
        windows = _prefetched(windows, graph.prefetch, stop)
    workers = ThreadPoolExecutor(width, thread_name_prefix="composer-model") if width > 1 else None
    try:
        for window in windows:
            _run_window(window, tail, sink, stats, policy, on_failures, advance, workers)
    finally:
        try:
            close = getattr(windows, "close", None)
            if close is not None:
                close()
        finally:  # even when a second Ctrl-C cut the close short: no batch outlives the run
            if workers is not None:
                workers.shutdown(wait=True)


def _window_for(graph: Graph, tail: list[Node], width: int) -> int:
    """Records per window once the workers are known: batches run side by side only within a
    window, so an unsorted window (one batch) grows to one batch per worker, and a window of
    composer's choosing holds at least BATCHES_PER_WORKER batches per worker (batch_size=auto's
    probe, one round per candidate, then stays within half of it). A sort_window the user set
    is kept."""
    if not any(getattr(node.stage, "sorts_by_length", False) for node in tail):
        return graph.window * width
    if graph.auto_window:
        return max(graph.window, graph.batch * width * BATCHES_PER_WORKER)
    return graph.window


def _errors_so_far(policy: ExecutionPolicy, stats: ExecutionStats, pending: int) -> int:
    return policy.errors_before + stats.records_failed + pending


def _run_window(
    window: _Window,
    tail: list[Node],
    sink: Node,
    stats: ExecutionStats,
    policy: ExecutionPolicy,
    on_failures: Callable[[list[RecordFailure]], None],
    advance: Callable[[int], None],
    workers: ThreadPoolExecutor | None = None,
) -> None:
    records, failures, positions = window.records, list(window.failures), window.positions
    stats.records_in += window.size
    cut: int | None = None  # input position from which this window is not written
    counted = False
    advanced = 0

    def halt(pending: int) -> bool:
        if policy.on_error == "fail" and (failures or pending):
            return True
        if policy.max_errors is not None and _errors_so_far(policy, stats, len(failures) + pending) >= policy.max_errors:
            return True
        return policy.should_stop()

    def on_batch(n: int) -> None:
        nonlocal advanced
        if not counted:
            stats.batches += 1
            advanced += n
            advance(n)

    for node in tail:
        if not records:
            break
        stage_started = time.perf_counter()
        if hasattr(node.stage, "plan_batches"):
            records, failed, undone = _run_batched(node.stage, records, positions, window.lengths.get(node.stage.name), halt, on_batch, workers)
            counted = True  # progress and batch counts follow the first model stage
            if undone is not None:
                cut = undone if cut is None else min(cut, undone)
                records = [r for r in records if positions[str(r["id"])] < cut]
        else:
            records, failed = _run_stage(node.stage, records)
            failed = _with_positions(failed, positions)
        stats.stage_seconds[node.stage.name] += time.perf_counter() - stage_started
        failures += failed
    if not counted:
        stats.batches += 1
    failures.sort(key=lambda pair: pair[0])
    if failures and policy.on_error == "fail":
        cut = failures[0][0] if cut is None else min(cut, failures[0][0])
    if cut is not None:
        records = [r for r in records if positions[str(r["id"])] < cut]
        # Failures past the cut are left for resume to find again, in their place: written now,
        # they would come before those of the records left undone ahead of them. on_error=fail
        # keeps the failure that stops the run.
        stopper = failures[0] if failures and policy.on_error == "fail" else None
        failures = [pair for pair in failures if pair[0] < cut or pair is stopper]
    stats.records_failed += len(failures)
    on_failures([failure for _, failure in failures])
    if failures and policy.on_error == "fail":
        # Outputs hold the records before the failing one, in input order; the rest is dropped.
        first = failures[0][1]
        sink.stage.process(records)
        stats.records_ok += len(records)
        raise RunAborted(f"record {first.id!r} failed in stage {first.stage!r} and on_error=fail: {first.message}")
    sink.stage.process(records)
    stats.records_ok += len(records)
    finished = len(records) + len(failures) if cut is not None else window.size
    if finished > advanced:
        advance(finished - advanced)
    failed_total = _errors_so_far(policy, stats, 0)
    if policy.max_errors is not None and failed_total >= policy.max_errors:
        raise RunAborted(f"{failed_total} records failed, reaching max_errors={policy.max_errors}")
    if policy.should_stop() or cut is not None:
        raise RunInterrupted("stopped on request after finishing the batches in flight")
