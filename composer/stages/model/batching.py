"""Batch planning for the model stage, in the manner of lm-evaluation-harness's `Collator`:
order a window by input length (longest first), cut it into batches by record count and padded
tokens, and with batch_size=auto choose the count by probing the model on the first window.

Input lengths come from TokenCounter, which tokenizes with its own copy of the model's fast
tokenizer, so the prefetch thread can measure while the model runs. Neither class holds the
stage: what a probe needs of the model (its pipeline, loading it, the result cache) comes with
each window as a ModelAccess, so the stage owns the planner and not the other way round.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from composer.records import Record

# Tasks whose record outputs do not depend on their batch-mates (padding is masked, and each
# record's result is cut to its own tokens), so ordering a window by length before batching is
# safe and on by default (sort_window=auto). Generation is left in input order: sampled or
# left-padded generation can differ with batch composition.
SORTED_TASKS = frozenset({
    "text-classification", "token-classification", "feature-extraction", "fill-mask",
    "zero-shot-classification", "question-answering",
})


def _one_line(error_type: type, message: str) -> str:
    """An error as one line of at most 300 characters, for the manifest's batching notes."""
    return " ".join(f"{error_type.__name__}: {message}".split())[:300]


class TokenCounter:
    """Input lengths in tokens, counted by a private copy of the model's fast tokenizer (a
    transformers tokenizer shared across threads fails with "Already borrowed"). Lengths only
    decide batching, never outputs, so without a fast tokenizer a character estimate stands in.
    Exact counts are also kept per record id until taken, for tokens/s in metrics.json."""

    def __init__(self) -> None:
        self._count: Callable[[list[str]], list[int]] | None = None
        self._exact = False  # counts are the tokenizer's, not estimates (only those are kept)
        self._kept: dict[str, int] = {}

    @property
    def started(self) -> bool:
        return self._count is not None

    def start(self, tokenizer: Any, truncation: int | None = None) -> None:
        """Count with a copy of `tokenizer`'s fast backend, without padding or truncation (capped
        at the model's maximum length, or the `truncation` its calls use, instead); estimate when
        it has none (None, a slow one)."""
        backend = getattr(tokenizer, "backend_tokenizer", None)
        limit = getattr(tokenizer, "model_max_length", None)
        limit = limit if isinstance(limit, int) and 0 < limit < 1_000_000 else None
        if truncation is not None:
            limit = min(limit, truncation) if limit else truncation
        self._exact = backend is not None
        if backend is None:
            self._count = lambda texts: [max(1, len(t) // 4) for t in texts]
            return
        from tokenizers import Tokenizer

        own = Tokenizer.from_str(backend.to_str())
        own.no_padding()
        own.no_truncation()

        def count(texts: list[str]) -> list[int]:
            sizes = [len(e.ids) for e in own.encode_batch(texts)]
            return [min(n, limit) for n in sizes] if limit else sizes

        self._count = count

    def lengths(self, inputs: list[tuple[str, Any]]) -> dict[str, int]:
        """Each model input's length (by key): the sum over its strings (a {text, text_pair}
        input has two), 1 for an input without any (an image, audio)."""
        count = self._count
        assert count is not None, "start() comes first"
        texts: list[str] = []
        owners: list[str] = []
        lengths: dict[str, int] = {}
        for key, value in inputs:
            parts = [value] if isinstance(value, str) else [v for v in value.values() if isinstance(v, str)] if isinstance(value, dict) else []
            lengths[key] = 0 if parts else 1
            texts += parts
            owners += [key] * len(parts)
        try:
            counts = count(texts) if texts else []
            estimated: set[str] = set()
        except Exception:  # noqa: BLE001 - one text the tokenizer refuses (a lone surrogate) must not fail the window
            counts, estimated = self._count_one_by_one(count, texts, owners)
        for key, count in zip(owners, counts):
            lengths[key] += count
        if self._exact:
            self._kept.update((key, lengths[key]) for key in set(owners) - estimated)
        return lengths

    @staticmethod
    def _count_one_by_one(count: Callable[[list[str]], list[int]], texts: list[str], owners: list[str]) -> tuple[list[int], set[str]]:
        """Token counts text by text, after the window's batch call failed: a text the tokenizer
        refuses gets a character estimate (it only orders batches; the record then fails in
        process(), alone); its record is returned among the estimated (no token count kept)."""
        counts: list[int] = []
        estimated: set[str] = set()
        for text, key in zip(texts, owners):
            try:
                counts += count([text])
            except Exception:  # noqa: BLE001 - see above
                counts.append(max(1, len(text) // 4))
                estimated.add(key)
        return counts, estimated

    def keep(self, key: str, count: int) -> None:
        """Keep a count measured elsewhere (by the pipeline's own preprocess, ahead)."""
        self._kept[key] = count

    def __contains__(self, key: str) -> bool:
        return key in self._kept

    def take(self, keys: list[str]) -> int:
        """The kept counts of these records, summed and forgotten (0 for those without one)."""
        return sum(self._kept.pop(key, 0) for key in keys)

    def clear(self) -> None:
        self._kept.clear()


@dataclass(frozen=True)
class ModelAccess:
    """What planning a window needs of the model stage, handed over per window."""

    workers: int  # batches run side by side: a CPU probe round holds one batch per worker
    lengths: Callable[[list[Record]], dict[str, int]]  # input lengths, when none were measured ahead
    model_input: Callable[[Record], Any]
    pipe: Callable[[], Any]  # the loaded pipeline, or None
    load: Callable[[], None]  # load the model unless loaded
    call_kwargs: dict[str, Any]  # what each pipeline call gets
    cache_lacks: Callable[[list[Any]], list[bool]] | None = None  # per model input; None: no result cache


class BatchPlanner:
    """The batch size and how a window is cut into batches; batch_size=auto's probes; and the
    fall-back to one record per batch when a model cannot batch its inputs."""

    PROBE_SIZES = (4, 8, 16, 32, 64)

    def __init__(self, batch_size: int | str, sorts_by_length: bool, max_batch_tokens: int | None) -> None:
        # batch_size=auto is chosen on the first window (self.batch_size stays None till then).
        self.requested_batch_size = batch_size
        self.batch_size: int | None = None if batch_size == "auto" else int(batch_size)
        self.sorts_by_length = sorts_by_length
        self.max_batch_tokens = max_batch_tokens
        self.batch_choice: dict[str, Any] | None = None
        # Why the stage runs one record per batch although batch_size says more (None while it
        # batches): its model pads without an attention mask, or batches kept failing while each
        # of their records ran alone (batch_failed_alone_ok). Reported in the manifest.
        self.one_record_because: str | None = None
        self._batches_tried = 0  # process() calls with more than one record
        self._batches_failed_alone_ok = 0
        self._lock = threading.Lock()

    @property
    def wants_lengths(self) -> bool:
        """Whether plan() uses input lengths (the executor measures them ahead)."""
        return self.sorts_by_length or self.max_batch_tokens is not None or self.batch_size is None

    def facts(self, workers: int) -> dict[str, Any]:
        """The manifest's batching facts."""
        return {
            "batch_size": self.batch_size, "requested_batch_size": self.requested_batch_size, "workers": workers,
            "sort_by_length": self.sorts_by_length, "max_batch_tokens": self.max_batch_tokens,
            **({"auto": self.batch_choice} if self.batch_choice else {}),
            **({"one_record_because": self.one_record_because} if self.one_record_because else {}),
        }

    def batch_tried(self) -> None:
        """A batch of more than one record is about to run (batch_failed_alone_ok's denominator)."""
        with self._lock:
            self._batches_tried += 1

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

    def plan(self, records: list[Record], lengths: dict[str, int] | None, model: ModelAccess) -> Iterator[Any]:
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
            lengths = model.lengths(records)
        sizes = [lengths[str(r["id"])] for r in records]
        order = sorted(range(len(records)), key=lambda i: (-sizes[i], i)) if self.sorts_by_length else list(range(len(records)))
        if self.batch_size is None and self.one_record_because is None:
            order = yield from self._choose_batch_size(records, order, sizes, model)
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

    def _choose_batch_size(self, records: list[Record], order: list[int], sizes: list[int], model: ModelAccess) -> Any:
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
        if model.cache_lacks is not None:
            lacks = model.cache_lacks([model.model_input(records[i]) for i in order])
            uncached = [i for i, lacking in zip(order, lacks) if lacking]
            if not uncached:
                # Nothing to measure and no model to load: the first window with a miss probes (a
                # rerun of a grown input, say); until then the plan uses the default size.
                self.batch_choice = {"requested": "auto", "chosen": None, "method": "not probed: every record so far came from the result cache"}
                return order
            # The result cache loads the model at the first miss: load it now, so that the GPU
            # probe has it and the first CPU round does not time the load.
            model.load()
            if self.one_record_because is not None:
                return order  # the loaded model cannot batch (wav2vec2-style padding)
        pipe = model.pipe()
        device = str(getattr(pipe, "device", "cpu")) if pipe is not None else "cpu"
        if device.startswith("cuda"):
            self.batch_size = self._cuda_batch_size(pipe, model.model_input(records[max(order, key=sizes.__getitem__)]), model.call_kwargs)
            return order
        workers = model.workers
        middle_length = max(1, sizes[uncached[len(uncached) // 2]])
        candidates = [c for c in self.PROBE_SIZES if self.max_batch_tokens is None or c <= max(1, self.max_batch_tokens // middle_length)]
        # Within half of the window around its median length, so every candidate runs on
        # records of similar length (the executor makes automatic windows big enough).
        while candidates and sum(candidates) * workers > len(uncached) // 2:
            candidates.pop()
        if len(candidates) < 2:
            self.batch_size = 8
            self.batch_choice = {"requested": "auto", "chosen": 8, "method": "default (window too small to probe)"}
            return order
        span = sum(candidates) * workers
        start = max(0, len(uncached) // 2 - span // 2)
        probe = uncached[start:start + span]
        measured: dict[int, float] = {}
        used: set[int] = set()
        cursor = 0
        for size in candidates:
            round_ = tuple(probe[cursor + k * size:cursor + (k + 1) * size] for k in range(workers))
            cursor += size * workers
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
            "workers": workers,
            "tokens_per_second": {str(k): round(v, 1) for k, v in measured.items()},
        }
        return [i for i in order if i not in used]

    def _cuda_batch_size(self, pipe: Any, longest: Any, call_kwargs: dict[str, Any]) -> int:
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
            pipe([longest] * batch_size, batch_size=batch_size, **call_kwargs)
            return batch_size

        try:
            chosen = attempt()
            self.batch_choice = {"requested": "auto", "chosen": chosen, "method": "cuda: accelerate find_executable_batch_size", "tried": tried}
            return chosen
        except Exception as error:  # noqa: BLE001 - not out of memory (accelerate retried those)
            detail = _one_line(type(error), str(error))
        # Outside the except block, so the failed batch's tensors are freed before this call.
        try:
            pipe(longest, **call_kwargs)
        except Exception:  # noqa: BLE001 - the record fails again in its batch, with its own message
            self.batch_choice = {"requested": "auto", "chosen": 8, "method": f"default (the probe's input fails: {detail})", "tried": tried}
            return 8
        self.one_record_at_a_time(f"batches of copies of one input failed ({detail}) while it ran alone")
        self.batch_choice = {"requested": "auto", "chosen": 1, "method": "cuda: batches fail while one input runs", "tried": tried}
        return 1
