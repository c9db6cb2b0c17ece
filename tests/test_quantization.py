"""dtype, device_map and weight quantization, set through config alone, on CPU.

For each of `model.dtype=bfloat16`, `model.device_map=auto`, `quantization=bnb-8bit`,
`quantization=bnb-4bit` and `quantization=torchao-int8` on a tiny text-classification model:
the run completes with a prediction for every record, the manifest records what was used, and
the model the composer loads really is what the config asked for. The last point matters because
`transformers.pipeline()` silently ignores a top-level `quantization_config` (it only works inside
`model_kwargs`): a run through that trap completes, with full-precision weights.
"""

from __future__ import annotations

import json

import pytest

from composer import api, modelpool
from composer.repro import sha256_tree
from composer.testing import tiny_model_path
from conftest import read_jsonl, run_cli, write_jsonl

pytest.importorskip("accelerate")
pytest.importorskip("bitsandbytes")
pytest.importorskip("torchao")

TEXTS = [
    "I love this product, it works perfectly.",
    "The package arrived broken and support never answered.",
    "Short one.",
    "Customer support was slow, but the refund arrived in the end and everything is fine now.",
    "Weather is nice today.",
]
LABELS = {"NEGATIVE", "POSITIVE"}
# Every case starts from the tiny sentiment demo, not the default embedding job.
TINY = "experiment=tiny-sentiment"
BNB_4BIT = [TINY, "quantization=bnb-4bit", "model=tiny-text-classification-quantizable", "quantization.params.llm_int8_skip_modules=[classifier]"]

# case -> (overrides, tiny model name)
CASES = {
    "fp32": ([], "text-classification"),
    "bf16": (["model.dtype=bfloat16"], "text-classification"),
    "device-map-auto": (["model.device_map=auto"], "text-classification"),
    "bnb-8bit": (["quantization=bnb-8bit"], "text-classification"),
    "bnb-4bit": (BNB_4BIT, "text-classification-quantizable"),
    "torchao-int8": (["quantization=torchao-int8"], "text-classification"),
}
VARIANTS = [case for case in CASES if case != "fp32"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("quant-data")
    return write_jsonl(folder / "input.jsonl", [{"text": text, "n": i} for i, text in enumerate(TEXTS)])


def _overrides(case: str, data) -> list[str]:
    return [TINY, *CASES[case][0], "input=jsonl", f"input.path={data}", "input.id_field=n", "batch_size=2", "threads=1"]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory: pytest.TempPathFactory):
    """Each case runs once per module (api.run in-process), shared by the tests below."""
    done: dict[str, api.RunResult] = {}
    root = tmp_path_factory.mktemp("quant-runs")

    def get(case: str) -> api.RunResult:
        if case not in done:
            done[case] = api.run(_overrides(case, data), run_dir=root / case)
        return done[case]

    return get


@pytest.fixture(scope="module")
def loaded(data):
    """The model stage as the composer builds it (planned graph -> PipelineStage.setup())."""
    stages = {}

    def get(case: str):
        if case not in stages:
            _, graph = api.plan(_overrides(case, data))
            (stage,) = graph.model_stages()
            stage.setup()
            stages[case] = stage
        return stages[case]

    yield get
    for stage in stages.values():
        stage.close()


def _positive_probability(prediction: list[dict]) -> float:
    (top,) = prediction
    return top["score"] if top["label"] == "POSITIVE" else 1.0 - top["score"]


# --- the run completes and every record has a prediction --------------------------------------


@pytest.mark.parametrize("case", VARIANTS)
def test_run_completes_with_a_prediction_per_record(case, runs):
    result = runs(case)
    manifest = result.manifest()
    assert result.status == "complete", manifest.get("error")
    assert manifest["counts"]["records_ok"] == len(TEXTS) and manifest["counts"]["records_failed"] == 0
    assert result.errors() == []
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == [str(i) for i in range(len(TEXTS))]
    assert [o["text"] for o in outputs] == TEXTS
    for output in outputs:
        (top,) = output["prediction"]
        assert top["label"] in LABELS, output
        assert 0.0 <= top["score"] <= 1.0, output


# --- the manifest records what was used ----------------------------------------------------------


def _bnb(**expected):
    def check(quant):
        assert quant["class"] == "BitsAndBytesConfig" and quant["quant_method"] == "bitsandbytes"
        for key, value in expected.items():
            assert quant[key] == value, (key, quant)

    return check


