"""Resuming a whole sweep (issue 21): kill -9 a multirun during its first job, between two jobs
and during its last job, under the basic launcher and under joblib (two jobs at once), then
`composer resume SWEEP_DIR`: every job's outputs equal an uninterrupted sweep's, no job folder is
duplicated or renumbered, finished jobs are not run again, and summary.csv has one row per job.
Also Ctrl-C, a sweep that is not the recorded one, a damaged sweep.json, --retry-failed and the
submitit_local launcher's folder layout."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from composer.runstore import flatten
from composer.testing import tiny_model_path
from conftest import ROWS, run_cli, write_jsonl

N_RECORDS = 160
# Greedy text generation with the tiny GPT-2, one record a batch: a job takes seconds, long enough
# to be killed in its middle, and its outputs are deterministic.
CONFIG = ["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "input=jsonl",
          "input.id_field=n", "batch_size=1", "threads=1", "call.do_sample=false", "progress=false"]
SWEPT = ["call.max_new_tokens=6,8,10"]  # three jobs, each with its own outputs
JOBS = ["0", "1", "2"]
LAUNCHERS = {"basic": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]}
# summary.csv / metrics.json columns that measure how the work went, not what it produced, so
# they differ between any two runs: seconds and rates (a resumed run's are its last attempt's),
# batch latency and peak memory. And the batch counts: a resumed run batches what was left anew
# (its windows start where the killed one stopped) and a killed attempt's batches die with it.
TIMING = ("seconds", "per_second", "latency.", "peak_memory.", "counts.batches")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa".split()
    rows = [{"n": i, "text": " ".join(words[(i + k) % len(words)] for k in range(1 + i % 7))} for i in range(N_RECORDS)]
    return write_jsonl(tmp_path_factory.mktemp("data") / "input.jsonl", rows)


def _command(data: Path, sweep: Path, extra: list[str] = ()) -> list[str]:
    return ["run", "-m", *CONFIG, f"input.path={data}", *SWEPT, *extra, f"hydra.sweep.dir={sweep}"]


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory) -> Path:
    """The same sweep, never interrupted."""
    work = tmp_path_factory.mktemp("reference")
    run_cli(*_command(data, work / "sweep"), cwd=work, check=True)
    return work / "sweep"


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    """`composer ...` in a session of its own, so that killing its group kills joblib's workers too."""
    return subprocess.Popen([sys.executable, "-m", "composer", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=os.environ.copy(), start_new_session=True)


def _lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _wait(ready, process: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if ready():
            return
        if process.poll() is not None:
            raise AssertionError(f"the sweep ended before {what}: {process.communicate()}")
        time.sleep(0.02)
    raise AssertionError(f"never reached: {what}")


def _kill_9(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()


def _status(job: Path) -> str | None:
    manifest = job / "manifest.json"
    return json.loads(manifest.read_text())["status"] if manifest.exists() else None


def _attempts(job: Path) -> int:
    return len(json.loads((job / "manifest.json").read_text())["attempts"])


def _summary(sweep: Path) -> list[dict[str, str]]:
    with (sweep / "summary.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _results(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if not any(t in k for t in TIMING)} for row in rows]


def _job_folders(sweep: Path) -> list[str]:
    return sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name not in ("plots", ".submitit"))


def _assert_equals_reference(sweep: Path, reference: Path) -> None:
    assert _job_folders(sweep) == JOBS  # none duplicated, none renumbered
    for job in JOBS:
        for name in ("outputs.jsonl", "errors.jsonl", "config.yaml", ".hydra/overrides.yaml"):
            assert (sweep / job / name).read_bytes() == (reference / job / name).read_bytes(), f"{job}/{name}"
        manifest, expected = (json.loads((folder / job / "manifest.json").read_text()) for folder in (sweep, reference))
        assert manifest["status"] == "complete" and manifest["exit_code"] == 0
        assert manifest["config_sha256"] == expected["config_sha256"]
        assert {k: v for k, v in manifest["counts"].items() if k != "batches"} == \
            {k: v for k, v in expected["counts"].items() if k != "batches"}
        metrics, expected_metrics = (_results([flatten(json.loads((folder / job / "metrics.json").read_text()))])
                                     for folder in (sweep, reference))
        assert metrics == expected_metrics and metrics[0]["throughput.records"] == N_RECORDS, job
    rows = _summary(sweep)
    assert [row["run"] for row in rows] == JOBS  # one row per job
    assert list(rows[0]) == list(_summary(reference)[0])
    assert _results(rows) == _results(_summary(reference))
    state, expected_state = (json.loads((folder / "sweep.json").read_text()) for folder in (sweep, reference))
    assert state["status"] == "finished"
    assert [(j["job"], j["status"], j["dir"]) for j in state["jobs"]] == [(n, "complete", str(n)) for n in range(3)]
    assert [j["overrides"] for j in state["jobs"]] == [j["overrides"] for j in expected_state["jobs"]]
    assert (sweep / "report.md").is_file() and (sweep / "report.html").is_file()


def test_an_uninterrupted_sweep_records_itself(reference, data):
    state = json.loads((reference / "sweep.json").read_text())
    assert state["status"] == "finished" and state["sweeper"].endswith("BasicSweeper")
    assert state["launcher"].endswith("BasicLauncher") and state["hydra_overrides"] == []
    # The overrides as Hydra got them (`call.` is an open mapping: composer writes `++call.`).
    assert f"input.path={data}" in state["overrides"] and "++call.max_new_tokens=6,8,10" in state["overrides"]
    assert [j["overrides"][-1] for j in state["jobs"]] == ["++call.max_new_tokens=6", "++call.max_new_tokens=8",
                                                           "++call.max_new_tokens=10"]
    assert [j["status"] for j in state["jobs"]] == ["complete"] * 3
    assert len(state["attempts"]) == 1 and state["attempts"][0]["status"] == "finished"


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
@pytest.mark.parametrize("point", ["during the first job", "between jobs", "during the last job"])
def test_kill_9_then_resume_equals_an_uninterrupted_sweep(launcher, point, data, reference, tmp_path):
    sweep, marker = tmp_path / "sweep", tmp_path / "paused"
    extra = list(LAUNCHERS[launcher])
    if point == "between jobs":  # job 0 has ended; the process that ran it waits before its next job
        extra += ["+hydra.callbacks.pause._target_=composer.testing.sweep_pause.PauseAfterJob",
                  "+hydra.callbacks.pause.job=0", f"+hydra.callbacks.pause.marker={marker}"]
    process = _start(_command(data, sweep, extra), tmp_path)
    if point == "during the first job":
        _wait(lambda: _lines(sweep / "0" / "outputs.jsonl") >= 10, process, "job 0 wrote 10 lines")
    elif point == "between jobs":
        _wait(marker.exists, process, "job 0 ended")
        if launcher == "basic":  # while it runs, the sweep is not resumed by a second command
            twice = run_cli("resume", str(sweep), cwd=tmp_path)
            assert twice.returncode == 2, twice.stderr
            assert f"the sweep in {sweep} is still running (composer process {process.pid} on this machine)" in twice.stderr
    else:
        _wait(lambda: _lines(sweep / "2" / "outputs.jsonl") >= 10, process, "job 2 wrote 10 lines")
    _kill_9(process)

    before = {job: _status(sweep / job) for job in JOBS}
    written = {job: _lines(sweep / job / "outputs.jsonl") for job in JOBS}
    killed = {"during the first job": "0", "between jobs": None, "during the last job": "2"}[point]
    if killed is not None:
        assert before[killed] == "running" and _lines(sweep / killed / "outputs.jsonl") < N_RECORDS
    if point == "between jobs":
        assert before["0"] == "complete"
    if launcher == "basic":  # one job at a time: the jobs before are complete, those after never started
        order = {"during the first job": 0, "between jobs": 1, "during the last job": 2}[point]
        assert [before[job] for job in JOBS[:order]] == ["complete"] * order
        assert all(before[job] is None for job in JOBS[order + (killed is not None):])
    else:  # joblib: two jobs at once, both may have been killed
        assert "running" in before.values() or point == "between jobs"
    assert not (sweep / "summary.csv").exists()
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "running" and len(state["jobs"]) == 3
    if killed is not None:
        assert state["jobs"][int(killed)]["status"] == "running"

    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "sweep report: 3 runs (0 not complete)" in done.stderr
    _assert_equals_reference(sweep, reference)
    for job in JOBS:  # a finished job is kept, an interrupted one continued: none ran from scratch twice
        attempts = _attempts(sweep / job)
        if before[job] == "complete":
            assert attempts == 1 and f"job {job} finished before (complete), kept" in done.stderr
        elif before[job] == "running":
            assert attempts == 2
            resumed = json.loads((sweep / job / "manifest.json").read_text())["attempts"][1]
            assert resumed["skipped"] == written[job]  # what the killed attempt wrote was kept, not redone
        else:
            assert attempts == 1
    assert marker.exists() == (point == "between jobs")


@pytest.mark.parametrize("launcher", list(LAUNCHERS))
def test_ctrl_c_stops_the_sweep_cleanly_and_says_how_to_resume(launcher, data, reference, tmp_path):
    """Ctrl-C while jobs run (job 1 alone under the basic launcher; jobs 0 and 1 at once under
    joblib): each running job finishes its batch and records `interrupted`, job 2 never starts,
    the sweep says `interrupted` and prints the resume command; resume finishes it."""
    sweep = tmp_path / "sweep"
    extra = list(LAUNCHERS[launcher])
    if launcher == "joblib":  # jobs 0 and 1 start together: a late second worker would let job 0 finish first
        extra += ["+hydra.callbacks.together._target_=composer.testing.sweep_pause.StartTogether",
                  "+hydra.callbacks.together.jobs=[0,1]", f"+hydra.callbacks.together.marker={tmp_path / 'started'}"]
    process = _start(_command(data, sweep, extra), tmp_path)
    running = ["1"] if launcher == "basic" else ["0", "1"]
    _wait(lambda: all(_lines(sweep / job / "outputs.jsonl") >= 10 for job in running), process,
          f"jobs {running} wrote 10 lines")
    os.killpg(process.pid, signal.SIGINT)  # what the terminal sends on Ctrl-C: to every process of the sweep
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr
    assert f"composer: sweep interrupted; finish it with: composer resume {sweep}" in stderr
    assert "Traceback" not in stderr
    expected = {"basic": ["complete", "interrupted", None], "joblib": ["interrupted", "interrupted", None]}[launcher]
    assert [_status(sweep / job) for job in JOBS] == expected
    for job in running:  # stopped between batches: whole lines only, and fewer than all
        assert (sweep / job / "outputs.jsonl").read_bytes().endswith(b"\n") and _lines(sweep / job / "outputs.jsonl") < N_RECORDS
    if launcher == "joblib":  # the process running the sweep got it too: it started no further job
        assert "composer: stopping the sweep" in stderr and "job 2 not started: the sweep was interrupted" in stderr
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "interrupted"
    assert [j["status"] for j in state["jobs"]] == [status or "pending" for status in expected]
    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    shown = {"basic": "1 complete, 1 interrupted, 1 pending", "joblib": "2 interrupted, 1 pending"}[launcher]
    assert f"(3 jobs: {shown})" in done.stderr
    _assert_equals_reference(sweep, reference)


def _copy(reference: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "sweep"
    shutil.copytree(reference, copy)
    return copy


def test_the_same_command_pointed_at_the_folder_resumes_and_another_sweep_is_refused(data, reference, tmp_path):
    sweep = _copy(reference, tmp_path)
    recorded = (sweep / "sweep.json").read_bytes()
    other = run_cli("run", "-m", *CONFIG, f"input.path={data}", "call.max_new_tokens=6,8,12", f"hydra.sweep.dir={sweep}",
                    cwd=tmp_path)
    assert other.returncode == 2, other.stderr
    assert f"{sweep} holds another sweep" in other.stderr
    assert "job 2: ++call.max_new_tokens=10 -> ++call.max_new_tokens=12" in other.stderr
    assert "composer resume" in other.stderr and "Traceback" not in other.stderr
    fewer = run_cli("run", "-m", *CONFIG, f"input.path={data}", "call.max_new_tokens=6,8", f"hydra.sweep.dir={sweep}",
                    cwd=tmp_path)
    assert fewer.returncode == 2 and "the sweep has 3 jobs, this command makes 2" in fewer.stderr
    reordered = run_cli("run", "-m", *CONFIG, f"input.path={data}", "call.max_new_tokens=10,8,6",
                        f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert reordered.returncode == 2 and "job 0: ++call.max_new_tokens=6 -> ++call.max_new_tokens=10" in reordered.stderr
    assert (sweep / "sweep.json").read_bytes() == recorded  # refused before anything was written
    # A setting that changes no output (threads) may differ: the finished jobs are kept as they are.
    same = run_cli(*_command(data, sweep, ["threads=2"]), cwd=tmp_path)
    assert same.returncode == 0, same.stderr
    assert same.stderr.count("finished before (complete), kept") == 3
    assert [_attempts(sweep / job) for job in JOBS] == [1, 1, 1]
    for job in JOBS:
        assert (sweep / job / "outputs.jsonl").read_bytes() == (reference / job / "outputs.jsonl").read_bytes()
    assert len(json.loads((sweep / "sweep.json").read_text())["attempts"]) == 2


def test_user_mistakes_are_one_clear_message_and_exit_2(data, reference, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    done = run_cli("resume", str(empty), cwd=tmp_path)
    assert done.returncode == 2 and "is neither a run folder" in done.stderr and "Traceback" not in done.stderr
    (empty / "multirun.yaml").write_text("hydra: {}\n")  # a sweep from before sweeps were recorded
    done = run_cli("resume", str(empty), cwd=tmp_path)
    assert done.returncode == 2 and "it has no sweep.json" in done.stderr and f"hydra.sweep.dir={empty}" in done.stderr
    sweep = _copy(reference, tmp_path)
    (sweep / "sweep.json").write_text('{"version": 1, "jobs": [')
    for args in (["resume", str(sweep)], _command(data, sweep)):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"{sweep / 'sweep.json'} is not valid JSON" in done.stderr and "Traceback" not in done.stderr
        assert "delete it and run the sweep's original" in done.stderr
    (sweep / "sweep.json").write_text(json.dumps({**json.loads((reference / "sweep.json").read_text()), "jobs": "all"}))
    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 2 and "has no valid `jobs`" in done.stderr
    run = reference / "0"
    done = run_cli("resume", "--retry-failed", str(run), cwd=tmp_path)
    assert done.returncode == 2 and "--retry-failed is for sweep folders" in done.stderr


def test_failed_jobs_are_kept_unless_retry_failed(tmp_path):
    """A job whose model does not load fails; resume keeps it failed (its folder untouched)
    until --retry-failed, which runs it again once the model is repaired. The sweep names its
    input by a relative path: resumed from another folder, it is read from where the sweep began."""
    broken = tmp_path / "model"
    shutil.copytree(tiny_model_path("text-classification"), broken)
    weights = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    write_jsonl(tmp_path / "labelled.jsonl", ROWS)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    command = ["run", "-m", "experiment=tiny-sentiment", "task=text-classification", "threads=1", "progress=false",
               "input=jsonl", "input.path=labelled.jsonl", "input.id_field=uid",
               f"model.id=tiny:text-classification,{broken}", "hydra.sweep.dir=sweep"]
    first = run_cli(*command, cwd=tmp_path)
    sweep = tmp_path / "sweep"
    assert first.returncode == 4, first.stderr
    assert [_status(sweep / job) for job in ("0", "1")] == ["complete", "failed"]
    failed_manifest = (sweep / "1" / "manifest.json").read_bytes()
    kept = run_cli("resume", "../sweep", cwd=elsewhere)
    assert kept.returncode == 4, kept.stderr
    assert "job 1 failed before, kept (--retry-failed runs it again)" in kept.stderr
    assert f"the sweep was started in {tmp_path}: resuming it from there" in kept.stderr
    assert (sweep / "1" / "manifest.json").read_bytes() == failed_manifest
    assert [j["status"] for j in json.loads((sweep / "sweep.json").read_text())["jobs"]] == ["complete", "failed"]
    (broken / "model.safetensors").write_bytes(weights)
    retried = run_cli("resume", "--retry-failed", "../sweep", cwd=elsewhere)
    assert retried.returncode == 0, retried.stderr
    assert [_status(sweep / job) for job in ("0", "1")] == ["complete", "complete"]
    assert [_attempts(sweep / job) for job in ("0", "1")] == [1, 2]
    assert [(r["run"], r["status"]) for r in _summary(sweep)] == [("0", "complete"), ("1", "complete")]
    assert [j["status"] for j in json.loads((sweep / "sweep.json").read_text())["jobs"]] == ["complete", "complete"]


def test_submitit_local_sweep_resumes_in_its_folder_layout(tmp_path):
    """submitit runs each job in a process of its own and keeps .submitit/ in the sweep folder:
    killed after its first job ended, the sweep resumes through submitit to the same folders."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    data = write_jsonl(tmp_path / "labelled.jsonl", ROWS)
    marker = tmp_path / "paused"
    command = ["run", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", "experiment=tiny-sentiment",
               "task=text-classification", "model=tiny-text-classification", "threads=1", "progress=false",
               "input=jsonl", f"input.path={data}", "input.id_field=uid", "batch_size=1,2", "hydra.sweep.dir=sweep",
               "+hydra.callbacks.pause._target_=composer.testing.sweep_pause.PauseAfterJob",
               "+hydra.callbacks.pause.job=0", f"+hydra.callbacks.pause.marker={marker}"]
    process = _start(command, tmp_path)
    _wait(marker.exists, process, "job 0 ended")
    _kill_9(process)
    sweep = tmp_path / "sweep"
    assert _status(sweep / "0") == "complete" and (sweep / ".submitit").is_dir()
    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _job_folders(sweep) == ["0", "1"]
    assert _attempts(sweep / "0") == 1 and _status(sweep / "1") == "complete"
    assert [(r["run"], r["batch_size"], r["status"]) for r in _summary(sweep)] == [("0", "1", "complete"), ("1", "2", "complete")]
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["launcher"].endswith("LocalLauncher") and state["status"] == "finished"


def test_an_optuna_sweep_resumes_its_study_toward_the_configured_trials(tmp_path):
    """Killed after trial 0, an Optuna sweep (seeded sampler, no storage: the default) resumes by
    replaying its study from the trial folders: trial 0 is kept and gives the sampler the value
    it gave, trials 1 and 2 get the parameters an uninterrupted sweep gave them, in the folders it
    used, and the study ends at the configured 3 trials with the same best value."""
    pytest.importorskip("optuna")
    data = write_jsonl(tmp_path / "labelled.jsonl", ROWS)
    command = ["run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=3", "threads=1", "progress=false",
               "input=jsonl", f"input.path={data}", "input.label_field=label", "input.id_field=uid"]
    run_cli(*command, "hydra.sweep.dir=whole", cwd=tmp_path, check=True)
    marker = tmp_path / "paused"
    process = _start([*command, "hydra.sweep.dir=sweep", "+hydra.callbacks.pause._target_=composer.testing.sweep_pause.PauseAfterJob",
                      "+hydra.callbacks.pause.job=0", f"+hydra.callbacks.pause.marker={marker}"], tmp_path)
    _wait(marker.exists, process, "trial 0 ended")
    _kill_9(process)
    sweep, whole = tmp_path / "sweep", tmp_path / "whole"
    assert _job_folders(sweep) == ["0"] and _status(sweep / "0") == "complete"
    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "job 0 finished before (complete), kept" in done.stderr
    assert _job_folders(sweep) == ["0", "1", "2"] and _attempts(sweep / "0") == 1
    for job in ("0", "1", "2"):
        for name in ("outputs.jsonl", "config.yaml", ".hydra/overrides.yaml"):
            assert (sweep / job / name).read_bytes() == (whole / job / name).read_bytes(), f"{job}/{name}"
    assert (sweep / "optimization_results.yaml").read_text() == (whole / "optimization_results.yaml").read_text()
    assert _results(_summary(sweep)) == _results(_summary(whole))
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["sweeper"].endswith("OptunaSweeper") and [j["status"] for j in state["jobs"]] == ["complete"] * 3
    # A study that cannot be replayed is refused before anything runs: an unseeded sampler would
    # propose other parameters, and so would another seed (or any other sweeper setting than the
    # recorded ones, such as a storage it did not have).
    for setting, said in (("hydra.sweeper.storage=sqlite:///study.db", "hydra.sweeper.storage: None -> 'sqlite:///study.db'"),
                          ("hydra.sweeper.sampler.seed=null", "sampler has no seed"),
                          ("hydra.sweeper.sampler.seed=1", "hydra.sweeper.sampler.seed: 0 -> 1")):
        refused = run_cli(*command, setting, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
        assert refused.returncode == 2 and said in refused.stderr and "Traceback" not in refused.stderr, refused.stderr


def test_a_sweep_from_a_config_dir_with_params_in_its_files_resumes_as_recorded(tmp_path):
    """A sweep whose configs come from --config-dir and whose job ranges are set in a config file
    (hydra.sweeper.params), not on the command line: sweep.json lists the jobs Hydra runs, resume
    composes from the same folder (from anywhere), and another --config-dir or another range in
    the file is refused, naming it."""
    configs = tmp_path / "configs"
    (configs / "experiment").mkdir(parents=True)
    experiment = configs / "experiment" / "mine.yaml"
    experiment.write_text("# @package _global_\ndefaults:\n  - tiny-sentiment\nname: mine\n"
                          "hydra:\n  sweeper:\n    params:\n      input.limit: 2,3\n")
    data = write_jsonl(tmp_path / "labelled.jsonl", ROWS)
    command = ["--config-dir", "configs", "-m", "experiment=mine", "threads=1", "progress=false", "input=jsonl",
               f"input.path={data}", "input.id_field=uid", "hydra.sweep.dir=sweep"]
    first = run_cli("run", *command, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    sweep = tmp_path / "sweep"
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["config_dir"] == str(configs) and state["config_name"] is None
    assert state["sweeper_settings"]["params"] == {"input.limit": "2,3"}
    for job in state["jobs"]:  # the jobs Hydra ran, each as its folder says
        assert job["overrides"] == yaml.safe_load((sweep / str(job["job"]) / ".hydra" / "overrides.yaml").read_text())
    assert [job["overrides"][0] for job in state["jobs"]] == ["input.limit=2", "input.limit=3"]
    shutil.rmtree(sweep / "1")  # as if the sweep had been killed before its last job
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = run_cli("resume", str(sweep), cwd=elsewhere)
    assert done.returncode == 0, done.stderr
    assert "job 0 finished before (complete), kept" in done.stderr
    assert [_status(sweep / job) for job in ("0", "1")] == ["complete", "complete"]
    assert [(r["run"], r["input.limit"], r["counts.records_in"]) for r in _summary(sweep)] == [("0", "2", "2"), ("1", "3", "3")]
    recorded = (sweep / "sweep.json").read_bytes()
    shutil.copytree(configs, tmp_path / "copy")
    for other, said in ((["--config-dir", "copy"], f"--config-dir: {configs} -> {tmp_path / 'copy'}"),
                        (["--config-dir", "configs", "--config-name", "other"], "--config-name: (none) -> other")):
        refused = run_cli("run", *other, *command[2:], cwd=tmp_path)
        assert refused.returncode == 2 and said in refused.stderr, refused.stderr
    experiment.write_text(experiment.read_text().replace("2,3", "2,4"))
    refused = run_cli("run", *command, cwd=tmp_path)
    assert refused.returncode == 2 and "job 1: input.limit=3 -> input.limit=4" in refused.stderr, refused.stderr
    assert (sweep / "sweep.json").read_bytes() == recorded  # refused before anything was written


def test_ctrl_c_on_a_submitit_local_sweep_stops_its_jobs_cleanly(data, reference, tmp_path):
    """submitit_local runs every job at once, each in a process of its own: Ctrl-C (to the whole
    process group, as a terminal sends it) stops each job after its batch (`interrupted`), the
    sweep says so and prints the resume command, and resume finishes all three. (submitit's own
    local controller processes print a KeyboardInterrupt traceback of theirs.)"""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    process = _start(_command(data, sweep, ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]), tmp_path)
    _wait(lambda: all(_lines(sweep / job / "outputs.jsonl") >= 10 for job in JOBS), process, "every job wrote 10 lines")
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert f"composer: sweep interrupted; finish it with: composer resume {sweep}" in stderr
    assert [_status(sweep / job) for job in JOBS] == ["interrupted"] * 3
    for job in JOBS:  # stopped between batches: whole lines only, and fewer than all
        assert (sweep / job / "outputs.jsonl").read_bytes().endswith(b"\n") and _lines(sweep / job / "outputs.jsonl") < N_RECORDS
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "interrupted" and [j["status"] for j in state["jobs"]] == ["interrupted"] * 3
    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "(3 jobs: 3 interrupted)" in done.stderr
    _assert_equals_reference(sweep, reference)


def _storage(folder: Path) -> str:
    return f"sqlite:///{folder}/study.db"


def _trials(folder: Path) -> list[tuple]:
    """(number, state, params, value) of each trial of the one study in the sweep's storage."""
    import optuna

    [summary] = optuna.get_all_study_summaries(_storage(folder))  # one study: a resume makes no second
    assert summary.study_name == str(folder.resolve())  # named after its sweep folder
    study = optuna.load_study(study_name=summary.study_name, storage=_storage(folder))
    return [(t.number, t.state.name, t.params, t.value) for t in study.get_trials()]


def test_an_optuna_sweep_with_a_storage_resumes_its_study_after_ctrl_c_and_kill_9(tmp_path):
    """An Optuna sweep whose study lives in a storage (SQLite in the sweep folder), of 4 trials.
    Ctrl-C during trial 1: the sweep stops (exit 130), trial 1 stays RUNNING in the study and no
    trial is asked after it. Resumed, then killed with kill -9 during trial 2: trial 1 was
    finished in its folder, trial 2 stays RUNNING. Resumed again: trials 0 and 1 count and keep
    their folders, trial 2 runs again with its own threshold into its own folder, where the
    run-level resume finishes it, and only trial 3 is asked anew, by the sampler as it was saved
    in the study. Every trial, the study and optimization_results.yaml equal an uninterrupted
    sweep's with the same seed."""
    pytest.importorskip("optuna")
    labels = ("POSITIVE", "NEGATIVE")
    words = "good bad fine broken great slow love hate".split()
    rows = [{"uid": f"u{i}", "text": " ".join(words[(i * 3 + k) % len(words)] for k in range(1 + i % 5)),
             "label": labels[i % 2]} for i in range(2000)]  # a trial long enough to be stopped in its middle
    data = write_jsonl(tmp_path / "labelled.jsonl", rows)
    command = ["run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=4", "threads=1", "progress=false",
               "batch_size=1", "input=jsonl", f"input.path={data}", "input.label_field=label", "input.id_field=uid"]
    whole, sweep = tmp_path / "whole", tmp_path / "sweep"
    run_cli(*command, f"hydra.sweeper.storage={_storage(whole)}", f"hydra.sweep.dir={whole}", cwd=tmp_path, check=True)
    process = _start([*command, f"hydra.sweeper.storage={_storage(sweep)}", f"hydra.sweep.dir={sweep}"], tmp_path)
    _wait(lambda: _lines(sweep / "1" / "outputs.jsonl") >= 10, process, "trial 1 wrote 10 lines")
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and f"composer resume {sweep}" in stderr, stderr
    assert _job_folders(sweep) == ["0", "1"] and _status(sweep / "1") == "interrupted"
    assert [state for _, state, _, _ in _trials(sweep)] == ["COMPLETE", "RUNNING"]  # none asked after it

    process = _start(["resume", str(sweep)], tmp_path)
    _wait(lambda: _lines(sweep / "2" / "outputs.jsonl") >= 10, process, "trial 2 wrote 10 lines")
    _kill_9(process)
    assert _job_folders(sweep) == ["0", "1", "2"]
    assert [_status(sweep / job) for job in ("0", "1", "2")] == ["complete", "complete", "running"]
    assert [state for _, state, _, _ in _trials(sweep)] == ["COMPLETE", "COMPLETE", "RUNNING"]
    written = _lines(sweep / "2" / "outputs.jsonl")

    done = run_cli("resume", str(sweep), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _job_folders(sweep) == ["0", "1", "2", "3"]  # none duplicated, none renumbered
    assert [_attempts(sweep / job) for job in ("0", "1", "2", "3")] == [1, 2, 2, 1]
    assert json.loads((sweep / "2" / "manifest.json").read_text())["attempts"][1]["skipped"] == written
    for job in ("0", "1", "2", "3"):
        for name in ("outputs.jsonl", "errors.jsonl", "config.yaml", ".hydra/overrides.yaml"):
            assert (sweep / job / name).read_bytes() == (whole / job / name).read_bytes(), f"{job}/{name}"
    assert _trials(sweep) == _trials(whole) and [state for _, state, _, _ in _trials(sweep)] == ["COMPLETE"] * 4
    assert (sweep / "optimization_results.yaml").read_text() == (whole / "optimization_results.yaml").read_text()
    assert _results(_summary(sweep)) == _results(_summary(whole))
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "finished" and [j["status"] for j in state["jobs"]] == ["complete"] * 4
    # Finished: resuming again runs nothing and asks no trial.
    again = run_cli("resume", str(sweep), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert [_attempts(sweep / job) for job in ("0", "1", "2", "3")] == [1, 2, 2, 1] and len(_trials(sweep)) == 4


def test_an_optuna_sweep_whose_study_left_its_storage_is_refused_before_any_job_runs(tmp_path):
    """Resuming a sweep whose study storage no longer holds its study (the SQLite file deleted,
    or another one in its place) would ask its trials anew over the trial folders: refused before
    any job runs, naming the folder, the study and what to do. A storage that cannot be opened at
    all is refused the same way, for a new sweep too."""
    pytest.importorskip("optuna")
    data = write_jsonl(tmp_path / "labelled.jsonl", ROWS)
    command = ["run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=2",
               "threads=1", "progress=false", "input=jsonl", f"input.path={data}", "input.label_field=label",
               "input.id_field=uid"]
    sweep = tmp_path / "sweep"
    run_cli(*command, f"hydra.sweeper.storage={_storage(sweep)}", f"hydra.sweep.dir={sweep}", cwd=tmp_path, check=True)
    (sweep / "study.db").unlink()
    refused = run_cli("resume", str(sweep), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert f"{sweep} holds an Optuna sweep whose study '{sweep}' is not in its storage" in refused.stderr
    assert "Put the storage (or the folder) back" in refused.stderr and not (sweep / "study.db").exists()  # not created either
    assert [_attempts(sweep / job) for job in ("0", "1")] == [1, 1]

    (sweep / "study.db").mkdir()  # something that is no database where the file was
    refused = run_cli("resume", str(sweep), cwd=tmp_path)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    assert "whose study storage cannot be opened (hydra.sweeper.storage=sqlite:///" in refused.stderr
    assert f"composer resume {sweep}" in refused.stderr

    new = run_cli(*command, f"hydra.sweeper.storage=sqlite:///{tmp_path}/missing/study.db", "hydra.sweep.dir=new",
                  cwd=tmp_path)
    assert new.returncode == 2 and "Traceback" not in new.stderr, new.stderr
    assert "cannot be opened (the folder of the SQLite file" in new.stderr and not (tmp_path / "new").exists()
