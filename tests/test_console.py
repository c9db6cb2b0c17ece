"""What `composer run` tells on the console (issue 15): the end-of-run summary on stdout, the
same lines at the end of the run folder's run.log, logs on stderr, repeated library warnings
once with a count, and the facts that used to hide in files (why records failed, cache hits,
records a resume skipped, near-duplicates)."""

from __future__ import annotations

import json

from conftest import read_jsonl, run_cli

FILL = ["experiment=tiny-sentiment", "task=fill-mask", "model=tiny-fill-mask", "input=inline", "threads=1", "call.top_k=2"]
TEXTS = "input.records=['Hello [MASK].','no mask here','A [MASK] b.','still no mask','Last [MASK].']"


def _summary(stdout: str) -> list[str]:
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("run "))
    return lines[start:]


def test_the_summary_is_on_stdout_and_ends_run_log_and_names_why_records_failed(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("run", *FILL, TEXTS, f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert done.returncode == 1, done.stderr
    summary = _summary(done.stdout)
    assert summary[0] == f"run completed_with_errors: {run_dir}"
    assert "  records: 3 ok, 2 failed (errors.jsonl)" in summary
    errors = read_jsonl(run_dir / "errors.jsonl")
    (error_type,) = {error["error_type"] for error in errors}
    ids = ", ".join(error["id"] for error in errors)
    assert any(line.startswith(f"    2 x {error_type} in model: ") and line.endswith(f"(ids: {ids})") for line in summary), summary
    assert f"    every failed record, with its reason: {run_dir / 'errors.jsonl'}" in summary
    assert summary[-1] == f"  details: {run_dir / 'manifest.json'}, {run_dir / 'metrics.json'}"
    assert "run completed_with_errors" not in done.stderr  # logs only on stderr
    log = (run_dir / "run.log").read_text(encoding="utf-8").splitlines()
    assert log[-len(summary):] == summary
    assert not list(run_dir.glob("*.log.*")) and not (run_dir / "cli.log").exists()  # Hydra's empty job log is gone


def test_cache_hits_and_resumed_records_are_in_the_summary(tmp_path):
    cached = [*FILL, "input.records=['Hello [MASK].','A [MASK] b.','Last [MASK].']", "cache=on", f"cache.path={tmp_path / 'c.sqlite'}"]
    first = run_cli("run", *cached, f"hydra.run.dir={tmp_path / 'first'}", cwd=tmp_path, check=True)
    assert f"  cache (model): 0 hits, 3 misses ({tmp_path / 'c.sqlite'})" in _summary(first.stdout)
    again = run_cli("run", *cached, f"hydra.run.dir={tmp_path / 'again'}", cwd=tmp_path, check=True)
    assert f"  cache (model): 3 hits, 0 misses ({tmp_path / 'c.sqlite'})" in _summary(again.stdout)
    # An attempt that stopped after two records: resume skips them, and says so.
    run_dir = tmp_path / "again"
    outputs = (run_dir / "outputs.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (run_dir / "outputs.jsonl").write_text("".join(outputs[:2]), encoding="utf-8")
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    manifest["status"] = "interrupted"
    (run_dir / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
    resumed = run_cli("resume", str(run_dir), cwd=tmp_path, check=True)
    assert "  records: 3 ok, 0 failed (2 done by an earlier attempt, skipped)" in _summary(resumed.stdout)


def test_a_warning_logged_for_every_batch_is_shown_once_with_its_count(tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli("run", "experiment=base", "model=tiny-text-classification-quantizable", "quantization=bnb-8bit", "threads=1",
                   "batch_size=2", f"hydra.run.dir={run_dir}", cwd=tmp_path, check=True)
    cast = "MatMul8bitLt: inputs will be cast from torch.float32 to float16 during quantization"
    assert done.stderr.count(cast) == 1, done.stderr
    (warning,) = [w for w in json.loads((run_dir / "manifest.json").read_text())["warnings"] if cast in w["message"]]
    assert warning["count"] >= 12  # one per batch at least: 24 records in batches of 2
    assert any(line.startswith(f"  warned {warning['count']} times (shown once): ") and cast in line for line in _summary(done.stdout))
    assert f"{warning['message']}   [x{warning['count']}]" in (run_dir / "run.log").read_text(encoding="utf-8")


def test_near_duplicate_groups_are_in_the_summary(tmp_path):
    records = ("input.records=[{id: a, text: 'my parcel never arrived'}, {id: b, text: 'the app crashes on start'}, "
               "{id: c, text: 'my parcel never arrived'}]")
    done = run_cli("run", "experiment=support-tickets", "model=tiny-feature-extraction", "model.fallback=null", "input=inline",
                   records, "input.id_field=id", "input.label_field=null", "postprocess.2.threshold=0.999", "threads=1",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=True)
    assert "  near-duplicates (near_duplicates): 1 records repeat an earlier one, in 1 groups; e.g. c ~ a (1.00)" in _summary(done.stdout)
