"""The run folder: its layout, append-only JSONL writers and the manifest.

Layout (DESIGN.md): config.yaml, manifest.json, outputs.jsonl, errors.jsonl, metrics.json, and
Hydra's own .hydra/. A reader needs nothing but this folder.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from composer.records import Record, RecordFailure, to_jsonable

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
OUTPUTS = "outputs.jsonl"
ERRORS = "errors.jsonl"
METRICS = "metrics.json"
_CHUNK = 1 << 16


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
    return list(iter_jsonl(path))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the JSON lines of a file (nothing if it does not exist)."""
    if not path.exists():
        return
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


# Settings that never change a record's output (DESIGN.md: batching does not change outputs), so
# a run may be resumed with other values; any other difference means a different run.
RESUME_IGNORED_KEYS = frozenset({"progress", "threads", "batch_size", "max_errors", "on_error", "cache",
                                 "sort_window", "max_batch_tokens", "prefetch", "workers", "onednn_linear", "tune_malloc"})
FINISHED = ("complete", "completed_with_errors")


class ResumeRefused(Exception):
    """The folder holds a run that this config cannot continue."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def differences(old: dict[str, Any], new: dict[str, Any], ignored: frozenset[str] = frozenset()) -> list[str]:
    """'key: old -> new' for every leaf that differs, ignoring the given top-level keys."""
    before, after = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(before) | set(after)):
        if key.split(".")[0] in ignored or before.get(key, "<unset>") == after.get(key, "<unset>"):
            continue
        lines.append(f"{key}: {before.get(key, '<unset>')!r} -> {after.get(key, '<unset>')!r}")
    return lines


def repair_torn_tail(path: Path) -> bool:
    """Cut a last line that a crash left half-written; True if something was cut."""
    if not path.exists() or path.stat().st_size == 0:
        return False
    with path.open("rb+") as handle:
        end = handle.seek(0, os.SEEK_END)
        handle.seek(end - 1)
        if handle.read(1) == b"\n":
            return False
        position = end
        while position > 0:  # walk back in chunks to the last complete line
            start = max(0, position - _CHUNK)
            handle.seek(start)
            newline = handle.read(position - start).rfind(b"\n")
            if newline >= 0:
                handle.truncate(start + newline + 1)
                return True
            position = start
        handle.truncate(0)
    return True


class Written:
    """What earlier attempts of a run wrote, so that a resumed run skips exactly that.

    A record is done when its id is in outputs.jsonl, or in errors.jsonl from a stage after the
    source (it failed there). A failure the source yields (a bad line, a duplicate id) is done
    when errors.jsonl holds a line with its id and stage not yet matched: it cannot be matched by
    id alone, since a duplicate id's failure carries the id of a record that succeeded, and
    skipping it by that id dropped its line from errors.jsonl on resume.
    """

    def __init__(self, record_ids: set[str] | None = None, failures: Counter[tuple[str, str]] | None = None,
                 lines: int = 0):
        self.record_ids = set(record_ids or ())
        self.failures: Counter[tuple[str, str]] = Counter(failures or {})
        self.lines = lines

    def __len__(self) -> int:
        """Lines written by earlier attempts (outputs and errors)."""
        return self.lines

    def skips(self, item: Record | RecordFailure) -> bool:
        """Whether `item`, the next one the source yields, was finished by an earlier attempt;
        call it once per item, in input order (each error line matches one failure)."""
        if isinstance(item, RecordFailure):
            key = (str(item.id), item.stage)
            if self.failures[key] > 0:
                self.failures[key] -= 1
                return True
            return False
        return str(item["id"]) in self.record_ids


def written_ids(run_dir: Path, source: str = "source") -> Written:
    """What outputs.jsonl and errors.jsonl already hold (`source`: the source stage's name)."""
    written = Written()
    for row in iter_jsonl(run_dir / OUTPUTS):
        written.record_ids.add(str(row["id"]))
        written.lines += 1
    for row in iter_jsonl(run_dir / ERRORS):
        written.failures[(str(row["id"]), str(row.get("stage")))] += 1
        if row.get("stage") != source:
            written.record_ids.add(str(row["id"]))
        written.lines += 1
    return written


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def read_config(run_dir: Path) -> dict[str, Any]:
    """The resolved config a run was started with."""
    return yaml.safe_load((run_dir / CONFIG).read_text(encoding="utf-8"))


def previous_attempt(run_dir: Path, config: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an earlier attempt in this folder, if it may be continued with `config`.

    Raises ResumeRefused naming every setting that changed since then.
    """
    if not (run_dir / MANIFEST).exists():
        return None
    manifest = read_json(run_dir / MANIFEST)
    changed = differences(read_config(run_dir), config, RESUME_IGNORED_KEYS)
    if changed:
        listing = "\n".join(f"  - {line}" for line in changed)
        raise ResumeRefused(
            f"{run_dir} holds a run with another config, so it cannot be continued:\n{listing}\n"
            "Choose a new folder with hydra.run.dir=..., or run again with the same config to resume."
        )
    return manifest
