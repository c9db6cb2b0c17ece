"""Issue 19: sentence vectors pooled inside the model stage's batch, and the model's own
sentence-transformers settings (max_seq_length, pooling) read, stated and overridable.

Every test runs offline on the tiny feature-extraction model; a copy of it given
sentence-transformers files stands in for a published sentence-transformers model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from composer import api
from composer.schema import ConfigError
from composer.stages.embeddings import MeanPool
from composer.testing import tiny_model_path

TEXTS = [
    "short",
    "a much longer sentence about a parcel that never arrived at the door and the courier who never called back",
    "two words",
    "the invoice shows a charge I do not recognise from last month",
    "ok",
]
EMBED = ["experiment=base", "task=feature-extraction", "model=tiny-feature-extraction", "threads=1", "progress=false",
         "batch_size=4", "input=inline", f"input.records={json.dumps(TEXTS)}"]


def _run(tmp_path: Path, *overrides: str) -> api.RunResult:
    result = api.run([*EMBED, *overrides], run_dir=tmp_path / f"run{len(list(tmp_path.glob('run*')))}")
    assert result.status == "complete", result.manifest().get("error")
    return result


def _reference(model: Path, texts: list[str], mode: str = "mean", max_length: int | None = None) -> list[list[float]]:
    """sentence-transformers' recipe by hand on one padded batch: the attention-mask-weighted
    pooling, then the L2 norm."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModel, AutoTokenizer

    tokenizer, encoder = AutoTokenizer.from_pretrained(model), AutoModel.from_pretrained(model).eval()
    limits = {"truncation": True, "max_length": max_length} if max_length else {}
    encoded = tokenizer(texts, padding=True, return_tensors="pt", **limits)
    assert int(encoded["attention_mask"].sum()) < encoded["attention_mask"].numel()  # padding really happened
    with torch.no_grad():
        states = encoder(**encoded)[0].double()
    mask = encoded["attention_mask"].unsqueeze(-1).double()
    if mode == "mean":
        pooled = (states * mask).sum(1) / mask.sum(1)
    elif mode == "max":
        pooled = states.masked_fill(mask == 0, float("-inf")).max(1).values
    else:  # cls
        pooled = states[:, 0]
    return F.normalize(pooled, dim=1).tolist()


def _min_cosine(a: list[list[float]], b: list[list[float]]) -> float:
    return min(sum(x * y for x, y in zip(u, v)) for u, v in zip(a, b, strict=True))


def _embeddings(result: api.RunResult) -> list[list[float]]:
    return [record["embedding"] for record in result.outputs()]


@pytest.mark.parametrize("mode", ["mean", "max", "cls"])
def test_pooling_in_the_model_stage_equals_pooling_the_token_states(tmp_path, mode):
    pooled_in_model = _run(tmp_path, f"postprocess=[{{type: mean_pool, mode: {mode}}}]")
    # keep_input: the token states reach outputs, so mean_pool pools them itself, as before.
    pooled_after = _run(tmp_path, f"postprocess=[{{type: mean_pool, mode: {mode}, keep_input: true}}]")
    reference = _reference(tiny_model_path("feature-extraction"), TEXTS, mode)
    assert _min_cosine(_embeddings(pooled_in_model), reference) >= 0.999999
    assert _min_cosine(_embeddings(pooled_after), reference) >= 0.999999
    difference = max(abs(x - y) for u, v in zip(_embeddings(pooled_in_model), _embeddings(pooled_after)) for x, y in zip(u, v))
    assert difference < 1e-9, difference

    stages = pooled_in_model.manifest()["stages"]
    assert stages["model"]["pooling"] == {"mode": mode, "normalize": True} and stages["mean_pool"]["pooled_by"] == "model"
    assert all("prediction" not in record for record in pooled_in_model.outputs())
    stages = pooled_after.manifest()["stages"]
    assert stages["model"]["pooling"] is None and stages["mean_pool"]["pooled_by"] is None
    assert all(len(record["prediction"][0]) > 1 for record in pooled_after.outputs())  # token states, as asked


def test_the_embedding_stages_get_the_same_vectors_either_way(tmp_path):
    labels = "{billing: 'money, a charge, an invoice', shipping: 'a parcel, a courier, a delivery'}"
    chain = "{{type: mean_pool{keep}}}, {{type: embedding_classify, model: ${{model}}, labels: {labels}}}, {{type: near_duplicates, threshold: 0.5}}"
    fused = _run(tmp_path, f"postprocess=[{chain.format(keep='', labels=labels)}]")
    unfused = _run(tmp_path, f"postprocess=[{chain.format(keep=', keep_input: true', labels=labels)}]")
    assert fused.manifest()["stages"]["mean_pool"]["pooled_by"] == "model"
    for a, b in zip(fused.outputs(), unfused.outputs(), strict=True):
        assert a["near_duplicate"] == b["near_duplicate"]
        assert a["prediction"]["labels"] == b["prediction"]["labels"]
        assert max(abs(x - y) for x, y in zip(a["prediction"]["scores"], b["prediction"]["scores"])) < 1e-9


def test_the_model_pools_only_for_a_pooling_stage_that_is_its_only_reader():
    _, graph = api.plan([*EMBED, "postprocess=[{type: mean_pool}]"])
    assert graph.nodes[1].stage.pooling == {"mode": "mean", "normalize": True}
    # A second stage reads the token states: they must leave the model stage as they are.
    _, graph = api.plan([*EMBED, "postprocess=[{type: mean_pool}]", "+stages={copy: {type: normalize, field: prediction, inputs: [model]}}"])
    assert graph.nodes[1].stage.pooling is None


