"""A window's texts tokenized in one call (composer.stages.model.preparer) give the model exactly the
inputs the pipeline's own preprocess gives, record by record; anything else falls back to it."""

from __future__ import annotations

import pytest

TEXTS = ["the battery lasts for days", "", "support never answered", "screen " * 300, "ok", "a broken screen and a slow phone"]


def _pipe(task: str):
    from transformers import pipeline

    from composer.testing import tiny_model_path

    return pipeline(task, model=str(tiny_model_path(task)))


def _assert_like_preprocess(pipe, params: dict, values: dict, prepared: dict) -> None:
    import torch

    from composer.stages.model.preparer import model_input

    assert set(prepared) == set(values)
    for key, value in values.items():
        expected = pipe.preprocess(value, **params)
        item = model_input(prepared[key])
        assert set(item.keys()) == set(expected.keys()), key
        for name, tensor in expected.items():
            mine = item[name]
            assert mine.dtype == tensor.dtype and mine.shape == tensor.shape and torch.equal(mine, tensor), (key, name)


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
@pytest.mark.parametrize("params", [{}, {"truncation": True}, {"truncation": True, "max_length": 6}])
def test_a_window_tokenized_together_equals_the_pipelines_own_preprocess(task, params):
    from composer.stages.model.preparer import Preparer

    pipe = _pipe(task)
    preparer = Preparer(pipe, params, chunked=False, together=True)
    values = {str(i): text for i, text in enumerate(TEXTS)}
    calls = []
    original = type(pipe.tokenizer).__call__
    pipe.tokenizer.__class__.__call__ = lambda self, text, **k: calls.append(text) or original(self, text, **k)
    try:
        prepared = preparer.prepare(values)
    finally:
        pipe.tokenizer.__class__.__call__ = original
    assert preparer.together
    # The window in one call, then its shortest and longest texts the pipeline's way (the check).
    assert calls[:2] == [TEXTS, TEXTS[1]] and len(calls) == 3  # "" is the shortest
    _assert_like_preprocess(pipe, params, values, prepared)


@pytest.mark.parametrize("padding", [True, "longest"])
def test_padding_to_the_longest_text_tokenizes_record_by_record(padding):
    """Found in review: one call pads every text to the window's longest, a text alone is not
    padded; the old check looked at the first text only, which here is the longest."""
    from composer.stages.model.preparer import Preparer

    pipe = _pipe("feature-extraction")
    values = {"long": TEXTS[5], "short": "ok", "mid": TEXTS[0]}
    preparer = Preparer(pipe, {"padding": padding}, chunked=False, together=True)
    prepared = preparer.prepare(values)
    assert not preparer.together
    _assert_like_preprocess(pipe, {"padding": padding}, values, prepared)


def test_an_empty_text_among_others_is_int64_as_alone():
    """Found in review: an empty row (no special tokens) became float32 through torch.tensor."""
    from composer.stages.model.preparer import Preparer

    pipe = _pipe("text-classification")
    params = {"add_special_tokens": False}
    values = {"a": "the battery lasts", "b": "", "c": "support never answered my emails"}
    preparer = Preparer(pipe, params, chunked=False, together=True)
    prepared = preparer.prepare(values)
    assert preparer.together
    _assert_like_preprocess(pipe, params, values, prepared)


def test_a_preprocess_that_does_more_than_tokenize_turns_tokenizing_together_off(monkeypatch):
    """Should a transformers release add to a task's preprocess, the window's shortest and
    longest records show it, and every record then goes through the pipeline's own preprocess."""
    from composer.stages.model.preparer import Preparer

    pipe = _pipe("text-classification")
    original = type(pipe).preprocess

    def preprocess(self, inputs, **kwargs):
        prepared = original(self, inputs, **kwargs)
        prepared["input_ids"] = prepared["input_ids"].flip(-1)
        return prepared

    monkeypatch.setattr(type(pipe), "preprocess", preprocess)
    preparer = Preparer(pipe, {}, chunked=False, together=True)
    values = {str(i): text for i, text in enumerate(TEXTS)}
    prepared = preparer.prepare(values)
    assert not preparer.together
    _assert_like_preprocess(pipe, {}, values, prepared)


