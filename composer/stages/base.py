"""The stage contract shared by sources, transforms, model stages and sinks.

Constructors only store configuration and work out which record fields the stage reads and
writes, so the whole graph can be built and checked (`composer plan`) without loading anything
heavy; `setup()` does the loading.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

from composer.records import Record, RecordFailure, canonical_json


class Stage:
    """One job in the graph. Subclasses set `reads`/`writes` in `__init__` and implement process."""

    kind: ClassVar[str] = "transform"

    def __init__(self, name: str, params: dict[str, Any]):
        self.name = name
        self.params = params
        self.reads: tuple[str, ...] = ()
        self.writes: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        """A hash of exactly what changes this stage's output: its type and parameters."""
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

    def close(self) -> None:
        """Release resources; called once at the end of the run, even after a failure."""


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
