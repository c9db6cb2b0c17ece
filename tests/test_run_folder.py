"""The run folder contract (DESIGN.md), asserted field by field on real runs."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import platform
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from composer import allocator, api
from composer.runstore import FINISHED, Attempt, Manifest, RunStatus
from composer.testing import tiny_model_path
from conftest import read_jsonl, run_cli

DEMO = Path(api.__file__).parent / "data" / "demo" / "reviews.jsonl"
# The offline plumbing demo (tiny random model, sample reviews): the default job became
# experiment=support-tickets with a real model, tested in test_embeddings.py.
TINY_DEMO = ["experiment=tiny-sentiment", "threads=1"]
HEX16, HEX64 = 16, 64


def _is_hex(value: str, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and all(c in "0123456789abcdef" for c in value)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory) -> Path:
    """The README's main job, through the console script, inside a git repository."""
    work = tmp_path_factory.mktemp("demo")
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    (work / "notes.txt").write_text("tracked\n")
    subprocess.run(["git", "add", "notes.txt"], cwd=work, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], cwd=work, check=True)
    composer = Path(sys.executable).parent / "composer"
    done = subprocess.run([str(composer), "run", *TINY_DEMO, "hydra.run.dir=out"], cwd=work, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "OFFLINE TEST MODEL" in done.stdout  # the demo says its model is a tiny random one
    return work / "out"


def test_run_folder_has_every_file(demo_run):
    names = {p.relative_to(demo_run).as_posix() for p in demo_run.rglob("*") if p.is_file()}
    assert {".hydra/config.yaml", ".hydra/hydra.yaml", ".hydra/overrides.yaml", "config.yaml", "manifest.json",
            "outputs.jsonl", "errors.jsonl", "metrics.json"} <= names


def test_config_yaml_is_the_resolved_config(demo_run):
    saved = yaml.safe_load((demo_run / "config.yaml").read_text())
    assert saved == api.compose(TINY_DEMO)
    assert saved["input"]["path"] == str(DEMO)  # interpolations are resolved
    assert yaml.safe_load((demo_run / ".hydra" / "overrides.yaml").read_text()) == TINY_DEMO  # Hydra omits hydra.*


def test_manifest_fields(demo_run):
    manifest = json.loads((demo_run / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["exit_code"] == 0 and manifest["error"] is None
    assert manifest["name"] == "tiny-sentiment" and manifest["task"] == "text-classification"
    for package in ("torch", "transformers", "accelerate", "datasets", "hydra-core", "omegaconf"):
        assert manifest["versions"][package] == importlib.metadata.version(package)
    assert manifest["versions"]["python"] == ".".join(map(str, sys.version_info[:3]))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=demo_run.parent, capture_output=True, text=True).stdout.strip()
    assert manifest["git"] == {"commit": head, "dirty": False}
    assert manifest["seed"] == 0
    assert manifest["threads"] == {"threads": 1, "workers": 1, "requested_workers": "auto", "intra_op_threads": 1}
    assert manifest["device"]["cuda_available"] is False
    if platform.libc_ver()[0] == "glibc" and allocator.leave_alone_because() is None:  # a fresh process
        assert manifest["allocator"] == {"tuned": True, "mmap_threshold": 32 * 2**20, "trim_threshold": 64 * 2**20}
    assert manifest["input"] == {
        "kind": "file", "path": str(DEMO), "sha256": hashlib.sha256(DEMO.read_bytes()).hexdigest(), "bytes": DEMO.stat().st_size,
    }
    assert manifest["counts"] == {"records_in": 24, "records_ok": 24, "records_failed": 0, "batches": 3}
    assert manifest["timings"]["wall_seconds"] > 0 and manifest["timings"]["processing_seconds"] > 0
    assert manifest["peak_memory"]["rss_bytes"] > 50 * 2**20
    assert _is_hex(manifest["config_sha256"], HEX64)
    stages = manifest["stages"]
    assert list(stages) == ["source", "model", "outputs"]
    assert all(_is_hex(stage["fingerprint"], HEX16) for stage in stages.values())
    model = stages["model"]
    assert model["task"] == "text-classification" and model["dtype"] == "float32" and model["device"] == "cpu"
    assert model["quantization"] is None and model["trust_remote_code"] is False and model["model_class"] == "BertForSequenceClassification"
    assert model["model"]["requested"] == "tiny:text-classification" and model["model"]["source"] == "tiny"
    assert _is_hex(model["model"]["content_sha256"], HEX64)
    assert model["model"]["content_sha256"] != hashlib.sha256(b"").hexdigest()
    assert model["reads"] == ["text"] and model["writes"] == ["prediction"] and model["inputs"] == ["source"]
    assert stages["outputs"]["records_written"] == 24


def test_the_manifest_is_the_declared_one_with_statuses_as_plain_words(demo_run):
    """runstore declares manifest.json (Manifest, Attempt, in the order a new run writes its keys)
    and its statuses (RunStatus, a str Enum): the file holds exactly those keys and the plain word."""
    text = (demo_run / "manifest.json").read_text()
    manifest = json.loads(text)
    assert list(manifest) == list(Manifest.__annotations__)
    assert [list(attempt) for attempt in manifest["attempts"]] == [list(Attempt.__annotations__)]
    assert manifest["status"] == RunStatus.COMPLETE and type(manifest["status"]) is str
    assert '\n  "status": "complete",\n' in text and manifest["attempts"][0]["status"] == "complete"
    assert json.dumps({"status": RunStatus.FAILED}, indent=2) == '{\n  "status": "failed"\n}'
    assert f"{RunStatus.ABORTED}" == str(RunStatus.ABORTED) == "aborted"
    assert {status.value for status in RunStatus} == {
        "running", "complete", "completed_with_errors", "aborted", "interrupted", "failed",  # a run's manifest
        "config_error", "missing", "unknown",  # a sweep job without a run
    }
    assert FINISHED == (RunStatus.COMPLETE, RunStatus.COMPLETED_WITH_ERRORS) and "complete" in FINISHED


def test_outputs_are_in_input_order_and_json_clean(demo_run):
    outputs = read_jsonl(demo_run / "outputs.jsonl")
    inputs = read_jsonl(DEMO)
    assert [o["id"] for o in outputs] == [i["id"] for i in inputs]
    assert [(o["text"], o["label"]) for o in outputs] == [(i["text"], i["label"]) for i in inputs]
    for output in outputs:
        [prediction] = output["prediction"]
        assert prediction["label"] in {"POSITIVE", "NEGATIVE"} and isinstance(prediction["score"], float)
    assert (demo_run / "errors.jsonl").read_text() == ""


def test_metrics(demo_run):
    metrics = json.loads((demo_run / "metrics.json").read_text())
    outputs = read_jsonl(demo_run / "outputs.jsonl")
    correct = sum(o["prediction"][0]["label"] == o["label"] for o in outputs)
    quality = metrics["quality"]["model"]
    assert quality["n"] == 24 and quality["accuracy"] == pytest.approx(correct / 24)
    assert set(quality["per_class"]) <= {"POSITIVE", "NEGATIVE"} and quality["per_class"]["POSITIVE"]["support"] == 12
    assert metrics["throughput"]["records"] == 24 and metrics["throughput"]["records_per_second"] > 0
    latency = metrics["models"]["model"]["latency"]
    assert latency["batches"] == 3 and 0 < latency["p50_ms"] <= latency["p90_ms"] <= latency["p99_ms"]
    assert metrics["models"]["model"]["load_seconds"] > 0
    # tokens/s: the model's own tokenizer's count of every input it ran, as a user would count
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path("text-classification"))
    tokens = sum(len(tokenizer(o["text"])["input_ids"]) for o in outputs)
    throughput = metrics["throughput"]
    assert throughput["input_tokens"] == tokens == metrics["models"]["model"]["input_tokens"]
    assert throughput["tokens_per_second"] == pytest.approx(tokens / throughput["seconds"])


@pytest.mark.parametrize("overrides", [
    ["task=text-generation", "model=tiny-text-generation", "call.max_new_tokens=2"],  # unsorted, tokenized in process()
    ["task=token-classification", "model=tiny-token-classification", "batch_size=2"],  # sorted, lengths measured ahead
])
def test_input_tokens_are_counted_once_for_every_text_task(overrides, tmp_path):
    from transformers import AutoTokenizer

    texts = ["one two three", "a much longer sentence with many more words in it", "short"]
    result = api.run([*TINY_DEMO, "input=inline", f"input.records={json.dumps(texts)}", *overrides], run_dir=tmp_path / "run")
    tokenizer = AutoTokenizer.from_pretrained(result.manifest()["stages"]["model"]["model"]["load_from"])
    assert result.metrics()["throughput"]["input_tokens"] == sum(len(tokenizer(t)["input_ids"]) for t in texts)


def test_fingerprints_follow_what_changes_outputs(tmp_path):
    def model_fingerprint(*overrides: str) -> tuple[str, str]:
        run_dir = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        manifest = api.run([*TINY_DEMO, "input.limit=2", *overrides], run_dir=run_dir).manifest()
        return manifest["stages"]["model"]["fingerprint"], manifest["stages"]["model"]["model"]["content_sha256"]

    baseline = model_fingerprint()
    assert model_fingerprint("batch_size=2") == baseline  # batching does not change outputs
    assert model_fingerprint("call.top_k=2")[0] != baseline[0]
    copy = tmp_path / "copied-model"
    shutil.copytree(tiny_model_path("text-classification"), copy)
    local = model_fingerprint(f"model.id={copy}")
    assert local[1] == baseline[1]  # same bytes, same content hash
    weights = copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    changed = model_fingerprint(f"model.id={copy}")
    assert changed[1] != local[1] and changed[0] != local[0]


def test_cfg_job_prints_the_config_without_running(tmp_path):
    done = run_cli("run", "batch_size=3", "--cfg", "job", cwd=tmp_path, check=True)
    assert yaml.safe_load(done.stdout)["batch_size"] == 3
    assert not (tmp_path / "runs").exists()


def test_python_api_mirrors_the_cli(tmp_path):
    result = api.run(["experiment=tiny-sentiment", "task=fill-mask", "model=tiny-fill-mask", "input=inline", "input.records=['Hello [MASK] world']", "call.top_k=2", "threads=1"], run_dir=tmp_path / "run")
    assert result.status == "complete" and result.exit_code == 0 and result.run_dir == tmp_path / "run"
    [output] = result.outputs()
    assert len(output["prediction"]) == 2 and all("token_str" in p for p in output["prediction"])
    assert result.errors() == [] and result.metrics()["throughput"]["records"] == 1
    assert result.config()["call"] == {"top_k": 2}
    assert api.RunResult.load(tmp_path / "run") == result
    assert (tmp_path / "run" / ".hydra" / "overrides.yaml").exists()


def test_a_finished_run_folder_is_kept_and_another_config_refused(tmp_path):
    api.run(["threads=1", "input.limit=1"], run_dir=tmp_path / "run")
    before = (tmp_path / "run" / "outputs.jsonl").read_bytes()
    again = run_cli("run", "threads=1", "input.limit=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert again.returncode == 0 and "run complete" in again.stdout
    other = run_cli("run", "threads=1", "input.limit=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert other.returncode == 2
    assert "holds a run with another config, so it cannot be continued:\n  - input.limit: 1 -> 2" in other.stderr
    assert (tmp_path / "run" / "outputs.jsonl").read_bytes() == before


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS reset needs Linux /proc")
def test_peak_memory_is_the_runs_own_not_the_processs_earlier_peak(tmp_path):
    api.run([*TINY_DEMO, "input.limit=2"], run_dir=tmp_path / "warm")  # torch, transformers, the model: loaded
    ballast = b"\x01" * (1024 * 2**20)  # touched pages: the process peak grows by 1 GiB, then it is freed
    del ballast
    process_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    peak = api.run([*TINY_DEMO, "input.limit=2"], run_dir=tmp_path / "run").manifest()["peak_memory"]
    assert peak["rss_source"] == "VmHWM"
    assert peak["rss_bytes"] < process_peak - 700 * 2**20
