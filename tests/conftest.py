"""Shared test setup: offline Hub, one torch thread, tiny models built once per session."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["OMP_NUM_THREADS"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent

# Real models provisioned with `composer models fetch` stay where the user keeps them, while tiny
# models go to a per-session cache (below): pin the models folder before COMPOSER_CACHE_DIR moves.
from composer.provision import models_root  # noqa: E402

os.environ["COMPOSER_MODELS_DIR"] = str(models_root())

# Labelled sample rows shared by the source and transform tests, and the overrides they run with.
BASE = ["experiment=tiny-sentiment", "task=text-classification", "model=tiny-text-classification", "threads=1", "progress=false"]

# Every column is a string so that csv (which reads only strings) holds exactly the same rows as
# jsonl, parquet and datasets, and the content-hash ids agree across all of them.
ROWS = [
    {"uid": "r1", "text": "I love this product and it works perfectly", "title": "Great", "label": "POSITIVE"},
    {"uid": "r2", "text": "The package arrived broken", "title": "Bad", "label": "NEGATIVE"},
    {"uid": "r3", "text": "Support never answered my emails", "title": "Slow", "label": "NEGATIVE"},
    {"uid": "r4", "text": "Short one", "title": "Fine", "label": "POSITIVE"},
    {"uid": "r5", "text": "Would buy again, great value for the price", "title": "Nice", "label": "POSITIVE"},
]
TEXTS = [row["text"] for row in ROWS]


@pytest.fixture(scope="session", autouse=True)
def tiny_model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A session-wide cache for tiny models, shared with CLI subprocesses through the env."""
    cache = Path(os.environ.get("COMPOSER_TEST_CACHE") or tmp_path_factory.mktemp("composer-cache"))
    os.environ["COMPOSER_CACHE_DIR"] = str(cache)
    import torch

    torch.set_num_threads(1)
    return cache


def run_cli(*args: str, cwd: Path, check: bool = False) -> subprocess.CompletedProcess:
    """Run `python -m composer ...` in a subprocess, as a user would."""
    done = subprocess.run(
        [sys.executable, "-m", "composer", *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(), timeout=600
    )
    if check and done.returncode != 0:
        raise AssertionError(f"composer {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}")
    return done


def shell_env(**settings: str) -> dict[str, str]:
    """This process's environment as a user's shell has it, plus `settings`: none of the RAY_*
    variables a Ray driver in this process (the Ray tests' cluster) put there, so a `composer`
    subprocess starts or joins the Ray it is told to, not this one."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **settings}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 200 else text[:200] + "..."


def assert_close(actual, expected, tol: float = 1e-5, where: str = "") -> None:
    """Deep equality with float tolerance: outputs must match plain pipeline() results."""
    if isinstance(expected, float) or isinstance(actual, float):
        assert abs(float(actual) - float(expected)) <= tol * max(1.0, abs(float(expected))), f"{where}: {actual} != {expected}"
    elif isinstance(expected, dict):
        assert isinstance(actual, dict) and set(actual) == set(expected), f"{where}: keys {_short(actual)} != {_short(expected)}"
        for key in expected:
            assert_close(actual[key], expected[key], tol, f"{where}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, (list, tuple)) and len(actual) == len(expected), f"{where}: {_short(actual)} != {_short(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, tol, f"{where}[{index}]")
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


def stop_requested_at(check: int) -> type:
    """A stand-in for composer.run._StopRequests: Ctrl-C shows up at the `check`-th look the run
    takes between batches (monkeypatch it over composer.run._StopRequests)."""

    class StopRequest:
        checks = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        @property
        def requested(self) -> bool:
            type(self).checks += 1
            return type(self).checks >= check

    return StopRequest
