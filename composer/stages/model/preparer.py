"""Preprocessing a window of records ahead of the model, the pipeline's own way.

The prefetch thread runs the pipeline's preprocess for each record of the next window while the
model works on the current one (PipelineStage.prepare). Where a task's preprocess of a string is
only its tokenizer, the window's strings go to the tokenizer in one call: one trip into the
Rust tokenizer instead of one per record, which a small model notices (issue 6). Two records of
each window, its shortest and its longest, go through the pipeline's own preprocess instead,
and the two results are compared: padding would show in the shortest, truncation in the longest,
an extra or missing field in both. A difference sends composer back to record-by-record
preprocessing for good.

Records tokenized together stay plain lists (TokenRow) until their batch runs: RowCollator then
pads each field of the batch into one array, where the pipeline's own collate (pad_collate_fn)
would make a tensor per record and field and copy each into the batch. It is checked against
that collate until a batch whose rows differ in length has passed.
"""

from __future__ import annotations

import threading
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
        """One tokenizer call for all `texts`, split into a TokenRow per record (the pipeline's
        preprocess of it, once made tensors); {} and record by record from now on when anything
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
        keys = list(texts)
        columns = dict(self.pipe.tokenizer(list(texts.values()), **self.params))
        # Overflowing windows turn one text into several rows: not one row per record.
        if "overflow_to_sample_mapping" in columns or any(len(column) != len(keys) for column in columns.values()):
            return None
        rows = {key: TokenRow({name: column[row] for name, column in columns.items()}) for row, key in enumerate(keys)}
        lengths = [len(ids) for ids in columns.get("input_ids", [])]
        checked = [keys[lengths.index(min(lengths))], keys[lengths.index(max(lengths))]] if lengths else [keys[0]]
        for key in dict.fromkeys(checked):
            if not _same(rows[key].tensors(), self.one(texts[key])):
                return None
        return rows


class TokenRow:
    """One record's share of a window's tokenizer call, each field a plain list. Equal to
    the pipeline's preprocess of the record once made into tensors (Preparer checks it)."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, list]) -> None:
        self.fields = fields

    @property
    def length(self) -> int | None:
        ids = self.fields.get("input_ids")
        return None if ids is None else len(ids)

    def tensors(self) -> Any:
        """What the pipeline's preprocess returns: a batch of one, by transformers' own
        conversion (an empty row is int64, as the single call gives it)."""
        from transformers import BatchEncoding

        return BatchEncoding({name: [values] for name, values in self.fields.items()}, tensor_type="pt")


def model_input(item: Any) -> Any:
    """A prepared item as the pipeline's preprocess returns it."""
    return item.tensors() if isinstance(item, TokenRow) else item


class RowCollator:
    """The pipeline's collate (transformers' pad_collate_fn) for a batch of TokenRows, one padded
    array per field. Until a batch whose rows differ in length has passed, each batch is also
    collated the pipeline's way and compared; a difference sends every later batch to the
    pipeline's collate. Shared by the worker threads."""

    # The fields it pads, with pad_collate_fn's padding value (None: the tokenizer's pad token).
    PAD_VALUES = {"input_ids": None, "attention_mask": 0, "token_type_ids": 0}

    def __init__(self) -> None:
        self.checked = False  # a batch with padding came out equal
        self.usable = True
        self._lock = threading.Lock()

    def collate(self, rows: list[TokenRow], tokenizer: Any) -> dict[str, Any] | None:
        """The model inputs for `rows`, or None where the pipeline's own collate must run:
        fields it does not pad, rows with different fields, a difference found before, and an
        empty row padded on the left (the pipeline's collate fails on it, and so must the batch)."""
        from transformers.pipelines.base import pad_collate_fn

        names = rows[0].fields.keys()
        if not self.usable or any(name not in self.PAD_VALUES for name in names) or any(r.fields.keys() != names for r in rows):
            return None
        lengths = {row.length for row in rows}
        if tokenizer.padding_side == "left" and 0 in lengths and len(lengths) > 1:
            return None
        reference_collate = pad_collate_fn(tokenizer, None)  # raises as the pipeline does without a pad token
        batch = self._padded(rows, tokenizer)
        # Rows of one length are not padded (the pipeline's collate concatenates them): nothing to check.
        if self.checked or len(lengths) == 1:
            return batch
        reference = reference_collate([row.tensors() for row in rows])
        same = _same(batch, reference)
        with self._lock:
            self.usable = self.usable and same
            self.checked = self.usable
        return batch if same else reference

    def _padded(self, rows: list[TokenRow], tokenizer: Any) -> dict[str, Any]:
        import numpy as np
        import torch

        longest = max(len(values) for row in rows for values in row.fields.values())
        left = tokenizer.padding_side == "left"
        batch = {}
        for name, pad in self.PAD_VALUES.items():
            if name not in rows[0].fields:
                continue
            array = np.full((len(rows), longest), tokenizer.pad_token_id if pad is None else pad, dtype=np.int64)
            for index, row in enumerate(rows):
                values = row.fields[name]
                if left:
                    array[index, longest - len(values):] = values
                else:
                    array[index, :len(values)] = values
            batch[name] = torch.from_numpy(array)
        return batch


def _same(ours: Any, theirs: Any) -> bool:
    """Whether two sets of model inputs (preprocess results, collated batches) hold the same
    names and equal tensors (dtype included)."""
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
