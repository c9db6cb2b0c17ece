"""The text tasks of transformers 5, end to end through the CLI, equal to plain pipeline() calls.

Each task runs as a Hydra multirun over batch_size=1,8 in one subprocess; every record's
prediction must equal what `transformers.pipeline(...)(input)` returns for that input alone.
"""

from __future__ import annotations

import pytest

from composer.records import to_jsonable
from composer.testing import tiny_model_path
from conftest import assert_close, read_jsonl, run_cli, write_jsonl

TEXTS = [
    "The quick brown fox jumps over the lazy dog near Paris.",
    "I bought this phone last week and the battery is great.",
    "Anna and Peter flew from Berlin to London on Monday.",
    "Short one.",
    "Customer support was slow, but the refund arrived in the end and everything is fine now.",
    "Weather is nice today.",
    "The package never arrived.",
    "Please call me back about the invoice for the tablet and the computer.",
    "A much longer sentence that keeps going to make sure that padding inside a batch of several inputs of different lengths does not change any of the outputs at all.",
    "Final record.",
]

CASES = {
    "text-classification": ({}, {}, TEXTS),
    "text-classification-topk": ({"top_k": 1}, {"top_k": 2}, TEXTS),
    "token-classification": ({}, {}, TEXTS),
    "zero-shot-classification": ({}, {"candidate_labels": ["urgent", "not urgent", "phone", "tablet", "computer"]}, TEXTS),
    "fill-mask": ({}, {"top_k": 3}, [t.replace(" the ", " [MASK] ", 1) if " the " in t else t + " [MASK]" for t in TEXTS]),
    "feature-extraction": ({}, {}, TEXTS[:5]),
    "text-generation": ({}, {"max_new_tokens": 6, "do_sample": False}, TEXTS[:5]),
}


def _override(prefix: str, params: dict) -> list[str]:
    def value(v):
        if isinstance(v, list):
            return "[" + ",".join(f"'{x}'" for x in v) + "]"
        return str(v).lower() if isinstance(v, bool) else str(v)

    return [f"{prefix}.{k}={value(v)}" for k, v in params.items()]


@pytest.mark.parametrize("case", sorted(CASES))
def test_task_matches_plain_pipeline_at_batch_sizes_1_and_8(case, tmp_path):
    from transformers import pipeline

    task = case.removesuffix("-topk")
    build, call, texts = CASES[case]
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t, "n": i} for i, t in enumerate(texts)])
    done = run_cli(
        "run", "-m", "experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}", "input.id_field=n",
        "batch_size=1,8", "threads=1", f"hydra.sweep.dir={tmp_path / 'sweep'}", *_override("pipeline", build), *_override("call", call),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr

    reference = pipeline(task, model=str(tiny_model_path(task)), **build)
    expected = [to_jsonable(reference(text, **call)) for text in texts]
    for job in ("0", "1"):
        outputs = read_jsonl(tmp_path / "sweep" / job / "outputs.jsonl")
        assert [o["id"] for o in outputs] == [str(i) for i in range(len(texts))]
        assert [o["text"] for o in outputs] == texts
        for output, want in zip(outputs, expected):
            assert_close(output["prediction"], want, tol=1e-5, where=f"{case} job {job} record {output['id']}")
    assert "batch_size: 1" in (tmp_path / "sweep" / "0" / "config.yaml").read_text()
    assert "batch_size: 8" in (tmp_path / "sweep" / "1" / "config.yaml").read_text()
