"""executor=ray (issue 18) on a simulated cluster: a head node and a worker node with two fake
GPUs (ray.cluster_utils.Cluster), started once for the session (Ray takes seconds to start).

Outputs must equal the local executor's byte for byte (CPU, fp32, tiny models) for a text, an
image and an audio task, failures and resume included; a worker node lost mid-run must lose and
duplicate nothing; each actor must get its own CUDA_VISIBLE_DEVICES."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from composer import api
from composer.schema import ConfigError
from tests.conftest import REPO, shell_env, write_jsonl

ray = pytest.importorskip("ray", reason="executor=ray needs Ray: pip install \"pipeline-composer[ray]\"")

NODE = {"object_store_memory": 80 * 1024 * 1024}  # small object stores: the blocks are small
RAY = ["executor=ray", "executor.actors=2", "executor.num_cpus_per_actor=0.25"]
TEXT = ["experiment=tiny-sentiment", "input.id_field=id", "batch_size=2", "sort_window=8", "progress=false"]


@pytest.fixture(scope="session")
def cluster(tiny_model_cache):
    """A head node (1 CPU) and a worker node (1 CPU, 2 fake GPUs) on this machine; the test
    process is the driver. The actors inherit this process's environment
    (offline Hub, the session's tiny-model cache)."""
    from ray.cluster_utils import Cluster

    simulated = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, **NODE})
    simulated.add_node(num_cpus=1, num_gpus=2, **NODE)
    ray.init(address=simulated.address, log_to_driver=False)
    yield simulated
    ray.shutdown()
    simulated.shutdown()


def _texts(path: Path, count: int = 24) -> Path:
    """`count` labelled reviews, ids 000.., with a line that is not JSON and a text that is a number."""
    rows = [{"id": f"{i:03d}", "text": f"review {i}: " + "great value " * (i % 5) + "broken box " * (i % 3),
             "label": "POSITIVE" if i % 2 else "NEGATIVE"} for i in range(count)]
    rows[5]["text"] = 5
    write_jsonl(path, rows)
    lines = path.read_text().splitlines()
    lines.insert(9, "{not json")
    path.write_text("\n".join(lines) + "\n")
    return path


def _held_from_16(tmp_path: Path) -> tuple[Path, list[str], api.RunResult]:
    """40 reviews and a stage that holds each batch from record 16 until `release` exists
    (tests.ray_stages.HoldFrom): the release file, the overrides, and the run of them with
    nothing held (the local executor's files, to compare with)."""
    release = tmp_path / "release"
    data = _texts(tmp_path / "reviews.jsonl", count=40)
    hold = f"preprocess=[{{_target_: tests.ray_stages.HoldFrom, start: 16, release: '{release}'}}]"
    overrides = [*TEXT, "input=jsonl", f"input.path={data}", "allow_any_target=true", hold]
    release.write_text("")
    uninterrupted = api.run(overrides, run_dir=tmp_path / "local")
    release.unlink()
    return release, overrides, uninterrupted


def _same_files(local: api.RunResult, on_ray: api.RunResult) -> None:
    for name in ("outputs.jsonl", "errors.jsonl"):
        assert (on_ray.run_dir / name).read_bytes() == (local.run_dir / name).read_bytes(), name


def test_text_outputs_and_errors_equal_the_local_executors(cluster, tmp_path, monkeypatch):
    """Also: the driver (this process) reads no row of the input: a Ray task on the driver's
    node reads it and streams the blocks."""
    from composer.stages.sources import JsonlSource

    data = _texts(tmp_path / "reviews.jsonl")
    overrides = [*TEXT, "input=jsonl", f"input.path={data}"]
    local = api.run(overrides, run_dir=tmp_path / "local")

    def read_here(self):
        raise AssertionError("the driver read the input")

    monkeypatch.setattr(JsonlSource, "rows", read_here)  # in this process only: Ray's workers import their own
    on_ray = api.run([*overrides, *RAY], run_dir=tmp_path / "ray")
    assert (local.status, local.exit_code) == (on_ray.status, on_ray.exit_code) == ("completed_with_errors", 1)
    _same_files(local, on_ray)
    facts = on_ray.manifest()["executor"]
    assert facts["type"] == "ray" and facts["ray_version"] == ray.__version__ and facts["nodes"] == 2
    assert facts["cluster_resources"]["GPU"] == 2 and facts["actors"] == 2 and facts["blocks"] == 4
    reader_node, reader_pid = facts["reader"].split(":")
    assert reader_node == cluster.head_node.node_id and int(reader_pid) != os.getpid()
    assert sum(actor["records"] for actor in facts["per_actor"].values()) == 25  # 24 rows + the unreadable line
    # The driver (this process) loads no model: the actors run the stages, each with its own.
    assert on_ray.manifest()["stages"]["model"]["loaded"] is False
    for actor in facts["per_actor"].values():
        assert actor["models"]["model"]["loaded"] is True and actor["models"]["model"]["device"] == "cpu"
    assert local.manifest()["executor"] == {"type": "local"}
    metrics = on_ray.metrics()
    assert metrics["throughput"]["records"] == 23 and metrics["models"]["model"]["latency"]  # the actors' batches
    from composer.verify import verify

    assert verify(on_ray.run_dir).identical  # re-executed from the folder alone, on Ray again


