"""The stage contract shared by sources, transforms, model stages and sinks.

Constructors only store configuration and work out which record fields the stage reads and
writes, so the whole graph can be built and checked (`composer plan`) without loading anything
heavy; `setup()` does the loading.

Everything the planner, the executors and the run lifecycle ask of a stage is declared here:
on `Stage` (with defaults) for every stage, on `BatchedStage` for a stage that plans its own
batches over a window (the executors' side), and on `ModelStage` for a `kind = "model"` stage
(the plan's checks, the result cache, the run's metrics). The two protocols are checked with
isinstance (structurally: a class need not name them), never by probing single attributes.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar, Protocol, runtime_checkable

from composer.records import Record, RecordFailure, canonical_json


class Stage:
    """One job in the graph. Subclasses set `reads`/`writes` in `__init__` and implement process."""

    kind: ClassVar[str] = "transform"
    #: Cheap and thread-safe: when it leads the graph (before the first model stage) it runs in
    #: the prefetch thread, ahead of the model.
    prefetchable: ClassVar[bool] = False
    #: Its output is the label the gold labels score (metrics.json's quality), whatever the
    #: model's task: embedding_classify over feature-extraction.
    produces_labels: ClassVar[bool] = False

    #: Constructor arguments that never change the stage's output (batching): left out of `params`.
    output_neutral: ClassVar[frozenset[str]] = frozenset()

    def __new__(cls, *args: Any, **kwargs: Any) -> Stage:
        """Record the constructor's arguments, bound to its signature with defaults applied, as
        `params` (what the fingerprint hashes), so no parameter can be left out of it by hand.
        copy and pickle make a bare object (no arguments) and restore `params` with the rest."""
        stage = super().__new__(cls)
        signature = inspect.signature(cls.__init__)
        try:
            bound = signature.bind(stage, *args, **kwargs)
        except TypeError:  # wrong arguments: __init__ raises Python's own message for them
            return stage
        if args or kwargs:
            bound.apply_defaults()
            arguments = dict(bound.arguments)
            for name, parameter in signature.parameters.items():
                if parameter.kind is inspect.Parameter.VAR_KEYWORD:
                    arguments.update(arguments.pop(name, {}))
            skipped = {"self", "name", *cls.output_neutral}
            stage.params = {key: value for key, value in arguments.items() if key not in skipped}
        return stage

    def __init__(self, name: str):
        self.name = name
        self.params: dict[str, Any]  # set by __new__ from the constructor's arguments
        self.reads: tuple[str, ...] = ()
        self.writes: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A hash of exactly what changes this stage's output: its type and constructor arguments
        (less `output_neutral`)."""
        payload = canonical_json({"type": type(self).__qualname__, "params": self.params})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def fields_after(self, available: set[str]) -> set[str]:
        """The record fields present after this stage, given those present before it."""
        return available | set(self.writes)

    def bind(self, stages: dict[str, Stage]) -> list[Any]:
        """Connect to other stages of the planned graph (by name); return ConfigIssues whose paths
        are relative to this stage's config (the graph prefixes where the stage is configured).

        Called once at planning, after every stage is built, for a stage whose work depends on
        another's setting (audio loading resamples to the rate of the model's feature extractor).
        """
        return []

    #: True for a stage whose output for a record depends on the records before it (state kept
    #: across batches): on resume, restore() rebuilds that state from the outputs already written.
    restores_state = False

    def restore(self, written: Iterable[Record]) -> None:
        """Rebuild the state an earlier attempt had built from `written` (outputs.jsonl, in input
        order) before a resumed run goes on; only called when restores_state is True."""

    def setup(self) -> None:
        """Load whatever the stage needs (models, files). Called once, after planning."""

    def process(self, records: list[Record]) -> list[Record]:
        """Transform a batch in place and return it; raise to fail the batch (retried per record)."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Facts for the manifest beyond the parameters (e.g. the resolved model revision)."""
        return {}

    def plan_note(self) -> str | None:
        """What `composer plan` adds to this stage's line when the plan changed what it does
        (pooling moved into the model stage), so the graph printed is the graph that runs."""
        return None

    def close(self) -> None:
        """Release resources; called once at the end of the run, even after a failure."""


#: One item of a batch plan: the indices (into the window's records) of one batch, or a round of
#: batches that run side by side and all finish before the plan is asked for its next item.
BatchPlanItem = list[int] | tuple[list[int], ...]