def test_a_cached_token_state_output_is_never_served_as_a_pooled_one(tmp_path):
    cache = ["cache=on", f"cache.path={tmp_path / 'cache.sqlite'}"]
    _run(tmp_path, "postprocess=[{type: mean_pool, keep_input: true}]", *cache)
    pooled = _run(tmp_path, "postprocess=[{type: mean_pool}]", *cache)
    assert pooled.manifest()["stages"]["model"]["cache"]["hits"] == 0  # the pooling is in the model's fingerprint
    again = _run(tmp_path, "postprocess=[{type: mean_pool}]", *cache)
    assert again.manifest()["stages"]["model"]["cache"]["misses"] == 0
    assert _embeddings(again) == _embeddings(pooled)


def test_mean_pool_modes_on_known_states():
    states = [[[3.0, 0.0], [0.0, 4.0]]]
    assert MeanPool("pool", mode="cls").process([{"id": "a", "prediction": states}])[0]["embedding"] == [1.0, 0.0]
    assert MeanPool("pool", mode="max", normalize=False).process([{"id": "a", "prediction": states}])[0]["embedding"] == [3.0, 4.0]
    assert MeanPool("pool", mode="mean_sqrt_len", normalize=False).process([{"id": "a", "prediction": states}])[0]["embedding"] == \
        pytest.approx([3 / 2 ** 0.5, 4 / 2 ** 0.5])
    with pytest.raises(ValueError, match="mode must be one of mean, max, cls, mean_sqrt_len"):
        MeanPool("pool", mode="average")


def _sentence_model(tmp_path: Path, max_seq_length: int, pooling: str = "mean") -> Path:
    """The tiny model with the files a sentence-transformers model publishes beside its weights."""
    folder = tmp_path / f"sentence-{max_seq_length}-{pooling}"
    shutil.copytree(tiny_model_path("feature-extraction"), folder)
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
               {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir()
    keys = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32, **{k: k == keys[pooling] for k in keys.values()}}))
    return folder


def test_the_models_own_max_seq_length_truncates_and_is_stated(tmp_path):
    model = _sentence_model(tmp_path, max_seq_length=6)
    result = _run(tmp_path, f"model.id={model}", "postprocess=[{type: mean_pool}]")
    assert _min_cosine(_embeddings(result), _reference(model, TEXTS, max_length=6)) >= 0.999999
    facts = result.manifest()["stages"]["model"]
    assert facts["max_seq_length"] == {"tokens": 6, "from": "sentence_bert_config.json"}
    assert facts["sentence_transformers"] == {"max_seq_length": 6, "pooling": "mean", "normalize": True}
    # The plain pipeline's truncation (the tokenizer's limit) gives other vectors for the long text.
    untruncated = _reference(model, TEXTS)
    assert sum(x * y for x, y in zip(_embeddings(result)[1], untruncated[1])) < 0.999999


def test_max_seq_length_is_overridable_and_the_calls_own_setting_wins(tmp_path):
    model = _sentence_model(tmp_path, max_seq_length=6)
    shorter = _run(tmp_path, f"model.id={model}", "model.max_seq_length=4", "postprocess=[{type: mean_pool}]")
    assert shorter.manifest()["stages"]["model"]["max_seq_length"] == {"tokens": 4, "from": "model.max_seq_length"}
    assert _min_cosine(_embeddings(shorter), _reference(model, TEXTS, max_length=4)) >= 0.999999
    called = _run(tmp_path, f"model.id={model}", "+call.tokenize_kwargs={truncation: true, max_length: 5}", "postprocess=[{type: mean_pool}]")
    assert called.manifest()["stages"]["model"]["max_seq_length"] == {"tokens": 5, "from": "call.tokenize_kwargs.max_length"}
    assert _min_cosine(_embeddings(called), _reference(model, TEXTS, max_length=5)) >= 0.999999
    plain = _run(tmp_path, "postprocess=[{type: mean_pool}]")  # a model without sentence-transformers files
    assert plain.manifest()["stages"]["model"]["max_seq_length"] is None
    assert plain.manifest()["stages"]["model"]["sentence_transformers"] is None


def test_pooling_other_than_the_models_own_is_said(tmp_path):
    model = _sentence_model(tmp_path, max_seq_length=64, pooling="cls")
    result = _run(tmp_path, f"model.id={model}", "postprocess=[{type: mean_pool}]")
    warnings = " ".join(w["message"] for w in result.manifest()["warnings"])
    assert "the model's sentence-transformers pooling is 'cls', this job pools 'mean'" in warnings
    matching = _run(tmp_path, f"model.id={model}", "postprocess=[{type: mean_pool, mode: cls}]")
    assert "pooling is" not in " ".join(w["message"] for w in matching.manifest()["warnings"])


@pytest.mark.parametrize(("overrides", "message"), [
    (["model.max_seq_length=0"], "model.max_seq_length: must be a positive number of tokens or null"),
    (["task=text-classification", "model=tiny-text-classification", "model.max_seq_length=8"],
     "model.max_seq_length: truncates feature-extraction inputs; task 'text-classification'"),
])
def test_a_bad_max_seq_length_is_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        api.plan([*EMBED, *overrides])
