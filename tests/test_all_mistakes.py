"""Every config mistake in one message, from `plan` and `run`, before anything runs (issue 15):
a typo, a model that is nowhere and a task parameter the pipeline would ignore, found together
without importing torch; a sweep with one bad combination starts no job; the demo experiment
applies only to a bare run."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

from conftest import run_cli

THREE_MISTAKES = ["experiment=base", "model.id=tiny:no-such-model", "batchsize=8", "call.top_kk=2"]
EXPECTED = [
    "batchsize: unknown key; did you mean 'batch_size'?",
    "call.top_kk: the text-classification pipeline does not accept 'top_kk'; did you mean 'top_k'?",
    "model.id: model.id 'tiny:no-such-model': no such tiny test model",
]


@pytest.mark.parametrize("verb", ["plan", "run"])
def test_a_typo_a_missing_model_and_a_bad_call_key_are_reported_in_one_message(tmp_path, verb):
    done = run_cli(verb, *THREE_MISTAKES, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "config has 3 errors" in done.stderr
    for line in EXPECTED:
        assert f"  - {line}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "runs").exists()


def test_plain_plan_finds_a_bad_call_key_and_a_missing_model_without_importing_torch(tmp_path):
    code = (
        "import sys\n"
        "from composer import api\n"
        "from composer.schema import ConfigError\n"
        "try:\n"
        f"    api.plan({THREE_MISTAKES!r})\n"
        "except ConfigError as error:\n"
        "    print(len(error.issues))\n"
        "print(sorted(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["3", "[]"], done.stdout + done.stderr


def test_plan_lists_what_it_checked(tmp_path):
    plain = run_cli("plan", "experiment=base", "call.top_k=2", cwd=tmp_path, check=True).stdout
    checked = plain.split("# checked")[1]
    assert "model: call.top_k: accepted by the text-classification pipeline" in checked
    assert "model: model.id tiny:text-classification: found (tiny: " in checked
    assert "sha256" not in checked  # plain plan finds the model; it does not hash or build it
    deep = run_cli("plan", "--deep", "experiment=base", "call.top_k=2", "quantization=torchao-int8", cwd=tmp_path, check=True).stdout
    checked = deep.split("# checked (--deep)")[1]
    assert "model: quantization torchao: backend installed, arguments accepted" in checked
    assert "model: model.id tiny:text-classification: found (tiny: " in checked and ", sha256 " in checked


def test_a_sweep_with_one_bad_combination_starts_no_job(tmp_path):
    done = run_cli("run", "-m", "experiment=tiny-sentiment", "model.dtype=float32,fp33", "batch_size=1,2", cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert "config has 2 errors" in done.stderr
    assert "job 2 (experiment=tiny-sentiment model.dtype=fp33 batch_size=1): model.dtype: expected" in done.stderr
    assert "job 3 (experiment=tiny-sentiment model.dtype=fp33 batch_size=2): model.dtype: expected" in done.stderr
    assert not (tmp_path / "runs").exists()  # not one job folder, not one model load


@pytest.mark.parametrize(
    ("overrides", "name", "model_type"),
    [
        ([], "support-tickets", "mean_pool"),  # a bare run: the demo job
        (["batch_size=4"], "support-tickets", "mean_pool"),  # a setting of the demo job, still the demo
        (["task=fill-mask", "model=tiny-fill-mask"], "fill-mask", None),  # a job of one's own: the base config
        (["input=inline", "input.records=[hello]"], "text-classification", None),
        (["experiment=support-tickets", "model=tiny-feature-extraction"], "support-tickets", "mean_pool"),  # named: kept
    ],
)
def test_the_demo_experiment_applies_only_when_no_job_defining_override_is_given(overrides, name, model_type):
    from composer import api

    config = api.compose(overrides)
    assert config["name"] == name
    assert (config["postprocess"][0]["type"] if config["postprocess"] else None) == model_type


def test_cfg_job_shows_the_job_that_will_run(tmp_path):
    done = run_cli("run", "task=fill-mask", "model=tiny-fill-mask", "--cfg", "job", cwd=tmp_path, check=True)
    assert "task: fill-mask" in done.stdout and "postprocess: []" in done.stdout and "tickets" not in done.stdout


def test_task_parameters_read_from_source_include_every_named_parameter_the_classes_declare():
    """The torch-free reading of transformers' source (composer.taskparams) against the classes
    themselves, for every task of the installed version: a transformers release that moves a
    parameter where the reading cannot see it fails here, not in a user's plan."""
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    from composer.taskparams import _generate_params, accepted_params
    from composer.tasks import task_table

    generate = set(GenerationConfig().to_dict()) | set(inspect.signature(GenerationMixin.generate).parameters)
    assert generate - {"self", "kwargs", "inputs"} <= _generate_params()
    for task, info in task_table().tasks.items():
        module, _, name = info.impl.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        declared = {p.name for p in inspect.signature(cls._sanitize_parameters).parameters.values()
                    if p.kind is not inspect.Parameter.VAR_KEYWORD} - {"self"}
        call = [p for p in inspect.signature(cls.__call__).parameters.values() if p.name not in {"self", "args", "kwargs", "inputs"}]
        declared |= {p.name for p in call[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD}
        assert declared <= accepted_params(task).names, (task, declared - accepted_params(task).names)
