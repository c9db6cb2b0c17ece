"""composer's Ray launcher (hydra/launcher=ray) with a Ray of the sweep's own (address null),
from a `composer run -m` process as a user's shell starts it: Ctrl-C stops the sweep as with
joblib (the running jobs record `interrupted`, the next never starts) and `composer resume`
finishes it on Ray. Also what needs no Ray: the plugin class imports no Ray (Hydra's plugin
scan imports it on every command) and a missing Ray is refused before Hydra starts. The jobs on
a cluster are in tests/test_ray.py, beside its session's simulated cluster."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from composer import multirun
from composer.sweep import RAY_LAUNCHER
from conftest import shell_env, write_jsonl

pytest.importorskip("ray", reason='hydra/launcher=ray needs Ray: pip install "pipeline-composer[ray]"')

# Greedy generation with the tiny GPT-2, one record a batch: a job takes seconds, long enough to
# be stopped in its middle (as tests/test_sweep_resume.py does under joblib).
CONFIG = ["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "input=jsonl",
          "input.id_field=n", "batch_size=1", "threads=1", "call.do_sample=false", "progress=false",
          "call.max_new_tokens=6,8,10"]


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_ctrl_c_stops_a_local_ray_sweep_and_resume_finishes_it(tiny_model_cache, tmp_path):
    """Three jobs on a local Ray started for the sweep (one CPU a job, two at once on 2 cores);
    Ctrl-C to the command's process group once jobs 0 and 1 run: the launcher passes it on to
    them (ray.cancel), they finish their batches and record `interrupted`, job 2 never starts,
    exit 130 with the resume command; `composer resume` completes the three on Ray."""
    data = write_jsonl(tmp_path / "input.jsonl", [{"n": i, "text": f"alpha beta gamma {i}"} for i in range(200)])
    sweep = tmp_path / "sweep"
    alone = shell_env()  # no cluster named
    command = [sys.executable, "-m", "composer", "run", "-m", "hydra/launcher=ray", *CONFIG, f"input.path={data}",
               f"hydra.sweep.dir={sweep}"]
    process = subprocess.Popen(command, cwd=tmp_path, env=alone, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 240
    while not all(_lines(sweep / job / "outputs.jsonl") >= 5 for job in ("0", "1")):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "Ray launcher: 3 jobs as Ray tasks (num_cpus=1) on " in stderr and "(1 node: " in stderr
    assert f"composer: sweep interrupted; finish it with: composer resume {sweep}" in stderr
    assert "Traceback" not in stderr
    # The submitting process got Ctrl-C and passed it on; Ray's workers are not in its process group.
    assert "composer: stopping the sweep" in stderr and "Ray launcher: the sweep was stopped" in stderr
    statuses = [json.loads((sweep / job / "manifest.json").read_text())["status"] for job in ("0", "1")]
    assert statuses == ["interrupted", "interrupted"] and not (sweep / "2" / "manifest.json").exists()
    for job in ("0", "1"):  # stopped between batches: whole lines only, and fewer than all
        assert (sweep / job / "outputs.jsonl").read_bytes().endswith(b"\n") and _lines(sweep / job / "outputs.jsonl") < 200
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "interrupted" and state["launcher"] == RAY_LAUNCHER
    assert [job["status"] for job in state["jobs"]] == ["interrupted", "interrupted", "pending"]

    done = subprocess.run([sys.executable, "-m", "composer", "resume", str(sweep)], cwd=tmp_path, env=alone,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(3 jobs: 2 interrupted, 1 pending)" in done.stderr and "Ray launcher: 3 jobs as Ray tasks" in done.stderr
    for job in ("0", "1", "2"):
        manifest = json.loads((sweep / job / "manifest.json").read_text())
        assert manifest["status"] == "complete" and len(manifest["attempts"]) == (2 if job != "2" else 1)
        assert _lines(sweep / job / "outputs.jsonl") == 200
    assert json.loads((sweep / "sweep.json").read_text())["status"] == "finished"


def test_the_plugin_class_imports_no_ray():
    """Hydra's plugin scan imports every hydra_plugins module on every composer command."""
    code = ("import sys; from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "names = [p.__name__ for p in Plugins.instance().discover(Launcher)]; "
            "assert 'ComposerRayLauncher' in names, names; assert 'ray' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_a_ray_sweep_without_ray_is_refused_before_hydra_starts(monkeypatch, tmp_path):
    real = multirun.importlib.util.find_spec
    monkeypatch.setattr(multirun.importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    settings = {"dir": str(tmp_path / "sweep"), "sweeper": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                "launcher": RAY_LAUNCHER, "settings": {}, "storage": None, "seed": None}
    refusal = multirun.refusal(["batch_size=1,2"], settings, {"config_dir": None, "config_name": None}, [])
    assert refusal == 'hydra/launcher=ray needs Ray, which is not installed here: pip install "pipeline-composer[ray]"'
