"""A window's texts tokenized in one call (composer.stages.preparer) give the model exactly the
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

    assert set(prepared) == set(values)
    for key, value in values.items():
        expected = pipe.preprocess(value, **params)
        assert set(prepared[key].keys()) == set(expected.keys()), key
        for name, tensor in expected.items():
            mine = prepared[key][name]
            assert mine.dtype == tensor.dtype and mine.shape == tensor.shape and torch.equal(mine, tensor), (key, name)


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
@pytest.mark.parametrize("params", [{}, {"truncation": True}, {"truncation": True, "max_length": 6}])
def test_a_window_tokenized_together_equals_the_pipelines_own_preprocess(task, params):
    from composer.stages.preparer import Preparer

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
    from composer.stages.preparer import Preparer

    pipe = _pipe("feature-extraction")
    values = {"long": TEXTS[5], "short": "ok", "mid": TEXTS[0]}
    preparer = Preparer(pipe, {"padding": padding}, chunked=False, together=True)
    prepared = preparer.prepare(values)
    assert not preparer.together
    _assert_like_preprocess(pipe, {"padding": padding}, values, prepared)


def test_an_empty_text_among_others_is_int64_as_alone():
    """Found in review: an empty row (no special tokens) became float32 through torch.tensor."""
    from composer.stages.preparer import Preparer

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
    from composer.stages.preparer import Preparer

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
    from composer.stages.preparer import Preparer

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
    from composer.stages import preparer as module

    pipe = _pipe("text-classification")
    preparer = module.Preparer(pipe, {}, chunked=False, together=True)
    monkeypatch.setattr(module, "_same", lambda ours, theirs: 1 / 0)
    values = {str(i): text for i, text in enumerate(TEXTS)}
    prepared = preparer.prepare(values)
    assert not preparer.together
    _assert_like_preprocess(pipe, {}, values, prepared)
