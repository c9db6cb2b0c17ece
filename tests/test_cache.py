"""The result cache: keyed on exactly what changes outputs, safe across processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from composer import api
from composer.cache import ResultCache
from composer.testing import tiny_model_path
from conftest import run_cli, write_jsonl

TEXTS = ["Great battery life", "Arrived broken", "Support was slow", "Works as described", "Too expensive"]


@pytest.fixture()
def cached(tmp_path):
    """Run a config with cache=on into a fresh folder; returns (result, model stage facts)."""
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in TEXTS])
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path("text-classification"), model)
    base = ["experiment=tiny-sentiment", f"model.id={model}", "input=jsonl", f"input.path={data}", "postprocess=[]",
            "cache=on", f"cache.path={tmp_path / 'cache.sqlite'}", "threads=1"]
    counter = iter(range(100))

    def run(*overrides: str):
        result = api.run([*base, *overrides], run_dir=tmp_path / f"run{next(counter)}")
        assert result.status == "complete"
        return result, result.manifest()["stages"]["model"]

    return run, model


def test_a_repeated_run_hits_every_record_and_loads_no_model(cached):
    run, _ = cached
    first, facts = run()
    assert facts["cache"]["misses"] == 5 and facts["cache"]["hits"] == 0 and facts["loaded"] is True
    second, facts = run("batch_size=2")  # batch size never changes outputs: still a hit
    assert facts["cache"] == {"path": facts["cache"]["path"], "hits": 5, "misses": 0}
    assert facts["loaded"] is False and second.metrics()["models"]["model"]["load_seconds"] is None
    assert (second.run_dir / "outputs.jsonl").read_bytes() == (first.run_dir / "outputs.jsonl").read_bytes()
    # tokens/s counts the same tokens whether the model ran or the cache answered (its tokenizer
    # is read from the model folder without loading the weights)
    tokens = first.metrics()["throughput"]["input_tokens"]
    assert tokens and second.metrics()["throughput"]["input_tokens"] == tokens
    third, _ = run("cache=off")
    assert third.metrics()["throughput"]["input_tokens"] == tokens


def test_batch_size_auto_on_a_cached_rerun_probes_nothing_and_says_so(cached):
    """A rerun served from the cache has no model to measure: batch_size=auto's probe would time
    cache lookups. It loads nothing and the manifest says why no size was chosen."""
    run, _ = cached
    first, facts = run("batch_size=auto")
    assert facts["loaded"] is True and facts["batching"]["auto"]["chosen"] == 8  # 5 records: too few to probe
    second, facts = run("batch_size=auto")
    assert facts["loaded"] is False and facts["cache"]["hits"] == 5
    assert facts["batching"]["batch_size"] is None and facts["batching"]["auto"]["method"].startswith("not probed")
    assert (second.run_dir / "outputs.jsonl").read_bytes() == (first.run_dir / "outputs.jsonl").read_bytes()


def test_a_failed_batch_counts_its_cache_misses_once(cached, tmp_path):
    run, _ = cached
    texts = [*TEXTS, "word " * 600]  # longer than the model's 512 positions: fails, its batch is retried one by one
    data = write_jsonl(tmp_path / "with-bad.jsonl", [{"text": t} for t in texts])
    result = api.run(["experiment=tiny-sentiment", f"model.id={cached[1]}", "input=jsonl", f"input.path={data}",
                      "cache=on", f"cache.path={tmp_path / 'other.sqlite'}", "threads=1", "batch_size=8", "sort_window=0"],
                     run_dir=tmp_path / "bad")
    assert result.status == "completed_with_errors" and len(result.errors()) == 1
    assert result.manifest()["stages"]["model"]["cache"]["misses"] == len(TEXTS)


def test_what_changes_outputs_misses(cached):
    run, model = cached
    run()
    assert run("call.top_k=2")[1]["cache"]["misses"] == 5  # model stage config
    assert run("preprocess=[{type: normalize, lowercase: true}]")[1]["cache"]["misses"] == 5  # upstream stage
    assert run("model.dtype=bfloat16")[1]["cache"]["misses"] == 5  # dtype
    assert run("on_error=fail", "max_errors=3")[1]["cache"]["hits"] == 5  # nothing that changes outputs
    from safetensors.torch import load_file, save_file

    weights = load_file(model / "model.safetensors")
    weights["classifier.bias"][0] += 1.0
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    assert run()[1]["cache"]["misses"] == 5  # the weights' content hash


def test_the_same_input_bytes_at_another_path_hit(cached, tmp_path):
    """Found by probing (issue 16): a copy of the input file at another path missed on every
    record, since the source's path was part of each key; the key holds the model input itself."""
    run, _ = cached
    first, facts = run()
    assert facts["cache"]["misses"] == 5
    moved = tmp_path / "elsewhere" / "copy.jsonl"
    moved.parent.mkdir()
    moved.write_bytes((tmp_path / "input.jsonl").read_bytes())
    second, facts = run(f"input.path={moved}")
    assert facts["cache"]["hits"] == 5 and facts["cache"]["misses"] == 0 and facts["loaded"] is False
    assert (second.run_dir / "outputs.jsonl").read_bytes() == (first.run_dir / "outputs.jsonl").read_bytes()
    # What the source reads still counts: another field is another model input.
    write_jsonl(moved, [{"text": t, "title": t.upper()} for t in TEXTS])
    assert run(f"input.path={moved}", "input.field=title")[1]["cache"]["misses"] == 5