def test_overflowing_windows_and_inputs_other_than_text_go_record_by_record():
    """return_overflowing_tokens makes one text several rows; a {text, text_pair} input and an
    input the preprocess refuses are not strings. The refused one is left out: process() meets
    it in its record's own batch and reports it with the record's id."""
    from composer.stages.model.preparer import Preparer

    pipe = _pipe("text-classification")
    params = {"truncation": True, "max_length": 6, "stride": 2, "return_overflowing_tokens": True, "padding": "max_length"}
    preparer = Preparer(pipe, params, chunked=False, together=True)
    values = {"short": "ok", "long": TEXTS[0], "longer": TEXTS[5]}  # the first fits: the check alone would pass
    prepared = preparer.prepare(values)
    assert not preparer.together
    assert prepared["long"]["input_ids"].shape[0] > 1  # several rows for one text, as the pipeline's preprocess gives
    _assert_like_preprocess(pipe, params, values, prepared)

    preparer = Preparer(pipe, {}, chunked=False, together=True)
    pair = {"text": "the battery", "text_pair": "lasts for days"}
    prepared = preparer.prepare({"a": "plain text", "b": pair, "c": ["not", "a", "pair"]})
    assert set(prepared) == {"a", "b"} and preparer.together
    _assert_like_preprocess(pipe, {}, {"a": "plain text", "b": pair}, prepared)


def test_a_failure_inside_the_together_path_falls_back_record_by_record(monkeypatch):
    """Found in review: only the tokenizer call was guarded; a failing conversion or check
    escaped prepare(), so the window was tokenized on the model's thread, and every later
    window tried again."""
    from composer.stages.model import preparer as module

    pipe = _pipe("text-classification")
    preparer = module.Preparer(pipe, {}, chunked=False, together=True)
    monkeypatch.setattr(module, "_same", lambda ours, theirs: 1 / 0)
    values = {str(i): text for i, text in enumerate(TEXTS)}
    prepared = preparer.prepare(values)
    assert not preparer.together
    _assert_like_preprocess(pipe, {}, values, prepared)


# A batch of records tokenized together is padded by RowCollator, one array per field, in place
# of the pipeline's own collate (pad_collate_fn), which it must equal.
BATCH = ["the battery lasts for days", "", "ok", "a broken screen and a slow phone", "support never answered"]


def _rows(pipe, texts: list[str], params: dict | None = None) -> list:
    from composer.stages.model.preparer import Preparer, TokenRow

    preparer = Preparer(pipe, params or {}, chunked=False, together=True)
    prepared = preparer.prepare({str(i): text for i, text in enumerate(texts)})
    assert preparer.together and all(isinstance(item, TokenRow) for item in prepared.values())
    return [prepared[str(i)] for i in range(len(texts))]


def _assert_same_batch(batch: dict, expected: dict) -> None:
    import torch

    assert set(batch) == set(expected)
    for name, tensor in expected.items():
        assert batch[name].dtype == tensor.dtype and torch.equal(batch[name], tensor), name


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_a_batch_of_rows_collates_as_the_pipelines_own_collate(task, side):
    from transformers.pipelines.base import pad_collate_fn

    from composer.stages.model.preparer import RowCollator

    pipe = _pipe(task)
    pipe.tokenizer.padding_side = side
    pipe.tokenizer.pad_token = "[MASK]"  # not 0: input_ids must pad with the tokenizer's pad token
    rows = _rows(pipe, BATCH)
    collator = RowCollator()
    batch = collator.collate(rows, pipe.tokenizer)
    _assert_same_batch(batch, pad_collate_fn(pipe.tokenizer, None)([pipe.preprocess(text) for text in BATCH]))
    assert collator.checked and set(batch) == {"input_ids", "token_type_ids", "attention_mask"}
    assert batch["input_ids"].shape == (len(BATCH), max(len(pipe.tokenizer(t)["input_ids"]) for t in BATCH))


