"""Declared quality metrics (`metrics:`): exact match, token F1, WER/CER for text and speech
outputs, checked against hand computations; and the optional MLflow logger against a real local
MLflow store."""

from __future__ import annotations

import json

import pytest

from composer import api
from composer.metrics import (
    MetricsAccumulator,
    declared_metrics,
    error_rates,
    exact_match,
    normalize_answer,
    predicted_text,
    token_f1,
)
from composer.schema import ConfigError
from conftest import ROWS, write_jsonl

BASE = ["experiment=tiny-sentiment", "threads=1", "progress=false"]
GENERATION = [*BASE, "task=text-generation", "model=tiny-text-generation", "call.max_new_tokens=4",
              "call.return_full_text=false", "call.do_sample=false"]


def test_squad_normalisation_exact_match_and_token_f1():
    assert normalize_answer("  The Cat, sat!  ") == "cat sat"
    assert exact_match("the cat sat", "Cat sat.") == 1.0 and exact_match("cat", "dog") == 0.0
    # "cat sat" vs "cat sat down": 2 common tokens, precision 1, recall 2/3 -> F1 0.8
    assert token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    assert token_f1("", "") == 1.0 and token_f1("x", "") == 0.0 and token_f1("a b", "c d") == 0.0


def test_word_and_character_error_rates():
    # words: one substitution and one deletion over four reference words (2/4);
    # characters: b->x and the deleted " d" over the seven of "a b c d" (3/7)
    assert error_rates(["a x c"], ["a b c d"]) == {"wer": 0.5, "cer": pytest.approx(3 / 7)}
    assert error_rates(["abd"], ["abc"], ["cer"]) == {"cer": pytest.approx(1 / 3)}
    assert error_rates(["anything"], ["  "]) == {}  # an empty reference is left out, not divided by


@pytest.mark.parametrize(
    "prediction, text",
    [
        ([{"generated_text": "hi"}], "hi"),
        ({"text": "a transcript"}, "a transcript"),
        ({"answer": "Paris", "score": 0.9}, "Paris"),
        ([{"summary_text": "short"}], "short"),
        ([{"generated_text": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}], "a"),
        ("plain", "plain"),
        (None, None),
    ],
)
def test_predicted_text_of_every_output_shape(prediction, text):
    assert predicted_text(prediction) == text


def test_auto_metrics_follow_the_task_and_lists_pick():
    assert declared_metrics("auto", "text-classification") == ("accuracy", "macro_f1", "per_class")
    assert declared_metrics("auto", "sentiment-analysis") == ("accuracy", "macro_f1", "per_class")
    assert declared_metrics("auto", "text-generation") == ("exact_match", "token_f1")
    assert declared_metrics("auto", "automatic-speech-recognition") == ("wer", "cer")
    assert declared_metrics("auto", "feature-extraction") == ()
    assert declared_metrics(["wer", "accuracy"], "text-generation") == ("accuracy", "wer")


def test_accumulator_on_speech_outputs_with_several_references():
    accumulator = MetricsAccumulator("prediction", ["exact_match", "token_f1", "wer"])
    accumulator.add([
        {"id": "1", "label": "turn the lights on", "prediction": {"text": "turn the light on"}},
        {"id": "2", "label": ["hello world", "hello, world!"], "prediction": {"text": "Hello world"}},
        {"id": "3", "prediction": {"text": "no label: not scored"}},
    ])
    result = accumulator.result()
    assert result["n"] == 2
    assert result["exact_match"] == 0.5
    # record 1: "turn lights on" vs "turn light on" -> 2 of 3 tokens -> F1 2/3; record 2: 1.0
    assert result["token_f1"] == pytest.approx((2 / 3 + 1) / 2)
    # WER on the text as written (first reference): 1 substitution in 4 words + 1 ("Hello") in 2
    assert result["wer"] == pytest.approx(2 / 6)


def test_unknown_metric_and_bad_objective_are_config_errors():
    with pytest.raises(ConfigError) as caught:
        api.plan([*BASE, "metrics=[acuracy,token_f1]", "objective=macro_f1"])
    text = str(caught.value)
    assert "metrics[0]: unknown metric 'acuracy'" in text and "did you mean 'accuracy'" in text
    assert "objective: expected a dotted path into metrics.json" in text


