"""The config contract: typed dataclasses that hold every default, and the check of a composed
config against them (validation.py adds the checks beyond keys and types).

The dataclasses are the one source of defaults: `defaults()` turns them into the plain
`composer_defaults` node that `configs/config.yaml` composes first, so the files under
`configs/` state only what differs. Why a plain node and not an OmegaConf structured config:
OmegaConf raises on the first bad key or type, without a did-you-mean, while users fix configs
fastest when they see all mistakes together, each with its key path (torchtune's
`config/_validate.py` does the same). So configs compose as plain YAML and `check_against`
checks the result. Field metadata says which settings never change a record's output
(`output_neutral`) and which input keys only some input types read (`inputs`). Nothing here
imports torch or transformers: `composer plan` runs this.
"""

from __future__ import annotations

import difflib
import types
import typing
import dataclasses
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import Any, Literal, Union

DType = Literal["auto", "float32", "bfloat16", "float16"]
InputType = Literal["inline", "jsonl", "csv", "parquet", "dataset", "folder"]
QuantBackend = Literal["none", "bitsandbytes", "torchao"]
# The name configs/config.yaml lists first in its defaults, registered by configuration.py.
DEFAULTS_NODE = "composer_defaults"


def _field(default: Any = MISSING, *, factory: Any = MISSING, **metadata: Any) -> Any:
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def neutral(default: Any = MISSING, *, factory: Any = MISSING) -> Any:
    """A setting that never changes a record's output (batching, threads, progress, the error
    policy): a run may be resumed with another value (runstore.previous_attempt)."""
    return _field(default, factory=factory, output_neutral=True)


def only_for(*input_types: str, default: Any = MISSING, factory: Any = MISSING) -> Any:
    """An input key that only the named input types read; for the others it is left out of the
    resolved config while it holds its default (and named as unknown when set)."""
    return _field(default, factory=factory, inputs=input_types)


_READERS = ("jsonl", "csv", "parquet", "dataset", "folder")


@dataclass
class ModelConfig:
    """Which weights to load and how (`model=<file in configs/model/>` or `model.<key>=`)."""

    id: str | None = None  # hub id, local directory, or `tiny:<name>` (offline test model); null: the task's default
    revision: str | None = None  # a branch, tag or commit sha; the manifest records the sha used
    dtype: DType = "auto"
    device: str | int | None = None  # cpu | cuda | cuda:N | mps (null: cpu, or where device_map puts it)
    device_map: str | dict | None = None  # auto (accelerate places layers) | balanced | sequential | {module: device}
    trust_remote_code: bool = False  # never run model code from the Hub unless this is set
    tokenizer: str | None = None  # a different tokenizer id or folder
    model_kwargs: dict = dataclasses.field(default_factory=dict)  # extra from_pretrained() keyword arguments
    # A model id to run, with a notice in the run, when this one can be found nowhere (neither
    # provisioned, local, cached nor on the Hub); the default experiment uses a tiny offline model.
    fallback: str | None = None
    # Pickle-based checkpoints (pytorch_model.bin) can run code when loaded: safetensors only,
    # unless this is set.
    allow_pickle: bool = False
    # feature-extraction: tokens per input before truncation. null: the model's own
    # (sentence-transformers' max_seq_length in sentence_bert_config.json, 256 for all-MiniLM-L6-v2),
    # else the tokenizer's limit, as pipeline() does (512 for BERT-like models).
    max_seq_length: int | None = None


@dataclass
class QuantizationConfig:
    """Weight quantization; `params` are the keyword arguments of the backend's config class."""

    backend: QuantBackend = "none"
    params: dict = dataclasses.field(default_factory=dict)