def test_runs_stopped_on_ray_resume_to_the_uninterrupted_files(cluster, tmp_path):
    """on_error=fail stops at the first failure as locally (the block stops there: written is the
    input-order prefix before it); max_errors stops after the block where it is reached. Either
    resumes, on the other executor (executor is output-neutral) or on Ray again, to the files of
    an uninterrupted run."""
    data = _texts(tmp_path / "reviews.jsonl")
    overrides = [*TEXT, "input=jsonl", f"input.path={data}"]
    whole = api.run(overrides, run_dir=tmp_path / "whole")
    expected = (whole.run_dir / "outputs.jsonl").read_bytes()
    failed = api.run([*overrides, *RAY, "on_error=fail"], run_dir=tmp_path / "fail")
    assert (failed.status, failed.exit_code) == ("aborted", 3)
    local_stop = api.run([*overrides, "on_error=fail"], run_dir=tmp_path / "fail-local")
    _same_files(local_stop, failed)  # the same prefix and the same failure as a local run writes
    _same_files(whole, api.run(overrides, run_dir=tmp_path / "fail"))
    capped = api.run([*overrides, *RAY, "max_errors=1"], run_dir=tmp_path / "capped")
    assert (capped.status, capped.exit_code) == ("aborted", 3)
    assert expected.startswith((capped.run_dir / "outputs.jsonl").read_bytes())
    _same_files(whole, api.run([*overrides, *RAY], run_dir=tmp_path / "capped"))


def test_a_streamed_datasets_source_is_read_on_ray_as_locally(cluster, tmp_path):
    """input=dataset (datasets.load_dataset, streamed): the source the driver set up (an
    IterableDataset) is pickled into the Ray read task and read there, to the local files."""
    data = write_jsonl(tmp_path / "reviews.jsonl", [{"id": f"{i:03d}", "text": f"review {i}: " + "great " * (i % 4)}
                                                    for i in range(12)])  # datasets' json builder refuses a file with bad lines
    overrides = [*TEXT, "input=dataset", "input.path=json", f"+input.data_files={data}"]
    local = api.run(overrides, run_dir=tmp_path / "local")
    on_ray = api.run([*overrides, *RAY], run_dir=tmp_path / "ray")
    assert local.status == on_ray.status == "complete" and len(on_ray.outputs()) == 12
    _same_files(local, on_ray)


def test_image_outputs_equal_the_local_executors(cluster, tmp_path):
    folder = tmp_path / "photos"
    for i in range(6):
        (folder / ("cats" if i % 2 else "dogs")).mkdir(parents=True, exist_ok=True)
        pixels = np.random.default_rng(i).integers(0, 255, (24 + 4 * i, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / ("cats" if i % 2 else "dogs") / f"{i}.png")
    (folder / "cats" / "broken.png").write_bytes(b"not a png")
    overrides = ["experiment=image-classification", "model=tiny-image-classification", "input=image_folder",
                 f"input.path={folder}", "input.label_field=folder", "batch_size=2", "progress=false"]
    local = api.run(overrides, run_dir=tmp_path / "local")
    on_ray = api.run([*overrides, *RAY, "executor.batch_size=3"], run_dir=tmp_path / "ray")
    assert local.status == on_ray.status == "completed_with_errors"
    _same_files(local, on_ray)


def test_audio_outputs_equal_the_local_executors(cluster, tmp_path):
    paths = []
    for i, rate in enumerate((16_000, 8_000, 44_100)):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, np.random.default_rng(i).uniform(-0.5, 0.5, int(rate * (0.3 + 0.2 * i))).astype(np.float32), rate)
        paths.append(str(path))
    overrides = ["experiment=audio-classification", "model.id=tiny:audio-classification",
                 f"input.records=[{','.join(paths)}]", "batch_size=2", "progress=false"]
    local = api.run(overrides, run_dir=tmp_path / "local")
    on_ray = api.run([*overrides, *RAY], run_dir=tmp_path / "ray")
    assert local.status == on_ray.status == "complete"
    _same_files(local, on_ray)