def _torchao(quant):
    assert quant["class"] == "TorchAoConfig" and quant["quant_method"] == "torchao"
    assert "Int8DynamicActivationInt8WeightConfig" in json.dumps(quant["quant_type"]), quant
    assert quant["modules_to_not_convert"] is None


MANIFEST_EXPECTATIONS = {
    # case -> (dtype, check of the quantization JSON, or None when unquantized)
    "fp32": ("float32", None),
    "bf16": ("bfloat16", None),
    "device-map-auto": ("float32", None),
    "bnb-8bit": ("float32", _bnb(load_in_8bit=True, load_in_4bit=False, llm_int8_threshold=6.0, llm_int8_skip_modules=None)),
    "bnb-4bit": (
        "float32",
        _bnb(load_in_4bit=True, load_in_8bit=False, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype="bfloat16",
             bnb_4bit_use_double_quant=False, llm_int8_skip_modules=["classifier"]),
    ),
    "torchao-int8": ("float32", _torchao),
}


@pytest.mark.parametrize("case", list(CASES))
def test_manifest_records_dtype_quantization_and_model(case, runs):
    facts = runs(case).manifest()["stages"]["model"]
    dtype, check_quant = MANIFEST_EXPECTATIONS[case]
    assert facts["dtype"] == dtype
    assert facts["device"] == "cpu"
    assert facts["model_class"] == "BertForSequenceClassification"
    if check_quant is None:
        assert facts["quantization"] is None
    else:
        check_quant(facts["quantization"])
    name = CASES[case][1]
    path = tiny_model_path(name)
    model = facts["model"]
    assert model["source"] == "tiny" and model["requested"] == f"tiny:{name}"
    assert model["load_from"] == str(path)
    assert model["content_sha256"] == sha256_tree(path)
    assert model["revision"] is None


def test_fingerprints_tell_precision_and_quantization_apart(runs):
    fingerprints = {case: runs(case).manifest()["stages"]["model"]["fingerprint"] for case in CASES}
    assert len(set(fingerprints.values())) == len(fingerprints), fingerprints


def test_manifest_records_device_map_and_placement(runs):
    model = runs("device-map-auto").manifest()["stages"]["model"]
    assert model["device_map"] == "auto" and model["placement"] == {"": "cpu"}
    assert runs("fp32").manifest()["stages"]["model"]["device_map"] is None


def test_manifest_records_the_quantizer_that_really_loaded(runs):
    assert runs("bnb-8bit").manifest()["stages"]["model"]["quantizer"] == "Bnb8BitHfQuantizer"
    assert runs("bnb-4bit").manifest()["stages"]["model"]["quantizer"] == "Bnb4BitHfQuantizer"
    assert runs("torchao-int8").manifest()["stages"]["model"]["quantizer"] == "TorchAoHfQuantizer"
    assert runs("fp32").manifest()["stages"]["model"]["quantizer"] is None


# --- the model really is what the config asked for -------------------------------------------------


def _encoder_linears(model):
    import torch

    encoder = model.bert.encoder
    # Before quantization every one of these is an nn.Linear: q/k/v, attention out, intermediate, out.
    names = [n for n, m in encoder.named_modules() if n.endswith(("query", "key", "value", "dense"))]
    assert len(names) == 6 * len(encoder.layer), names
    return {n: encoder.get_submodule(n) for n in names}, torch


def test_bnb_8bit_model_has_int8_linear_layers(loaded):
    import bitsandbytes as bnb

    model = loaded("bnb-8bit").pipe.model
    linears, torch = _encoder_linears(model)
    for name, module in linears.items():
        assert isinstance(module, bnb.nn.Linear8bitLt), (name, type(module))
        assert isinstance(module.weight, bnb.nn.Int8Params) and module.weight.dtype == torch.int8, name
    assert model.is_quantized and type(model.hf_quantizer).__name__ == "Bnb8BitHfQuantizer"
    assert model.config.quantization_config.load_in_8bit is True


def test_bnb_4bit_model_has_4bit_linear_layers_and_keeps_the_skipped_head(loaded):
    import bitsandbytes as bnb

    model = loaded("bnb-4bit").pipe.model
    linears, torch = _encoder_linears(model)
    for name, module in linears.items():
        assert isinstance(module, bnb.nn.Linear4bit), (name, type(module))
        assert isinstance(module.weight, bnb.nn.Params4bit) and module.weight.dtype == torch.uint8, name
        assert module.weight.quant_type == "nf4", name
    # llm_int8_skip_modules=[classifier] reached transformers: the head stays a full-precision Linear.
    assert type(model.classifier) is torch.nn.Linear and model.classifier.weight.dtype == torch.float32
    assert model.is_quantized and type(model.hf_quantizer).__name__ == "Bnb4BitHfQuantizer"