def test_text_generation_run_scores_exact_match_and_token_f1(tmp_path):
    """Gold answers built from a first run's greedy outputs: one exact, one half right."""
    prompts = [{"uid": "a", "text": "the cat"}, {"uid": "b", "text": "hello there"}]
    inputs = ["input=jsonl", "input.id_field=uid"]
    first = api.run([*GENERATION, *inputs, f"input.path={write_jsonl(tmp_path / 'p.jsonl', prompts)}"], run_dir=tmp_path / "r1")
    generated = {row["id"]: predicted_text(row["prediction"]) for row in first.outputs()}
    words_b = normalize_answer(generated["b"]).split()
    assert words_b, generated
    gold = {"a": generated["a"], "b": f"{words_b[0]} zebra"}
    labelled = write_jsonl(tmp_path / "g.jsonl", [{**p, "label": gold[p["uid"]]} for p in prompts])
    second = api.run([*GENERATION, *inputs, f"input.path={labelled}", "input.label_field=label",
                      "metrics=[exact_match,token_f1,wer]"], run_dir=tmp_path / "r2")
    quality = second.metrics()["quality"]["model"]
    assert [row["prediction"] for row in second.outputs()] == [row["prediction"] for row in first.outputs()]
    hand_f1_b = 2 * (1 / len(words_b)) * (1 / 2) / ((1 / len(words_b)) + (1 / 2))
    assert quality["n"] == 2 and quality["exact_match"] == 0.5
    assert quality["token_f1"] == pytest.approx((1.0 + hand_f1_b) / 2)
    assert 0 < quality["wer"] and "accuracy" not in quality


def test_mlflow_logger_writes_params_metrics_tags_and_artifacts(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    data = write_jsonl(tmp_path / "rows.jsonl", ROWS)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = api.run([*BASE, "input=jsonl", f"input.path={data}", "input.label_field=label", "input.id_field=uid",
                      "logger=mlflow", f"logger.tracking_uri={uri}", "logger.experiment=composer-tests",
                      "+logger.tags.team=nlp", "batch_size=2"], run_dir=tmp_path / "run")
    assert result.status == "complete"
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("composer-tests")
    (run,) = client.search_runs([experiment.experiment_id])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    assert run.data.params["batch_size"] == "2" and run.data.params["model.id"] == "tiny:text-classification"
    assert run.data.metrics["quality.model.accuracy"] == pytest.approx(metrics["quality"]["model"]["accuracy"])
    assert run.data.metrics["throughput.records_per_second"] == pytest.approx(metrics["throughput"]["records_per_second"])
    assert run.data.tags["composer.status"] == "complete" and run.data.tags["team"] == "nlp"
    assert run.data.tags["composer.model.model"] == "tiny:text-classification"
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id)}
    assert {"manifest.json", "metrics.json", "outputs.jsonl", "config.yaml"} <= artifacts
    assert (tmp_path / "mlruns").is_dir()  # artifacts beside the database, not in the working directory


def test_classification_scores_equal_scikit_learns():
    """composer computes accuracy, macro-F1 and per-label scores itself (importing sklearn cost
    every labelled run over a second); they must equal sklearn.metrics' on any labelling,
    including labels never predicted, predictions of labels never seen, and one label alone."""
    import random

    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    from composer.metrics import QualityAccumulator

    rng = random.Random(0)
    for _ in range(300):
        labels = [f"L{i}" for i in range(rng.randint(1, 5))]
        size = rng.randint(1, 30)
        quality = QualityAccumulator("prediction")
        quality.gold = [rng.choice(labels) for _ in range(size)]
        quality.predicted = [rng.choice([*labels, "None"]) for _ in range(size)]
        result = quality.result()
        every = sorted(set(quality.gold) | set(quality.predicted))
        precision, recall, f1, support = precision_recall_fscore_support(quality.gold, quality.predicted, labels=every, zero_division=0)
        assert result["accuracy"] == pytest.approx(accuracy_score(quality.gold, quality.predicted), abs=1e-12)
        macro = f1_score(quality.gold, quality.predicted, labels=sorted(set(quality.gold)), average="macro", zero_division=0)
        assert result["macro_f1"] == pytest.approx(macro, abs=1e-12)
        for label, p, r, f, s in zip(every, precision, recall, f1, support):
            assert result["per_class"][label] == pytest.approx({"precision": p, "recall": r, "f1": f, "support": s}, abs=1e-12)
