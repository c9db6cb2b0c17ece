"""`composer verify`: re-execution from the run folder alone, and the drift it names."""

from __future__ import annotations

import json
import shutil

import pytest

from composer import api
from composer.testing import tiny_model_path
from conftest import run_cli, write_jsonl

TEXTS = ["the battery lasts for days", "the package arrived broken", "great value", "support never answered"]


@pytest.fixture()
def local_run(tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_path("text-classification"), model)
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in TEXTS])
    result = api.run(
        ["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", f"model.id={model}", "threads=1", "batch_size=2", "call.top_k=2"],
        run_dir=tmp_path / "run",
    )
    assert result.status == "complete"
    return result.run_dir, model, data


def test_an_unchanged_run_verifies_identical(local_run, tmp_path):
    run_dir, _, _ = local_run
    done = run_cli("verify", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "identical: 4 records byte for byte, no recorded fact drifted"


def test_edited_weights_are_named_as_drift(local_run, tmp_path):
    from safetensors.torch import load_file, save_file

    run_dir, model, _ = local_run
    before = api.RunResult.load(run_dir).manifest()["stages"]["model"]["model"]["content_sha256"]
    weights = load_file(model / "model.safetensors")
    weights["classifier.bias"][0] += 3.0  # shifts every record's scores
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    done = run_cli("verify", str(run_dir), cwd=tmp_path)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert lines[0].startswith("records whose output changed: ") and all(i in lines[0] for i in _ids(run_dir))
    drift = [line for line in lines if line.startswith("drift: stages.model.model.content_sha256: ")]
    assert drift and before in drift[0]


def test_an_edited_input_file_is_named_as_drift(local_run, tmp_path):
    run_dir, _, data = local_run
    write_jsonl(data, [{"text": t.upper()} for t in TEXTS])
    done = run_cli("verify", str(run_dir), cwd=tmp_path)
    assert done.returncode == 1
    assert any(line.startswith("drift: input.sha256: ") for line in done.stdout.splitlines())
    assert any(line.startswith("records missing: ") for line in done.stdout.splitlines())  # content-hash ids changed


def test_verify_refuses_an_unfinished_run(tmp_path):
    done = run_cli("verify", str(tmp_path / "nothing"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def _ids(run_dir):
    return [row["id"] for row in api.RunResult.load(run_dir).outputs()]


def test_swapped_lines_are_named_as_reordered(local_run, tmp_path):
    """Found by probing (issue 16): two lines of outputs.jsonl swapped verified "identical", since
    lines were compared by id only; outputs.jsonl keeps the input's order, so order is checked."""
    run_dir, _, _ = local_run
    outputs = run_dir / "outputs.jsonl"
    lines = outputs.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[0], lines[2] = lines[2], lines[0]
    outputs.write_text("".join(lines), encoding="utf-8")
    first, third = (json.loads(line)["id"] for line in (lines[2], lines[0]))
    done = run_cli("verify", str(run_dir), cwd=tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"reordered: outputs.jsonl line 1 holds id {third!r} where the re-run has id {first!r} (same lines, another order)"
    ]


def test_a_damaged_line_is_named_not_a_traceback(local_run, tmp_path):
    run_dir, _, _ = local_run
    outputs = run_dir / "outputs.jsonl"
    lines = outputs.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[1] = lines[1][:20] + "\n"
    outputs.write_text("".join(lines), encoding="utf-8")
    done = run_cli("verify", str(run_dir), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert f"{outputs} line 2 is not a record (JSONDecodeError: " in done.stderr