def test_each_actor_gets_its_own_gpu_and_the_cache_is_off_on_several_nodes(cluster, tmp_path, capfd):
    """Two actors asking one GPU each land on the node with two (fake) GPUs, each seeing only its
    own; the model stays on CPU (no CUDA here). cache=on: a SQLite file on one machine cannot be
    shared by actors on two nodes, so the run goes on without it, warns, and the manifest says
    why. Outputs are the local executor's. Nine blocks, each 0.5 s slower (tests.ray_stages.Pause):
    the tiny model runs a block faster than the reader hands the next one on, so an actor up
    first would take every block of a short run (the manifest lists the actors that ran one)."""
    data = _texts(tmp_path / "reviews.jsonl", count=64)
    pause = "preprocess=[{_target_: tests.ray_stages.Pause, seconds: 0.5}]"
    overrides = [*TEXT, "input=jsonl", f"input.path={data}", "allow_any_target=true", pause]
    local = api.run(overrides, run_dir=tmp_path / "local")
    on_ray = api.run([*overrides, *RAY, "executor.num_gpus_per_actor=1", "cache=on", f"cache.path={tmp_path / 'cache.sqlite'}"],
                     run_dir=tmp_path / "ray")
    _same_files(local, on_ray)
    facts = on_ray.manifest()["executor"]
    assert sorted(actor["cuda_visible_devices"] for actor in facts["per_actor"].values()) == ["0", "1"], facts
    assert len({actor["node"] for actor in facts["per_actor"].values()}) == 1
    assert facts["cache"].startswith("off: the result cache is a SQLite file on one machine")
    assert "cache=on is ignored with executor=ray on a cluster of 2 nodes" in capfd.readouterr().err


def test_graphs_that_compare_records_with_earlier_ones_are_refused(tmp_path):
    """near_duplicates (the default job) needs every earlier record: split between actors it
    would not see them, so the run is refused before anything loads and no run begins."""
    with pytest.raises(ConfigError) as error:
        api.run(["executor=ray", "progress=false"], run_dir=tmp_path / "run")
    assert "executor.type" in str(error.value) and "compares each record" in str(error.value)
    assert not (tmp_path / "run" / "manifest.json").exists()
    with pytest.raises(ConfigError, match="near_duplicates"):  # composer plan says so too, with every other mistake
        api.plan(["executor=ray"])


