"""Sinks: where finished records go."""

from __future__ import annotations

from pathlib import Path

from composer.records import Record
from composer.runstore import OUTPUTS, JsonlAppender
from composer.stages.base import Sink


class OutputsSink(Sink):
    """Appends each finished record to the run folder's outputs.jsonl, in input order."""

    output_neutral = frozenset({"run_dir"})  # where outputs go, not what they are

    def __init__(self, name: str, *, run_dir: str | None = None):
        super().__init__(name)
        self.run_dir = run_dir
        self._writer: JsonlAppender | None = None

    def setup(self) -> None:
        if self.run_dir is None:
            raise RuntimeError("the outputs sink needs the run folder")
        self._writer = JsonlAppender(Path(self.run_dir) / OUTPUTS)

    def process(self, records: list[Record]) -> list[Record]:
        assert self._writer is not None
        self._writer.write_many(records)
        return records

    def describe(self) -> dict:
        return {"records_written": self._writer.count if self._writer else 0}

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
