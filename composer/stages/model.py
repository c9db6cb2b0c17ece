"""The model stage: one real `transformers.pipeline`, fed batches of records.

Each record's output equals what `pipeline(input)` returns for that input alone: the batch goes
through the pipeline as one list (so the pipeline batches it with `batch_size`), and the one
shape difference transformers has between single and list calls is mirrored.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from composer import modelpool
from composer.records import Record, to_jsonable
from composer.stages.base import Stage, require_field
from composer.stages.preparer import Preparer, RowCollator, TokenRow, model_input


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_only_weights(folder: str) -> list[str]:
    """Weight files that need pickle, when a local model folder has no safetensors at all."""
    root = Path(folder)
    if not root.is_dir() or any(root.glob("*.safetensors")):
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix in _PICKLE_SUFFIXES and "training_args" not in p.name)


# Tasks whose record outputs do not depend on their batch-mates (padding is masked, and each
# record's result is cut to its own tokens), so ordering a window by length before batching is
# safe and on by default (sort_window=auto). Generation is left in input order: sampled or
# left-padded generation can differ with batch composition.
SORTED_TASKS = frozenset({
    "text-classification", "token-classification", "feature-extraction", "fill-mask",
    "zero-shot-classification", "question-answering",
})


# Tasks whose batches may run side by side on threads sharing one model (workers > 1): a
# record's output depends neither on its batch-mates nor on random numbers drawn in call order.
CONCURRENT_TASKS = SORTED_TASKS | {"image-classification", "audio-classification"}


# Tasks whose preprocess can run ahead in the prefetch thread (PipelineStage.prepare): their
# pipeline `__call__` hands a list straight to the generic loop, or (the chunk pipelines,
# whose preprocess yields several model inputs per record) only parses arguments that a plain
# string input does not need.
PREPARED_TASKS = frozenset({"text-classification", "feature-extraction", "fill-mask", "token-classification",
                            "zero-shot-classification"})


# Tasks whose preprocess of a plain string is `tokenizer(text, return_tensors="pt", **params)`:
# prepare() tokenizes a window's strings in one call (one trip into the Rust tokenizer instead
# of one per record) and checks the result against the pipeline's own preprocess (Preparer).
TOKENIZED_TOGETHER_TASKS = frozenset({"text-classification", "feature-extraction"})


def _accelerator_blocker(device: Any) -> str | None:
    """Why a model on `device` runs one batch at a time (None on CPU)."""
    return None if str(device) in ("cpu", "-1") else f"the model runs on {device}; one batch at a time keeps the accelerator busy"


def _one_line(error_type: type, message: str) -> str:
    """An error as one line of at most 300 characters, for the manifest's batching notes."""
    return " ".join(f"{error_type.__name__}: {message}".split())[:300]


def _token_length(prepared: Any) -> int | None:
    """The token count of an input the pipeline's preprocess already tokenized, if it has one."""
    if isinstance(prepared, TokenRow):
        return prepared.length
    input_ids = prepared.get("input_ids") if hasattr(prepared, "get") else None
    return int(input_ids.shape[-1]) if input_ids is not None and hasattr(input_ids, "shape") else None


