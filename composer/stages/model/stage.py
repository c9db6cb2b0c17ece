"""The model stage: one real `transformers.pipeline`, fed batches of records.

Each record's output equals what `pipeline(input)` returns for that input alone: the batch goes
through the pipeline as one list (so the pipeline batches it with `batch_size`), and the one
shape difference transformers has between single and list calls is mirrored (outputs.py).

The stage is the part the executor and the run see (check, setup, plan_batches, prepare,
process, describe, fingerprint, close, whether workers may share the model); it owns one
collaborator per job, none of which knows the stage: ModelLoader (loading.py: the model found,
loaded, where it lands), BatchPlanner and TokenCounter (batching.py), PreparedRunner
(prepared.py: transformers' private pipeline internals) and OutputShaper (outputs.py). Each
is handed what it needs per call (the loaded pipeline, the worker count), so state the run or
a test sets on the stage (`pipe`, `workers`) is never copied. The result cache stays here: it
decides whether the model runs at all.
"""

from __future__ import annotations

import threading
import time
from dataclasses import asdict
from typing import Any

from composer.records import Record, to_jsonable
from composer.schema import ModelConfig, QuantizationConfig
from composer.stages.base import Stage, require_field
from composer.stages.model.batching import SORTED_TASKS, BatchPlanner, ModelAccess, TokenCounter
from composer.stages.model.loading import ModelLoader, padding_changes_outputs
from composer.stages.model.outputs import OutputShaper
from composer.stages.model.prepared import PREPARED_TASKS, PreparedRunner, token_length
from composer.stages.model.sentence import SentenceSettings, read_sentence_settings
from composer.stages.pooling import pool