def test_scaling_out_block_runs_as_shown(cluster, tmp_path):
    """README "Scaling out", each line as written: the extra exists (and CI installs it); a local
    Ray started by the run; `address=auto` on the simulated cluster, two actors on its two fake
    GPUs; the SLURM sweep's launcher config composes (no SLURM here)."""
    import re
    import shlex
    import subprocess
    import sys
    import tomllib

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Scaling out", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    install, local_ray, cluster_run, slurm = [line.partition("  #")[0].strip() for line in block.strip().splitlines()]
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert install == 'pip install "pipeline-composer[ray]"' and extras["ray"] == ["ray[data]>=2.60"]
    assert "ray[data]>=2.60" in extras["test"]

    def composer(words: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        assert words[0] == "composer", words
        return subprocess.run([sys.executable, "-m", "composer", *words[1:]], cwd=tmp_path,
                              capture_output=True, text=True, timeout=600, env=env)

    # A user's shell: none of the RAY_* settings this process's own Ray driver put in its environment.
    alone = shell_env()
    done = composer([*shlex.split(local_ray), "progress=false"], alone)  # a Ray of its own, though the simulated cluster runs here
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    facts = api.RunResult.load(Path(done.stdout.split("run complete: ", 1)[1].splitlines()[0])).manifest()["executor"]
    assert facts["type"] == "ray" and facts["nodes"] == 1 and "GPU" not in facts["cluster_resources"]
    # address=auto, run by this process (already the simulated cluster's driver): a second driver
    # process joining a ray.cluster_utils cluster had its actors cancelled as they were created.
    words = shlex.split(cluster_run)
    on_cluster = api.run([*words[2:], "progress=false"], run_dir=tmp_path / "cluster")
    facts = on_cluster.manifest()["executor"]
    assert facts["address"] == "auto" and facts["nodes"] == 2 and facts["actors"] == 2
    # Each actor that ran a block had a GPU of its own (whether both ran one is Ray Data's choice:
    # with blocks this cheap, an actor up first may take them all; the GPU test holds them longer).
    devices = [a["cuda_visible_devices"] for a in facts["per_actor"].values()]
    assert devices and len(set(devices)) == len(devices) and set(devices) <= {"0", "1"}, facts
    # The sweep as one job's launcher config: no -m, the first value of each swept key.
    words = [w.split(",")[0] for w in shlex.split(slurm) if w != "-m"]
    done = composer([*words, "progress=false", "--cfg", "hydra"], alone)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher" in done.stdout
    assert "partition: gpu" in done.stdout


def _sweep_on_cluster(cluster, cwd: Path, *args: str):
    """`composer *args` as a user's shell on a node of the cluster runs it: RAY_ADDRESS names the
    cluster, none of this process's own RAY_* settings. Returns the process and, per job that ran
    as a Ray task, {task, node, pid} from the launcher's log."""
    import re
    import subprocess
    import sys

    env = shell_env(RAY_ADDRESS=cluster.address)
    done = subprocess.run([sys.executable, "-m", "composer", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)
    ran = {int(m[1]): {"task": m[2], "node": m[3], "pid": int(m[4])}
           for m in re.finditer(r"#(\d+) ran as Ray task (\w+) on node (\w+) \([^,]+, pid (\d+)\)", done.stderr)}
    return done, ran


def test_a_sweep_under_the_ray_launcher_on_the_cluster(cluster, tmp_path):
    """hydra/launcher=ray_cluster (composer's own Ray launcher, README "Scaling out"): a 4-job
    sweep as Ray tasks on the simulated cluster, submitted by a `composer run -m` process that
    joins it through RAY_ADDRESS; one CPU a job, so its two 1-CPU nodes run two jobs at once.
    The sweep report and sweep.json are written as with the other launchers."""
    import json

    import yaml

    from composer.sweep import RAY_LAUNCHER

    sweep = tmp_path / "sweep"
    done, ran = _sweep_on_cluster(cluster, tmp_path, "run", "-m", "hydra/launcher=ray_cluster", "experiment=tiny-sentiment",
                                  "batch_size=1,2,4,8", "progress=false", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Ray launcher: 4 jobs as Ray tasks (num_cpus=1) on {cluster.address} (2 nodes: 2 CPU, 2 GPU)" in done.stderr
    for job in range(4):
        assert api.RunResult.load(sweep / str(job)).status == "complete"
    assert (sweep / "summary.csv").read_text().count("\n") == 5 and (sweep / "report.html").exists()
    assert "sweep report: 4 runs (0 not complete)" in done.stderr
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["launcher"] == RAY_LAUNCHER and state["status"] == "finished"
    assert [job["status"] for job in state["jobs"]] == ["complete"] * 4
    # Each job a Ray task (its id is the job's hydra.job.id) in a Ray worker, not the submitting process, on both nodes.
    assert sorted(ran) == [0, 1, 2, 3], done.stderr[-3000:]
    for job, where in ran.items():
        assert yaml.safe_load((sweep / str(job) / ".hydra" / "hydra.yaml").read_text())["hydra"]["job"]["id"] == where["task"]
    assert state["attempts"][-1]["pid"] not in {where["pid"] for where in ran.values()}
    nodes = {cluster.head_node.node_id, *(node.node_id for node in cluster.worker_nodes)}
    assert {where["node"] for where in ran.values()} == nodes


def test_a_ray_launched_sweep_resumes_its_failed_job_as_a_ray_task(cluster, tmp_path):
    """A job that failed under the Ray launcher (on_error=fail meets an unreadable line: aborted)
    is reported as with the other launchers (its folder says so, the other job completes, the
    sweep's exit code is the failure's), and `composer resume SWEEP --retry-failed` launches it
    again with the same launcher: the finished job is kept, the failed one runs as a Ray task
    and continues its run (a second attempt)."""
    import json

    sweep = tmp_path / "sweep"
    data = _texts(tmp_path / "reviews.jsonl", count=8)
    done, ran = _sweep_on_cluster(cluster, tmp_path, "run", "-m", "hydra/launcher=ray_cluster", *TEXT, "input=jsonl",
                                  f"input.path={data}", "on_error=skip,fail", f"hydra.sweep.dir={sweep}")
    assert done.returncode == 3, done.stderr[-3000:]  # 3: aborted (on_error=fail)
    assert sorted(ran) == [0, 1] and "sweep report: 2 runs (2 not complete)" in done.stderr
    assert [api.RunResult.load(sweep / job).status for job in ("0", "1")] == ["completed_with_errors", "aborted"]
    resumed, ran = _sweep_on_cluster(cluster, tmp_path, "resume", str(sweep), "--retry-failed")
    assert resumed.returncode == 3, resumed.stderr[-3000:]
    assert "(2 jobs: 1 aborted, 1 completed_with_errors)" in resumed.stderr
    assert "Ray launcher: 2 jobs as Ray tasks" in resumed.stderr and sorted(ran) == [0, 1]
    assert "job 0 finished before (completed_with_errors), kept" in resumed.stdout + resumed.stderr
    attempts = [len(json.loads((sweep / job / "manifest.json").read_text())["attempts"]) for job in ("0", "1")]
    assert attempts == [1, 2]
    state = json.loads((sweep / "sweep.json").read_text())
    assert state["status"] == "finished" and len(state["attempts"]) == 2


def test_ctrl_c_on_ray_stops_after_the_block_in_flight_and_resumes(tmp_path):
    """Ctrl-C (SIGINT to `composer run` with a Ray of its own) while the actor holds its third
    block: the driver writes that block when it comes back, stops the dataset (its reader and
    actors) and exits 130 with the run `interrupted` and an input-order prefix written; running
    the command again (here, locally: executor is output-neutral) finishes the files of an
    uninterrupted run."""
    import signal
    import subprocess
    import sys

    release, overrides, whole = _held_from_16(tmp_path)
    run_dir = tmp_path / "ray"
    alone = shell_env()  # a Ray of its own
    process = subprocess.Popen([sys.executable, "-m", "composer", "run", *overrides, "executor=ray", "executor.actors=1",
                                "executor.num_cpus_per_actor=0.5", f"hydra.run.dir={run_dir}"],
                               cwd=tmp_path, env=alone, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not list(tmp_path.glob("release.waiting.*")):
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        time.sleep(1)  # the driver has heard the stop before the held block comes back
        release.write_text("")
        _, stderr = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr[-3000:]
    assert "stopping after the batches in flight" in stderr and "Traceback" not in stderr
    stopped = api.RunResult.load(run_dir)
    assert stopped.status == "interrupted"
    written = (run_dir / "outputs.jsonl").read_bytes()
    assert written and len(written.splitlines()) < 38 and (whole.run_dir / "outputs.jsonl").read_bytes().startswith(written)
    _same_files(whole, api.run(overrides, run_dir=run_dir))


def test_a_worker_node_lost_mid_run_loses_and_duplicates_nothing(cluster, tmp_path):
    """Two actors (0.75 CPU each: one per 1-CPU node) hold their blocks past the first 16
    records; the worker node of one of them is killed while it holds its block, a fresh node
    joins (as an autoscaler would add one), and the run goes on: Ray restarts the lost actor and
    retries its block. outputs.jsonl and errors.jsonl equal the local executor's. Runs last: it
    takes a node of the session's cluster away."""
    release, overrides, local = _held_from_16(tmp_path)
    done: dict[str, api.RunResult] = {}
    runner = threading.Thread(target=lambda: done.update(run=api.run(
        [*overrides, "executor=ray", "executor.actors=2", "executor.num_cpus_per_actor=0.75"], run_dir=tmp_path / "ray")))
    runner.start()
    head = cluster.head_node.node_id
    deadline = time.monotonic() + 240
    held: set[str] = set()
    while not (held - {head}) and time.monotonic() < deadline and runner.is_alive():
        held = {marker.read_text() for marker in tmp_path.glob("release.waiting.*") if marker.read_text()}
        time.sleep(0.1)
    lost = [node for node in cluster.worker_nodes if node.node_id in held]
    assert lost, f"no worker node's actor held a block (held: {held})"
    lost_id = lost[0].node_id
    cluster.remove_node(lost[0], allow_graceful=False)
    cluster.add_node(num_cpus=1, **NODE)
    release.write_text("")
    runner.join(timeout=300)
    on_ray = done["run"]
    assert on_ray.status == "completed_with_errors"
    _same_files(local, on_ray)
    ids = [line["id"] for line in on_ray.outputs()]
    assert len(ids) == len(set(ids)) == 39
    actors = on_ray.manifest()["executor"]["per_actor"]  # "<actor id>:<pid>": a restarted actor is a new process
    assert lost_id in {actor["node"] for actor in actors.values()}
    restarted = [actor_id for actor_id in {key.split(":")[0] for key in actors} if sum(k.startswith(actor_id) for k in actors) > 1]
    assert restarted, actors  # 40 rows and an unreadable line; that line and the number text fail
