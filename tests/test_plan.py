"""`composer plan`: validation messages, the graph printout, and no torch import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from composer import api
from composer.schema import ConfigError
from conftest import run_cli, write_jsonl


# These tests start from the plain text-classification demo, not the default embedding job.
TINY = "experiment=tiny-sentiment"


def issues_of(overrides: list[str], deep: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        api.plan([TINY, *overrides], deep=deep)
    return [str(issue) for issue in caught.value.issues]


def test_plan_prints_resolved_config_and_graph(tmp_path):
    done = run_cli("plan", "experiment=tiny-sentiment", "batch_size=4", cwd=tmp_path, check=True)
    assert "batch_size: 4" in done.stdout
    assert "id: tiny:text-classification" in done.stdout
    graph = done.stdout.split("# stage graph")[1].split("# checked")[0].split("\n")
    assert graph[1].split()[:5] == ["source", "source", "JsonlSource", "<-", "-"]
    assert graph[2].split()[:5] == ["model", "model", "PipelineStage", "<-", "source"]
    assert "reads [text] writes [prediction]" in graph[2]
    assert graph[3].split()[:5] == ["outputs", "sink", "OutputsSink", "<-", "model"]


def test_plan_graph_columns_stay_aligned_with_long_stage_names(tmp_path):
    done = run_cli("plan", cwd=tmp_path, check=True)  # the default job: embedding_classify and others
    rows = [row for row in done.stdout.split("# stage graph")[1].split("# checked")[0].splitlines() if row]
    assert len(rows) == 6 and len({row.index(" <- ") for row in rows}) == 1
    assert len({row.index("reads [") for row in rows}) == 1
    # The plan moved mean_pool's pooling into the model stage (plan._pool_in_model): both lines say so.
    assert rows[1].endswith("(pools each record's token states here: mean, normalized, one vector per record)")
    assert rows[2].endswith("(pooled by model: passes its vectors on)") and rows[3].endswith("writes [prediction]")


def test_plan_imports_neither_torch_nor_transformers_nor_ray(tmp_path):
    code = (
        "import sys, contextlib, io\n"
        "from composer.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert main(['plan', 'experiment=tiny-sentiment', 'task=fill-mask', 'model=tiny-fill-mask']) == 0\n"
        "    assert main(['plan']) == 0\n"  # the default job (embedding stages) too
        "    assert main(['plan', 'experiment=tiny-sentiment', 'executor=ray']) == 0\n"  # Ray loads only to run
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets', 'ray') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_every_plan_time_mistake_is_reported_at_once(tmp_path):
    done = run_cli(
        "plan", TINY, "batchsize=3", "model.dtype=fp16", "task=sentiment-analysys", "model.device=cpu",
        "model.device_map=auto", "threads=two", "input.limt=3", cwd=tmp_path,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "composer: config has 6 errors:",
        "  - batchsize: unknown key; did you mean 'batch_size'?",
        "  - model.dtype: expected 'auto' | 'float32' | 'bfloat16' | 'float16', got 'fp16'",
        "  - input.limt: unknown key; did you mean 'limit'?",
        "  - threads: expected int or null, got 'two'",
        "  - model.device: set either model.device or model.device_map, not both (device_map places the model itself; set device=null)",
        "  - task: unknown task 'sentiment-analysys' for transformers' pipeline(); did you mean 'sentiment-analysis'?",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["batchsize=3"], "batchsize: unknown key; did you mean 'batch_size'?"),
        (["model.dtyp=float16"], "model.dtyp: unknown key; did you mean 'dtype'?"),
        (["batch_size=eight"], "batch_size: expected int or 'auto', got 'eight'"),
        (["model.dtype=fp16"], "model.dtype: expected 'auto' | 'float32' | 'bfloat16' | 'float16', got 'fp16'"),
        (["task=sentiment-analysys"], "task: unknown task 'sentiment-analysys' for transformers' pipeline(); did you mean 'sentiment-analysis'?"),
        (["task=summarization"], "task: unknown task 'summarization' for transformers' pipeline()"),
        (
            ["model.device=cuda:0", "model.device_map=auto"],
            "model.device: set either model.device or model.device_map, not both (device_map places the model itself; set device=null)",
        ),
        (["model.device=gpu0"], "model.device: unknown device 'gpu0'; use cpu, cuda, cuda:N, mps"),
        (["model=tiny-fill-mak"], "model: no config 'tiny-fill-mak' in configs/model/"),
        (["input=jsonl"], "input.path: required: set it on the command line, e.g. input.path=..."),
        (["input=jsonl", "input.path=/no/such/file.jsonl"], "input.path: file not found: /no/such/file.jsonl"),
        (["model_input=prompt"], "model: stage 'model' reads field 'prompt', which no upstream stage writes (available: id, label, text)"),
        (["quantization=bnb-8bit", "quantization.params.load_in_8bit=false"], "quantization.params: bitsandbytes needs load_in_8bit: true or load_in_4bit: true"),
        (["on_error=ignore"], "on_error: expected 'skip' | 'fail', got 'ignore'"),
    ],
)
def test_plan_time_check_messages(overrides, expected):
    assert any(issue.startswith(expected) for issue in issues_of(overrides)), issues_of(overrides)


def test_stage_graph_checks_name_their_key_paths(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "bad_graph.yaml").write_text(
        "# @package _global_\n"
        "preprocess:\n"
        "  - {type: template, template: 'Q: {question}', output_field: prompt}\n"
        "  - {type: normalise, field: text}\n"
        "postprocess:\n"
        "  - {type: top_k, kk: 2}\n"
        "stages:\n"
        "  second:\n"
        "    type: model\n"
        "    task: fill-mask\n"
        "    inputs: [sorce]\n"
    )
    messages = issues_of([f"hydra.searchpath=[file://{tmp_path}]", "experiment=bad_graph"])
    assert messages == [
        "preprocess[1].type: unknown stage type 'normalise'; did you mean 'normalize'?",
        "postprocess[0].kk: unknown parameter of TopK; did you mean 'k'?",
        "stages.second.inputs: unknown stage 'sorce'; did you mean 'source'?",
        "preprocess[0]: stage 'template' reads field 'question', which no upstream stage writes (available: id, label, text)",
        # The model check runs beside the graph's (no torch import): fill-mask's default model is not here offline.
        "stages.second.model.id: model.id 'distilbert/distilroberta-base' is not a local directory and HF_HUB_OFFLINE is set; "
        "it is not in the Hugging Face cache either. Run once with network access, or set model.id to a local model folder.",
    ]


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["call.topk=3"], "call.topk: the text-classification pipeline does not accept 'topk'; did you mean 'top_k'?"),
        (["pipeline.function_to_aply=sigmoid"], "pipeline.function_to_aply: the text-classification pipeline does not accept 'function_to_aply'; did you mean 'function_to_apply'?"),
        (["pipeline.quantization_config={load_in_8bit: true}"], "pipeline.quantization_config: not a task parameter; set quantization=<none|bnb-8bit|bnb-4bit|torchao-int8> instead"),
        (["call.dtype=float16"], "call.dtype: not a task parameter; set model.dtype instead"),
        (
            ["task=zero-shot-classification", "model=tiny-zero-shot-classification", "call.candidate_label=[a,b]"],
            "call.candidate_label: the zero-shot-classification pipeline does not accept 'candidate_label'; did you mean 'candidate_labels'?",
        ),
        (
            ["task=text-generation", "model=tiny-text-generation", "call.max_new_token=5"],
            "call.max_new_token: the text-generation pipeline does not accept 'max_new_token'; did you mean 'max_new_tokens'?",
        ),
        (["quantization=bnb-8bit", "quantization.params.load_in_8bits=true"], "quantization.params.load_in_8bits: not an argument of the bitsandbytes config; did you mean 'load_in_8bit'?"),
        (["quantization=torchao-int8", "quantization.params.quant_type=Int8Weights"], "quantization.params.quant_type: torchao has no 'Int8Weights'"),
        (["model.id=/no/such/model"], "model.id: model.id '/no/such/model': no such local directory (a model folder saved with save_pretrained)"),
        (
            ["model.id=someone/not-cached-model"],
            "model.id: model.id 'someone/not-cached-model' is not a local directory and HF_HUB_OFFLINE is set; it is not in the Hugging Face cache either.",
        ),
    ],
)
def test_deep_checks_catch_what_pipeline_would_swallow(overrides, expected):
    messages = issues_of(overrides, deep=True)
    assert any(message.startswith(expected) for message in messages), messages


def test_valid_task_parameters_pass_the_deep_check():
    api.plan([TINY, "pipeline.top_k=2", "call.function_to_apply=softmax", "call.truncation=true"], deep=True)
    api.plan([TINY, "task=text-generation", "model=tiny-text-generation", "call.max_new_tokens=4", "call.do_sample=false", "call.top_p=0.9"], deep=True)


def test_run_refuses_a_missing_model_before_loading_anything(tmp_path):
    done = run_cli("run", TINY, "model.id=someone/not-cached-model", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert "model.id: model.id 'someone/not-cached-model' is not a local directory and HF_HUB_OFFLINE is set" in done.stderr
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_run_refuses_unknown_call_parameter(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": "hello"}])
    done = run_cli("run", TINY, "input=jsonl", f"input.path={data}", "call.topk=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2
    assert "call.topk: the text-classification pipeline does not accept 'topk'; did you mean 'top_k'?" in done.stderr


def test_target_stages_are_limited_to_composer_unless_allowed(tmp_path):
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "targets.yaml").write_text(
        "# @package _global_\n"
        "preprocess:\n"
        "  - {_target_: composer.stages.text.Template, template: 'Say: {text}', output_field: prompt}\n"
        "postprocess:\n"
        "  - {_target_: os.system, command: 'touch pwned'}\n"
    )
    search = [f"hydra.searchpath=[file://{tmp_path}]", "experiment=targets"]
    assert issues_of(search) == [
        "postprocess[0]._target_: 'os.system' is outside composer's stages; set allow_any_target=true to allow it"
    ]
    assert issues_of([*search, "allow_any_target=true"]) == ["postprocess[0]._target_: 'os.system' is not a composer Stage subclass"]
    assert not (tmp_path / "pwned").exists()
    config, graph = api.plan([search[0], "experiment=targets", "postprocess=[]"])
    assert [n["type"] for n in graph.describe()] == ["JsonlSource", "Template", "PipelineStage", "OutputsSink"]


def test_an_unreachable_hub_fails_fast_with_a_message(tmp_path):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_HOME"] = str(tmp_path / "hf-home")  # an empty cache
    done = subprocess.run(
        [sys.executable, "-m", "composer", "plan", "--deep", TINY, "model.id=someone/not-cached-model"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    # Offline machines (CI) cannot reach the Hub; online ones learn that the repository does not exist.
    assert (
        "model.id 'someone/not-cached-model' is not a local directory and the Hugging Face Hub is unreachable" in done.stderr
        or "model.id 'someone/not-cached-model' is neither a local directory nor a model on the Hugging Face Hub" in done.stderr
    ), done.stderr