def test_a_rerun_sweep_loads_no_model(tmp_path):
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in TEXTS])
    sweep = ["run", "-m", "experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "batch_size=1,4", "cache=on",
             f"cache.path={tmp_path / 'cache.sqlite'}", "threads=1"]
    run_cli(*sweep, f"hydra.sweep.dir={tmp_path / 'first'}", cwd=tmp_path, check=True)
    run_cli(*sweep, f"hydra.sweep.dir={tmp_path / 'second'}", cwd=tmp_path, check=True)
    for job in ("0", "1"):
        facts = json.loads((tmp_path / "second" / job / "manifest.json").read_text())["stages"]["model"]
        assert facts["loaded"] is False and facts["cache"]["hits"] == 5
        assert (tmp_path / "second" / job / "outputs.jsonl").read_bytes() == (tmp_path / "first" / job / "outputs.jsonl").read_bytes()


HAMMER = """
import sys
from composer.cache import ResultCache
cache = ResultCache(sys.argv[1])
me = int(sys.argv[2])
for round in range(150):
    keys = [f"k{(round * 7 + i) % 300}" for i in range(8)]
    cache.put_many({k: {"value": k, "by": "anyone"} for k in keys})
    found = cache.get_many(keys)
    assert set(found) == set(keys), (me, round)
    assert all(found[k]["value"] == k for k in keys)
print("ok")
"""


def test_four_processes_hammering_the_cache_never_fail(tmp_path):
    path = tmp_path / "shared.sqlite"
    script = tmp_path / "hammer.py"
    script.write_text(HAMMER)
    processes = [
        subprocess.Popen([sys.executable, str(script), str(path), str(n)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in range(4)
    ]
    results = [p.communicate(timeout=300) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0, 0], results
    assert all(out.strip() == "ok" for out, _ in results)
    cache = ResultCache(path)
    assert cache.info()["entries"] == 300
    cache.close()


def test_cache_info_and_clear(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = ResultCache(path)
    cache.put_many({"a": 1, "b": [1, 2]})
    cache.close()
    info = run_cli("cache", "info", "--path", str(path), cwd=tmp_path, check=True)
    assert info.stdout.startswith(f"{path}: 2 entries, ")
    cleared = run_cli("cache", "clear", "--path", str(path), cwd=tmp_path, check=True)
    assert cleared.stdout.strip() == f"removed 2 entries from {path}"
    assert ResultCache(path).info()["entries"] == 0
    os.environ.get("COMPOSER_CACHE_DIR")  # the default location lives under it
    assert Path(os.environ["COMPOSER_CACHE_DIR"]) / "results.sqlite" == __import__("composer.cache", fromlist=["x"]).default_path()


def test_a_lookup_of_more_keys_than_sqlite_binds_in_one_statement(tmp_path):
    """A window of batch_size=auto with the cache on asks for every record's key at once; SQLite
    builds before 3.32 (and any build may be set lower) refuse more than 999 variables in one
    statement."""
    import sqlite3

    cache = ResultCache(tmp_path / "cache.sqlite")
    cache._db.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 999)  # as in such a build
    keys = [f"k{i}" for i in range(2_500)]
    cache.put_many({key: {"n": i} for i, key in enumerate(keys) if i % 3 == 0})
    found = cache.get_many(keys)
    assert len(found) == len(range(0, 2_500, 3)) and found["k2499"] == {"n": 2499}
    assert cache.present(keys * 2) == set(keys[::3]) and cache.present(keys[1:3]) == set()
    cache.close()