@runtime_checkable
class BatchedStage(Protocol):
    """A stage that batches a window of records its own way (the model stage): what an executor
    relies on beyond `Stage`. Executors run each planned batch with `process`, isolating
    failures per record (composer.executors.unit)."""

    name: str
    #: Orders a window by input length before batching (the window then grows to sort_window).
    sorts_by_length: bool
    #: Batches that may run side by side on worker threads (runtime.split_threads sets it after setup).
    workers: int

    @property
    def wants_lengths(self) -> bool:
        """Whether plan_batches uses input lengths (the executor measures them ahead)."""

    def plan_batches(self, records: list[Record], lengths: dict[str, int] | None = None) -> Iterator[BatchPlanItem]:
        """The batches this window runs in, as indices into `records` (a generator: closed when
        the window ends early)."""

    def input_lengths(self, records: list[Record]) -> dict[str, int]:
        """Each record's model input length (by id), measured ahead in the prefetch thread."""

    def prepare(self, records: list[Record]) -> dict[str, int]:
        """Do the model's preprocessing (tokenizing) for these records ahead, in the prefetch
        thread; return their input lengths (by id). Called for the first model stage only."""

    def process(self, records: list[Record]) -> list[Record]:
        """Run one planned batch; raise to fail it (retried record by record)."""

    def batch_failed_alone_ok(self, size: int, error_type: type, message: str) -> None:
        """A batch of `size` failed with `error_type: message` while each of its records then
        ran alone without error (the stage may choose smaller batches from now on)."""

    def configured_blocker(self) -> str | None:
        """Why the config alone says its batches must run one at a time (plan time, no torch), or None."""

    def concurrency_blocker(self) -> str | None:
        """Why its batches must run one at a time once set up (where the model loaded), or None."""


@runtime_checkable
class ModelStage(BatchedStage, Protocol):
    """A `kind = "model"` stage: what the planner and the run lifecycle rely on beyond
    BatchedStage (checks, the result cache, the facts metrics.json reports)."""

    #: The largest of these is the batch the plan assumes for batch_size=auto.
    PROBE_SIZES: ClassVar[tuple[int, ...]]
    task: str
    #: The record field (or a mapping of pipeline argument -> field) the model reads.
    input_field: str | dict[str, str]
    output_field: str
    build_params: dict[str, Any]  # the pipeline's construction arguments (config `pipeline`)
    call_params: dict[str, Any]  # the arguments of each pipeline call (config `call`)
    #: Input tokens counted over the records run (tokens/s in metrics.json); 0 when not text.
    input_tokens: int
    load_seconds: float | None
    batch_seconds: list[float]

    def check(self, deep: bool = False) -> list[Any]:
        """The stage's own config checks as ConfigIssues (`deep`: those that import transformers)."""

    def use_cache(self, cache: Any, upstream_fingerprint: str) -> None:
        """Serve results from `cache`, keyed beside the fingerprint of the stages upstream."""

    def feature_sampling_rate(self) -> int | None:
        """The audio rate the model's feature extractor expects (audio stages resample to it)."""


class FieldStage(Stage):
    """A stage that computes one value per record from `field` and writes it to `output_field`
    (default: `field` itself). Every record's value is computed before any is written: a batch
    that fails part-way is retried record by record, and none may see its field replaced already."""

    def __init__(self, name: str, field: str, output_field: str | None):
        super().__init__(name)
        self.field, self.output_field = field, output_field or field
        self.reads, self.writes = (field,), (self.output_field,)

    def compute(self, record: Record) -> Any:
        """The new value for `record` (raise to fail it)."""
        raise NotImplementedError

    def process(self, records: list[Record]) -> list[Record]:
        values = [self.compute(record) for record in records]
        for record, value in zip(records, values):
            record[self.output_field] = value
        return records


class Source(Stage):
    """Yields records in input order, each with a stable `id`."""

    kind = "source"

    def iter_records(self) -> Iterator[Record | RecordFailure]:
        raise NotImplementedError

    def total(self) -> int | None:
        """How many records will come, when cheap to know (for the progress bar's ETA)."""
        return None

    def data_fingerprint(self) -> dict[str, Any]:
        """What identifies the input data (a file hash, the inline records' hash, a dataset id)."""
        raise NotImplementedError


class Sink(Stage):
    """Receives finished records; the run folder writers are sinks."""

    kind = "sink"


def require_field(record: Record, field: str, stage: str) -> Any:
    """The value of `field`, or a KeyError that names the record, the field and what exists."""
    if field not in record:
        present = ", ".join(sorted(record)) or "none"
        raise KeyError(f"record {record.get('id')!r} has no field {field!r} (fields: {present}); stage {stage!r} reads it")
    return record[field]


def reworded(error: Exception, message: str) -> Exception:
    """`error`'s type with a message naming the record (ValueError where the type needs more), so
    errors.jsonl keeps the cause's kind (FileNotFoundError, ValueError) with a useful message."""
    try:
        return type(error)(message)
    except TypeError:
        return ValueError(message)