class PipelineStage(Stage):
    """Runs a transformers pipeline task over a field (or a mapping of fields) of each record."""

    kind = "model"

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
    ):
        model = {"id": None, "revision": None, "dtype": "auto", "device": None, "device_map": None,
                 "trust_remote_code": False, "tokenizer": None, "model_kwargs": {}, **(model or {})}
        quantization = {"backend": "none", "params": {}, **(quantization or {})}
        super().__init__(
            name,
            {"task": task, "model": model, "quantization": quantization, "pipeline": dict(pipeline or {}),
             "call": dict(call or {}), "input_field": input_field, "output_field": output_field},
        )
        self.task, self.model_config, self.quantization = task, model, quantization
        self.build_params, self.call_params = dict(pipeline or {}), dict(call or {})
        # What each pipeline call gets. Feature extraction hands back tensors rather than the
        # nested lists it would build: the same numbers, made JSON in one C call (records.py)
        # instead of a Python walk over every float, which cost more than the model.
        self.call_kwargs = dict(self.call_params)
        if task == "feature-extraction":
            self.call_kwargs.setdefault("return_tensors", True)
        self.input_field, self.output_field = input_field, output_field
        # Batching never changes outputs, so none of it is in the params (the fingerprint):
        # batch_size=auto is chosen on the first window (self.batch_size stays None till then).
        self.requested_batch_size = batch_size
        self.batch_size: int | None = None if batch_size == "auto" else int(batch_size)
        self.sorts_by_length = task in SORTED_TASKS if sort_by_length is None else bool(sort_by_length)
        self.max_batch_tokens = max_batch_tokens
        # Like batching, oneDNN linear layers change outputs only in float rounding: not in the fingerprint.
        self.onednn_linear = bool(onednn_linear)
        self.batch_choice: dict[str, Any] | None = None
        # Why this stage runs one record per batch although batch_size says more (None while it
        # batches): its model pads without an attention mask, or batches kept failing while each
        # of their records ran alone (batch_failed_alone_ok). Reported in the manifest.
        self.one_record_because: str | None = None
        self._batches_tried = 0  # process() calls with more than one record
        self._batches_failed_alone_ok = 0
        self._length_counter: Any = None
        # Pipeline preprocess outputs made ahead by the prefetch thread: record id -> (input, item).
        self._prepared: dict[str, tuple[Any, Any]] = {}
        # Input tokens per record id, measured by the model's own tokenizer (ahead, for batching,
        # or in process()); summed into input_tokens for tokens/s in metrics.json.
        self._token_counts: dict[str, int] = {}
        self._counts_tokens = False
        self.input_tokens = 0
        self._preparer: Preparer | None = None
        self._collator = RowCollator()
        self.reads = tuple(input_field.values()) if isinstance(input_field, dict) else (input_field,)
        self.writes = (output_field,)
        self.pipe: Any = None
        self.resolved: Any = None
        self.checked: list[str] = []  # what check() verified, for `composer plan`
        self.quantization_object: Any = None
        self.load_seconds: float | None = None
        self.batch_seconds: list[float] = []
        self.cache: Any = None
        self.upstream_fingerprint = ""
        self.cache_hits = self.cache_misses = 0
        self.pool_key: str | None = None
        self.reused = False
        # Batches run side by side (runtime.split_threads sets it); each worker thread calls its
        # own shallow copy of the pipeline (own tokenizer), the model's weights are shared.
        self.workers = 1
        self._per_thread = threading.local()
        self._lock = threading.RLock()  # a first cache miss loading the model (which may set one_record_because), counters

    def check(self, deep: bool = False) -> list:
        """Checks that load no weights, run by `plan` before anything is built: task parameters
        (read from transformers' source) and that the model can be found (not hashed); `deep`
        adds what imports transformers (the quantization backend and its arguments) and pins
        the model (hashing a local folder, building a tiny one), as every run does. Each check
        that passed is described in `self.checked` (`composer plan` lists them)."""
        from composer.runtime import ModelUnavailable, check_quantization_backend, resolve_model
        from composer.schema import ConfigIssue
        from composer.taskparams import check_task_params

        prefix = self._key_prefix()
        self.checked = []
        issues = check_task_params(self.task, self.build_params, self.call_params, (f"{prefix}pipeline", f"{prefix}call"))
        if not issues and (self.build_params or self.call_params):
            names = [f"{prefix}pipeline.{n}" for n in self.build_params] + [f"{prefix}call.{n}" for n in self.call_params]
            self.checked.append(f"{', '.join(names)}: accepted by the {self.task} pipeline")
        if deep:
            found = check_quantization_backend(self.quantization, f"{prefix}quantization")
            if not found and self.quantization.get("backend", "none") != "none":
                self.checked.append(f"quantization {self.quantization['backend']}: backend installed, arguments accepted")
            issues += found
        try:
            model = self.model_config
            resolved = (self._resolved_model() if deep else
                        resolve_model(model["id"], model["revision"], self.task, model.get("fallback"), fingerprint=False))
        except ModelUnavailable as error:
            issues.append(ConfigIssue(f"{prefix}model.id", str(error)))
            return issues
        pinned = f", sha256 {resolved.content_sha256[:12]}" if resolved.content_sha256 else ""
        pinned += f", revision {resolved.revision}" if resolved.revision else ""
        self.checked.append(f"{prefix}model.id {resolved.requested or 'null (the task default)'}: found ({resolved.source}: "
                            f"{resolved.load_from}{pinned})" + (f"; {resolved.note}" if resolved.note else ""))
        if not self.model_config.get("allow_pickle"):
            pickled = pickle_only_weights(resolved.load_from)
            if pickled:
                issues.append(ConfigIssue(
                    f"{prefix}model.id",
                    f"{resolved.load_from} has only pickle-based weights ({', '.join(pickled)}), and loading "
                    f"pickle can run arbitrary code; convert them to safetensors or set {prefix}model.allow_pickle=true",
                ))
        return issues

    @property
    def wants_lengths(self) -> bool:
        """Whether plan_batches uses input lengths (the graph measures them ahead)."""
        return self.sorts_by_length or self.max_batch_tokens is not None or self.batch_size is None

    def input_lengths(self, records: list[Record]) -> dict[str, int]:
        """Each record's model input length in tokens (by id), for ordering and token budgets.

        Safe to call from the prefetch thread: it uses its own copy of the fast tokenizer (a
        transformers tokenizer shared across threads fails with "Already borrowed"). Lengths
        only decide batching, never outputs, so without a fast tokenizer (or with the model not
        loaded yet, as with the result cache) a character count stands in for them.
        """
        counter = self._length_counter or self._make_length_counter()
        texts: list[str] = []
        owners: list[str] = []
        lengths: dict[str, int] = {}
        for record in records:
            key = str(record["id"])
            value = self._model_input(record)  # a field not written yet raises: the graph measures it later
            parts = [value] if isinstance(value, str) else [v for v in value.values() if isinstance(v, str)] if isinstance(value, dict) else []
            lengths[key] = 0 if parts else 1
            texts += parts
            owners += [key] * len(parts)
        try:
            counts = counter(texts) if texts else []
            estimated: set[str] = set()
        except Exception:  # noqa: BLE001 - one text the tokenizer refuses (a lone surrogate) must not fail the window
            counts, estimated = self._count_one_by_one(counter, texts, owners)
        for key, count in zip(owners, counts):
            lengths[key] += count
        if self._counts_tokens:
            self._token_counts.update((key, lengths[key]) for key in set(owners) - estimated)
        return lengths

    @staticmethod
    def _count_one_by_one(counter: Any, texts: list[str], owners: list[str]) -> tuple[list[int], set[str]]:
        """Token counts text by text, after the window's batch call failed: a text the tokenizer
        refuses gets a character estimate (it only orders batches; the record then fails in
        process(), alone); its record is returned among the estimated (no token count kept)."""
        counts: list[int] = []
        estimated: set[str] = set()
        for text, key in zip(texts, owners):
            try:
                counts += counter([text])
            except Exception:  # noqa: BLE001 - see above
                counts.append(max(1, len(text) // 4))
                estimated.add(key)
        return counts, estimated

    def _tokenizer_without_model(self) -> Any:
        """The model's tokenizer, read from its files when the weights are not loaded (the result
        cache may never load them), so lengths and token counts are the tokenizer's own; None for
        models without one (images, audio) or when it cannot be read."""
        from transformers import AutoTokenizer

        if self.resolved is None:
            return None
        try:
            return AutoTokenizer.from_pretrained(self.model_config["tokenizer"] or self.resolved.load_from, **self._revision_kwargs())
        except Exception:  # noqa: BLE001 - no tokenizer: a character count stands in for lengths
            return None

    def _make_length_counter(self) -> Any:
        tokenizer = getattr(self.pipe, "tokenizer", None) if self.pipe is not None else self._tokenizer_without_model()
        backend = getattr(tokenizer, "backend_tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        limit = limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None
        self._counts_tokens = backend is not None
        if backend is None:
            self._length_counter = lambda texts: [max(1, len(t) // 4) for t in texts]
            return self._length_counter
        from tokenizers import Tokenizer

        own = Tokenizer.from_str(backend.to_str())
        own.no_padding()
        own.no_truncation()

        def count(texts: list[str]) -> list[int]:
            sizes = [len(e.ids) for e in own.encode_batch(texts)]
            return [min(n, limit) for n in sizes] if limit else sizes

        self._length_counter = count
        return count

    def plan_batches(self, records: list[Record], lengths: dict[str, int] | None = None) -> Any:
        """The batches (lists of indices into `records`) this window runs in: by length,
        longest first, when sorting; at most batch_size records and, with max_batch_tokens, at
        most that many padded tokens (longest x count) each. A generator: with batch_size=auto
        the first window's first items are the probe's rounds (tuples of batches, run side by
        side and finished before the next item), and the rest use the size it chose."""
        if not self.wants_lengths:
            start = 0
            while start < len(records):  # the size is read per batch: one_record_at_a_time may change it
                end = min(start + (self.batch_size or len(records)), len(records))
                yield [*range(start, end)]
                start = end
            return
        if lengths is None or any(str(r["id"]) not in lengths for r in records):
            lengths = self.input_lengths(records)
        sizes = [lengths[str(r["id"])] for r in records]
        order = sorted(range(len(records)), key=lambda i: (-sizes[i], i)) if self.sorts_by_length else list(range(len(records)))
        if self.batch_size is None and self.one_record_because is None:
            order = yield from self._choose_batch_size(records, order, sizes)
        batch: list[int] = []
        longest = 0
        for index in order:
            grown = max(longest, sizes[index])
            full = len(batch) >= (self.batch_size or 8)
            over = self.max_batch_tokens is not None and grown * (len(batch) + 1) > self.max_batch_tokens
            if batch and (full or over):
                yield batch
                batch, grown = [], sizes[index]
            batch.append(index)
            longest = grown
        if batch:
            yield batch

    def prepare(self, records: list[Record]) -> dict[str, int]:
        """Run the pipeline's own preprocess (the tokenizer) for these records now, from the
        prefetch thread while the model works on the previous window; process() then feeds the
        results to the pipeline's own collate (or RowCollator, checked equal to it), forward
        and postprocess, so outputs are those of `pipe(inputs)`. Returns the records' lengths.
        Only for PREPARED_TASKS, whose `__call__` hands a list straight to the generic pipeline
        loop; others are tokenized in process()."""
        if not self._prepares_ahead():
            return self.input_lengths(records)
        preparer = self._preparer or self._make_preparer()
        chunked = self._chunked()
        values: dict[str, Any] = {}
        for record in records:
            try:
                value = self._model_input(record)
            except Exception:  # noqa: BLE001 - process() meets it again, in the record's own batch
                continue
            if not chunked or isinstance(value, str):  # the chunk pipeline's __call__ reshapes such input first
                values[str(record["id"])] = value
        lengths: dict[str, int] = {}
        for key, item in preparer.prepare(values).items():
            self._prepared[key] = (values[key], item)
            length = _token_length(item)
            if length is not None:
                lengths[key] = self._token_counts[key] = length
        missing = [r for r in records if str(r["id"]) not in lengths]
        if missing:
            lengths.update(self.input_lengths(missing))
        return lengths

    def _pipeline_params(self) -> tuple[dict, dict, dict]:
        """The preprocess/forward/postprocess parameters `pipe(inputs, **call)` would use. Read
        from this thread's pipeline: fill-mask's `targets` are looked up with its tokenizer."""
        pipe = self._thread_pipe()
        pre, forward, post = pipe._sanitize_parameters(**self.call_kwargs)
        return {**pipe._preprocess_params, **pre}, {**pipe._forward_params, **forward}, {**pipe._postprocess_params, **post}

    def _pipe_copy(self) -> Any:
        """A shallow copy of the pipeline with its own tokenizer, for another thread: a tokenizer
        shared between threads fails ("Already borrowed") when both change its padding or
        truncation state. The model, and so its weights, stay shared."""
        import copy

        clone = copy.copy(self.pipe)
        if getattr(self.pipe, "tokenizer", None) is not None:
            clone.tokenizer = copy.deepcopy(self.pipe.tokenizer)
        return clone

    def _chunked(self) -> bool:
        """Whether the pipeline is a ChunkPipeline (NER, zero-shot): its preprocess is a
        generator of model inputs (windows of a long text, one per candidate label)."""
        from transformers.pipelines.base import ChunkPipeline

        return isinstance(self.pipe, ChunkPipeline)

    def _make_preparer(self) -> Preparer:
        self._preparer = Preparer(self._pipe_copy(), self._pipeline_params()[0], self._chunked(),
                                   self.task in TOKENIZED_TOGETHER_TASKS)
        return self._preparer

    def _thread_pipe(self) -> Any:
        """The pipeline this thread calls: the stage's own with one worker, else a per-thread copy."""
        if self.workers <= 1:
            return self.pipe
        pipe = getattr(self._per_thread, "pipe", None)
        if pipe is None:
            pipe = self._per_thread.pipe = self._pipe_copy()
        return pipe

    def _run_prepared(self, items: list[Any]) -> list[Any]:
        """`pipe(inputs, batch_size=...)` for inputs already preprocessed: the pipeline's own
        iterator (collate, forward, unbatch, postprocess) with preprocess as the identity. A
        batch of rows tokenized together is collated by RowCollator (checked equal to the
        pipeline's collate) and then goes through the same forward, unbatch and postprocess."""
        runner = getattr(self._per_thread, "runner", None)
        if runner is None:
            import copy

            runner = self._per_thread.runner = copy.copy(self._thread_pipe())
            # A chunk pipeline iterates its preprocess: the prepared model inputs, in order.
            runner.preprocess = (lambda item, **_: iter(item)) if self._chunked() else (lambda item, **_: item)
        _, forward, post = self._pipeline_params()
        # At most the items given: get_iterator pads (and needs a pad token) for any size but 1.
        size = min(self.batch_size or len(items), len(items))
        if size == len(items) > 1 and runner.feature_extractor is None and runner.image_processor is None \
                and all(isinstance(item, TokenRow) for item in items):
            batch = self._collator.collate(items, runner.tokenizer)
            if batch is not None:
                from transformers.pipelines.pt_utils import PipelineIterator

                # get_iterator's own chain, with the collated batch in place of its DataLoader.
                outputs = PipelineIterator([batch], runner.forward, forward, loader_batch_size=size)
                return list(PipelineIterator(outputs, runner.postprocess, post))
        return list(runner.get_iterator([model_input(item) for item in items], 0, size, {}, forward, post))

    PROBE_SIZES = (4, 8, 16, 32, 64)

    def _choose_batch_size(self, records: list[Record], order: list[int], sizes: list[int]) -> Any:
        """batch_size=auto. On CUDA: the largest batch of this window's longest inputs that fits
        (accelerate's find_executable_batch_size). On CPU, memory is rarely the limit and bigger
        is not faster, so measure: run records of similar (median) length in batches of each
        candidate size, ascending, stopping once a size is clearly slower than the best, and
        keep the size with the best tokens/s. With several workers each candidate runs as a round
        of one batch per worker (a tuple the graph runs side by side and finishes before asking
        for more), so what is measured is the throughput the run will get. The probe batches are
        real work, not extra: their records are done. With the result cache only records it
        lacks are timed, and a window it serves wholly is not probed (the model may never load).
        Yields the probe rounds; returns the order of the records still to run."""
        uncached = order  # the records a probe may time: a cache hit would time a lookup
        if self.cache is not None:
            keys = self._cache_keys([self._model_input(records[i]) for i in order])
            present = self.cache.present(keys)
            uncached = [i for i, key in zip(order, keys) if key not in present]
            if not uncached:
                # Nothing to measure and no model to load: the first window with a miss probes (a
                # rerun of a grown input, say); until then the plan uses the default size.
                self.batch_choice = {"requested": "auto", "chosen": None, "method": "not probed: every record so far came from the result cache"}
                return order
            # The result cache loads the model at the first miss: load it now, so that the GPU
            # probe has it and the first CPU round does not time the load.
            self._load_once()
            if self.one_record_because is not None:
                return order  # the loaded model cannot batch (wav2vec2-style padding)
        device = str(getattr(self.pipe, "device", "cpu")) if self.pipe is not None else "cpu"
        if device.startswith("cuda"):
            self.batch_size = self._cuda_batch_size(self._model_input(records[max(order, key=sizes.__getitem__)]))
            return order
        middle_length = max(1, sizes[uncached[len(uncached) // 2]])
        candidates = [c for c in self.PROBE_SIZES if self.max_batch_tokens is None or c <= max(1, self.max_batch_tokens // middle_length)]
        # Within half of the window around its median length, so every candidate runs on
        # records of similar length (graph._window_for makes automatic windows big enough).
        while candidates and sum(candidates) * self.workers > len(uncached) // 2:
            candidates.pop()
        if len(candidates) < 2:
            self.batch_size = 8
            self.batch_choice = {"requested": "auto", "chosen": 8, "method": "default (window too small to probe)"}
            return order
        span = sum(candidates) * self.workers
        start = max(0, len(uncached) // 2 - span // 2)
        probe = uncached[start:start + span]
        measured: dict[int, float] = {}
        used: set[int] = set()
        cursor = 0
        for size in candidates:
            round_ = tuple(probe[cursor + k * size:cursor + (k + 1) * size] for k in range(self.workers))
            cursor += size * self.workers
            started = time.perf_counter()
            yield round_
            seconds = max(time.perf_counter() - started, 1e-9)
            used.update(i for batch in round_ for i in batch)
            measured[size] = sum(sizes[i] for batch in round_ for i in batch) / seconds
            if self.one_record_because is not None:
                return [i for i in order if i not in used]  # a probe batch showed these inputs cannot batch
            # Past the peak: a clearly slower size means bigger ones will not win either.
            if len(measured) >= 2 and measured[size] < 0.85 * max(measured.values()):
                break
        self.batch_size = max(measured, key=measured.__getitem__)
        self.batch_choice = {
            "requested": "auto", "chosen": self.batch_size,
            "method": "cpu: tokens/s measured per candidate on median-length records (one pass, stops past the peak)",
            "workers": self.workers,
            "tokens_per_second": {str(k): round(v, 1) for k, v in measured.items()},
        }
        return [i for i in order if i not in used]

    def _cuda_batch_size(self, longest: Any) -> int:
        """The largest batch of copies of the window's longest input that runs without running
        out of memory (from 256 down, shrinking after each out-of-memory error as accelerate's
        find_executable_batch_size does); the probe's outputs are thrown away. A failure other
        than out-of-memory: if the input runs alone, the pipeline cannot batch (a tokenizer
        without a pad token) and the stage runs one record per batch; if it fails alone too, its
        record fails in its own batch and the run keeps the default size."""
        from accelerate.utils import find_executable_batch_size

        tried: list[int] = []

        @find_executable_batch_size(starting_batch_size=256)
        def attempt(batch_size: int) -> int:
            tried.append(batch_size)
            self.pipe([longest] * batch_size, batch_size=batch_size, **self.call_kwargs)
            return batch_size

        try:
            chosen = attempt()
            self.batch_choice = {"requested": "auto", "chosen": chosen, "method": "cuda: accelerate find_executable_batch_size", "tried": tried}
            return chosen
        except Exception as error:  # noqa: BLE001 - not out of memory (accelerate retried those)
            detail = _one_line(type(error), str(error))
        # Outside the except block, so the failed batch's tensors are freed before this call.
        try:
            self.pipe(longest, **self.call_kwargs)
        except Exception:  # noqa: BLE001 - the record fails again in its batch, with its own message
            self.batch_choice = {"requested": "auto", "chosen": 8, "method": f"default (the probe's input fails: {detail})", "tried": tried}
            return 8
        self.one_record_at_a_time(f"batches of copies of one input failed ({detail}) while it ran alone")
        self.batch_choice = {"requested": "auto", "chosen": 1, "method": "cuda: batches fail while one input runs", "tried": tried}
        return 1

    def _resolved_model(self) -> Any:
        """Where the model comes from (provisioned, local, cached or the Hub), found without
        loading it, once: deep checks, loading and the feature-extractor lookup all need it."""
        from composer.runtime import resolve_model

        if self.resolved is None:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task, self.model_config.get("fallback"))
        return self.resolved

    def _revision_kwargs(self) -> dict[str, Any]:
        """from_pretrained's `revision` for a hub model; a local or provisioned folder has none."""
        return {"revision": self.resolved.revision} if self.resolved.source == "hub" else {}

    def _key_prefix(self) -> str:
        return "" if self.name == "model" else f"stages.{self.name}."

    def use_cache(self, cache: Any, upstream_fingerprint: str) -> None:
        """Serve outputs from a ResultCache; the model then loads only on the first miss."""
        self.cache, self.upstream_fingerprint = cache, upstream_fingerprint

    def setup(self) -> None:
        if self.cache is None:
            self._load()
        # The tokenizer copies the prefetch thread uses are made here, on the main thread,
        # before that thread starts, rather than lazily by whichever thread gets there first.
        if self.wants_lengths:
            self._make_length_counter()
        if self._prepares_ahead():
            self._make_preparer()

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
        from transformers import pipeline

        from composer.runtime import build_quantization, torch_dtype

        self._resolved_model()
        self.quantization_object = build_quantization(self.quantization)
        model_kwargs = dict(self.model_config["model_kwargs"] or {})
        if not self.model_config.get("allow_pickle"):
            # transformers then refuses .bin weights. Set, not defaulted: the schema refuses
            # model_kwargs.use_safetensors, and a config that skipped validation must not load
            # pickle weights either while the manifest says allow_pickle: false.
            model_kwargs["use_safetensors"] = True
            model_kwargs.pop("weights_only", None)
        if self.quantization_object is not None:
            # pipeline() ignores a top-level quantization_config: it must travel in model_kwargs.
            model_kwargs["quantization_config"] = self.quantization_object
        kwargs: dict[str, Any] = {
            "task": self.task,
            "model": self.resolved.load_from,
            "dtype": torch_dtype(self.model_config["dtype"]),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "model_kwargs": model_kwargs,
            **self.build_params,
        }
        kwargs.update(self._revision_kwargs())
        for key in ("device", "device_map", "tokenizer"):
            if self.model_config[key] is not None:
                kwargs[key] = self.model_config[key]
        # A run in the same process that built this exact pipeline left it in the pool.
        self.pool_key = modelpool.pipeline_key({
            "task": self.task, "resolved": self.resolved.to_json(), "model": self.model_config,
            "quantization": self.quantization, "pipeline": self.build_params, "onednn_linear": self._uses_onednn(),
        })
        started = time.perf_counter()
        self.pipe = modelpool.take(self.pool_key)
        self.reused = self.pipe is not None
        if self.pipe is None:
            self.pipe = pipeline(**kwargs)
            if self._uses_onednn() and self.pipe.device.type == "cpu" and self.pipe.model.dtype == torch_dtype("float32"):
                from composer.runtime import onednn_linear

                onednn_linear(self.pipe.model)
            modelpool.hold(self.pool_key, self.pipe)
        self.load_seconds = time.perf_counter() - started
        if self._padding_changes_outputs() and self.batch_size != 1:
            self.one_record_at_a_time("the feature extractor pads without an attention mask, so a record's output "
                                      "would depend on its batch-mates' lengths")

    def _uses_onednn(self) -> bool:
        """Whether to swap in oneDNN linear layers once loaded (runtime.onednn_linear): asked for,
        and a model whose batches may share it by its config (an encoder task, unquantized, not
        spread over devices, not put on a GPU); the loaded model must also be on CPU in fp32."""
        return self.onednn_linear and self.configured_blocker() is None

    def _model_input(self, record: Record) -> Any:
        if isinstance(self.input_field, dict):
            return {arg: require_field(record, field, self.name) for arg, field in self.input_field.items()}
        return require_field(record, self.input_field, self.name)

    def _as_single_calls(self, inputs: list[Any], outputs: list[Any], lengths: list[int | None]) -> list[Any]:
        """A list call's outputs, each as the single-input call would have returned it."""
        if len(outputs) != len(inputs):
            raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {len(inputs)} inputs")
        return [self._as_single_call(i, o, n) for i, o, n in zip(inputs, outputs, lengths)]

    def _as_single_call(self, model_input: Any, output: Any, length: int | None = None) -> Any:
        # TextClassificationPipeline wraps a lone string's result in a list unless top_k is
        # passed at call time (transformers' "legacy" behaviour); list calls do not.
        if self.task == "text-classification" and isinstance(model_input, str) and "top_k" not in self.call_params:
            return [output]
        # Batched feature extraction returns hidden states for the padding positions too; a
        # record's embedding must not depend on its batch-mates, so cut it to its own tokens.
        if self.task == "feature-extraction":
            return self._unpadded(model_input, output, length)
        return output

    def _unpadded(self, model_input: Any, output: Any, length: int | None) -> Any:
        """`output` cut to the input's own tokens; `length` is known when it was tokenized ahead."""
        if length is None:
            length = int(self._thread_pipe().preprocess(model_input, **self._pipeline_params()[0])["input_ids"].shape[-1])
        left = getattr(self.pipe.tokenizer, "padding_side", "right") == "left"
        return [tokens[len(tokens) - length:] if left else tokens[:length] for tokens in output]

    def _count_input_tokens(self, records: list[Record]) -> None:
        """Add these records' input tokens to input_tokens: the lengths the tokenizer measured
        ahead for batching, else counted now (text inputs only; images and audio have none).
        Called once a batch succeeded, so records retried one by one are counted once."""
        missing = [record for record in records if str(record["id"]) not in self._token_counts]
        if missing:
            self.input_lengths(missing)
        counted = sum(self._token_counts.pop(str(record["id"]), 0) for record in records)
        with self._lock:
            self.input_tokens += counted

    def process(self, records: list[Record]) -> list[Record]:
        if len(records) > 1:
            with self._lock:
                self._batches_tried += 1
        prepared = [self._prepared.pop(str(record["id"]), None) for record in records] if self._prepared else None
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
        pipe = self._thread_pipe()
        # The input prepared ahead is the one to run (a {text, text_pair} input is rebuilt per
        # call, hence equality and not only identity).
        if prepared and all(p is not None and (p[0] is i or p[0] == i) for p, i in zip(prepared, inputs)):
            # Tokenized ahead: the pipeline's own loop from collate on (_run_prepared), in
            # batches of self.batch_size (one record each once the stage runs records alone).
            outputs = self._run_prepared([p[1] for p in prepared])
            outputs = self._as_single_calls(inputs, outputs, [_token_length(p[1]) for p in prepared])
        elif len(inputs) == 1 or self.one_record_because is not None:
            # A one-item list comes back unwrapped from some pipelines (fill-mask); a single
            # call is unambiguous and is exactly the reference result. Batches planned before
            # the stage learnt it must run records alone (a lazy load, another worker's failed
            # batch) run here record by record.
            outputs = [pipe(model_input, **self.call_kwargs) for model_input in inputs]
        else:
            outputs = pipe(inputs, batch_size=self.batch_size or len(inputs), **self.call_kwargs)
            outputs = self._as_single_calls(inputs, outputs, [None] * len(inputs))
        self.batch_seconds.append(time.perf_counter() - started)
        return [to_jsonable(output) for output in outputs]

    def one_record_at_a_time(self, reason: str) -> None:
        """From now on every batch holds one record (the first reason given is the one kept)."""
        with self._lock:
            if self.one_record_because is None:
                self.one_record_because = reason
                self.batch_size = 1

    def batch_failed_alone_ok(self, size: int, error_type: type, message: str) -> None:
        """A batch of `size` records failed with `error_type: message` and each record then ran
        alone without error. When that keeps happening (at least two such batches, and at least
        half of the batches so far) the pipeline cannot batch these inputs (images its processor
        resizes to different shapes, documents of different lengths, a tokenizer without a pad
        token), so later batches hold one record instead of failing once each and repeating
        their work. One odd input among many that batch fine does not switch the run; running
        out of memory never does (a smaller batch fits; that is batch_size=auto's business)."""
        if error_type.__name__ == "OutOfMemoryError" or "out of memory" in message.lower():
            return
        with self._lock:
            self._batches_failed_alone_ok += 1
            recurring = self._batches_failed_alone_ok >= 2 and 2 * self._batches_failed_alone_ok >= self._batches_tried
        if recurring:
            self.one_record_at_a_time(f"batches of {size} failed ({_one_line(error_type, message)}) while each of their records ran alone")

    def _padding_changes_outputs(self) -> bool:
        """Whether a record's output would depend on its batch-mates' lengths: audio feature
        extractors that pad without an attention mask (wav2vec2-base and its fine-tunes, e.g.
        facebook/wav2vec2-base-960h) let the model see the zeros, so such models get one record
        per call. Whisper's extractor pads every input to its fixed window (n_samples) anyway."""
        extractor = getattr(self.pipe, "feature_extractor", None)
        return (
            extractor is not None
            and getattr(extractor, "return_attention_mask", True) is False
            and getattr(extractor, "n_samples", None) is None
        )

    def configured_blocker(self) -> str | None:
        """Why the config alone says this stage's batches must run one at a time (checked at
        plan time, without torch), or None."""
        if self.task not in CONCURRENT_TASKS:
            return (f"{self.task} outputs may depend on batch-mates or on the order random numbers are drawn; "
                    f"workers > 1 is for {', '.join(sorted(CONCURRENT_TASKS))}")
        if self.quantization.get("backend", "none") != "none":
            return "quantized weights"
        if self.model_config["device_map"] is not None:
            return "device_map spreads the model over devices"
        device = self.model_config["device"]
        return None if device is None else _accelerator_blocker(device)

    def concurrency_blocker(self) -> str | None:
        """Why this stage's batches must run one at a time, or None when workers may share it:
        the config's reasons, or a model that landed on a GPU by default."""
        return self.configured_blocker() or _accelerator_blocker(self.pipe.device if self.pipe is not None else self._configured_device())

    def _configured_device(self) -> str:
        """Where pipeline() will put the model (it is not loaded yet when the result cache is on):
        the configured device, or, as pipeline() does without one, cuda:0 when CUDA is there."""
        import torch

        device = self.model_config["device"]
        if device is None:
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        if isinstance(device, int):
            return "cpu" if device < 0 else f"cuda:{device}"
        return str(device)

    def feature_sampling_rate(self) -> int | None:
        """The audio rate the model's feature extractor expects (audio stages resample to it).

        Read from the loaded pipeline's processor, or, while a result cache has kept the model
        unloaded, from the model folder's preprocessor config alone (no weights load).
        """
        extractor = getattr(self.pipe, "feature_extractor", None)
        if extractor is None and self.pipe is None:
            from transformers import AutoFeatureExtractor

            extractor = AutoFeatureExtractor.from_pretrained(self._resolved_model().load_from, **self._revision_kwargs())
        return getattr(extractor, "sampling_rate", None)

    def describe(self) -> dict[str, Any]:
        from composer.runtime import quantization_json

        facts: dict[str, Any] = {
            "task": self.task,
            "model": self.resolved.to_json() if self.resolved else None,
            "quantization": quantization_json(self.quantization_object),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "allow_pickle": bool(self.model_config.get("allow_pickle")),
            "load_seconds": self.load_seconds,
            "loaded": self.load_seconds is not None,
            "reused": self.reused,  # taken from an earlier run in this process (composer.modelpool)
            "batching": {
                "batch_size": self.batch_size, "requested_batch_size": self.requested_batch_size, "workers": self.workers,
                "sort_by_length": self.sorts_by_length, "max_batch_tokens": self.max_batch_tokens,
                **({"auto": self.batch_choice} if self.batch_choice else {}),
                **({"one_record_because": self.one_record_because} if self.one_record_because else {}),
            },
        }
        if self.cache is not None:
            facts["cache"] = {"path": str(self.cache.path), "hits": self.cache_hits, "misses": self.cache_misses}
        if self.pipe is not None:
            model = self.pipe.model
            onednn = [m for m in model.modules() if type(m).__name__ == "MkldnnLinear"]
            facts.update(
                dtype=str(getattr(model, "dtype", None)).replace("torch.", ""),
                device=str(getattr(self.pipe, "device", None)),
                # transformers sets hf_device_map only when a map spans several devices.
                device_map=to_jsonable(self.model_config["device_map"]),
                placement=to_jsonable(getattr(model, "hf_device_map", None) or {"": str(model.device)}),
                # What actually loaded, not what was asked for: a quantization config that
                # transformers ignored would show up here as null.
                quantizer=type(model.hf_quantizer).__name__ if getattr(model, "hf_quantizer", None) else None,
                model_class=type(model).__name__,
                # oneDNN linear layers keep their weights as buffers (runtime.onednn_linear).
                parameters=sum(p.numel() for p in model.parameters())
                + sum(b.numel() for m in onednn for b in m.buffers(recurse=False)),
                onednn_linear_layers=len(onednn),
            )
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
        self._prepared.clear()
        self._token_counts.clear()  # records that failed were measured but never counted
        self._preparer = None
        self._per_thread = threading.local()
        if self.pipe is not None and self.pool_key is not None:
            modelpool.release(self.pool_key, self.pipe)
        self.pipe = None
