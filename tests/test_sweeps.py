"""Sweeps end to end: a 2x2 multirun on tiny models with labelled rows, its job folders, the
summary and report it writes, metrics against a hand computation, the report's reproducibility,
failing jobs under the joblib launcher, submitit's local executor and the Optuna sweeper."""

from __future__ import annotations

import csv
import json
import math
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from composer.metrics import predicted_label
from composer.report import write_report
from composer.testing import tiny_model_path
from conftest import ROWS, read_jsonl, run_cli, write_jsonl

# experiment=tiny-sentiment is the plain base config (the tests' starting point).
BASE = ["experiment=tiny-sentiment", "task=text-classification", "threads=1", "progress=false"]
MODELS = ("tiny-text-classification", "tiny-text-classification-quantizable")
BATCHES = (1, 4)
PNG = b"\x89PNG\r\n\x1a\n"
GENERATED = re.compile(r"^.*Generated: .*$", re.MULTILINE)


def _labelled(tmp: Path) -> list[str]:
    data = write_jsonl(tmp / "labelled.jsonl", ROWS)
    return ["input=jsonl", f"input.path={data}", "input.label_field=label", "input.id_field=uid"]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    """A 2x2 sweep (model x batch_size) through the CLI, with the default launcher."""
    work = tmp_path_factory.mktemp("sweep")
    done = run_cli("run", "-m", *BASE, *_labelled(work), f"model={','.join(MODELS)}",
                   f"batch_size={','.join(map(str, BATCHES))}", "hydra.sweep.dir=sweep", cwd=work)
    assert done.returncode == 0, done.stderr
    assert "sweep report: 4 runs (0 not complete)" in done.stderr
    return work / "sweep"