class PipelineStage(Stage):
    """Runs a transformers pipeline task over a field (or a mapping of fields) of each record."""

    kind = "model"
    PROBE_SIZES = BatchPlanner.PROBE_SIZES
    output_neutral = frozenset({"batch_size", "sort_by_length", "max_batch_tokens", "onednn_linear"})

    def __init__(
        self,
        name: str,
        *,
        task: str,
        model: dict | None = None,
        quantization: dict | None = None,
        pipeline: dict | None = None,
        call: dict | None = None,
        input_field: str | dict = "text",
        output_field: str = "prediction",
        batch_size: int | str = 8,
        sort_by_length: bool | None = None,
        max_batch_tokens: int | None = None,
        onednn_linear: bool = True,
        pooling: dict | None = None,
    ):
        # A stage configured with part of a model mapping (a second model stage, a test) gets the
        # rest from the schema's defaults.
        model = {**asdict(ModelConfig()), **(model or {})}
        quantization = {**asdict(QuantizationConfig()), **(quantization or {})}
        super().__init__(name)
        self.task, self.model_config, self.quantization = task, model, quantization
        self.build_params, self.call_params = dict(pipeline or {}), dict(call or {})
        # What each pipeline call gets. Feature extraction hands back tensors rather than the
        # nested lists it would build: the same numbers, made JSON in one C call (records.py)
        # instead of a Python walk over every float, which cost more than the model.
        self.call_kwargs = dict(self.call_params)
        if task == "feature-extraction":
            self.call_kwargs.setdefault("return_tensors", True)
        self.input_field, self.output_field = input_field, output_field
        # Feature extraction whose token states only a pooling stage reads: that stage's pooling
        # ({mode, normalize}, composer.stages.pooling) done here, on each record's states while
        # they are still the batch's tensors, so one vector per record leaves the stage rather
        # than tokens x hidden floats as JSON lists (plan._pool_in_model decides).
        self.pooling = dict(pooling) if pooling else None
        if self.pooling is not None and task != "feature-extraction":
            raise ValueError(f"pooling is for feature-extraction output, not {task!r}")
        # What the model's sentence-transformers files say (read at setup; sentence.py) and the
        # truncation in force for feature extraction (model.max_seq_length, else the model's own).
        self.sentence: SentenceSettings | None = None
        self.max_seq_length: dict[str, Any] | None = None
        self.reads = tuple(input_field.values()) if isinstance(input_field, dict) else (input_field,)
        self.writes = (output_field,)
        # Batching never changes outputs (output_neutral: not in the fingerprint).
        self.planner = BatchPlanner(batch_size, task in SORTED_TASKS if sort_by_length is None else bool(sort_by_length), max_batch_tokens)
        # Like batching, oneDNN linear layers change outputs only in float rounding (output_neutral).
        self.loader = ModelLoader(task, model, quantization, self.build_params, bool(onednn_linear))
        self.runner = PreparedRunner(task, self.call_kwargs)
        self.shaper = OutputShaper(task, self.call_params)
        # Input tokens per record id, measured by the model's own tokenizer (ahead, for batching,
        # or in process()); summed into input_tokens for tokens/s in metrics.json.
        self.tokens = TokenCounter()
        self.input_tokens = 0
        self.pipe: Any = None
        self.checked: list[str] = []  # what check() verified, for `composer plan`
        self.batch_seconds: list[float] = []
        self.cache: Any = None
        self.upstream_fingerprint = ""
        self.cache_hits = self.cache_misses = 0
        # Batches run side by side (runtime.split_threads sets it); each worker thread calls its
        # own shallow copy of the pipeline (own tokenizer), the model's weights are shared.
        self.workers = 1
        self._lock = threading.RLock()  # a first cache miss loading the model, counters

    # What the executor, the run and the manifest read, kept by the collaborators that decide it.
    @property
    def batch_size(self) -> int | None:
        """Records per batch; None until batch_size=auto's probe chose."""
        return self.planner.batch_size

    @property
    def sorts_by_length(self) -> bool:
        """Whether a window is ordered by input length before batching."""
        return self.planner.sorts_by_length

    @property
    def wants_lengths(self) -> bool:
        """Whether plan_batches uses input lengths (the executor measures them ahead)."""
        return self.planner.wants_lengths

    @property
    def batch_choice(self) -> dict[str, Any] | None:
        """How batch_size=auto chose (None before it did)."""
        return self.planner.batch_choice

    @property
    def one_record_because(self) -> str | None:
        """Why every batch holds one record (None while the stage batches)."""
        return self.planner.one_record_because

    @property
    def resolved(self) -> Any:
        """Where the model comes from (a ResolvedModel; None until found)."""
        return self.loader.resolved

    @property
    def load_seconds(self) -> float | None:
        """How long loading took (None: not loaded)."""
        return self.loader.load_seconds

    def check(self, deep: bool = False) -> list:
        """Checks that load no weights, run by `plan` before anything is built: task parameters
        (read from transformers' source) and that the model can be found (not hashed); `deep`
        adds what imports transformers (the quantization backend and its arguments) and pins
        the model (hashing a local folder, building a tiny one), as every run does. Each check
        that passed is described in `self.checked` (`composer plan` lists them)."""
        issues, self.checked = self.loader.check(deep, "" if self.name == "model" else f"stages.{self.name}.", self.call_params)
        return issues

    def input_lengths(self, records: list[Record]) -> dict[str, int]:
        """Each record's model input length in tokens (by id), for ordering and token budgets.
        Safe to call from the prefetch thread (TokenCounter has its own tokenizer copy); with the
        model not loaded yet (the result cache) the tokenizer is read from the model's files."""
        if not self.tokens.started:
            self._start_counting()
        # A field not written yet raises: the executor measures it later.
        return self.tokens.lengths([(str(record["id"]), self._model_input(record)) for record in records])

    def _start_counting(self) -> None:
        self.tokens.start(getattr(self.pipe, "tokenizer", None) if self.pipe is not None else self.loader.tokenizer_without_model(),
                          None if self.max_seq_length is None else self.max_seq_length["tokens"])

    def plan_batches(self, records: list[Record], lengths: dict[str, int] | None = None) -> Any:
        """The batches (lists of indices into `records`) this window runs in (BatchPlanner.plan):
        a generator whose first items, with batch_size=auto, are the probe's rounds."""
        access = ModelAccess(self.workers, self.input_lengths, self._model_input, lambda: self.pipe, self._load_once,
                             self.call_kwargs, self._cache_lacks if self.cache is not None else None)
        yield from self.planner.plan(records, lengths, access)

    def prepare(self, records: list[Record]) -> dict[str, int]:
        """Run the pipeline's own preprocess (the tokenizer) for these records now, from the
        prefetch thread while the model works on the previous window; process() then feeds the
        results to the pipeline's own collate (or RowCollator, checked equal to it), forward
        and postprocess, so outputs are those of `pipe(inputs)`. Returns the records' lengths.
        Only for PREPARED_TASKS, whose `__call__` hands a list straight to the generic pipeline
        loop; others are tokenized in process()."""
        if not self._prepares_ahead():
            return self.input_lengths(records)
        lengths = self.runner.prepare(self.pipe, self.workers, records, self._model_input)
        for key, length in lengths.items():
            self.tokens.keep(key, length)
        missing = [r for r in records if str(r["id"]) not in lengths]
        if missing:
            lengths.update(self.input_lengths(missing))
        return lengths

    def use_cache(self, cache: Any, upstream_fingerprint: str) -> None:
        """Serve outputs from a ResultCache; the model then loads only on the first miss."""
        self.cache, self.upstream_fingerprint = cache, upstream_fingerprint

    def setup(self) -> None:
        if self.task == "feature-extraction":
            self._use_sentence_settings()
        if self.cache is None:
            self._load()
        # The tokenizer copies the prefetch thread uses are made here, on the main thread,
        # before that thread starts, rather than lazily by whichever thread gets there first.
        if self.wants_lengths:
            self._start_counting()
        if self._prepares_ahead():
            self.runner.start(self.pipe, self.workers)

    def _use_sentence_settings(self) -> None:
        """Read the model's sentence-transformers settings and truncate feature-extraction inputs
        where they (or model.max_seq_length) say, unless the call's own tokenize_kwargs set a
        max_length: all before anything is tokenized."""
        resolved = self.loader.resolved_model()
        self.sentence = read_sentence_settings(resolved.load_from, resolved.revision if resolved.source == "hub" else None)
        asked = (self.call_params.get("tokenize_kwargs") or {}).get("max_length")
        if asked is not None:
            self.max_seq_length = {"tokens": asked, "from": "call.tokenize_kwargs.max_length"}
        elif self.model_config.get("max_seq_length") is not None:
            self.max_seq_length = {"tokens": self.model_config["max_seq_length"], "from": "model.max_seq_length"}
        elif self.sentence is not None and self.sentence.max_seq_length is not None:
            self.max_seq_length = {"tokens": self.sentence.max_seq_length, "from": "sentence_bert_config.json"}
        if self.max_seq_length is not None and asked is None:
            tokenize = dict(self.call_params.get("tokenize_kwargs") or {})
            self.call_kwargs["tokenize_kwargs"] = {"truncation": True, **tokenize, "max_length": self.max_seq_length["tokens"]}
        self._warn_pooling_differs()

    def _warn_pooling_differs(self) -> None:
        """Say when the pooling asked for is not the one the model was trained with."""
        theirs = self.sentence.pooling if self.sentence is not None else None
        if self.pooling is not None and theirs is not None and theirs != self.pooling["mode"]:
            import logging

            logging.getLogger("composer.model").warning(
                "%s: the model's sentence-transformers pooling is %r, this job pools %r: its vectors differ from the "
                "model's own (set the pooling stage's mode to match)", self.name, theirs, self.pooling["mode"])

    def _prepares_ahead(self) -> bool:
        """Whether prepare() tokenizes ahead: a loaded PREPARED_TASKS pipeline without the result
        cache (with it, process() looks outputs up by input and runs the misses). Prepared inputs
        run in the stage's batches, one record each once one_record_because is set."""
        return self.pipe is not None and self.cache is None and self.task in PREPARED_TASKS

    def _load_once(self) -> None:
        """Load the model unless loaded: the result cache loads it lazily, at the first miss,
        and two workers missing at once must load it once."""
        if self.pipe is None:
            with self._lock:
                if self.pipe is None:
                    self._load()

    def _load(self) -> None:
        self.pipe = self.loader.load()
        if padding_changes_outputs(self.pipe) and self.batch_size != 1:
            self.one_record_at_a_time("the feature extractor pads without an attention mask, so a record's output "
                                      "would depend on its batch-mates' lengths")

    def _model_input(self, record: Record) -> Any:
        if isinstance(self.input_field, dict):
            return {arg: require_field(record, field, self.name) for arg, field in self.input_field.items()}
        return require_field(record, self.input_field, self.name)

    def _count_input_tokens(self, records: list[Record]) -> None:
        """Add these records' input tokens to input_tokens: the lengths the tokenizer measured
        ahead for batching, else counted now (text inputs only; images and audio have none).
        Called once a batch succeeded, so records retried one by one are counted once."""
        missing = [record for record in records if str(record["id"]) not in self.tokens]
        if missing:
            self.input_lengths(missing)
        counted = self.tokens.take([str(record["id"]) for record in records])
        with self._lock:
            self.input_tokens += counted

    def process(self, records: list[Record]) -> list[Record]:
        if len(records) > 1:
            self.planner.batch_tried()
        prepared = self.runner.take([str(record["id"]) for record in records])
        inputs = [self._model_input(record) for record in records]
        if self.cache is None:
            outputs = self._predict(inputs, prepared)
        else:
            outputs = self._predict_cached(inputs)
        for record, output in zip(records, outputs):
            record[self.output_field] = output
        self._count_input_tokens(records)  # after success: a failed batch is retried record by record
        return records

    def _cache_keys(self, inputs: list[Any]) -> list[str]:
        from composer.cache import record_key

        fingerprint = self.fingerprint()
        return [record_key(fingerprint, self.upstream_fingerprint, to_jsonable(i)) for i in inputs]

    def _cache_lacks(self, inputs: list[Any]) -> list[bool]:
        """Per input, whether the result cache lacks its output (batch_size=auto times only those)."""
        keys = self._cache_keys(inputs)
        present = self.cache.present(keys)
        return [key not in present for key in keys]

    def _predict_cached(self, inputs: list[Any]) -> list[Any]:
        keys = self._cache_keys(inputs)
        found = self.cache.get_many(keys)
        todo = [index for index, key in enumerate(keys) if key not in found]
        if todo:
            self._load_once()
            fresh = self._predict([inputs[index] for index in todo])
            self.cache.put_many({keys[index]: output for index, output in zip(todo, fresh)})
            found.update({keys[index]: output for index, output in zip(todo, fresh)})
        # Counted once the batch succeeded: a failed batch is retried record by record.
        with self._lock:
            self.cache_hits += len(keys) - len(todo)
            self.cache_misses += len(todo)
        return [found[key] for key in keys]

    def _predict(self, inputs: list[Any], prepared: list[Any] | None = None) -> list[Any]:
        """Outputs for these inputs, each equal to the pipeline's single-input result (JSON-clean)."""
        started = time.perf_counter()
        pipe = self.runner.thread_pipe(self.pipe, self.workers)
        # The input prepared ahead is the one to run (a {text, text_pair} input is rebuilt per
        # call, hence equality and not only identity).
        if prepared and all(p is not None and (p[0] is i or p[0] == i) for p, i in zip(prepared, inputs)):
            # Tokenized ahead: the pipeline's own loop from collate on (PreparedRunner.run), in
            # batches of self.batch_size (one record each once the stage runs records alone).
            outputs = self.runner.run(pipe, [p[1] for p in prepared], self.batch_size)
            outputs = self.shaper.as_single_calls(inputs, outputs, [token_length(p[1]) for p in prepared], pipe, self.runner.token_count)
        elif len(inputs) == 1 or self.one_record_because is not None:
            # A one-item list comes back unwrapped from some pipelines (fill-mask); a single
            # call is unambiguous and is exactly the reference result. Batches planned before
            # the stage learnt it must run records alone (a lazy load, another worker's failed
            # batch) run here record by record.
            outputs = [pipe(model_input, **self.call_kwargs) for model_input in inputs]
        else:
            outputs = pipe(inputs, batch_size=self.batch_size or len(inputs), **self.call_kwargs)
            outputs = self.shaper.as_single_calls(inputs, outputs, [None] * len(inputs), pipe, self.runner.token_count)
        if self.pooling is not None:
            outputs = [pool(output, **self.pooling) for output in outputs]
        self.batch_seconds.append(time.perf_counter() - started)
        return [to_jsonable(output) for output in outputs]

    def one_record_at_a_time(self, reason: str) -> None:
        """From now on every batch holds one record (the first reason given is the one kept)."""
        self.planner.one_record_at_a_time(reason)

    def batch_failed_alone_ok(self, size: int, error_type: type, message: str) -> None:
        """A batch failed while each of its records then ran alone: BatchPlanner.batch_failed_alone_ok."""
        self.planner.batch_failed_alone_ok(size, error_type, message)

    def configured_blocker(self) -> str | None:
        """Why the config alone says this stage's batches must run one at a time (checked at
        plan time, without torch), or None."""
        return self.loader.configured_blocker()

    def concurrency_blocker(self) -> str | None:
        """Why this stage's batches must run one at a time, or None when workers may share it:
        the config's reasons, or a model that landed on a GPU by default."""
        return self.loader.concurrency_blocker(self.pipe)

    def feature_sampling_rate(self) -> int | None:
        """The audio rate the model's feature extractor expects (audio stages resample to it)."""
        return self.loader.sampling_rate(self.pipe)

    def plan_note(self) -> str | None:
        if self.pooling is None:
            return None
        normalized = ", normalized" if self.pooling.get("normalize") else ""
        return f"pools each record's token states here: {self.pooling['mode']}{normalized}, one vector per record"

    def describe(self) -> dict[str, Any]:
        facts: dict[str, Any] = {"task": self.task, **self.loader.facts(), "batching": self.planner.facts(self.workers)}
        if self.task == "feature-extraction":
            facts["sentence_transformers"] = None if self.sentence is None else self.sentence.to_json()
            facts["max_seq_length"] = self.max_seq_length  # null: the tokenizer's own limit, as pipeline()
            facts["pooling"] = self.pooling  # null: token states leave the stage
        if self.cache is not None:
            facts["cache"] = {"path": str(self.cache.path), "hits": self.cache_hits, "misses": self.cache_misses}
        if self.pipe is not None:
            facts.update(self.loader.pipeline_facts(self.pipe))
        return facts

    def fingerprint(self) -> str:
        """Config, plus what pins the weights: the hub revision sha or the local content hash."""
        import hashlib

        from composer.records import canonical_json

        resolved = self.resolved
        pinned = None if resolved is None else [resolved.requested, resolved.revision, resolved.content_sha256]
        payload = canonical_json({"stage": super().fingerprint(), "weights": pinned})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def close(self) -> None:
        self.runner.clear()
        self.tokens.clear()  # records that failed were measured but never counted
        if self.pipe is not None:
            self.loader.release(self.pipe)
        self.pipe = None
