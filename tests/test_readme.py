"""README.md, true as written: every command it shows runs here as shown (issue 15).

The commands come from README itself, so it cannot drift: the quick start, each line of the
"Using it" block, the `composer run` commands of the tutorial table and the Python snippet.
Lines marked "(needs the Hub)" and tutorial rows that name a hub model cannot run offline; for
them `composer plan` must find nothing wrong but the model's availability.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, ROWS, read_jsonl, write_jsonl

README = (REPO / "README.md").read_text(encoding="utf-8")
NEEDS_HUB = "(needs the Hub)"
TEST_COMMAND = ".venv/bin/python -m pytest -q"


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def _using_it() -> list[tuple[str, str]]:
    """(command, comment) for each line of the "Using it" block."""
    block = next(b for b in _blocks("bash") if b.startswith("composer run "))
    lines = []
    for line in block.strip().splitlines():
        command, _, comment = line.partition("  #")
        lines.append((command.strip(), comment.strip()))
    return lines


def _expand(command: str, places: dict[str, str]) -> list[list[str]]:
    """The argv of each command a README line stands for: placeholders filled, optional
    `[...]` parts dropped, `a|b` alternatives run one after the other."""
    for placeholder, value in places.items():
        command = command.replace(placeholder, value)
    command = re.sub(r"\s*\[[^\]]*\]", "", command).replace("...", "")
    words = shlex.split(command)
    alternatives = next((i for i, word in enumerate(words) if "|" in word), None)
    if alternatives is None:
        return [words]
    # `list|fetch minilm`: the alternatives run to the end of the line (`list`, `fetch minilm`).
    return [words[:alternatives] + choice.split() for choice in " ".join(words[alternatives:]).split("|")]


def _composer(words: list[str], cwd: Path) -> subprocess.CompletedProcess:
    assert words[0] == "composer" or words[:3] == ["python", "-m", "composer"], words
    args = words[1:] if words[0] == "composer" else words[3:]
    return subprocess.run([sys.executable, "-m", "composer", *(args or ["--help"])], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _only_the_model_is_missing(words: list[str], cwd: Path) -> None:
    """Offline, `plan` of a command that needs the Hub fails on the model's availability alone."""
    overrides = [w for w in words[2:] if w not in ("-m", "--multirun")]
    done = _composer(["composer", "plan", *overrides], cwd)
    issues = [line for line in done.stderr.splitlines() if line.startswith("  - ")]
    assert done.returncode == 2 and issues, (words, done.stdout, done.stderr)
    for issue in issues:
        assert "model.id" in issue and "HF_HUB_OFFLINE is set" in issue, (words, issue)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder holding what README's commands name: reviews.jsonl and ./my-local-model."""
    from composer.testing import tiny_model_path

    folder = tmp_path_factory.mktemp("readme")
    write_jsonl(folder / "reviews.jsonl", ROWS)
    shutil.copytree(tiny_model_path("text-classification"), folder / "my-local-model")
    return folder


def test_quick_start_is_two_commands_and_ci_runs_the_same_install_and_tests():
    install, tests = _blocks("bash")[0].strip().splitlines()
    assert tests == TEST_COMMAND
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert f"\n{TEST_COMMAND}\n" in ci  # the exact test command, last
    pip = next(part for part in install.split(" && ") if "pip install" in part)
    assert pip.split("pip install", 1)[1].strip() in ci.replace("pip install -q ", "pip install ")
    assert "-c constraints.txt" in pip and (REPO / "constraints.txt").is_file()


def test_quick_start_main_job_runs_as_written(workdir):
    install = _blocks("bash")[0].strip().splitlines()[0]
    jobs = [part.replace(".venv/bin/", "") for part in install.split(" && ") if ".venv/bin/composer" in part]
    assert jobs == ["composer models fetch minilm", "composer run"]
    for job in jobs:
        done = _composer(shlex.split(job), workdir)
        assert done.returncode == 0, (job, done.stdout, done.stderr)
    assert "run complete:" in done.stdout and "model: accuracy" in done.stdout


