"""Reproducibility: seeds, environment capture and content fingerprints."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20
TRACKED_PACKAGES = (
    "pipeline-composer", "torch", "transformers", "accelerate", "datasets", "tokenizers",
    "safetensors", "huggingface_hub", "hydra-core", "omegaconf", "numpy", "bitsandbytes", "torchao",
)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path, count: bytes | None = None) -> tuple[str, int, int]:
    """(sha256, occurrences of `count`, size in bytes) of a file, read once in chunks."""
    digest, occurrences, size = hashlib.sha256(), 0, 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
            if count:
                occurrences += chunk.count(count)
    return digest.hexdigest(), occurrences, size


def sha256_tree(path: str | Path) -> str:
    """A content hash of a file or a folder: relative paths and bytes of every file, in order."""
    root = Path(path).expanduser()
    if root.is_file():
        return sha256_file(root)[0]
    digest = hashlib.sha256()
    # `.cache/` inside a model folder holds download bookkeeping, not model content.
    for file in sorted(p for p in root.rglob("*") if p.is_file() and ".cache" not in p.relative_to(root).parts):
        digest.update(file.relative_to(root).as_posix().encode("utf-8") + b"\0")
        digest.update(sha256_file(file)[0].encode("ascii") + b"\n")
    return digest.hexdigest()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch (transformers' set_seed covers all three and CUDA); with
    `deterministic`, torch also refuses nondeterministic kernels instead of using them."""
    random.seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    from transformers import set_seed

    set_seed(seed, deterministic=deterministic)


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_state(cwd: Path) -> dict[str, Any]:
    """The commit and dirty flag of the repository the run was started from, if any."""

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}


def platform_info() -> dict[str, Any]:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_count": os.cpu_count(), "argv": sys.argv}
