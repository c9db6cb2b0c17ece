"""Issue 19, item 6: a speed-for-quality trade is judged in the report by how far outputs moved,
record by record (cosine of embeddings, same best label), beside the speed and accuracy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from composer import api
from composer.report.agreement import top_label
from composer.report.writer import write_report

TEXTS = ["the parcel never arrived", "I was charged twice", "the app crashes on start", "reset my password", "where is my order"]
LABELS = "{billing: 'money, a charge, an invoice', shipping: 'a parcel, a courier, a delivery'}"


@pytest.mark.parametrize(("value", "label"), [
    ({"labels": ["b", "a"], "scores": [0.7, 0.3]}, "b"),
    ([{"label": "x", "score": 0.2}, {"label": "y", "score": 0.8}], "y"),
    ([[{"label": "x", "score": 0.9}, {"label": "y", "score": 0.1}]], "x"),
    ({"label": "z", "score": 1.0}, "z"),
    ("generated text", None),
    ([0.1, 0.2], None),
])
def test_the_best_label_of_each_prediction_shape(value, label):
    assert top_label(value) == label


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    run_dir = tmp_path / "sweep" / name
    result = api.run(["experiment=base", "task=feature-extraction", "model=tiny-feature-extraction", "threads=1", "progress=false",
                      "input=inline", f"input.records={json.dumps(TEXTS)}",
                      f"postprocess=[{{type: mean_pool}}, {{type: embedding_classify, model: ${{model}}, labels: {LABELS}}}]",
                      *overrides], run_dir=run_dir)
    assert result.status == "complete", result.manifest().get("error")
    return run_dir


def test_the_report_shows_how_far_each_runs_outputs_moved_from_the_first(tmp_path):
    _run(tmp_path, "0")
    _run(tmp_path, "1", "model.dtype=bfloat16")  # a cheaper number format: vectors move a little
    _run(tmp_path, "2", "batch_size=2")  # batching never changes outputs
    report = (write_report([tmp_path / "sweep"]).out / "report.md").read_text()
    section = report.split("## Outputs against run 0", 1)[1].split("\n## ", 1)[0]
    rows = {tuple(cell.strip() for cell in line.strip("|").split("|")[:2]): line for line in section.splitlines() if line.startswith("| ")}
    assert "cosine min 1.000000, mean 1.000000" in rows[("2", "embedding")]
    bfloat16 = rows[("1", "embedding")].split("cosine min ")[1]
    assert 0.9 < float(bfloat16.split(",")[0]) < 0.999999, bfloat16
    assert "same best label" in rows[("1", "prediction")] and "(5 of 5)" in rows[("2", "prediction")]
    assert ("0", "embedding") not in rows  # the reference itself


def test_a_baseline_is_the_reference_when_given(tmp_path):
    base = _run(tmp_path, "base")
    _run(tmp_path / "other", "0")
    report = (write_report([tmp_path / "other" / "sweep"], baseline=base).out / "report.md").read_text()
    assert "## Outputs against the baseline" in report and "cosine min 1.000000" in report