@dataclass
class InputConfig:
    """Where records come from (`input=<file in configs/input/>`, `input.type=...`)."""

    type: InputType = "inline"
    # File or folder; for `dataset` the load_dataset path. Not in the composed defaults: the input
    # files mark it required (???), which a default would hide (OmegaConf's merge keeps a value over ???).
    path: str | None = _field(None, inputs=_READERS, composed=False)
    field: str = "text"  # column holding the model input (folder: the field holding the file path)
    id_field: str | None = None  # column holding a stable record id; else a content hash (folder: the relative path)
    label_field: str | None = None  # column holding the gold label, for quality metrics
    limit: int | None = None  # stop after this many records
    keep: list[str] = dataclasses.field(default_factory=list)  # extra columns carried into outputs.jsonl
    records: list | None = only_for("inline", default=None)  # strings or dicts
    delimiter: str = only_for("csv", default=",")  # one character, or `tab` (a tab cannot be written in an override)
    subset: str | None = only_for("dataset", default=None)  # config (subset) name
    split: str = only_for("dataset", default="train")
    data_files: Any = only_for("dataset", default=None)  # e.g. {train: data/*.jsonl} for path=json
    streaming: bool = only_for("dataset", default=True)  # iterate without loading the whole set
    # false leaves image/audio columns undecoded for a load stage (bad files fail per record)
    decode: bool = only_for("dataset", default=True)
    extensions: list[str] | None = only_for("folder", default=None)  # file extensions to read (null: every file)
    recursive: bool = only_for("folder", default=True)  # include subfolders


@dataclass
class LoggerConfig:
    """Where a finished run is also logged (`logger=none|mlflow`); the run folder stays the record."""

    type: Literal["none", "mlflow"] = "none"
    tracking_uri: str | None = None  # mlflow: null -> sqlite:///mlflow.db in the working directory; any server URI
    experiment: str | None = None  # null: the run's name
    run_name: str | None = None  # null: the run folder's name (the job number in a sweep)
    artifacts: bool = True  # log the run folder's files as artifacts
    tags: dict = dataclasses.field(default_factory=dict)  # extra tags, e.g. {team: nlp}


@dataclass
class CacheConfig:
    """The opt-in result cache (`cache=on|off`)."""

    enabled: bool = False
    path: str | None = None  # null: $COMPOSER_CACHE_DIR/results.sqlite


@dataclass
class ServeConfig:
    """`composer serve`: how the HTTP server batches, bounds and logs requests (composer.serve)."""

    max_wait_ms: float = 5.0  # how long the first record of a round waits for more to fill it
    max_queue: int = 256  # records waiting for the model at most; past it a request gets 503 with Retry-After
    timeout_s: float = 30.0  # a request not answered within this gets 504
    max_body_bytes: int = 1_048_576  # larger request bodies get 413
    allow_urls: bool = False  # media fields may be http(s) URLs (never private, link-local or loopback addresses)
    run_dir: str | None = None  # the server's run folder (null: ${runs_root}/${name}/<timestamp>-serve)


@dataclass
class ExecutorConfig:
    """Where the stages run (`executor=local|ray`): in this process, or in the actors of a Ray
    cluster (composer.executors.ray), with the same outputs. The `ray` keys are read by
    executor=ray only."""

    type: Literal["local", "ray"] = "local"
    address: str | None = None  # null: a local Ray started for the run; auto or ray://host:10001: join that cluster
    actors: int = 1  # Ray actors, each with its own copy of the stages (models load once per actor)
    num_cpus_per_actor: float = 1.0  # fractional allowed (0.5): on a small machine leave CPUs for Ray's own tasks
    num_gpus_per_actor: float = 0.0  # each actor gets its own CUDA_VISIBLE_DEVICES from Ray
    batch_size: int | None = None  # records per block an actor runs at once (null: the local executor's window, same batches)


