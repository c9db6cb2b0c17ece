"""Tokenizing ahead and running prepared batches: the model stage's one home for transformers'
private pipeline internals.

`pipe(inputs)` runs preprocess, collate, forward and postprocess in one call. To tokenize the
next window in the prefetch thread while the model works on this one, the stage runs those
steps apart, and that needs what transformers does not publish: the parameters a call would
give each step (`Pipeline._sanitize_parameters` and the `_preprocess_params`/`_forward_params`/
`_postprocess_params` it merges with), the generic loop (`Pipeline.get_iterator`,
`pipelines.pt_utils.PipelineIterator`) fed with preprocess replaced by the identity, and what
tells a `ChunkPipeline` apart. Every such use is in this module, so a transformers upgrade that
moves them is met here (preparer.py only calls the public preprocess and the collate it checks
its own results against). Also here: the shallow pipeline copies that give each thread its own
tokenizer, since the prepared steps and the preprocessing thread both need them.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from composer.records import Record
from composer.stages.model.preparer import Preparer, RowCollator, TokenRow, model_input

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


def token_length(prepared: Any) -> int | None:
    """The token count of an input the pipeline's preprocess already tokenized, if it has one."""
    if isinstance(prepared, TokenRow):
        return prepared.length
    input_ids = prepared.get("input_ids") if hasattr(prepared, "get") else None
    return int(input_ids.shape[-1]) if input_ids is not None and hasattr(input_ids, "shape") else None


def chunked(pipe: Any) -> bool:
    """Whether the pipeline is a ChunkPipeline (NER, zero-shot): its preprocess is a
    generator of model inputs (windows of a long text, one per candidate label)."""
    from transformers.pipelines.base import ChunkPipeline

    return isinstance(pipe, ChunkPipeline)


def pipe_copy(pipe: Any) -> Any:
    """A shallow copy of the pipeline with its own tokenizer, for another thread: a tokenizer
    shared between threads fails ("Already borrowed") when both change its padding or
    truncation state. The model, and so its weights, stay shared."""
    clone = copy.copy(pipe)
    if getattr(pipe, "tokenizer", None) is not None:
        clone.tokenizer = copy.deepcopy(pipe.tokenizer)
    return clone


class PreparedRunner:
    """Model inputs prepared ahead (by record id, till their batch takes them) and the
    pipeline's own loop run on them; each thread's pipeline copy. The stage passes its loaded
    pipeline in with each call and keeps it: nothing here outlives close() but the collator."""

    def __init__(self, task: str, call_kwargs: dict[str, Any]) -> None:
        self.task = task
        self.call_kwargs = call_kwargs  # what each pipeline call gets
        self.preparer: Preparer | None = None
        self.collator = RowCollator()
        # Pipeline preprocess outputs made ahead by the prefetch thread: record id -> (input, item).
        self._items: dict[str, tuple[Any, Any]] = {}
        self._per_thread = threading.local()

    def thread_pipe(self, pipe: Any, workers: int) -> Any:
        """The pipeline this thread calls: the stage's own with one worker, else a per-thread copy."""
        if workers <= 1:
            return pipe
        own = getattr(self._per_thread, "pipe", None)
        if own is None:
            own = self._per_thread.pipe = pipe_copy(pipe)
        return own

    def params(self, pipe: Any) -> tuple[dict, dict, dict]:
        """The preprocess/forward/postprocess parameters `pipe(inputs, **call)` would use. Read
        from this thread's pipeline: fill-mask's `targets` are looked up with its tokenizer."""
        pre, forward, post = pipe._sanitize_parameters(**self.call_kwargs)
        return {**pipe._preprocess_params, **pre}, {**pipe._forward_params, **forward}, {**pipe._postprocess_params, **post}

    def start(self, pipe: Any, workers: int) -> Preparer:
        """The Preparer for the prefetch thread, on its own pipeline copy."""
        self.preparer = Preparer(pipe_copy(pipe), self.params(self.thread_pipe(pipe, workers))[0], chunked(pipe),
                                 self.task in TOKENIZED_TOGETHER_TASKS)
        return self.preparer

    def prepare(self, pipe: Any, workers: int, records: list[Record], read: Callable[[Record], Any]) -> dict[str, int]:
        """Run the pipeline's preprocess for these records' model inputs (`read` from each) and
        keep the results for take(); returns the token lengths (by record id) of those it
        measured. An input that cannot be read, and a chunk pipeline's non-string input (its
        `__call__` reshapes such input first), are left to process()."""
        preparer = self.preparer or self.start(pipe, workers)
        chunks = chunked(pipe)
        values: dict[str, Any] = {}
        for record in records:
            try:
                value = read(record)
            except Exception:  # noqa: BLE001 - process() meets it again, in the record's own batch
                continue
            if not chunks or isinstance(value, str):
                values[str(record["id"])] = value
        lengths: dict[str, int] = {}
        for key, item in preparer.prepare(values).items():
            self._items[key] = (values[key], item)
            length = token_length(item)
            if length is not None:
                lengths[key] = length
        return lengths

    def take(self, keys: list[str]) -> list[tuple[Any, Any] | None] | None:
        """The (input, prepared item) pairs kept for these records (None for a record without
        one), forgotten here; None when nothing is kept."""
        return [self._items.pop(key, None) for key in keys] if self._items else None

    def run(self, pipe: Any, items: list[Any], batch_size: int | None) -> list[Any]:
        """`pipe(inputs, batch_size=...)` for inputs already preprocessed (`pipe`: this thread's):
        the pipeline's own iterator (collate, forward, unbatch, postprocess) with preprocess as
        the identity. A batch of rows tokenized together is collated by RowCollator (checked
        equal to the pipeline's collate) and then goes through the same forward, unbatch and
        postprocess."""
        runner = getattr(self._per_thread, "runner", None)
        if runner is None:
            runner = self._per_thread.runner = copy.copy(pipe)
            # A chunk pipeline iterates its preprocess: the prepared model inputs, in order.
            runner.preprocess = (lambda item, **_: iter(item)) if chunked(pipe) else (lambda item, **_: item)
        _, forward, post = self.params(pipe)
        # At most the items given: get_iterator pads (and needs a pad token) for any size but 1.
        size = min(batch_size or len(items), len(items))
        if size == len(items) > 1 and runner.feature_extractor is None and runner.image_processor is None \
                and all(isinstance(item, TokenRow) for item in items):
            batch = self.collator.collate(items, runner.tokenizer)
            if batch is not None:
                from transformers.pipelines.pt_utils import PipelineIterator

                # get_iterator's own chain, with the collated batch in place of its DataLoader.
                outputs = PipelineIterator([batch], runner.forward, forward, loader_batch_size=size)
                return list(PipelineIterator(outputs, runner.postprocess, post))
        return list(runner.get_iterator([model_input(item) for item in items], 0, size, {}, forward, post))

    def token_count(self, pipe: Any, value: Any) -> int:
        """The token count of a model input not tokenized ahead, by this thread's pipeline's own preprocess."""
        return int(pipe.preprocess(value, **self.params(pipe)[0])["input_ids"].shape[-1])

    def clear(self) -> None:
        """Forget what was prepared and every thread's copies (the stage closes)."""
        self._items.clear()
        self.preparer = None
        self._per_thread = threading.local()
