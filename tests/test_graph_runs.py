"""Graph execution: fan-out, failure isolation and policies, exit codes, progress output."""

from __future__ import annotations

import json

from composer import api
from composer.records import to_jsonable
from composer.testing import tiny_model_path
from conftest import assert_close, read_jsonl, run_cli

MASKED = ["Hello [MASK] world.", "no mask here", "The [MASK] is blue.", "still none", "A [MASK] day."]
FILL = ["experiment=tiny-sentiment", "task=fill-mask", "model=tiny-fill-mask", "input=inline", "threads=1", "call.top_k=2"]


def _records(texts: list[str]) -> str:
    return "input.records=[" + ",".join(f"'{t}'" for t in texts) + "]"


def test_fan_out_two_models_over_one_input(tmp_path):
    from transformers import pipeline

    result = api.run(["experiment=fanout", "threads=1", "input.limit=6"], run_dir=tmp_path / "run")
    assert result.status == "complete"
    outputs = result.outputs()
    sentiment = pipeline("text-classification", model=str(tiny_model_path("text-classification")))
    zero_shot = pipeline("zero-shot-classification", model=str(tiny_model_path("zero-shot-classification")))
    labels = ["shipping", "battery", "support", "quality"]
    for output in outputs:
        expected_top = max(to_jsonable(sentiment(output["text"], top_k=None)), key=lambda p: p["score"])
        assert_close(output["prediction"], [expected_top], where=output["id"])  # postprocess top_k: 1
        expected_topic = zero_shot(output["text"], candidate_labels=labels, hypothesis_template="This review is about {}.")
        assert_close(output["topic"], to_jsonable(expected_topic), where=output["id"])
    stages = result.manifest()["stages"]
    assert stages["topic"]["inputs"] == ["source"] and stages["topic"]["task"] == "zero-shot-classification"
    assert stages["outputs"]["inputs"] == ["topic", "top_k"]
    assert list(result.metrics()["quality"]) == ["model"]


def test_one_bad_record_does_not_take_its_batch_down(tmp_path):
    result = api.run([*FILL, _records(MASKED), "batch_size=8"], run_dir=tmp_path / "run")
    assert result.status == "completed_with_errors" and result.exit_code == 1
    assert [o["text"] for o in result.outputs()] == [MASKED[0], MASKED[2], MASKED[4]]
    errors = result.errors()
    assert [e["stage"] for e in errors] == ["model", "model"]
    assert {e["error_type"] for e in errors} == {"PipelineException"}
    assert all("No mask_token ([MASK]) found on the input" in e["message"] for e in errors)
    ids = {o["id"] for o in result.outputs()} | {e["id"] for e in errors}
    assert len(ids) == len(MASKED)
    assert result.manifest()["counts"] == {"records_in": 5, "records_ok": 3, "records_failed": 2, "batches": 1}
    # Bad records, not the batching: the stage keeps batching.
    batching = result.manifest()["stages"]["model"]["batching"]
    assert batching["batch_size"] == 8 and "one_record_because" not in batching


def test_on_error_fail_stops_with_exit_3_and_keeps_finished_batches(tmp_path):
    texts = ["Hello [MASK].", "A [MASK] b.", "no mask", "Last [MASK]."]
    done = run_cli("run", *FILL, _records(texts), "batch_size=2", "on_error=fail", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "on_error=fail" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "aborted" and manifest["exit_code"] == 3
    assert [o["text"] for o in read_jsonl(tmp_path / "run" / "outputs.jsonl")] == texts[:2]
    assert len(read_jsonl(tmp_path / "run" / "errors.jsonl")) == 1


def test_max_errors_aborts(tmp_path):
    result = api.run([*FILL, _records(["x", "y", "z", "Hi [MASK]."]), "batch_size=1", "max_errors=2"], run_dir=tmp_path / "run")
    assert result.status == "aborted" and result.exit_code == 3
    assert len(result.errors()) == 2 and result.outputs() == []
    assert "max_errors=2" in result.manifest()["error"]["message"]


def test_a_model_that_fails_to_load_is_reported_not_raised(tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    done = run_cli("run", "experiment=tiny-sentiment", f"model.id={broken}", "threads=1", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 4
    assert "Traceback" not in done.stderr and "run failed" in done.stdout
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["error"]["traceback"]


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path):
    quiet = run_cli("run", "experiment=tiny-sentiment", "threads=1", f"hydra.run.dir={tmp_path / 'quiet'}", cwd=tmp_path, check=True)
    assert "24/24" not in quiet.stderr
    assert "Loading weights" not in quiet.stderr  # nor transformers' own bars
    shown = run_cli("run", "experiment=tiny-sentiment", "threads=1", "progress=true", f"hydra.run.dir={tmp_path / 'shown'}", cwd=tmp_path, check=True)
    assert "records" in shown.stderr and "24/24" in shown.stderr and "/s" in shown.stderr
