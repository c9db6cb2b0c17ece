"""Issue 4: sweep jobs in one process reuse a loaded model when only non-model settings change."""

from __future__ import annotations

import json

import pytest

from composer import api, modelpool
from conftest import BASE, TEXTS, run_cli, write_jsonl

GENERATION = ["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "threads=1",
              "progress=false", "call.max_new_tokens=6", "call.do_sample=true", "call.top_p=0.9", "seed=3"]


@pytest.fixture(autouse=True)
def empty_pool():
    modelpool.clear()
    yield
    modelpool.clear()


def _model_facts(result) -> dict:
    return result.manifest()["stages"]["model"]


def _run(tmp_path, overrides: list[str]):
    return api.run(overrides, run_dir=tmp_path / f"run{len(list(tmp_path.iterdir()))}")


def test_a_second_run_with_the_same_model_reuses_it_and_gives_the_same_outputs(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in TEXTS])
    overrides = [*BASE, "input=jsonl", f"input.path={data}"]
    first = _run(tmp_path, [*overrides, "batch_size=1"])
    second = _run(tmp_path, [*overrides, "batch_size=4", "call.top_k=2"])
    assert not _model_facts(first)["reused"] and _model_facts(second)["reused"]
    assert _model_facts(second)["model"] == _model_facts(first)["model"]
    # the reused pipeline answers exactly as a fresh one does with the same settings
    modelpool.clear()
    fresh = _run(tmp_path, [*overrides, "batch_size=4", "call.top_k=2"])
    assert not _model_facts(fresh)["reused"]
    assert [r["prediction"] for r in fresh.outputs()] == [r["prediction"] for r in second.outputs()]


def test_a_different_model_or_dtype_loads_and_frees_the_kept_one(tmp_path):
    _run(tmp_path, [*BASE, "input.limit=2"])
    other_dtype = _run(tmp_path, [*BASE, "input.limit=2", "model.dtype=bfloat16"])
    assert not _model_facts(other_dtype)["reused"]
    other_model = _run(tmp_path, ["experiment=tiny-sentiment", "task=fill-mask", "model=tiny-fill-mask", "input=inline",
                                  "input.records=['Hello [MASK] world']", "threads=1"])
    assert not _model_facts(other_model)["reused"]
    assert len(modelpool._kept) == 1  # only what the last run released is kept


def test_sampled_generation_does_not_depend_on_reuse(tmp_path):
    overrides = [*GENERATION, "input=inline", "input.records=['The cat', 'A dog ran', 'Once upon a time']"]
    fresh = _run(tmp_path, overrides)
    reused = _run(tmp_path, overrides)
    assert _model_facts(reused)["reused"]
    assert [r["prediction"] for r in reused.outputs()] == [r["prediction"] for r in fresh.outputs()]


def test_a_cli_sweep_loads_each_model_once(tmp_path):
    # Hydra varies the first override slowest: (fp32, 1), (fp32, 4), (bf16, 1), (bf16, 4)
    done = run_cli("run", "-m", *BASE, "model.dtype=float32,bfloat16", "batch_size=1,4",
                   f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    facts = [json.loads((tmp_path / "sweep" / str(n) / "manifest.json").read_text())["stages"]["model"] for n in range(4)]
    assert [f["dtype"] for f in facts] == ["float32", "float32", "bfloat16", "bfloat16"]
    assert [f["reused"] for f in facts] == [False, True, False, True]


@pytest.mark.parametrize("cache", ["off", "on"])
def test_stages_of_one_run_share_an_identical_pipeline(cache, tmp_path, monkeypatch):
    """The default job's embedding_classify encodes its labels with the main model's pipeline
    instead of loading the same model again (with cache=on, whichever needs it first loads it)."""
    loads = []
    hold = modelpool.hold
    monkeypatch.setattr(modelpool, "hold", lambda key, pipe: (loads.append(key), hold(key, pipe)))
    overrides = ["experiment=support-tickets", "model.id=tiny:feature-extraction", "input.limit=6", "threads=1",
                 f"cache={cache}", f"cache.path={tmp_path / 'cache.sqlite'}"]
    result = _run(tmp_path, overrides)
    assert result.status == "complete" and len(loads) == 1
    assert len(modelpool._kept) == 1 and modelpool._live == {}  # kept once, for the next run
