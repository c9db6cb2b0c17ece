"""Batch size never changes outputs beyond float tolerance (DESIGN.md invariant)."""

from __future__ import annotations

import pytest

from composer import api
from conftest import assert_close, write_jsonl

WORDS = "the battery lasts for days but support never answered my emails about the broken screen".split()
# 40 texts of 1 to 40 words, shuffled by length so batches mix short and long ones.
TEXTS = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + (i * 17) % 40)) for i in range(40)]


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction", "fill-mask"])
def test_batch_size_1_and_16_give_the_same_outputs(task, tmp_path):
    texts = [t + " [MASK]" for t in TEXTS] if task == "fill-mask" else TEXTS
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in texts])
    base = ["experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}", "threads=1"]
    one = api.run([*base, "batch_size=1"], run_dir=tmp_path / "bs1").outputs()
    sixteen = api.run([*base, "batch_size=16"], run_dir=tmp_path / "bs16").outputs()
    assert [o["id"] for o in one] == [o["id"] for o in sixteen] and len(one) == len(texts)
    for a, b in zip(one, sixteen):
        assert_close(b["prediction"], a["prediction"], tol=1e-4, where=f"{task} {a['id']}")