def _summary(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _hand_scores(outputs: list[dict]) -> tuple[float, float]:
    """Accuracy and macro-F1 (over the gold classes) computed by hand from outputs.jsonl."""
    gold = [row["label"] for row in outputs]
    predicted = [predicted_label(row["prediction"]) for row in outputs]
    accuracy = sum(g == p for g, p in zip(gold, predicted)) / len(gold)
    f1s = []
    for label in sorted(set(gold)):
        tp = sum(g == label and p == label for g, p in zip(gold, predicted))
        fp = sum(g != label and p == label for g, p in zip(gold, predicted))
        fn = sum(g == label and p != label for g, p in zip(gold, predicted))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return accuracy, sum(f1s) / len(f1s)


def test_every_job_has_a_complete_run_folder(sweep):
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1", "2", "3"]
    combos = []
    for job in jobs:
        assert {"manifest.json", "metrics.json", "config.yaml", "outputs.jsonl", "errors.jsonl"} <= {p.name for p in job.iterdir()}
        manifest = json.loads((job / "manifest.json").read_text())
        assert manifest["status"] == "complete" and manifest["exit_code"] == 0
        assert manifest["counts"]["records_ok"] == len(ROWS)
        outputs = read_jsonl(job / "outputs.jsonl")
        assert [row["id"] for row in outputs] == [row["uid"] for row in ROWS]
        config = (job / "config.yaml").read_text()
        combos.append((re.search(r"id: tiny:(\S+)", config).group(1), int(re.search(r"^batch_size: (\d+)", config, re.M).group(1))))
    assert combos == [(m.removeprefix("tiny-"), b) for m in MODELS for b in BATCHES]


def test_summary_rows_columns_and_values(sweep):
    rows = _summary(sweep / "summary.csv")
    assert [row["run"] for row in rows] == ["0", "1", "2", "3"]
    header = list(rows[0])
    assert header[:5] == ["run", "status", "exit_code", "model", "batch_size"]  # the swept parameters, nothing else
    assert header[-1] == "error"
    for column in ("throughput.records_per_second", "models.model.latency.p50_ms", "models.model.latency.p99_ms",
                   "models.model.load_seconds", "quality.model.accuracy", "quality.model.macro_f1",
                   "quality.model.per_class.POSITIVE.precision", "quality.model.per_class.NEGATIVE.recall",
                   "peak_memory.rss_bytes", "counts.records_ok"):
        assert column in header, column
    assert [(r["model"], r["batch_size"]) for r in rows] == [(m, str(b)) for m in MODELS for b in BATCHES]
    for row in rows:
        job = sweep / row["run"]
        assert row["status"] == "complete" and row["exit_code"] == "0" and row["error"] == ""
        accuracy, macro_f1 = _hand_scores(read_jsonl(job / "outputs.jsonl"))
        metrics = json.loads((job / "metrics.json").read_text())
        assert metrics["quality"]["model"]["accuracy"] == pytest.approx(accuracy)
        assert metrics["quality"]["model"]["macro_f1"] == pytest.approx(macro_f1)
        assert float(row["quality.model.accuracy"]) == pytest.approx(accuracy)
        assert float(row["quality.model.macro_f1"]) == pytest.approx(macro_f1)
        assert float(row["throughput.records_per_second"]) == metrics["throughput"]["records_per_second"]
        assert int(row["counts.records_ok"]) == len(ROWS)


class _Page(HTMLParser):
    """Collects images, links, tables and headings, and checks that tags nest and close."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self):
        super().__init__()
        self.stack, self.images, self.links, self.headings, self.tables, self.problems = [], [], [], [], 0, []
        self._heading = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs)
        if tag == "a":
            self.links.append(attrs.get("href"))
        if tag == "table":
            self.tables += 1
        if tag in ("h1", "h2"):
            self._heading = ""
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()
        if tag in ("h1", "h2") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data):
        if self._heading is not None:
            self._heading += data


def test_report_html_parses_and_shows_the_plots(sweep):
    page = _Page()
    page.feed((sweep / "report.html").read_text(encoding="utf-8"))
    page.close()
    assert page.problems == [] and page.stack == []
    assert {"Runs", "Plots", "Config differences", "Models", "Library versions"} <= set(page.headings)
    assert page.tables >= 4
    sources = [img["src"] for img in page.images]
    assert sources == ["plots/throughput_vs_batch_size.png", "plots/quality_vs_latency.png", "plots/per_class.png"]
    for source in sources:
        assert (sweep / source).read_bytes().startswith(PNG)
        assert source in page.links
    assert "summary.csv" in page.links
    markdown = (sweep / "report.md").read_text()
    assert "![Throughput vs batch size, per model](plots/throughput_vs_batch_size.png)" in markdown
    # The config diff lists only what differs: the model and the batch size.
    section = markdown.split("## Config differences")[1].split("##")[0]
    assert "| run | model.id | batch_size |" in section
    assert "| transformers |" in markdown and "| git commit |" in markdown  # versions table


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_report_as_a_person_sees_it_in_headless_chromium(sweep, tmp_path):
    """A screenshot of report.html shows its plots: matplotlib's colours appear on the page,
    and the page is mostly white with dark text, as written."""
    import subprocess

    from PIL import Image

    shot = tmp_path / "report.png"
    done = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1200,2600",
         f"--screenshot={shot}", (sweep / "report.html").as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.is_file(), done.stderr
    image = Image.open(shot).convert("RGB")
    assert image.size == (1200, 2600)
    pixels = list(image.getdata())
    white = sum(1 for r, g, b in pixels if min(r, g, b) > 240) / len(pixels)
    coloured = sum(1 for r, g, b in pixels if max(r, g, b) - min(r, g, b) > 60) / len(pixels)
    assert 0.3 < white < 0.99  # a page with content on a white background
    assert coloured > 0.002  # the plots rendered (text and tables are black and grey)


def test_report_is_regenerated_byte_identically(sweep, tmp_path):
    """From the run folders alone, anywhere, by the CLI or the API: the same bytes, except the
    report's own timestamp (and with SOURCE_DATE_EPOCH, not even that)."""
    copy = tmp_path / "moved" / "sweep"
    shutil.copytree(sweep, copy, ignore=shutil.ignore_patterns("report.*", "summary.csv", "plots"))
    done = run_cli("report", str(copy), "--out", str(tmp_path / "cli"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    write_report([copy], out=tmp_path / "api")
    names = ["summary.csv", "plots/throughput_vs_batch_size.png", "plots/quality_vs_latency.png", "plots/per_class.png"]
    for folder in (tmp_path / "cli", tmp_path / "api"):
        for name in names:
            assert (folder / name).read_bytes() == (sweep / name).read_bytes(), name
        for name in ("report.md", "report.html"):
            ours, original = (folder / name).read_text(), (sweep / name).read_text()
            assert GENERATED.sub("", ours) == GENERATED.sub("", original), name
    os.environ["SOURCE_DATE_EPOCH"] = "1700000000"
    try:
        first, second = write_report([copy], out=tmp_path / "e1"), write_report([copy], out=tmp_path / "e2")
    finally:
        del os.environ["SOURCE_DATE_EPOCH"]
    for a, b in zip(first.files, second.files):
        assert a.read_bytes() == b.read_bytes(), a.name
    assert "Generated: 2023-11-14T22:13:20Z" in (tmp_path / "e1" / "report.md").read_text()


def test_report_against_a_baseline(sweep, tmp_path):
    done = run_cli("report", str(sweep / "1"), str(sweep / "2"), str(sweep / "3"), "--baseline", str(sweep / "0"),
                   "--out", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    markdown = (tmp_path / "report.md").read_text()
    section = markdown.split("## Against the baseline")[1].split("\n## ")[0]
    lines = [line for line in section.splitlines() if line.startswith("| ")]
    assert lines[1].startswith("| baseline |")
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| 1", "| 2", "| 3"]
    assert "batch_size: 1 → 4" in lines[2] and "model.id" not in lines[2]
    assert "model.id: tiny:text-classification → tiny:text-classification-quantizable" in lines[3]
    assert "batch_size" not in lines[3]
    base = json.loads((sweep / "0" / "metrics.json").read_text())["quality"]["model"]["accuracy"]
    other = json.loads((sweep / "2" / "metrics.json").read_text())["quality"]["model"]["accuracy"]
    assert f"{other:.4f} ({other - base:+.4g}" in lines[3]
    assert len(_summary(tmp_path / "summary.csv")) == 3


def test_report_of_nothing_is_an_error(tmp_path):
    done = run_cli("report", str(tmp_path), cwd=tmp_path)
    assert done.returncode == 2 and "no run folders" in done.stderr


def _broken_model(tmp: Path) -> Path:
    """A model folder that passes every plan-time check and fails to load (corrupt weights)."""
    broken = tmp / "broken-model"
    shutil.copytree(tiny_model_path("text-classification"), broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)
    return broken


def test_failing_jobs_do_not_stop_a_joblib_sweep(tmp_path):
    """Two workers; two jobs fail at model load: both are recorded in their folders and the
    summary, the good jobs' folders are complete, and the exit code says so. A config mistake
    in one combination (batch_size=0) refuses the whole sweep before any job starts."""
    broken = _broken_model(tmp_path)
    refused = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE, *_labelled(tmp_path),
                      f"model.id=tiny:text-classification,{broken}", "batch_size=2,0", "hydra.sweep.dir=refused", cwd=tmp_path)
    assert refused.returncode == 2 and "batch_size must be >= 1, got 0" in refused.stderr, refused.stderr
    assert not (tmp_path / "refused").exists()
    done = run_cli("run", "-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *BASE, *_labelled(tmp_path),
                   f"model.id=tiny:text-classification,{broken}", "batch_size=2,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    sweep = tmp_path / "sweep"
    assert done.returncode == 4, done.stderr  # the worst job: failed
    assert "Joblib.Parallel" in done.stdout + done.stderr  # Hydra logs the launcher
    rows = {row["run"]: row for row in _summary(sweep / "summary.csv")}
    assert {k: (r["model.id"], r["batch_size"], r["status"], r["exit_code"]) for k, r in rows.items()} == {
        "0": ("tiny:text-classification", "2", "complete", "0"),
        "1": ("tiny:text-classification", "1", "complete", "0"),
        "2": (str(broken), "2", "failed", "4"),
        "3": (str(broken), "1", "failed", "4"),
    }
    assert rows["0"]["error"] == "" and rows["0"]["quality.model.accuracy"] != ""
    assert rows["2"]["error"].startswith("SafetensorError")
    good = read_jsonl(sweep / "0" / "outputs.jsonl")
    assert [row["id"] for row in good] == [row["uid"] for row in ROWS]
    failed = json.loads((sweep / "2" / "manifest.json").read_text())
    assert failed["status"] == "failed" and failed["exit_code"] == 4 and "traceback" in failed["error"]
    markdown = (sweep / "report.md").read_text()
    assert "2 of 4 runs did not complete cleanly" in markdown


def test_submitit_local_launcher(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    done = run_cli("run", "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5", *BASE,
                   *_labelled(tmp_path), "batch_size=1,2", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = _summary(tmp_path / "sweep" / "summary.csv")
    assert [(r["run"], r["batch_size"], r["status"]) for r in rows] == [("0", "1", "complete"), ("1", "2", "complete")]
    assert (tmp_path / "sweep" / ".submitit").is_dir()  # the jobs really went through submitit


def test_slurm_launcher_config_composes(tmp_path):
    """The shipped Slurm config is valid against the plugin's schema (nothing is submitted)."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    done = run_cli("run", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", "--cfg", "hydra",
                   "--package", "hydra.launcher", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "SlurmLauncher" in done.stdout and "partition: gpu" in done.stdout and "gpus_per_node: 1" in done.stdout


def test_optuna_sweeper_optimises_the_objective(tmp_path):
    pytest.importorskip("optuna")
    done = run_cli("run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=3", "threads=1", "progress=false",
                   *_labelled(tmp_path), "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    sweep = tmp_path / "sweep"
    rows = _summary(sweep / "summary.csv")
    assert len(rows) == 3 and "postprocess.0.min_score" in rows[0]
    results = (sweep / "optimization_results.yaml").read_text()
    best = max(float(r["quality.model.macro_f1"]) for r in rows)
    assert math.isclose(float(re.search(r"best_value: (\S+)", results).group(1)), best)


def test_optuna_sweeper_is_composers_own(tmp_path):
    """hydra/sweeper=optuna is composer's sweeper (configs/hydra/sweeper/optuna.yaml, before any
    ConfigStore entry of that name in Hydra's search path), and Hydra's plugin scan finds it."""
    done = run_cli("run", "experiment=optuna-threshold", "hydra/sweeper/sampler=grid", "--cfg", "hydra", "--package",
                   "hydra.sweeper", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "_target_: hydra_plugins.composer_optuna_sweeper.optuna_sweeper.ComposerOptunaSweeper" in done.stdout
    assert "_target_: optuna.samplers.GridSampler" in done.stdout and "direction: maximize" in done.stdout
    plugins = run_cli("run", "--info", "plugins", cwd=tmp_path)
    assert "ComposerOptunaSweeper" in plugins.stdout and "Error importing" not in plugins.stdout + plugins.stderr


def test_optuna_search_space_forms():
    """The override forms of Hydra's Optuna sweeper become the distributions it made (ints for an
    int range, floats on the step's grid for a float one, floats for intervals, log-uniform under
    tag(log)), fixed values pass through as written, and each drawn value goes back into an
    override that Hydra reads as the same value."""
    optuna = pytest.importorskip("optuna")
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.composer_optuna_sweeper._search_space import search_space
    from hydra_plugins.composer_optuna_sweeper._study import _suggest

    space = search_space(["a=choice(x,'y z',1,2.5,true,'a,b')", "b=range(1,10)", "c=range(0,1,step=0.25)",
                          "d=interval(0,1)", "e=tag(log, interval(1e-3,1))", "f=5", "g=x,y", "h=shuffle(range(1,4))",
                          "f=6", "+i=[1,2]", "j=choice([1,2],[3])"])
    assert space.distributions == {
        "a": CategoricalDistribution(["x", "y z", 1, 2.5, True, "a,b"]), "b": IntDistribution(1, 10),
        "c": FloatDistribution(0.0, 1.0, step=0.25), "d": FloatDistribution(0.0, 1.0),
        "e": FloatDistribution(0.001, 1.0, log=True), "g": CategoricalDistribution(["x", "y"]),
        "h": CategoricalDistribution([1, 2, 3]), "j": CategoricalDistribution(["[1,2]", "[3]"])}
    assert space.fixed == {"f": "f=6", "+i": "+i=[1,2]"}  # the later f wins
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    parser = OverridesParser.create()
    for _ in range(40):
        trial = study.ask()
        params = {name: _suggest(trial, name, d) for name, d in space.distributions.items()}
        assert type(params["b"]) is int and 1 <= params["b"] <= 10
        assert type(params["c"]) is float and params["c"] in (0.0, 0.25, 0.5, 0.75, 1.0)
        assert type(params["d"]) is float and 0 <= params["d"] <= 1
        assert type(params["e"]) is float and 1e-3 <= params["e"] <= 1
        overrides = space.overrides(params)
        assert overrides[-2:] == ["f=6", "+i=[1,2]"]
        for line, (name, value) in zip(overrides, params.items()):
            parsed = parser.parse_override(line)
            assert parsed.get_key_element() == name and not parsed.is_sweep_override(), line
            assert parsed.value() == ([1, 2] if value == "[1,2]" else [3] if value == "[3]" else value), line
    assert search_space(["b=range(1,9,4)", "c=range(0,1,step=0.5)", "a=choice(u,v)"]).grid() == \
        {"b": [1, 5, 9], "c": [0.0, 0.5, 1.0], "a": ["u", "v"]}
    with pytest.raises(ValueError, match="not a continuous interval"):
        search_space(["d=interval(0,1)"]).grid()
    with pytest.raises(ValueError, match="not a search space"):
        search_space(["model=glob(*)"])


def test_optuna_sweep_in_batches_keeps_job_numbers_equal_to_trial_numbers(tmp_path):
    """n_jobs=2: trials are asked and launched two at a time, and job folder N holds trial N with
    its own params, typed as drawn (an int range, a float range on its step, a choice), the fixed
    overrides in every trial; the command's range replaces the experiment's interval."""
    optuna = pytest.importorskip("optuna")
    import yaml

    storage = f"sqlite:///{tmp_path}/study.db"
    done = run_cli("run", "-m", "experiment=optuna-threshold", "hydra.sweeper.n_trials=5", "hydra.sweeper.n_jobs=2",
                   "hydra/sweeper/sampler=random", "hydra.sweeper.sampler.seed=3", f"hydra.sweeper.storage={storage}",
                   "postprocess.0.min_score=range(0.25,0.75,step=0.25)", "batch_size=range(1,3)",
                   "postprocess.0.fallback_label=choice(NEGATIVE,POSITIVE)", "threads=1", "progress=false",
                   *_labelled(tmp_path), "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    log = done.stdout + done.stderr
    assert log.count("Launching 2 jobs locally") == 2 and log.count("Launching 1 jobs locally") == 1
    sweep = tmp_path / "sweep"
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir() and p.name != "plots") == ["0", "1", "2", "3", "4"]
    [summary] = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).get_trials()
    assert [(t.number, t.state.name) for t in trials] == [(n, "COMPLETE") for n in range(5)]
    for trial in trials:
        job = sweep / str(trial.number)
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        params = trial.params
        assert overrides[:3] == [f"postprocess.0.min_score={params['postprocess.0.min_score']!r}",
                                 f"batch_size={params['batch_size']}",
                                 f"postprocess.0.fallback_label={params['postprocess.0.fallback_label']}"]
        assert "threads=1" in overrides and trial.user_attrs["threads"] == "1"
        config = yaml.safe_load((job / "config.yaml").read_text())
        assert config["batch_size"] == params["batch_size"] and type(config["batch_size"]) is int
        assert config["batch_size"] in (1, 2, 3)
        assert config["postprocess"][0]["min_score"] == params["postprocess.0.min_score"] in (0.25, 0.5, 0.75)
        assert config["postprocess"][0]["fallback_label"] == params["postprocess.0.fallback_label"]
        assert json.loads((job / "manifest.json").read_text())["status"] == "complete"
    results = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == {"postprocess.0.min_score", "batch_size", "postprocess.0.fallback_label"}


class _Killed(BaseException):
    """What kill -9 does to the sweeping process, as far as the study can tell: it stops there."""


class _Launcher:
    """A launcher that returns each trial's objective, -(x - 0.3)^2, at once; `kill_at`: the first
    job of the launch that 'kills' the process (raises _Killed) before it returns."""

    def __init__(self, kill_at: int | None = None) -> None:
        self.kill_at, self.launches = kill_at, []

    def launch(self, overrides, initial_job_idx):
        from hydra.core.utils import JobReturn, JobStatus

        self.launches.append((initial_job_idx, [list(o) for o in overrides]))
        if initial_job_idx == self.kill_at:
            raise _Killed
        returns = []
        for job in overrides:
            x = float(next(o for o in job if o.startswith("x=")).split("=", 1)[1])
            ret = JobReturn(overrides=list(job), status=JobStatus.COMPLETED)
            ret.return_value = -((x - 0.3) ** 2)
            returns.append(ret)
        return returns


def _study_sweep(folder: Path, launcher: _Launcher):
    from types import SimpleNamespace

    from omegaconf import OmegaConf

    from hydra_plugins.composer_optuna_sweeper._study import StudySweep

    sweeper = SimpleNamespace(
        launcher=launcher, config=OmegaConf.create({"hydra": {"sweep": {"dir": str(folder)}}}),
        params=OmegaConf.create({"x": "interval(0,1)", "k": "choice(a,b)"}), direction="maximize",
        sampler=OmegaConf.create({"_target_": "optuna.samplers.TPESampler", "seed": 0, "n_startup_trials": 2}),
        n_trials=6, n_jobs=2, max_failure_rate=1.0, storage=f"sqlite:///{folder}/study.db", study_name=None,
        custom_search_space=None)
    return StudySweep(sweeper, ["fixed=1"])


def _trials_of(folder: Path) -> list[tuple]:
    import optuna

    study = optuna.load_study(study_name=str(folder.resolve()), storage=f"sqlite:///{folder}/study.db")
    return [(t.number, t.state.name, t.params, t.value, t.system_attrs.get("composer:job")) for t in study.get_trials()]


def test_optuna_study_resumes_from_its_storage_where_a_kill_left_it(tmp_path):
    """The resume windows of composer's Optuna sweeper, with a launcher that stands in for the
    jobs (TPE after 2 random trials, so the sampler's model of the earlier trials counts too):
    killed while batch [2, 3] runs, the resumed study runs [2, 3] again with their own overrides,
    asks [4, 5] as the uninterrupted study did (the sampler restored from the study) and ends
    equal to it. Killed after a batch was asked but before its sampler was saved, the batch still
    runs again with its own params in its own job numbers. A trial asked but never given its
    folder fails. Job numbers stay trial numbers throughout."""
    pytest.importorskip("optuna")
    (tmp_path / "whole").mkdir()
    whole = _Launcher()
    _study_sweep(tmp_path / "whole", whole).run()
    expected = _trials_of(tmp_path / "whole")
    assert [(n, state, job) for n, state, _, _, job in expected] == [(n, "COMPLETE", n) for n in range(6)]
    assert [first for first, _ in whole.launches] == [0, 2, 4]
    assert all(job[-1] == "fixed=1" for _, jobs in whole.launches for job in jobs)

    (tmp_path / "killed").mkdir()
    with pytest.raises(_Killed):
        _study_sweep(tmp_path / "killed", _Launcher(kill_at=2)).run()
    assert [state for _, state, _, _, _ in _trials_of(tmp_path / "killed")] == ["COMPLETE"] * 2 + ["RUNNING"] * 2
    resumed = _Launcher()
    _study_sweep(tmp_path / "killed", resumed).run()
    assert resumed.launches == whole.launches[1:]  # [2, 3] again as they were, then [4, 5] as asked before
    assert _trials_of(tmp_path / "killed") == expected

    (tmp_path / "unsaved").mkdir()
    sweep = _study_sweep(tmp_path / "unsaved", _Launcher())
    saved = sweep.save_sampler

    def save_then_die(last_job):
        if last_job == 3:
            raise _Killed
        saved(last_job)

    sweep.save_sampler = save_then_die
    with pytest.raises(_Killed):
        sweep.run()
    before = {n: params for n, _, params, _, _ in _trials_of(tmp_path / "unsaved")}
    resumed = _Launcher()
    _study_sweep(tmp_path / "unsaved", resumed).run()
    after = _trials_of(tmp_path / "unsaved")
    assert [(n, state, job) for n, state, _, _, job in after] == [(n, "COMPLETE", n) for n in range(6)]
    assert [first for first, _ in resumed.launches] == [2, 4] and all(after[n][2] == before[n] for n in (2, 3))

    import optuna

    study = optuna.load_study(study_name=str((tmp_path / "whole").resolve()), storage=f"sqlite:///{tmp_path}/whole/study.db")
    orphan = study.ask()  # asked, then killed before it was given its folder
    _study_sweep(tmp_path / "whole", _Launcher()).run()
    assert _trials_of(tmp_path / "whole")[orphan.number][1] == "FAIL"
