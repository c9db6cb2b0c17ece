"""Preprocessing a window of records ahead of the model, the pipeline's own way.

The prefetch thread runs the pipeline's preprocess for each record of the next window while the
model works on the current one (PipelineStage.prepare). Where a task's preprocess of a string is
only its tokenizer, the window's strings go to the tokenizer in one call: one trip into the
Rust tokenizer instead of one per record, which a small model notices (issue 6). The first
string of each window is also run through the pipeline's own preprocess and the two results
compared, so a transformers release whose preprocess does more than tokenize sends composer back
to record-by-record preprocessing instead of changing what the model sees.
"""

from __future__ import annotations

from typing import Any


class Preparer:
    """The pipeline's preprocess for the records of a window, on one pipeline copy (its own
    tokenizer: the prefetch thread's)."""

    def __init__(self, pipe: Any, params: dict[str, Any], chunked: bool, together: bool) -> None:
        self.pipe = pipe
        self.params = params  # the preprocess parameters `pipe(inputs, **call)` would use
        self.chunked = chunked  # a ChunkPipeline's preprocess yields several model inputs per record
        # Whether strings are tokenized in one call; turned off for good when a window's check fails.
        self.together = together and getattr(pipe, "tokenizer", None) is not None

    def one(self, value: Any) -> Any:
        """The pipeline's own preprocess of one input."""
        prepared = self.pipe.preprocess(value, **self.params)
        return list(prepared) if self.chunked else prepared

    def prepare(self, values: dict[str, Any]) -> dict[str, Any]:
        """Model inputs by record key. A value the preprocess refuses is left out: process()
        meets it again in its record's own batch, where failures are isolated and reported."""
        texts = {key: value for key, value in values.items() if isinstance(value, str)} if self.together else {}
        prepared = self._tokenized_together(list(texts), list(texts.values())) if texts else {}
        for key, value in values.items():
            if key not in prepared:
                try:
                    prepared[key] = self.one(value)
                except Exception:  # noqa: BLE001 - reported from process(), with the record's id
                    continue
        return prepared

    def _tokenized_together(self, keys: list[str], texts: list[str]) -> dict[str, Any]:
        """One tokenizer call for all `texts`, split into the per-record tensors the pipeline's
        preprocess returns (a batch of one, unpadded); {} when the call fails or its first
        record differs from the pipeline's own preprocess."""
        import torch
        from transformers import BatchEncoding

        try:
            encoded = self.pipe.tokenizer(texts, **self.params)
        except Exception:  # noqa: BLE001 - one bad text fails the call; record by record finds which
            return {}
        columns = dict(encoded)
        # Overflowing windows turn one text into several rows: not one row per record.
        if "overflow_to_sample_mapping" in columns or any(len(column) != len(texts) for column in columns.values()):
            self.together = False
            return {}
        prepared = {key: BatchEncoding({name: torch.tensor([column[row]]) for name, column in columns.items()})
                    for row, key in enumerate(keys)}
        try:
            reference = self.one(texts[0])
        except Exception:  # noqa: BLE001 - the record fails in process(), with its id
            return {}
        if not _same(prepared[keys[0]], reference):
            self.together = False
            return {}
        return prepared


def _same(ours: Any, theirs: Any) -> bool:
    """Whether two preprocess results hold the same names and equal values (tensors by value)."""
    import torch

    if set(ours.keys()) != set(theirs.keys()):
        return False
    for name, value in theirs.items():
        mine = ours[name]
        if isinstance(value, torch.Tensor):
            if not (isinstance(mine, torch.Tensor) and mine.dtype == value.dtype and torch.equal(mine, value)):
                return False
        elif mine != value:
            return False
    return True