def test_torchao_int8_model_has_quantized_tensor_weights(loaded):
    from torchao.utils import TorchAOBaseTensor

    model = loaded("torchao-int8").pipe.model
    linears, torch = _encoder_linears(model)
    for name, module in linears.items():
        assert isinstance(module.weight, TorchAOBaseTensor), (name, type(module.weight))
        assert type(module.weight).__name__ == "Int8Tensor", (name, type(module.weight))
    assert model.is_quantized and type(model.hf_quantizer).__name__ == "TorchAoHfQuantizer"


def test_bfloat16_model_has_bfloat16_parameters(loaded):
    import torch

    model = loaded("bf16").pipe.model
    assert model.dtype == torch.bfloat16
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert not getattr(model, "is_quantized", False)


def test_unquantized_models_are_not_quantized(loaded):
    import torch

    for case in ("fp32", "device-map-auto"):
        model = loaded(case).pipe.model
        assert not getattr(model, "is_quantized", False), case
        assert all(type(p) is torch.nn.Parameter and p.dtype == torch.float32 for p in model.parameters()), case


def test_device_map_auto_reaches_from_pretrained(data, monkeypatch):
    """transformers 5 sets no hf_device_map for a single-device map, so check the load call itself."""
    import torch
    from transformers import PreTrainedModel

    original = PreTrainedModel.from_pretrained.__func__
    seen: list = []

    def spy(cls, *args, **kwargs):
        seen.append(kwargs.get("device_map"))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "from_pretrained", classmethod(spy))
    # a fresh load, not the identical pipeline another test's stage holds (composer.modelpool)
    monkeypatch.setattr(modelpool, "take", lambda key: None)
    _, graph = api.plan(_overrides("device-map-auto", data))
    (stage,) = graph.model_stages()
    stage.setup()
    try:
        assert seen and seen[-1] == "auto", seen
        model = stage.pipe.model
        assert {p.device for p in model.parameters()} == {torch.device("cpu")}
        assert stage.pipe.device == torch.device("cpu")
    finally:
        stage.close()


# --- outputs -------------------------------------------------------------------------------------


def test_bfloat16_outputs_are_close_to_float32(runs):
    fp32, bf16 = runs("fp32").outputs(), runs("bf16").outputs()
    assert [o["id"] for o in fp32] == [o["id"] for o in bf16]
    for a, b in zip(fp32, bf16):
        # Compare P(POSITIVE): near 0.5 (a random tiny model) bf16 may flip the top label.
        assert abs(_positive_probability(a["prediction"]) - _positive_probability(b["prediction"])) <= 0.05, (a, b)


def test_device_map_auto_outputs_equal_float32(runs):
    fp32, mapped = runs("fp32").outputs(), runs("device-map-auto").outputs()
    for a, b in zip(fp32, mapped):
        assert a["prediction"][0]["label"] == b["prediction"][0]["label"]
        assert abs(a["prediction"][0]["score"] - b["prediction"][0]["score"]) <= 1e-5


# --- text generation, sampled, on an 8-bit model -----------------------------------------------


def test_bnb_8bit_sampled_generation_is_reproducible_with_a_seed(tmp_path):
    import bitsandbytes as bnb

    prompts = ["Hello there", "The weather today", "Once upon a time"]
    data = write_jsonl(tmp_path / "prompts.jsonl", [{"text": p, "n": i} for i, p in enumerate(prompts)])
    overrides = [
        TINY, "task=text-generation", "model=tiny-text-generation", "quantization=bnb-8bit", "input=jsonl", f"input.path={data}",
        "input.id_field=n", "call.do_sample=true", "call.top_p=0.9", "call.max_new_tokens=5", "seed=1", "threads=1",
    ]
    first = api.run(overrides, run_dir=tmp_path / "first")
    second = api.run(overrides, run_dir=tmp_path / "second")
    for result in (first, second):
        assert result.status == "complete", result.manifest().get("error")
        facts = result.manifest()["stages"]["model"]
        assert facts["quantization"]["class"] == "BitsAndBytesConfig" and facts["quantization"]["load_in_8bit"] is True
        assert result.manifest()["seed"] == 1
    outputs = [o["prediction"] for o in first.outputs()]
    assert len(outputs) == len(prompts)
    for prompt, prediction in zip(prompts, outputs):
        (generated,) = prediction
        assert generated["generated_text"].startswith(prompt)
    assert outputs == [o["prediction"] for o in second.outputs()]

    _, graph = api.plan(overrides)
    (stage,) = graph.model_stages()
    stage.setup()
    try:
        assert any(isinstance(m, bnb.nn.Linear8bitLt) for m in stage.pipe.model.modules())
    finally:
        stage.close()


