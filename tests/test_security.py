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


# --- gates that cannot be bypassed (issue 16) ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_weights(tmp_path_factory):
    """The tiny classifier's safetensors and, beside them, pickle weights that differ (a shifted
    classifier bias): which of the two loaded shows in the scores."""
    import shutil

    import torch
    from safetensors.torch import load_file

    folder = tmp_path_factory.mktemp("two-weights") / "model"
    shutil.copytree(tiny_model_path("text-classification"), folder)
    weights = load_file(folder / "model.safetensors")
    weights["classifier.bias"] = weights["classifier.bias"] + torch.tensor([3.0, -3.0])
    torch.save(weights, folder / "pytorch_model.bin")
    return folder


def test_model_kwargs_cannot_load_pickle_weights_past_allow_pickle(two_weights, tmp_path):
    """Found by probing: +model.model_kwargs.use_safetensors=false with allow_pickle=false loaded
    the pickle weights (other scores) while the manifest said allow_pickle: false."""
    done = run_cli("run", *BASE, f"model.id={two_weights}", "+model.model_kwargs.use_safetensors=false",
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert ("model.model_kwargs.use_safetensors: not allowed in model_kwargs: it decides whether pickle weights, "
            "which can run code as they load, may load; set model.allow_pickle instead") in done.stderr
    assert not (tmp_path / "run").exists()
    # A config handed to execute_config unvalidated still gets the safetensors: the loader sets the gate itself.
    config = api.compose([*BASE, f"model.id={two_weights}"])
    safe = api.execute_config(config, tmp_path / "safe", [])
    config["model"]["model_kwargs"] = {"use_safetensors": False}
    bypassed = api.execute_config(config, tmp_path / "bypassed", [])
    assert bypassed.outputs() == safe.outputs()
    assert bypassed.manifest()["stages"]["model"]["allow_pickle"] is False
    # The pickle weights do differ: with allow_pickle they load, and the scores move.
    allowed = api.execute_config({**config, "model": {**config["model"], "allow_pickle": True}}, tmp_path / "allowed", [])
    assert allowed.outputs() != safe.outputs() and allowed.manifest()["stages"]["model"]["allow_pickle"] is True


_GENERATION = ["task=text-generation", "model=tiny-text-generation"]
_SECOND = "+stages.second={type: model, task: text-classification, model: {id: 'tiny:text-classification'%s}%s, inputs: [source]}"


@pytest.mark.parametrize(
    ("overrides", "path", "hint"),
    [
        (["+model.model_kwargs.use_safetensors=false"], "model.model_kwargs.use_safetensors", "set model.allow_pickle instead"),
        (["model.model_kwargs.weights_only=false"], "model.model_kwargs.weights_only", "set model.allow_pickle instead"),
        (["model.model_kwargs.trust_remote_code=true"], "model.model_kwargs.trust_remote_code", "set model.trust_remote_code instead"),
        (["model.model_kwargs.code_revision=abc123"], "model.model_kwargs.code_revision", "set model.revision instead"),
        (["model.model_kwargs.revision=abc123"], "model.model_kwargs.revision", "set model.revision instead"),
        (["model.model_kwargs.device_map=auto"], "model.model_kwargs.device_map", "set model.device_map instead"),
        (["model.model_kwargs.quantization_config={load_in_8bit: true}"], "model.model_kwargs.quantization_config", "quantization="),
        (["model.model_kwargs.gguf_file=model.gguf"], "model.model_kwargs.gguf_file", "GGUF weights"),
        (["model.model_kwargs.use_kernels=true"], "model.model_kwargs.use_kernels", "runs compiled kernels from the Hugging Face Hub"),
        (["model.model_kwargs.attn_implementation=kernels-community/flash-attn"], "model.model_kwargs.attn_implementation",
         "names a kernel repository on the Hub"),
        (["pipeline.use_safetensors=false"], "pipeline.use_safetensors", "set model.allow_pickle instead"),
        (["pipeline.trust_remote_code=true"], "pipeline.trust_remote_code", "model.trust_remote_code"),
        (["pipeline.revision=abc123"], "pipeline.revision", "model.revision"),
        (["pipeline.model_kwargs={use_safetensors: false}"], "pipeline.model_kwargs", "model.model_kwargs"),
        ([*_GENERATION, "call.custom_generate=someone/generate"], "call.custom_generate", "runs generation code"),
        ([*_GENERATION, "call.trust_remote_code=true"], "call.trust_remote_code", "model.trust_remote_code"),
        ([_SECOND % (", model_kwargs: {use_safetensors: false}", "")], "stages.second.model.model_kwargs.use_safetensors",
         "set stages.second.model.allow_pickle instead"),
        ([_SECOND % ("", ", pipeline: {use_safetensors: false}")], "stages.second.pipeline.use_safetensors", "allow_pickle"),
        ([_SECOND % ("", ", call: {use_kernels: true}")], "stages.second.call.use_kernels", "kernels"),
    ],
)
def test_every_route_to_a_key_that_decides_what_loads_is_refused(overrides, path, hint):
    with pytest.raises(ConfigError) as caught:
        api.plan([*BASE, *overrides], deep=True)
    messages = [str(issue) for issue in caught.value.issues]
    assert any(message.startswith(f"{path}: ") and hint in message for message in messages), messages


def test_a_resumed_or_verified_config_meets_the_same_gate(tmp_path):
    """config.yaml is the config of resume and verify: edited to pass pickle weights, it is refused."""
    import yaml

    result = api.run(BASE, run_dir=tmp_path / "run")
    config = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    config["model"]["model_kwargs"] = {"use_safetensors": False}
    (result.run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    finished = (result.run_dir / "manifest.json").read_text()
    for verb, status in (("verify", "complete"), ("resume", "interrupted")):
        (result.run_dir / "manifest.json").write_text(finished.replace('"status": "complete"', f'"status": "{status}"'))
        done = run_cli(verb, str(result.run_dir), cwd=tmp_path)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert "model.model_kwargs.use_safetensors: not allowed in model_kwargs" in done.stderr


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("+hydra.callbacks.x._target_=os.system", "hydra.callbacks.x._target_"),
        ("hydra.sweeper._target_=builtins.eval", "hydra.sweeper._target_"),
        ("hydra.job_logging.handlers.console.class=os.system", "hydra.job_logging.handlers.console.class"),
    ],
)
def test_hydra_targets_outside_the_allow_list_exit_2(override, path, tmp_path):
    """Found by probing: +hydra.callbacks.x._target_=os.system was blocked by Hydra, with exit 1
    and Hydra's error; Hydra's own targets are now checked with the config, before Hydra acts."""
    for mode in ([], ["-m", "batch_size=1,2"]):
        done = run_cli("run", *mode, *BASE, override, f"hydra.run.dir={tmp_path / 'run'}",
                       f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr and f"  - {path}: '" in done.stderr
        assert not (tmp_path / "run").exists() and not (tmp_path / "sweep").exists()


def test_an_optuna_custom_search_space_outside_the_allow_list_exits_2(tmp_path):
    """composer's Optuna sweeper calls the function hydra.sweeper.custom_search_space names, as
    Hydra instantiates a _target_: it gets the same gate, before any trial runs."""
    done = run_cli("run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=1",
                   "hydra.sweeper.custom_search_space=os.system", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "  - hydra.sweeper.custom_search_space: 'os.system' is not a function Hydra may call" in done.stderr
    assert not (tmp_path / "sweep").exists()


def _sparse(path, size: int):
    with path.open("wb") as handle:
        handle.truncate(size)  # a hole: no disk space, yet stat() says `size` and a read returns it all
    return path


def test_a_local_image_over_max_bytes_fails_unread(tmp_path):
    """Found by probing: a 3 GiB file named .png was read whole (peak RSS 3.57 GB) before
    failing; max_bytes applied to URLs only."""
    import numpy as np
    from PIL import Image

    folder = tmp_path / "photos"
    folder.mkdir()
    Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype("uint8")).save(folder / "good.png")
    _sparse(folder / "huge.png", 3 * 2**30)
    result = api.run(["experiment=image-classification", "model=tiny-image-classification", "input=image_folder",
                      f"input.path={folder}", "threads=1", "progress=false"], run_dir=tmp_path / "run")
    assert result.status == "completed_with_errors"
    assert [o["id"] for o in result.outputs()] == ["good.png"]
    (error,) = result.errors()
    assert error["id"] == "huge.png" and error["stage"] == "load_image"
    assert f"{3 * 2**30} bytes exceeds the cap of 20000000 (max_bytes); the file was not read" in error["message"]
    assert result.manifest()["peak_memory"]["rss_bytes"] < 2 * 2**30


def test_a_local_audio_file_over_max_bytes_fails_unread(tmp_path):
    from composer.stages.audio import LoadAudio

    huge = _sparse(tmp_path / "huge.wav", 3 * 2**30)
    stage = LoadAudio("load_audio", sampling_rate=16000, max_bytes=1_000_000)
    for value in (str(huge), {"bytes": None, "path": str(huge)}):
        with pytest.raises(ValueError, match=r"bytes exceeds the cap of 1000000 \(max_bytes\); the file was not read"):
            stage.process([{"id": "a", "audio": value}])
    with pytest.raises(ValueError, match=r"2000000 bytes exceeds the cap of 1000000 \(max_bytes\)"):
        stage.process([{"id": "b", "audio": b"\0" * 2_000_000}])
