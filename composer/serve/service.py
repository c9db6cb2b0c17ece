"""The served graph: the config planned once (its source only turns request bodies into
records), set up the way a run sets up, and rounds of records run through the stages after the
source with the unit every executor shares (executors.unit.run_records), so an answer is what
`composer run` writes for the same record."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from composer import runfacts
from composer.executors.unit import Outcome, run_records
from composer.plan import plan
from composer.records import Record, RecordFailure
from composer.stages.base import BatchedStage
from composer.stages.sources.base import RowSource


class ServeRefused(ValueError):
    """The config's graph cannot be served so that answers equal a run's outputs."""


class Service:
    """The stages of one config, planned at construction (no model loads) and loaded by set_up."""

    def __init__(self, config: dict[str, Any], run_dir: Path):
        self.config = config
        self.graph = plan(config, run_dir=str(run_dir), deep=True)
        source = self.graph.source
        if not isinstance(source, RowSource):
            raise ServeRefused(f"input.type={config['input'].get('type')} does not make records from rows, so bodies cannot become its records")
        stateful = [stage.name for stage in self.graph.stages() if stage.restores_state]
        if stateful:
            raise ServeRefused(f"stage {stateful[0]!r} compares each record with the records before it, so an answer would depend "
                               "on what other callers sent: remove it from the config to serve it")
        self.source: RowSource = source
        self.stages = self.graph.stages()[1:]  # the transforms, the models and the outputs sink
        self._workers: ThreadPoolExecutor | None = None
        # cache=on serves model outputs from the result cache as a run does (same keys, so a
        # server and the runs and sweeps before it share entries); a model then loads at its
        # first miss.
        self.cache = self.graph.attach_cache(config["cache"])

    def set_up(self) -> dict[str, Any]:
        """What a run's set-up does before its first window (runtime.set_up_stages: seeds,
        threads, every stage after the source set up, the models loaded), and the model workers'
        threads. Returns the facts for the manifest."""
        from composer.runtime import set_up_stages

        done = set_up_stages(self.config, self.stages, self.config["threads"])
        if self.width > 1:
            self._workers = ThreadPoolExecutor(self.width, thread_name_prefix="composer-model")
        return {"deterministic": done.deterministic, "device": runfacts.device_facts(), "allocator": done.allocator,
                "threads": done.threads, "setup_seconds": done.setup_seconds}

    @property
    def width(self) -> int:
        """Model batches run side by side (the model stages' workers, known after set_up)."""
        return max((s.workers for s in self.stages if isinstance(s, BatchedStage)), default=1)

    @property
    def round_size(self) -> int:
        """Records a round waits (serve.max_wait_ms) to gather: one batch (batch_size;
        batch_size=auto: the largest size its probe tries) per model worker. Records already
        waiting join a round up to the graph's window (Batcher)."""
        return self.graph.batch * self.width

    def media_fields(self) -> dict[str, bool]:
        """The source fields read as media (an image or audio file): {field: bare base64 allowed}.
        A load stage with source=base64 decodes any string; elsewhere a string is a path, a URL or
        a data: URI, and a server reads no path of its own for a caller."""
        from composer.stages.audio import LoadAudio
        from composer.stages.vision import LoadImage
        from composer.tasks import task_table

        fields: dict[str, bool] = {}
        for stage in self.stages:
            if isinstance(stage, (LoadImage, LoadAudio)):
                fields[stage.field] = stage.source == "base64"
        table = task_table()
        for stage in self.graph.model_stages():
            info = table.tasks.get(table.canonical(stage.task) or "")
            if info is not None and info.modality != "text":
                inputs = stage.input_field.values() if isinstance(stage.input_field, dict) else [stage.input_field]
                for field in inputs:
                    fields.setdefault(field, False)
        return {field: bare for field, bare in fields.items() if field in self.source.writes}

    def make_records(self, rows: list[tuple[str, Any]]) -> list[Record | RecordFailure]:
        """Each (position, row) as the run's source makes a record of it: the same id (the given
        id_field, or the same content hash), fields and checks; duplicates within the list as a run
        sees them within a file."""
        seen: dict[str, int] = {}
        return [self.source.record_from_row(position, row, seen) for position, row in rows]

    def run(self, records: list[Record]) -> Outcome:
        """One round through the stages after the source (the outputs sink among them, which
        appends the survivors to outputs.jsonl); each failure is its record's alone."""
        return run_records(self.stages, records, workers=self._workers)

    def stage_facts(self) -> dict[str, dict[str, Any]]:
        return {node.stage.name: {"kind": node.stage.kind, "type": type(node.stage).__name__, "inputs": node.inputs,
                                  "reads": list(node.stage.reads), "writes": list(node.stage.writes),
                                  "fingerprint": node.stage.fingerprint(), **node.stage.describe()}
                for node in self.graph.nodes}

    def close(self) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
        for stage in self.graph.stages():
            stage.close()
        if self.cache is not None:
            self.cache.close()