# --- the same through the CLI ----------------------------------------------------------------------


def test_cli_run_with_bnb_4bit(data, tmp_path):
    run_dir = tmp_path / "run"
    done = run_cli(
        "run", *BNB_4BIT, "input=jsonl", f"input.path={data}", "input.id_field=n", "threads=1", f"hydra.run.dir={run_dir}",
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    quant = manifest["stages"]["model"]["quantization"]
    assert quant["class"] == "BitsAndBytesConfig" and quant["load_in_4bit"] is True
    assert quant["llm_int8_skip_modules"] == ["classifier"]
    assert manifest["stages"]["model"]["model"]["requested"] == "tiny:text-classification-quantizable"
    outputs = read_jsonl(run_dir / "outputs.jsonl")
    assert [o["id"] for o in outputs] == [str(i) for i in range(len(TEXTS))]
    assert all(o["prediction"][0]["label"] in LABELS for o in outputs)


# --- quantization value mistakes are config errors, found before any weights load ---------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["quantization=bnb-8bit", "+quantization.params.load_in_4bit=true"], "load_in_4bit and load_in_8bit are both True"),
        (["quantization=bnb-4bit", "quantization.params.bnb_4bit_quant_type=nf5"], "quantization.params.bnb_4bit_quant_type: must be nf4 or fp4, got 'nf5'"),
        (["quantization=bnb-4bit", "quantization.params.bnb_4bit_compute_dtype=bfloat17"], "quantization.params.bnb_4bit_compute_dtype: not a torch dtype: 'bfloat17'"),
        (["quantization=bnb-8bit", "quantization.params.llm_int8_threshold=abc"], "quantization.params.llm_int8_threshold: bitsandbytes rejects this"),
        (["quantization=torchao-int8", "quantization.params.quant_type=quantize_"], "quantization.params.quant_type: torchao has no 'quantize_' config class"),
        (["quantization=torchao-int8", "+quantization.params.quant_type_kwargs.bogus=1"], "quantization.params.quant_type_kwargs.bogus: not an argument of Int8DynamicActivationInt8WeightConfig"),
    ],
)
def test_bad_quantization_values_fail_the_deep_check(overrides, expected, tmp_path):
    from composer.schema import ConfigError

    with pytest.raises(ConfigError) as caught:
        api.plan([TINY, *overrides], deep=True)
    messages = [str(issue) for issue in caught.value.issues]
    assert any(expected in message for message in messages), messages
    # api.run refuses too, before the run folder gets a manifest.
    with pytest.raises(ConfigError):
        api.run([TINY, *overrides, "threads=1"], run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "manifest.json").exists()


# --- the tutorial's large-model example as a ready experiment ---------------------------------------


@pytest.mark.parametrize("quantization", ["none", "bnb-8bit"])
def test_large_model_experiment_runs_offline_with_a_tiny_stand_in(quantization, tmp_path):
    overrides = ["experiment=large-model", "model.id=tiny:text-generation", f"quantization={quantization}", "threads=1",
                 "call.max_new_tokens=6"]
    first = api.run(overrides, run_dir=tmp_path / "first")
    again = api.run(overrides, run_dir=tmp_path / "again")
    assert first.status == "complete", first.manifest().get("error")
    config, facts = first.config(), first.manifest()["stages"]["model"]
    assert config["call"]["do_sample"] is True and config["call"]["top_p"] == 0.95
    assert facts["dtype"] == "bfloat16" and facts["device_map"] == "auto" and facts["placement"] == {"": "cpu"}
    assert facts["quantizer"] == ("Bnb8BitHfQuantizer" if quantization == "bnb-8bit" else None)
    [record] = first.outputs()
    assert record["prediction"][0]["generated_text"].startswith("This is a cool example!")
    assert again.outputs() == first.outputs()  # sampling is seeded
