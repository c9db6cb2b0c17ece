"""The run folder: its layout, append-only JSONL writers and the manifest.

Layout (DESIGN.md): config.yaml, manifest.json, outputs.jsonl, errors.jsonl, metrics.json, and
Hydra's own .hydra/. A reader needs nothing but this folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from composer.records import to_jsonable

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
OUTPUTS = "outputs.jsonl"
ERRORS = "errors.jsonl"
METRICS = "metrics.json"


class JsonlAppender:
    """Appends JSON lines and flushes after each batch, so a crash loses at most the batch in flight."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = path.open("a", encoding="utf-8")
        self.count = 0

    def write_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        self._handle.write("".join(json.dumps(to_jsonable(row), ensure_ascii=False) + "\n" for row in rows))
        self._handle.flush()
        self.count += len(rows)

    def close(self) -> None:
        self._handle.close()


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a manifest."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


class RunFolderInUse(Exception):
    """The folder already holds a run; writing into it would mix two runs."""


def prepare(run_dir: Path) -> None:
    """Create the run folder; refuse one that already holds a run's manifest."""
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / MANIFEST).exists():
        raise RunFolderInUse(
            f"{run_dir} already holds a run (manifest.json exists); choose a new folder with hydra.run.dir=..."
        )
