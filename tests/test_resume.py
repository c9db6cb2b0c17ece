"""Nothing lost: kill -9, Ctrl-C and torn lines, then resume to the uninterrupted result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer import api
from composer.runstore import flatten, repair_torn_tail
from conftest import read_jsonl, run_cli, stop_requested_at, write_jsonl

N_RECORDS = 240
# Text generation with the tiny GPT-2 is slow enough (tens of records a second) to be stopped
# mid-run, and its greedy outputs are deterministic.
CONFIG = ["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "input=jsonl", "input.id_field=n", "batch_size=4",
          "threads=1", "call.max_new_tokens=12", "call.do_sample=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"n": i, "text": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 7))} for i in range(N_RECORDS)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "input.jsonl", rows)


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("uninterrupted")
    run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={work / 'run'}", cwd=work, check=True)
    return work / "run"


def _messy_lines(count: int, text: callable) -> list[str]:
    """`count` input lines with, spread over the whole input, ids repeated from early in the
    input (each repeat fails as a duplicate id), lines that are not JSON, and `text(i)` otherwise."""
    lines = []
    for i in range(count):
        if i % 13 == 7:
            lines.append('{"n": "broken, not json')
        else:
            lines.append(json.dumps({"n": i // 4 if i % 9 == 4 else i, "text": text(i)}))
    return lines


@pytest.fixture(scope="module")
def messy_data(tmp_path_factory) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    path = tmp_path_factory.mktemp("messy") / "input.jsonl"
    path.write_text("".join(line + "\n" for line in _messy_lines(N_RECORDS, lambda i: " ".join(words[(i + k) % 10] for k in range(1 + i % 7)))))
    return path


def _start(data: Path, run_dir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "composer", "run", *CONFIG, f"input.path={data}", f"hydra.run.dir={run_dir}"],
        cwd=run_dir.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ.copy(),
    )


def _wait_for_lines(path: Path, count: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if path.exists() and path.read_bytes().count(b"\n") >= count:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError(f"{path} never reached {count} lines")


def _killed_after(data: Path, run_dir: Path, lines: int) -> None:
    """A run of `data` into `run_dir`, killed with SIGKILL once outputs.jsonl has `lines` lines."""
    process = _start(data, run_dir)
    _wait_for_lines(run_dir / "outputs.jsonl", lines, process)
    process.send_signal(signal.SIGKILL)
    process.communicate()


def test_kill_9_then_resume_equals_an_uninterrupted_run(data, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    _killed_after(data, run_dir, 40)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "running"
    written = len(read_jsonl(run_dir / "outputs.jsonl"))
    assert 40 <= written < N_RECORDS
    # A crash in the middle of a write leaves a torn last line.
    with (run_dir / "outputs.jsonl").open("a") as handle:
        handle.write('{"id": "999", "text": "half a rec')
    done = run_cli("resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "outputs.jsonl").read_bytes() == (uninterrupted / "outputs.jsonl").read_bytes()
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"]["records_ok"] == N_RECORDS
    killed, resumed = manifest["attempts"]
    assert "finished_at" not in killed  # the killed attempt never finished
    assert resumed["status"] == "complete" and resumed["skipped"] == written
    assert resumed["records_ok"] == N_RECORDS - written


def test_ctrl_c_finishes_the_batch_then_run_resumes_it(data, uninterrupted, tmp_path):
    run_dir = tmp_path / "run"
    process = _start(data, run_dir)
    _wait_for_lines(run_dir / "outputs.jsonl", 20, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert "stopping after the batches in flight" in stderr and "Traceback" not in stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "interrupted" and manifest["exit_code"] == 130
    raw = (run_dir / "outputs.jsonl").read_bytes()
    assert raw.endswith(b"\n")  # never half-written
    assert len(read_jsonl(run_dir / "outputs.jsonl")) % 4 == 0  # whole batches only
    # `composer run` pointed at the same folder with the same config continues it.
    done = run_cli("run", *CONFIG, f"input.path={data}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (run_dir / "outputs.jsonl").read_bytes() == (uninterrupted / "outputs.jsonl").read_bytes()


def test_resume_refuses_a_changed_config_or_input(data, tmp_path):
    run_dir = tmp_path / "run"
    _killed_after(data, run_dir, 8)
    changed = run_cli("run", *CONFIG, f"input.path={data}", "call.max_new_tokens=5", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert changed.returncode == 2
    assert "call.max_new_tokens: 12 -> 5" in changed.stderr
    moved = tmp_path / "moved.jsonl"
    moved.write_bytes(data.read_bytes())
    elsewhere = run_cli("run", *CONFIG, f"input.path={moved}", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert elsewhere.returncode == 2 and f"input.path: '{data}' -> '{moved}'" in elsewhere.stderr
    # The same file edited in place: the config matches but the input fingerprint does not.
    data_copy = tmp_path / "same-name.jsonl"
    data_copy.write_bytes(data.read_bytes())
    first = tmp_path / "first"
    _killed_after(data_copy, first, 8)
    data_copy.write_bytes(data.read_bytes().replace(b"beta", b"BETA"))
    refused = run_cli("resume", str(first), cwd=tmp_path)
    assert refused.returncode == 2
    assert "the input changed since the run" in refused.stderr and "sha256" in refused.stderr


def test_resume_takes_a_folder_from_before_tune_malloc_and_a_changed_tune_malloc(data, uninterrupted, tmp_path):
    """Found in review: tune_malloc changes no output, yet a folder whose config.yaml predates
    it (or a resume that flips it) was refused as a changed config."""
    import yaml

    run_dir = tmp_path / "run"
    _killed_after(data, run_dir, 8)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    del config["tune_malloc"]  # as written before the key existed
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    resumed = run_cli("run", *CONFIG, f"input.path={data}", "tune_malloc=false", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert read_jsonl(run_dir / "outputs.jsonl") == read_jsonl(uninterrupted / "outputs.jsonl")


def test_repair_torn_tail(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": 1}\n{"id": 2}\n{"id": 3, "te')
    assert repair_torn_tail(path) is True
    assert path.read_text() == '{"id": 1}\n{"id": 2}\n'
    assert repair_torn_tail(path) is False
    path.write_text('{"id": 1')
    assert repair_torn_tail(path) is True and path.read_text() == ""


def _assert_counts_add_up(run_dir: Path, records_in: int) -> None:
    counts = json.loads((run_dir / "manifest.json").read_text())["counts"]
    assert counts["records_in"] == records_in == counts["records_ok"] + counts["records_failed"]
    assert counts["records_ok"] == len(read_jsonl(run_dir / "outputs.jsonl"))
    assert counts["records_failed"] == len(read_jsonl(run_dir / "errors.jsonl"))


def test_kill_9_then_resume_keeps_every_error_line_of_a_messy_input(messy_data, tmp_path):
    """Found by probing (issue 16): after kill -9 and resume on an input with repeated ids, the
    duplicate-id errors past the crash point were dropped (that id was already in outputs.jsonl,
    so resume skipped the failure by its id): 61-63 error lines instead of 66."""
    whole = tmp_path / "whole"
    run_cli("run", *CONFIG, f"input.path={messy_data}", f"hydra.run.dir={whole}", cwd=tmp_path)
    expected_errors = (whole / "errors.jsonl").read_bytes()
    duplicates = [e for e in read_jsonl(whole / "errors.jsonl") if "duplicate id" in e["message"]]
    assert len(duplicates) >= 20  # one in 9 lines, all through the input: many come after the kill point
    _assert_counts_add_up(whole, N_RECORDS)
    run_dir = tmp_path / "run"
    _killed_after(messy_data, run_dir, 40)
    assert len(read_jsonl(run_dir / "outputs.jsonl")) < 150
    done = run_cli("resume", str(run_dir), cwd=tmp_path)
    assert done.returncode == 1, done.stderr  # completed with record errors
    assert (run_dir / "errors.jsonl").read_bytes() == expected_errors
    assert (run_dir / "outputs.jsonl").read_bytes() == (whole / "outputs.jsonl").read_bytes()
    _assert_counts_add_up(run_dir, N_RECORDS)


def test_a_stop_inside_a_window_then_resume_keeps_error_lines_in_input_order(tmp_path, monkeypatch):
    """A stop inside a sorted window wrote every failure found in the window, also those past the
    first record left undone, among them duplicate-id failures carrying the id of a record left
    undone: resume skipped that record by its id, and its output was lost (records 1 and 3 here)."""
    lines = _messy_lines(64, lambda i: "word " * 600 if i % 11 == 5 else f"record number {i} " * (1 + i % 5))
    data = tmp_path / "input.jsonl"
    data.write_text("".join(line + "\n" for line in lines))
    config = ["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "input.id_field=n", "threads=1",
              "progress=false", "batch_size=4", "sort_window=32", "prefetch=0"]
    whole = api.run(config, run_dir=tmp_path / "whole")
    assert whole.status == "completed_with_errors"
    with monkeypatch.context() as patch:
        patch.setattr("composer.run._StopRequests", stop_requested_at(3))  # after the 2nd batch of the 1st window
        stopped = api.run(config, run_dir=tmp_path / "run")
    assert stopped.status == "interrupted"
    assert len(stopped.outputs()) < 32
    resumed = api.resume(tmp_path / "run")
    assert resumed.status == "completed_with_errors"
    assert (resumed.run_dir / "errors.jsonl").read_bytes() == (whole.run_dir / "errors.jsonl").read_bytes()
    assert (resumed.run_dir / "outputs.jsonl").read_bytes() == (whole.run_dir / "outputs.jsonl").read_bytes()
    _assert_counts_add_up(resumed.run_dir, 64)


# metrics.json keys that measure the attempt, not the run's result (see tests/test_sweep_resume.py).
TIMINGS = ("seconds", "per_second", "latency.")


@pytest.mark.parametrize("overrides", [
    ["task=text-classification"],  # tokenized ahead by the pipeline's own preprocess
    ["task=token-classification", "model=tiny-token-classification", "batch_size=2"],  # lengths measured ahead, sorted
    ["task=text-generation", "model=tiny-text-generation", "call.max_new_tokens=2"],  # tokenized in process()
])
def test_a_resumed_run_counts_the_records_and_input_tokens_of_every_attempt(overrides, tmp_path, monkeypatch):
    """A resumed run's metrics.json equals an uninterrupted run's but for its timings: records and
    input tokens over every attempt (those of what earlier attempts wrote counted from
    outputs.jsonl, as for a killed attempt, which recorded none), not its last attempt's alone."""
    texts = [f"record {i} " + "alpha beta gamma " * (i % 5) for i in range(24)]
    config = ["experiment=tiny-sentiment", "threads=1", "progress=false", "input=inline", f"input.records={json.dumps(texts)}",
              "batch_size=2", "sort_window=4", "prefetch=0", *overrides]
    whole = api.run(config, run_dir=tmp_path / "whole")
    with monkeypatch.context() as patch:
        patch.setattr("composer.run._StopRequests", stop_requested_at(3))
        stopped = api.run(config, run_dir=tmp_path / "run")
    assert stopped.status == "interrupted" and 0 < len(stopped.outputs()) < len(texts)
    resumed = api.resume(tmp_path / "run")

    def results(metrics: dict) -> dict:
        return {key: value for key, value in flatten(metrics).items() if not any(t in key for t in TIMINGS)}

    assert results(resumed.metrics()) == results(whole.metrics())
    assert resumed.metrics()["throughput"]["records"] == len(texts) and resumed.metrics()["throughput"]["input_tokens"]
