"""Safe by default: no pickle weights, no remote code, no escaping the runs folder; determinism."""

from __future__ import annotations

import pytest

from composer import api
from composer.schema import ConfigError
from composer.testing import tiny_model_path
from conftest import run_cli

BASE = ["experiment=tiny-sentiment", "threads=1", "input.limit=3"]


@pytest.fixture(scope="module")
def pickled_model(tmp_path_factory):
    """The tiny classifier saved the old way: pytorch_model.bin, no safetensors."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    import torch

    folder = tmp_path_factory.mktemp("pickled")
    source = tiny_model_path("text-classification")
    model = AutoModelForSequenceClassification.from_pretrained(source)
    model.save_pretrained(folder)  # transformers 5 writes safetensors only: swap them for a pickle
    (folder / "model.safetensors").unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    assert (folder / "pytorch_model.bin").exists() and not list(folder.glob("*.safetensors"))
    return folder


def test_pickle_weights_are_refused_unless_allowed(pickled_model, tmp_path):
    done = run_cli("run", *BASE, f"model.id={pickled_model}", f"hydra.run.dir={tmp_path / 'refused'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        f"model.id: {pickled_model} has only pickle-based weights (pytorch_model.bin), and loading pickle can run "
        "arbitrary code; convert them to safetensors or set model.allow_pickle=true"
    ) in done.stderr
    result = api.run([*BASE, f"model.id={pickled_model}", "model.allow_pickle=true"], run_dir=tmp_path / "allowed")
    assert result.status == "complete"
    assert result.manifest()["stages"]["model"]["allow_pickle"] is True


def test_manifest_records_remote_code_and_pickle_policy(tmp_path):
    facts = api.run(BASE, run_dir=tmp_path / "run").manifest()["stages"]["model"]
    assert facts["trust_remote_code"] is False and facts["allow_pickle"] is False


@pytest.mark.parametrize("name", ["../../etc", "a/b", "/abs", ".hidden", ""])
def test_run_names_cannot_escape_the_runs_folder(name):
    with pytest.raises(ConfigError) as caught:
        api.plan([*BASE, f"name='{name}'"])
    assert [str(i) for i in caught.value.issues] == [
        f"name: {name!r} must be a plain folder name (letters, digits, '_', '.', '-'), since runs go to runs_root/name/..."
    ]


def test_deterministic_mode_is_applied_and_recorded(tmp_path):
    import torch

    try:
        result = api.run([*BASE, "deterministic=true"], run_dir=tmp_path / "run")
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
    assert result.status == "complete" and result.manifest()["deterministic"] is True
    assert api.run(BASE, run_dir=tmp_path / "plain").manifest()["deterministic"] is False