def test_the_collate_is_checked_until_a_padded_batch_passes(monkeypatch):
    from transformers.pipelines import base

    from composer.stages.model.preparer import RowCollator

    pipe = _pipe("text-classification")
    calls = []
    original = base.pad_collate_fn
    monkeypatch.setattr(base, "pad_collate_fn", lambda *a: (lambda items: calls.append(len(items)) or original(*a)(items)))
    collator = RowCollator()
    same_length = collator.collate(_rows(pipe, ["one two", "three four"]), pipe.tokenizer)
    assert calls == [] and not collator.checked  # nothing padded: the pipeline's collate only concatenates
    _assert_same_batch(same_length, original(pipe.tokenizer, None)([pipe.preprocess(t) for t in ["one two", "three four"]]))
    collator.collate(_rows(pipe, BATCH), pipe.tokenizer)
    assert calls == [len(BATCH)] and collator.checked
    collator.collate(_rows(pipe, BATCH[:3]), pipe.tokenizer)
    assert calls == [len(BATCH)]  # checked: the pipeline's collate no longer runs


def test_a_collate_that_differs_hands_every_later_batch_to_the_pipelines_collate(monkeypatch):
    """Should a transformers release pad a field differently, the check shows it: that batch
    gets the pipeline's own collate, and so does every later one."""
    from transformers.pipelines import base

    from composer.stages.model.preparer import RowCollator

    pipe = _pipe("text-classification")
    original = base.pad_collate_fn

    def padding_masks_with_2(*args):
        def collate(items):
            batch = original(*args)(items)
            batch["attention_mask"][batch["attention_mask"] == 0] = 2
            return batch
        return collate

    monkeypatch.setattr(base, "pad_collate_fn", padding_masks_with_2)
    collator = RowCollator()
    rows = _rows(pipe, BATCH)
    batch = collator.collate(rows, pipe.tokenizer)
    _assert_same_batch(batch, padding_masks_with_2(pipe.tokenizer, None)([row.tensors() for row in rows]))
    assert not collator.usable and not collator.checked
    assert collator.collate(rows, pipe.tokenizer) is None


def test_rows_the_collator_does_not_know_go_to_the_pipelines_collate():
    from composer.stages.model.preparer import RowCollator, TokenRow

    pipe = _pipe("text-classification")
    marked = [TokenRow({"input_ids": [2, 5, 3], "special_tokens_mask": [1, 0, 1]}), TokenRow({"input_ids": [2, 3], "special_tokens_mask": [1, 1]})]
    assert RowCollator().collate(marked, pipe.tokenizer) is None  # a field it does not pad
    mixed = [TokenRow({"input_ids": [2, 5, 3], "attention_mask": [1, 1, 1]}), TokenRow({"input_ids": [2, 3]})]
    assert RowCollator().collate(mixed, pipe.tokenizer) is None  # the pipeline's collate refuses these


def test_a_tokenizer_without_a_pad_token_fails_the_batch_as_the_pipeline_does():
    from composer.stages.model.preparer import RowCollator

    pipe = _pipe("text-classification")
    rows = _rows(pipe, BATCH)
    pipe.tokenizer.pad_token = None
    with pytest.raises(ValueError, match="without pad_token cannot do batching"):
        RowCollator().collate(rows, pipe.tokenizer)


def test_an_empty_row_padded_on_the_left_is_left_to_the_pipelines_collate():
    """Found in review: RowCollator once padded a left-padded batch holding an empty row itself,
    where the pipeline's collate (transformers' pad_collate_fn) behaves otherwise. Composer's
    rule: such a batch goes to the pipeline's own collate, whatever that does (5.24 and older
    raise, so the batch fails and its records run alone; 5.25 pads it). On the right an empty
    row is all padding, and RowCollator pads it exactly as the pipeline does."""
    from transformers.pipelines.base import pad_collate_fn

    from composer.stages.model.preparer import RowCollator

    pipe = _pipe("text-classification")
    pipe.tokenizer.padding_side = "left"
    params = {"add_special_tokens": False}
    rows = _rows(pipe, BATCH, params)
    assert 0 in {row.length for row in rows}
    collator = RowCollator()
    assert collator.collate(rows, pipe.tokenizer) is None  # None: the pipeline's own collate runs
    assert collator.usable  # and RowCollator stays in use for the batches it can pad
    pipe.tokenizer.padding_side = "right"
    batch = collator.collate(rows, pipe.tokenizer)
    _assert_same_batch(batch, pad_collate_fn(pipe.tokenizer, None)([pipe.preprocess(text, **params) for text in BATCH]))