def test_every_command_of_using_it_runs_as_shown(workdir):
    places: dict[str, str] = {}
    for command, comment in _using_it():
        for words in _expand(command, places):
            if NEEDS_HUB in comment:
                _only_the_model_is_missing(words, workdir)
                continue
            done = _composer(words, workdir)
            assert done.returncode == 0, (words, done.stdout[-2000:], done.stderr[-2000:])
            if words[:2] == ["composer", "run"] and "-m" not in words:
                run_dir = Path(done.stdout.split("run complete: ", 1)[1].splitlines()[0])
                assert read_jsonl(run_dir / "outputs.jsonl"), words
                if "experiment=tiny-sentiment" in words:
                    places["RUN_DIR"] = str(run_dir)
            if "-m" in words:
                sweeps = sorted((workdir / "runs" / "tiny-sentiment").iterdir())
                places["RUN_OR_SWEEP_DIR"] = str(next(s for s in sweeps if (s / "summary.csv").exists()))
    assert {"RUN_DIR", "RUN_OR_SWEEP_DIR"} <= set(places)


def test_tutorial_table_commands_plan_offline_save_for_the_hub_model():
    rows = re.findall(r"^\|.*`(composer run [^`]*)`.*\|\s*$", README, flags=re.M)
    assert len(rows) >= 5
    for command in rows:
        words = shlex.split(command)
        done = _composer(["composer", "plan", *words[2:]], REPO)
        if done.returncode != 0:
            _only_the_model_is_missing(words, REPO)


def test_python_snippet_runs_as_written(tmp_path):
    (snippet,) = _blocks("python")
    done = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert list((tmp_path / "runs" / "fill-mask").iterdir())


def test_serving_block_runs_as_shown(workdir):
    """The "Serving" block: the server as written (on a free port instead of 8000), then each
    curl line sent as written (its method, path, headers and body) with Python's own client."""
    import http.client
    import json
    import os
    import signal
    import time

    block = next(b for b in _blocks("bash") if b.startswith("composer serve "))
    lines = [line.partition("  #")[0].strip() for line in block.strip().splitlines()]
    words = shlex.split(lines[0])
    assert words[-2:] == ["--port", "8000"], words
    log = (workdir / "serve.log").open("w")
    server = subprocess.Popen([sys.executable, "-m", "composer", *words[1:-1], "0"], cwd=workdir, stdout=subprocess.PIPE,
                              stderr=log, text=True, env=os.environ.copy())
    try:
        port = int(re.search(r"http://127\.0\.0\.1:(\d+)", server.stdout.readline()).group(1))
        answers = []
        for line in lines[1:]:
            curl = shlex.split(line)
            assert curl[0] == "curl", line
            url = next(word for word in curl if word.startswith("http://127.0.0.1:8000/"))
            path = url.removeprefix("http://127.0.0.1:8000")
            headers = dict(h.split(": ", 1) for h in (curl[i + 1] for i, w in enumerate(curl) if w == "-H"))
            body = curl[curl.index("-d") + 1].encode() if "-d" in curl else None
            for _ in range(3000):  # /readyz, the first line, answers 503 until the model is in
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
                try:
                    connection.request("POST" if body else "GET", path, body=body, headers=headers)
                    response = connection.getresponse()
                    status, data = response.status, response.read()
                except ConnectionError:
                    status, data = None, b""
                finally:
                    connection.close()
                if status == 200 or path != "/readyz":
                    break
                time.sleep(0.1)
            assert status == 200, (line, status, data)
            answers.append(data)
        assert json.loads(answers[1])["id"] == "r1" and [a["id"] for a in json.loads(answers[2])] == ["r2", "r3"]
    finally:
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=600) == 0
        log.close()


def test_optuna_storage_block_runs_as_shown(tmp_path):
    """The Optuna block of "Resuming a sweep": a search whose study is kept in SQLite, then
    `composer resume` of the finished sweep, which finds every trial finished in the study and
    launches nothing."""
    optuna = pytest.importorskip("optuna")
    block = next(b for b in _blocks("bash") if "hydra.sweeper.storage=sqlite:///" in b)
    for line in block.strip().splitlines():
        words = shlex.split(line.partition("  #")[0])
        done = _composer(words, tmp_path)
        assert done.returncode == 0, (words, done.stdout[-2000:], done.stderr[-2000:])
    sweep = tmp_path / "runs" / "search"
    study = optuna.load_study(study_name=str(sweep.resolve()), storage=f"sqlite:///{tmp_path}/optuna.db")
    assert len(study.trials) == 12 and (sweep / "11" / "manifest.json").exists() and not (sweep / "12").exists()
    assert "12 trials finished, 0 interrupted, 0 to ask" in done.stderr and "Launching" not in done.stderr
