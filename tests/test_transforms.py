"""Transforms: template and normalize before the model; top_k, map_labels, threshold, select and
rename after it. Unit tests on record lists, plan-time checks, and end-to-end runs with the
transforms configured in an experiment YAML (Python API, and once through the CLI).
"""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from composer import api
from composer.executors.unit import _run_stage
from composer.records import to_jsonable
from composer.schema import ConfigError
from composer.stages.post import MapLabels, Rename, Select, Threshold, TopK
from composer.stages.text import Normalize, Template
from conftest import BASE, ROWS, TEXTS, assert_close, read_jsonl, run_cli, write_jsonl



def experiment(tmp_path: Path, body: str, name: str = "x") -> list[str]:
    """Write experiment/<name>.yaml under tmp_path and return the overrides that select it."""
    folder = tmp_path / "experiment"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.yaml").write_text("# @package _global_\n" + body, encoding="utf-8")
    return [f"hydra.searchpath=[file://{tmp_path}]", f"experiment={name}"]


def plan_issues(overrides: list[str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        api.plan([*BASE, *overrides])
    return [str(issue) for issue in caught.value.issues]


@pytest.fixture(scope="module")
def classify():
    """text -> plain pipeline() output with both labels ranked (call top_k=2)."""
    from transformers import pipeline

    from composer.testing import tiny_model_path

    reference = pipeline("text-classification", model=str(tiny_model_path("text-classification")))
    return {text: to_jsonable(reference(text, top_k=2)) for text in TEXTS}


# Prediction shapes pipelines return, as literal data.
SINGLE = {"label": "LABEL_0", "score": 0.3}
LIST = [{"label": "LABEL_0", "score": 0.2}, {"label": "LABEL_1", "score": 0.7}, {"label": "LABEL_2", "score": 0.1}]
ZERO_SHOT = {"sequence": "call me", "labels": ["urgent", "phone", "spam"], "scores": [0.6, 0.3, 0.1]}
NESTED = [[{"label": "LABEL_0", "score": 0.4}, {"label": "LABEL_1", "score": 0.6}]]  # text-classification, pipeline.top_k
TOKENS = [
    {"entity": "B-PER", "score": 0.9, "index": 1, "word": "anna", "start": 0, "end": 4},
    {"entity": "O", "score": 0.2, "index": 2, "word": "flew", "start": 5, "end": 9},
]


def records(*predictions) -> list[dict]:
    return [{"id": str(i), "prediction": p} for i, p in enumerate(predictions)]


# --- template --------------------------------------------------------------------------------------------------------


def test_template_builds_a_prompt_from_several_fields():
    stage = Template("template", template="Title: {title}\nReview: {text} ({title}, {n:03d})")
    assert stage.reads == ("title", "text", "n") and stage.writes == ("prompt",)
    batch = [{"id": "a", "title": "Great", "text": "works", "n": 7}, {"id": "b", "title": "Bad", "text": "broken", "n": 12}]
    assert stage.process(batch) is batch
    assert [r["prompt"] for r in batch] == ["Title: Great\nReview: works (Great, 007)", "Title: Bad\nReview: broken (Bad, 012)"]
    assert batch[0]["text"] == "works"  # inputs are untouched


def test_template_rejects_placeholders_that_are_not_field_names():
    for template in ("Hi {}", "Hi {0}", "Hi {a.b}", "Hi {a[0]}"):
        with pytest.raises(ValueError, match="plain field names"):
            Template("t", template=template)
    with pytest.raises(ValueError):
        Template("t", template="Hi {text")
    assert Template("t", template="{text:>{width}}").reads == ("text", "width")  # nested placeholders are read too
    assert Template("t", template="{{literal}} {text}").reads == ("text",)


def test_template_missing_field_fails_only_that_record_and_batch_mates_are_templated_once():
    stage = Template("template", template="<{text}:{n:d}>", output_field="text")
    batch = [{"id": "a", "text": "x", "n": 1}, {"id": "b", "text": "y", "n": "not a number"}, {"id": "c", "text": "z", "n": 3}]
    kept, failed = _run_stage(stage, batch)
    assert kept == [{"id": "a", "text": "<x:1>", "n": 1}, {"id": "c", "text": "<z:3>", "n": 3}]
    assert [(f.id, f.stage, f.error_type) for f in failed] == [("b", "template", "ValueError")]
    _, failed = _run_stage(Template("t", template="{missing}"), [{"id": "q", "text": "x"}])
    assert failed[0].error_type == "KeyError" and "record 'q' has no field 'missing'" in failed[0].message


def test_template_placeholder_without_upstream_field_is_a_plan_time_error(tmp_path):
    overrides = experiment(tmp_path, "preprocess:\n  - {type: template, template: 'Title: {headline} {text}'}\nmodel_input: prompt\n")
    issues = plan_issues(["input=inline", *overrides])
    assert len(issues) == 1
    assert issues[0].startswith("preprocess[0]: stage 'template' reads field 'headline', which no upstream stage writes")
    assert "available: id, text" in issues[0]
    issues = plan_issues(["input=inline", *experiment(tmp_path, "preprocess:\n  - {type: template, template: 'Hi {}'}\n", "y")])
    assert issues == ["preprocess[0]: template placeholders must be plain field names, got {} (name the field, e.g. {text})"]


def test_template_prompt_feeds_text_generation(tmp_path):
    from transformers import pipeline

    from composer.testing import tiny_model_path

    data = write_jsonl(tmp_path / "data.jsonl", ROWS[:3])
    overrides = experiment(
        tmp_path,
        "preprocess:\n  - type: template\n    template: \"Title: {title}\\nReview: {text}\\nSentiment:\"\n"
        "model_input: prompt\ncall: {max_new_tokens: 4, do_sample: false}\n",
    )
    result = api.run(
        [*BASE, "task=text-generation", "model=tiny-text-generation", "input=jsonl", f"input.path={data}",
         "input.id_field=uid", "input.keep=[title]", "batch_size=2", *overrides],
        run_dir=tmp_path / "run",
    )
    assert result.status == "complete", result.manifest().get("error")
    outputs = result.outputs()
    prompts = [f"Title: {r['title']}\nReview: {r['text']}\nSentiment:" for r in ROWS[:3]]
    assert [o["prompt"] for o in outputs] == prompts
    assert [o["id"] for o in outputs] == ["r1", "r2", "r3"]
    reference = pipeline("text-generation", model=str(tiny_model_path("text-generation")))
    for output, prompt in zip(outputs, prompts):
        assert output["prediction"] == to_jsonable(reference(prompt, max_new_tokens=4, do_sample=False))
        assert output["prediction"][0]["generated_text"].startswith(prompt)
    assert result.manifest()["stages"]["model"]["reads"] == ["prompt"]


# --- normalize -------------------------------------------------------------------------------------------------------


def test_normalize_unicode_whitespace_and_case():
    messy = "  \uff28\uff45\uff4c\uff4c\uff4f\u00a0 W\u00f6rld\t\n \ufb01ne  "  # fullwidth Hello, nbsp, tab, fi ligature
    batch = [{"id": "a", "text": messy}]
    Normalize("normalize").process(batch)
    assert batch[0]["text"] == "Hello W\u00f6rld fine"
    batch = [{"id": "a", "text": messy}]
    Normalize("normalize", lowercase=True, output_field="clean").process(batch)
    assert batch[0] == {"id": "a", "text": messy, "clean": "hello w\u00f6rld fine"}
    batch = [{"id": "a", "text": " a \ufb01  b "}]
    Normalize("n", unicode_form=None, strip=False, collapse_whitespace=False).process(batch)
    assert batch[0]["text"] == " a \ufb01  b "
    batch = [{"id": "a", "text": "caf\u00e9"}]
    Normalize("n", unicode_form="NFD").process(batch)
    assert batch[0]["text"] == "cafe\u0301" == unicodedata.normalize("NFD", "caf\u00e9")
    with pytest.raises(ValueError, match="unicode_form"):
        Normalize("n", unicode_form="NFX")


def test_normalize_non_text_fails_only_that_record():
    stage = Normalize("normalize", field="title", lowercase=True)
    assert stage.reads == ("title",) and stage.writes == ("title",)
    kept, failed = _run_stage(stage, [{"id": "a", "title": " A  B "}, {"id": "b", "title": 5}, {"id": "c", "title": "C"}])
    assert kept == [{"id": "a", "title": "a b"}, {"id": "c", "title": "c"}]
    assert [(f.id, f.error_type) for f in failed] == [("b", "TypeError")]
    assert "field 'title' is int, not text" in failed[0].message


# --- top_k -----------------------------------------------------------------------------------------------------------


def test_top_k_on_every_prediction_shape():
    batch = records(LIST, SINGLE, ZERO_SHOT, NESTED, TOKENS)
    TopK("top_k", k=2).process(batch)
    assert [r["prediction"] for r in batch] == [
        [{"label": "LABEL_1", "score": 0.7}, {"label": "LABEL_0", "score": 0.2}],
        SINGLE,
        {"sequence": "call me", "labels": ["urgent", "phone"], "scores": [0.6, 0.3]},
        [[{"label": "LABEL_1", "score": 0.6}, {"label": "LABEL_0", "score": 0.4}]],
        [TOKENS[0], TOKENS[1]],
    ]
    batch = records(LIST)
    TopK("top_k", k=1, output_field="best").process(batch)
    assert batch[0]["best"] == [{"label": "LABEL_1", "score": 0.7}] and batch[0]["prediction"] == LIST
    with pytest.raises(ValueError, match="k must be >= 1"):
        TopK("top_k", k=0)


# --- map_labels ------------------------------------------------------------------------------------------------------


def test_map_labels_on_every_prediction_shape():
    stage = MapLabels("map_labels", mapping={"LABEL_0": "negative", "LABEL_1": "positive", "urgent": "URGENT", "B-PER": "person"})
    batch = records(SINGLE, LIST, ZERO_SHOT, NESTED, "LABEL_1", TOKENS)
    stage.process(batch)
    assert [r["prediction"] for r in batch] == [
        {"label": "negative", "score": 0.3},
        [{"label": "negative", "score": 0.2}, {"label": "positive", "score": 0.7}, {"label": "LABEL_2", "score": 0.1}],
        {"sequence": "call me", "labels": ["URGENT", "phone", "spam"], "scores": [0.6, 0.3, 0.1]},
        [[{"label": "negative", "score": 0.4}, {"label": "positive", "score": 0.6}]],
        "positive",
        [{**TOKENS[0], "entity": "person"}, TOKENS[1]],  # token classification's label key is `entity`
    ]


def test_map_labels_strict_fails_the_record_with_an_unmapped_label_only():
    stage = MapLabels("map_labels", mapping={"LABEL_0": "negative", "LABEL_1": "positive"}, strict=True)
    good = [{"label": "LABEL_1", "score": 0.9}]
    kept, failed = _run_stage(stage, records(good, LIST, good))
    assert [r["id"] for r in kept] == ["0", "2"]
    assert all(r["prediction"] == [{"label": "positive", "score": 0.9}] for r in kept)
    [failure] = failed
    assert (failure.id, failure.stage, failure.error_type) == ("1", "map_labels", "KeyError")
    assert "label 'LABEL_2' is not in map_labels.mapping (LABEL_0, LABEL_1)" in failure.message
    assert MapLabels("m", mapping={1: "one"}).process([{"id": "a", "prediction": 1}])[0]["prediction"] == "one"


# --- threshold -------------------------------------------------------------------------------------------------------


def test_threshold_on_single_list_and_zero_shot_shapes():
    stage = Threshold("threshold", min_score=0.25, fallback_label="unsure")
    batch = records(SINGLE, {"label": "LABEL_0", "score": 0.1}, LIST, ZERO_SHOT, NESTED)
    stage.process(batch)
    assert [r["prediction"] for r in batch] == [
        SINGLE,  # 0.3 >= 0.25: kept as is
        {"label": "unsure", "score": 0.1},
        [{"label": "LABEL_1", "score": 0.7}],
        {"sequence": "call me", "labels": ["urgent", "phone"], "scores": [0.6, 0.3]},
        [[{"label": "LABEL_0", "score": 0.4}, {"label": "LABEL_1", "score": 0.6}]],
    ]
    batch = records(ZERO_SHOT)
    Threshold("threshold", min_score=0.9, output_field="sure").process(batch)
    assert batch[0]["sure"] == {"sequence": "call me", "labels": [], "scores": []} and batch[0]["prediction"] == ZERO_SHOT
    kept, failed = _run_stage(Threshold("threshold", min_score=0.5), records(SINGLE, 42, None))
    assert [r["id"] for r in kept] == ["0"] and [(f.id, f.error_type) for f in failed] == [("1", "TypeError"), ("2", "TypeError")]


# --- select and rename -----------------------------------------------------------------------------------------------


def test_select_keeps_id_and_the_listed_fields():
    stage = Select("select", fields=["prediction", "id", "title"])
    assert stage.reads == ("prediction", "title")
    assert stage.fields_after({"id", "text", "title", "prediction", "label"}) == {"id", "prediction", "title"}
    batch = [{"id": "a", "text": "t", "title": "T", "prediction": 1, "label": "x"}]
    assert stage.process(batch) == [{"id": "a", "prediction": 1, "title": "T"}]
    full = [{"id": "a", "title": "A", "prediction": 1}, {"id": "b", "prediction": 2}, {"id": "c", "title": "C", "prediction": 3, "x": 0}]
    kept, failed = _run_stage(stage, full)
    assert kept == [{"id": "a", "prediction": 1, "title": "A"}, {"id": "c", "prediction": 3, "title": "C"}]
    assert [(f.id, f.error_type) for f in failed] == [("b", "KeyError")]


def test_rename_including_swaps_and_chains():
    stage = Rename("rename", mapping={"prediction": "sentiment"})
    assert stage.fields_after({"id", "text", "prediction"}) == {"id", "text", "sentiment"}
    assert stage.process([{"id": "a", "text": "t", "prediction": 1}]) == [{"id": "a", "text": "t", "sentiment": 1}]
    assert Rename("r", mapping={"a": "b", "b": "a"}).process([{"id": "x", "a": 1, "b": 2}]) == [{"id": "x", "a": 2, "b": 1}]
    assert Rename("r", mapping={"a": "b", "b": "c"}).process([{"id": "x", "a": 1, "b": 2}]) == [{"id": "x", "b": 1, "c": 2}]
    kept, failed = _run_stage(Rename("r", mapping={"a": "z"}), [{"id": "x", "a": 1}, {"id": "y"}, {"id": "w", "a": 3}])
    assert kept == [{"id": "x", "z": 1}, {"id": "w", "z": 3}] and [f.id for f in failed] == ["y"]
    for mapping in ({"id": "key"}, {"label": "id"}):
        with pytest.raises(ValueError, match="id field"):
            Rename("r", mapping=mapping)
    with pytest.raises(ValueError, match="two fields are renamed to 'x'"):
        Rename("r", mapping={"a": "x", "b": "x"})


def test_post_transform_config_mistakes_are_plan_time_errors(tmp_path):
    overrides = experiment(
        tmp_path,
        "postprocess:\n"
        "  - {type: select, fields: [text]}\n"
        "  - {type: top_k, k: 1}\n"
        "  - {type: map_labels, mapping: {a: b}, stict: true}\n"
        "  - {type: rename, mapping: {text: id}}\n",
    )
    issues = plan_issues(["input=inline", *overrides])
    assert "postprocess[2].stict: unknown parameter of MapLabels; did you mean 'strict'?" in issues
    assert "postprocess[3]: the id field cannot be renamed, nor another field renamed to id" in issues
    assert any(i.startswith("postprocess[1]: stage 'top_k' reads field 'prediction', which no upstream stage writes") for i in issues)
    assert len(issues) == 3


# --- end to end: transforms from an experiment YAML ------------------------------------------------------------------


POSTPROCESS = """\
call: {top_k: 2}
postprocess:
  - {type: top_k, k: 1, output_field: best}
  - {type: map_labels, field: best, mapping: {NEGATIVE: neg, POSITIVE: pos}}
  - {type: threshold, min_score: 0.5}
  - {type: rename, mapping: {best: sentiment, prediction: confident}}
  - {type: select, fields: [text, sentiment, confident]}
"""


def _expected_postprocess(prediction: list[dict]) -> dict:
    """The POSTPROCESS chain by hand, on the plain pipeline's output."""
    best = max(prediction, key=lambda item: item["score"])
    return {
        "sentiment": [{**best, "label": {"NEGATIVE": "neg", "POSITIVE": "pos"}[best["label"]]}],
        "confident": [item for item in prediction if item["score"] >= 0.5],
    }


def test_postprocess_from_an_experiment_yaml(tmp_path, classify):
    data = write_jsonl(tmp_path / "data.jsonl", ROWS)
    result = api.run(
        [*BASE, "input=jsonl", f"input.path={data}", "input.id_field=uid", "batch_size=2", *experiment(tmp_path, POSTPROCESS)],
        run_dir=tmp_path / "run",
    )
    assert (result.status, result.errors()) == ("complete", [])
    assert [s["type"] for s in result.config()["postprocess"]] == ["top_k", "map_labels", "threshold", "rename", "select"]
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == [r["uid"] for r in ROWS]
    for output, text in zip(outputs, TEXTS):
        assert set(output) == {"id", "text", "sentiment", "confident"}
        assert_close({k: output[k] for k in ("sentiment", "confident")}, _expected_postprocess(classify[text]), where=output["id"])
    stages = result.manifest()["stages"]
    assert [name for name in stages] == ["source", "model", "top_k", "map_labels", "threshold", "rename", "select", "outputs"]
    assert stages["rename"]["inputs"] == ["threshold"]


def test_a_failing_record_does_not_take_its_batch_mates_down(tmp_path, classify):
    rows = [dict(row) for row in ROWS]
    rows[2]["label"] = "MEH"  # not in the strict mapping below
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    overrides = experiment(
        tmp_path,
        "call: {top_k: 2}\n"
        "postprocess:\n  - {type: map_labels, field: label, mapping: {NEGATIVE: neg, POSITIVE: pos}, strict: true}\n",
    )
    result = api.run(
        [*BASE, "input=jsonl", f"input.path={data}", "input.id_field=uid", "input.label_field=label", "batch_size=8", *overrides],
        run_dir=tmp_path / "run",
    )
    assert (result.status, result.exit_code) == ("completed_with_errors", 1)
    assert result.manifest()["counts"] == {"records_in": 5, "records_ok": 4, "records_failed": 1, "batches": 1}
    [error] = result.errors()
    assert (error["id"], error["stage"], error["error_type"]) == ("r3", "map_labels", "KeyError")
    assert "'MEH'" in error["message"]
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == ["r1", "r2", "r4", "r5"]
    for output in outputs:
        row = next(r for r in rows if r["uid"] == output["id"])
        assert output["label"] == {"NEGATIVE": "neg", "POSITIVE": "pos"}[row["label"]]
        assert_close(output["prediction"], classify[row["text"]], where=output["id"])


def test_cli_run_with_pre_and_postprocess_from_an_experiment(tmp_path, classify):
    rows = [dict(row) for row in ROWS]
    rows[1]["title"] = 404  # normalize fails on this record alone
    rows[3]["title"] = "  F\uff29NE\u00a0 Print "
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    overrides = experiment(
        tmp_path,
        "preprocess:\n  - {type: normalize, field: title, lowercase: true}\n"
        "postprocess:\n"
        "  - {type: top_k, k: 1}\n"
        "  - {type: map_labels, mapping: {NEGATIVE: neg, POSITIVE: pos}, strict: true}\n"
        "  - {type: rename, mapping: {prediction: sentiment}}\n",
    )
    run_dir = tmp_path / "cli-run"
    done = run_cli(
        "run", *BASE, "input=jsonl", f"input.path={data}", "input.id_field=uid", "input.keep=[title]", "batch_size=4",
        "call.top_k=2", f"hydra.run.dir={run_dir}", *overrides, cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr
    assert "records: 4 ok, 1 failed (errors.jsonl)" in done.stdout
    [error] = read_jsonl(run_dir / "errors.jsonl")
    assert (error["id"], error["stage"], error["error_type"]) == ("r2", "normalize", "TypeError")
    outputs = read_jsonl(run_dir / "outputs.jsonl")
    assert [o["id"] for o in outputs] == ["r1", "r3", "r4", "r5"]
    assert [o["title"] for o in outputs] == ["great", "slow", "fine print", "nice"]
    for output in outputs:
        text = output["text"]
        assert set(output) == {"id", "text", "title", "sentiment"}
        assert_close(output["sentiment"], _expected_postprocess(classify[text])["sentiment"], where=output["id"])
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "completed_with_errors"
    assert list(manifest["stages"]) == ["source", "normalize", "model", "top_k", "map_labels", "rename", "outputs"]


def test_map_labels_on_integer_gold_labels_feeds_accuracy(tmp_path):
    rows = [{"uid": r["uid"], "text": r["text"], "gold": int(r["label"] == "POSITIVE")} for r in ROWS]
    data = write_jsonl(tmp_path / "data.jsonl", rows)
    overrides = experiment(tmp_path, "postprocess:\n  - {type: map_labels, field: label, mapping: {0: NEGATIVE, 1: POSITIVE}}\n")
    result = api.run(
        [*BASE, "input=jsonl", f"input.path={data}", "input.id_field=uid", "input.label_field=gold", *overrides],
        run_dir=tmp_path / "run",
    )
    assert result.status == "complete"
    outputs = result.outputs()
    assert [o["label"] for o in outputs] == [r["label"] for r in ROWS]
    predicted = [max(o["prediction"], key=lambda p: p["score"])["label"] for o in outputs]
    assert [p["label"] for o in outputs for p in o["prediction"]] == predicted  # one label each, no top_k
    accuracy = sum(p == r["label"] for p, r in zip(predicted, ROWS)) / len(ROWS)
    assert result.metrics()["quality"]["model"]["accuracy"] == pytest.approx(accuracy)
