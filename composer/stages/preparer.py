"""Preprocessing a window of records ahead of the model, the pipeline's own way.

The prefetch thread runs the pipeline's preprocess for each record of the next window while the
model works on the current one (PipelineStage.prepare). Where a task's preprocess of a string is
only its tokenizer, the window's strings go to the tokenizer in one call: one trip into the
Rust tokenizer instead of one per record, which a small model notices (issue 6). Two records of
each window, its shortest and its longest, go through the pipeline's own preprocess instead,
and the two results are compared: padding would show in the shortest, truncation in the longest,
an extra or missing field in both. A difference sends composer back to record-by-record
preprocessing for good.
"""

from __future__ import annotations

from typing import Any

# Padding settings under which a text tokenized among others comes out as it does alone.
_PER_TEXT_PADDING = (None, False, "do_not_pad", "max_length")


class Preparer:
    """The pipeline's preprocess for the records of a window, on one pipeline copy (its own
    tokenizer: the prefetch thread's)."""

    def __init__(self, pipe: Any, params: dict[str, Any], chunked: bool, together: bool) -> None:
        self.pipe = pipe
        self.params = params  # the preprocess parameters `pipe(inputs, **call)` would use
        self.chunked = chunked  # a ChunkPipeline's preprocess yields several model inputs per record
        # Whether strings are tokenized in one call; off for good once a window's call fails or its check differs.
        padding = params.get("padding")
        self.together = (together and getattr(pipe, "tokenizer", None) is not None
                         and str(getattr(padding, "value", padding)) in map(str, _PER_TEXT_PADDING))

    def one(self, value: Any) -> Any:
        """The pipeline's own preprocess of one input."""
        prepared = self.pipe.preprocess(value, **self.params)
        return list(prepared) if self.chunked else prepared

    def prepare(self, values: dict[str, Any]) -> dict[str, Any]:
        """Model inputs by record key. A value the preprocess refuses is left out: process()
        meets it again in its record's own batch, where failures are isolated and reported."""
        texts = {key: value for key, value in values.items() if isinstance(value, str)} if self.together else {}
        prepared = self._tokenized_together(texts) if texts else {}
        for key, value in values.items():
            if key not in prepared:
                try:
                    prepared[key] = self.one(value)
                except Exception:  # noqa: BLE001 - reported from process(), with the record's id
                    continue
        return prepared

    def _tokenized_together(self, texts: dict[str, str]) -> dict[str, Any]:
        """One tokenizer call for all `texts`, split into the per-record tensors the pipeline's
        preprocess returns (a batch of one); {} and record by record from now on when anything
        fails (one text the tokenizer or the preprocess refuses, a conversion) or the window's
        check finds a difference."""
        try:
            prepared = self._split_and_check(texts)
        except Exception:  # noqa: BLE001 - record by record finds the record, and process() reports it
            prepared = None
        if prepared is None:
            self.together = False
            return {}
        return prepared

    def _split_and_check(self, texts: dict[str, str]) -> dict[str, Any] | None:
        from transformers import BatchEncoding

        keys = list(texts)
        columns = dict(self.pipe.tokenizer(list(texts.values()), **self.params))
        # Overflowing windows turn one text into several rows: not one row per record.
        if "overflow_to_sample_mapping" in columns or any(len(column) != len(keys) for column in columns.values()):
            return None
        # transformers' own conversion (an empty row is int64, as the single call gives it).
        prepared = {key: BatchEncoding({name: [column[row]] for name, column in columns.items()}, tensor_type="pt")
                    for row, key in enumerate(keys)}
        lengths = [len(ids) for ids in columns.get("input_ids", [])]
        checked = [keys[lengths.index(min(lengths))], keys[lengths.index(max(lengths))]] if lengths else [keys[0]]
        for key in dict.fromkeys(checked):
            reference = self.one(texts[key])
            if not _same(prepared[key], reference):
                return None
            prepared[key] = reference
        return prepared


def _same(ours: Any, theirs: Any) -> bool:
    """Whether two preprocess results hold the same names and equal tensors (dtype included)."""
    import torch

    if set(ours.keys()) != set(theirs.keys()):
        return False
    for name, value in theirs.items():
        mine = ours[name]
        if not (isinstance(value, torch.Tensor) and isinstance(mine, torch.Tensor)):
            return False
        if mine.dtype != value.dtype or not torch.equal(mine, value):
            return False
    return True