@dataclass
class ComposerConfig:
    """The whole run: one model stage fed by one source, with optional transforms and stages.

    These defaults are the base every experiment starts from (`experiment=base`): a
    text-classification job whose model and input come from config.yaml's defaults list.
    """

    name: str = "${task}"  # runs go to ${runs_root}/${name}/<timestamp>
    task: str | None = "text-classification"  # any transformers pipeline task or alias
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    quantization: QuantizationConfig = dataclasses.field(default_factory=QuantizationConfig)
    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    pipeline: dict = dataclasses.field(default_factory=dict)  # task parameters given once, at build time (pipeline.top_k=2)
    call: dict = dataclasses.field(default_factory=dict)  # task parameters given on every call; they win over `pipeline`
    model_input: str | dict | None = None  # record field the model reads (null: input.field), or {arg: field}
    model_output: str = "prediction"  # record field the model's output is written to
    preprocess: list = dataclasses.field(default_factory=list)  # transforms before the model, e.g. [{type: template, ...}]
    postprocess: list = dataclasses.field(default_factory=list)  # transforms after the model, e.g. [{type: top_k, k: 1}]
    stages: dict = dataclasses.field(default_factory=dict)  # extra named stages, e.g. a second model reading `source` (fan-out)
    # Records per batch, or auto (CPU: picked by measured throughput on the first window, recorded
    # in the manifest; CUDA: the largest batch that fits).
    batch_size: int | Literal["auto"] = neutral(8)
    # Records read ahead and ordered by token length before batching, then written in input order
    # (same outputs, less padding). auto: 256 records (or 8 batches per worker if more) for tasks
    # whose outputs do not depend on batch-mates (classification, NER, fill-mask, embeddings,
    # zero-shot), off for generation; 0: off; N: on, N records.
    sort_window: int | Literal["auto"] = neutral("auto")
    max_batch_tokens: int | None = neutral(None)  # also cap a batch at this many padded tokens (longest x records)
    prefetch: int = neutral(1)  # windows read, preprocessed and tokenized ahead in a background thread (0: off)
    threads: int | None = neutral(None)  # CPU threads the run uses (null: torch's default, one per core)
    # Model batches run side by side on CPU, splitting `threads` between them (auto: one per
    # thread, at most 8, for tasks whose outputs do not depend on batch-mates, on CPU,
    # unquantized; else 1; runtime.split_threads). Recorded in the manifest.
    workers: int | Literal["auto"] = neutral("auto")
    # CPU, fp32, encoder tasks: linear layers through oneDNN with weights packed once
    # (runtime.onednn_linear; x1.38 on a small BERT); outputs differ only in float rounding.
    onednn_linear: bool = neutral(True)
    # glibc malloc reuses freed activations instead of page-faulting them back in (composer.allocator;
    # 5-10% on a small model on CPU; each thread's heap may keep up to 64 MiB free); process-wide
    # once set; recorded in the manifest (allocator).
    tune_malloc: bool = neutral(True)
    seed: int = 0
    deterministic: bool = False  # torch.use_deterministic_algorithms: fail rather than vary; recorded
    on_error: Literal["skip", "fail"] = neutral("skip")  # skip: a bad record goes to errors.jsonl; fail: stop the run
    max_errors: int | None = neutral(None)  # stop once this many records failed
    progress: bool | None = neutral(None)  # null: a progress bar when stderr is a terminal
    allow_any_target: bool = False  # allow `_target_` outside composer's own stages
    runs_root: str = "runs"
    cache: CacheConfig = neutral(factory=CacheConfig)  # cache=on reuses model outputs across runs and sweep jobs
    # Quality metrics when the input has labels: auto (by task) or a list of accuracy, macro_f1,
    # per_class, exact_match, token_f1, wer, cer (metrics.METRIC_NAMES).
    metrics: str | list = "auto"
    # The metrics.json path a sweeper optimises (hydra/sweeper=optuna), e.g. quality.model.macro_f1.
    objective: str | None = None
    logger: LoggerConfig = dataclasses.field(default_factory=LoggerConfig)  # logger=mlflow logs every finished run
    serve: ServeConfig = neutral(factory=ServeConfig)  # `composer serve` only: batching wait, bounds, URL policy
    executor: ExecutorConfig = neutral(factory=ExecutorConfig)  # executor=ray runs the stages on Ray Data actors


# Settings a run may be resumed with other values of: they never change a record's output.
OUTPUT_NEUTRAL_KEYS = frozenset(f.name for f in fields(ComposerConfig) if f.metadata.get("output_neutral"))


def defaults(composed: bool = False) -> dict[str, Any]:
    """Every default as a plain mapping; `composed`: the `composer_defaults` node config.yaml
    starts from, which leaves out the fields marked `composed=False`."""
    values = dataclasses.asdict(ComposerConfig())
    if composed:
        hints = typing.get_type_hints(ComposerConfig)
        for name, tp in hints.items():
            if is_dataclass(tp):
                values[name] = {f.name: values[name][f.name] for f in fields(tp) if f.metadata.get("composed", True)}
    return values


# The input types that read each input key (None: every type), from the `inputs` metadata.
_INPUT_READERS = {f.name: f.metadata.get("inputs") for f in fields(InputConfig)}


def _input_reads(key: str, input_type: Any) -> bool:
    """Whether an input of `input_type` reads `key`."""
    readers = _INPUT_READERS.get(key)
    return readers is None or input_type in readers


def prune_input(config: dict[str, Any]) -> dict[str, Any]:
    """`config` without the input keys its input type does not read while they hold their
    default, so the resolved config and the source's arguments hold only what applies; a key set
    to another value stays, for the plan to name as not read by that input type."""
    inp = config.get("input")
    if not isinstance(inp, dict):
        return config
    default = dataclasses.asdict(InputConfig())
    kept = {k: v for k, v in inp.items() if _input_reads(k, inp.get("type")) or k not in default or v != default[k]}
    return {**config, "input": kept}


def with_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """`config` with every default it leaves out filled in (pruned as resolved configs are), so
    configs written by versions that stated more or fewer defaults compare by meaning."""

    def fill(value: Any, base: Any) -> Any:
        if isinstance(value, dict) and isinstance(base, dict) and base:
            return {**base, **{k: fill(v, base.get(k)) for k, v in value.items()}}
        return value

    return prune_input(fill(config, defaults()))


@dataclass(frozen=True)
class ConfigIssue:
    """One config mistake, located by its dotted key path."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    """Raised with every issue found, so the user fixes them all in one go."""

    def __init__(self, issues: list[ConfigIssue]):
        self.issues = issues
        lines = "\n".join(f"  - {issue}" for issue in issues)
        noun = "error" if len(issues) == 1 else "errors"
        super().__init__(f"config has {len(issues)} {noun}:\n{lines}")


def did_you_mean(word: str, choices: typing.Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when a close match exists, else ''."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if typing.get_origin(tp) is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    return getattr(tp, "__name__", str(tp))


def _matches(value: Any, tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if tp is type(None):
        return value is None
    if origin in (Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(tp))
    if origin is Literal:
        return value in typing.get_args(tp)
    if origin is not None:
        tp = origin
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def check_against(value: Any, schema: type, path: str) -> list[ConfigIssue]:
    """Check a plain dict against a dataclass: unknown keys (with did-you-mean) and types."""
    if not isinstance(value, dict):
        return [ConfigIssue(path, f"expected a mapping, got {type(value).__name__}")]
    hints = typing.get_type_hints(schema)
    known = {f.name for f in fields(schema)}
    issues = []
    for key in value:
        if key not in known:
            issues.append(ConfigIssue(join(path, key), "unknown key" + did_you_mean(str(key), known)))
    for f in fields(schema):
        key_path = join(path, f.name)
        if f.name not in value:
            if f.default is MISSING and f.default_factory is MISSING:
                issues.append(ConfigIssue(key_path, "missing required key"))
            continue
        tp = hints[f.name]
        if is_dataclass(tp):
            issues.extend(check_against(value[f.name], tp, key_path))
        elif not _matches(value[f.name], tp):
            got = value[f.name]
            issues.append(ConfigIssue(key_path, f"expected {_type_name(tp)}, got {got!r}"))
    return issues
