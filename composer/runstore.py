"""The run folder: its layout, append-only JSONL writers and the manifest.

Layout (DESIGN.md): config.yaml, manifest.json, outputs.jsonl, errors.jsonl, metrics.json, and
Hydra's own .hydra/. A reader needs nothing but this folder.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from collections import Counter
from collections.abc import Callable, Iterator
from enum import Enum
from pathlib import Path
from typing import Any, TypedDict, cast

import yaml

from composer.records import Record, RecordFailure, canonical_json, to_jsonable

CONFIG = "config.yaml"
MANIFEST = "manifest.json"
OUTPUTS = "outputs.jsonl"
ERRORS = "errors.jsonl"
METRICS = "metrics.json"
JOB_ERROR = "job_error.json"  # a sweep job that could not run (composer.sweep)
LOG = "run.log"  # each library warning once with its count, then the summary (composer.runlog)
_CHUNK = 1 << 16
# Space held while a run writes its lines, given back before the closing metrics.json and
# manifest.json: on a disk that fills up mid-run they still fit, and say `failed` and why.
RESERVE = ".composer-reserve"
_RESERVE_BYTES = 1 << 18
# os.write, through a name tests can replace to run out of disk space at a chosen byte.
_write = os.write


# How a run (or the composer command) ends; README "Exit codes". The manifest records the run's.
EXIT_OK, EXIT_RECORD_ERRORS, EXIT_CONFIG, EXIT_ABORTED, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


class RunStatus(str, Enum):
    """Every status a run folder can say it is in. A str, so a manifest holds the plain string
    ("complete"), and a status read back from a file compares equal to its member."""

    # In manifest.json (and each attempt's entry in it):
    RUNNING = "running"  # started and not finished: still going, or the process died (killed, out of memory)
    COMPLETE = "complete"  # every record ran (exit 0)
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # every record ran, some failed (errors.jsonl, exit 1)
    ABORTED = "aborted"  # on_error=fail or max_errors stopped it (exit 3)
    INTERRUPTED = "interrupted"  # Ctrl-C / SIGTERM stopped it; resume finishes it (exit 130)
    FAILED = "failed"  # an exception ended it (manifest `error`, exit 4); also a sweep job's job_error.json
    # A sweep job without a run (composer.sweep.job_outcome):
    CONFIG_ERROR = "config_error"  # job_error.json: the job's config was refused (exit 2)
    MISSING = "missing"  # the job folder holds neither manifest.json nor job_error.json
    UNKNOWN = "unknown"  # a manifest.json without a status

    def __str__(self) -> str:
        return self.value  # in messages and f-strings the plain word, on every Python version


# The statuses of a run that is over and that resume leaves as it is (compare with `in`).
FINISHED = (RunStatus.COMPLETE, RunStatus.COMPLETED_WITH_ERRORS)


class Attempt(TypedDict, total=False):
    """One entry of manifest.json's `attempts`: a run and each resume of it add one."""

    started_at: str  # ISO time (UTC) this attempt began
    skipped: int  # lines (outputs and errors) earlier attempts wrote, not run again
    setup_seconds: float  # stage setup (model loading) of this attempt
    finished_at: str  # ISO time (UTC) this attempt ended
    status: str  # a RunStatus value: how this attempt ended
    records_ok: int  # records this attempt wrote to outputs.jsonl
    records_failed: int  # records this attempt wrote to errors.jsonl
    batches: int  # batches this attempt ran


class Manifest(TypedDict, total=False):
    """manifest.json, every top-level key composer writes, in the order a new run writes them."""

    status: str  # a RunStatus value; "running" until the attempt ends
    name: str  # the config's experiment name
    task: str  # the main model's task
    started_at: str  # ISO time (UTC) of the first attempt
    config_sha256: str  # sha256 of the resolved config's canonical JSON
    overrides: list[str]  # the command-line overrides the run was started with
    seed: int  # the config's seed
    versions: dict[str, Any]  # python and the packages that change results (repro.package_versions)
    git: dict[str, Any]  # commit and dirty flag of the working directory's repository, if any
    platform: dict[str, Any]  # OS, machine and CPU facts (repro.platform_info)
    attempts: list[Attempt]  # one per attempt, oldest first
    input: dict[str, Any]  # the source's data fingerprint; resume refuses a changed input
    deterministic: bool  # whether torch ran with deterministic algorithms
    device: dict[str, Any]  # CUDA availability, devices and version
    allocator: dict[str, Any]  # what composer.allocator.tune_malloc set
    threads: dict[str, Any]  # the thread split between workers and torch (runtime.split_threads)
    executor: dict[str, Any]  # type (local, ray); for ray: version, cluster resources, actors, per-actor timings
    stages: dict[str, dict[str, Any]]  # per stage: kind, type, inputs, reads, writes, fingerprint and its own facts
    exit_code: int  # how the last attempt ended (EXIT_*)
    finished_at: str  # ISO time (UTC) the last attempt ended
    counts: dict[str, int]  # records_in, records_ok, records_failed (from the files); batches (attempts that ended)
    timings: dict[str, Any]  # the last attempt's wall, processing and per-stage seconds
    peak_memory: dict[str, Any]  # the last attempt's peak RSS (and CUDA) bytes, and where the RSS came from
    error: dict[str, str] | None  # type, message (and traceback) of what ended the run; None if nothing did
    warnings: list[dict[str, Any]]  # library warnings of the last attempt, each once with its count (composer.runlog)


def read_manifest(run_dir: Path) -> Manifest:
    """The manifest.json of the run in `run_dir` (OSError when absent, ValueError when not JSON)."""
    return cast(Manifest, read_json(run_dir / MANIFEST))


def write_manifest(run_dir: Path, manifest: Manifest) -> None:
    """Write the manifest.json of `run_dir` atomically (see write_json); statuses as plain strings."""
    write_json(run_dir / MANIFEST, cast(dict, manifest))


def now() -> str:
    """The time now (UTC), as manifests write it."""
    return dt.datetime.now(dt.timezone.utc).isoformat()


def new_manifest(config: dict[str, Any], overrides: list[str]) -> Manifest:
    """A manifest's opening facts, shared by a run and a server: what runs (name, task, the
    config's hash, overrides, seed) and on what (versions, git, platform); status running."""
    from composer.repro import git_state, package_versions, platform_info

    return {
        "status": RunStatus.RUNNING,
        "name": config["name"],
        "task": config["task"],
        "started_at": now(),
        "config_sha256": hashlib.sha256(canonical_json(config).encode()).hexdigest(),
        "overrides": overrides,
        "seed": config["seed"],
        "versions": package_versions(),
        "git": git_state(Path.cwd()),
        "platform": platform_info(),
    }


def _hold_reserve(folder: Path) -> None:
    path = folder / RESERVE
    if path.exists():
        return
    try:
        path.write_bytes(os.urandom(_RESERVE_BYTES))  # not zeros: a compressing filesystem stores those in no space
    except OSError:
        path.unlink(missing_ok=True)  # no room even for that: the run goes on, it fails at its first line


def release_reserve(folder: Path) -> None:
    (folder / RESERVE).unlink(missing_ok=True)


class RunFolderError(ValueError):
    """What a run folder holds cannot be read (a damaged line); the message says which file,
    which line, and what to do."""


class WriteFailed(OSError):
    """A run folder file could not be written (disk full, I/O error); what was written before stays."""


class JsonlAppender:
    """Appends JSON lines, each batch in one unbuffered write, so a crash loses at most the batch
    in flight. A write that fails (disk full) is taken back whole, so the file holds the lines
    before that batch and nothing else, and nothing stays buffered for close() to fail on. While
    open it holds the folder's space reserve (RESERVE), given back when it closes."""

    def __init__(self, path: Path):
        self.path = path
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.count = 0
        _hold_reserve(path.parent)

    def write_many(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        data = "".join(json.dumps(to_jsonable(row), ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        view = memoryview(data)
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            while view:
                view = view[_write(self._fd, view):]
        except OSError as error:
            try:
                os.ftruncate(self._fd, start)  # needs no space: the batch's lines go, whole or not
            except OSError:
                pass  # a torn last line then stays; resume cuts it
            raise WriteFailed(
                error.errno,
                f"could not write {self.path.name} in {self.path.parent}: {error.strerror or error} "
                f"(the lines written before are kept; once the cause is fixed, `composer resume {self.path.parent}` "
                "finishes the run)",
            ) from None
        self.count += len(rows)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        release_reserve(self.path.parent)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a manifest, and a
    write that fails (disk full) leaves the previous file whole and no temp file behind."""
    temporary = path.with_suffix(path.suffix + ".tmp")
    try:
        temporary.write_text(json.dumps(to_jsonable(data), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return list(iter_jsonl(path))


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def iter_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Stream the JSON lines of a run folder file (nothing if it does not exist); a line that is
    not a JSON object with an id raises RunFolderError naming the file and the line."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                row = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as error:
                raise damaged_line(path, number, f"is not valid JSON ({error})") from None
            if not isinstance(row, dict) or "id" not in row:
                raise damaged_line(path, number, "is not a record (a JSON object with an id)")
            yield row


def damaged_line(path: Path, number: int, what: str) -> RunFolderError:
    """The error for line `number` of a run folder's `path`, which `what` (e.g. "is not valid JSON")."""
    return RunFolderError(
        f"{path} line {number} {what}: the file was edited or damaged after composer wrote it. "
        f"Repair that line, or cut the file before it (head -n {number - 1}) so that the records from "
        "there on run again, then resume"
    )


class ResumeRefused(Exception):
    """The folder holds a run that this config cannot continue."""


class FolderRefused(ResumeRefused):
    """The folder is not one composer may write a run into (a file, or another program's folder)."""


# What may be in a folder without a manifest.json that a run still starts in: Hydra's own
# files (it makes .hydra/ and <app>.log before the job starts), the config.yaml written just
# before the first manifest, and a sweep job's record of an earlier failure.
_BEFORE_MANIFEST = (".hydra", CONFIG, JOB_ERROR, MANIFEST + ".tmp", RESERVE)


def check_run_folder(run_dir: Path) -> None:
    """Raise FolderRefused, before anything is written, when `run_dir` is not a folder composer
    may put a run into: not a folder (a file, /dev/null), under a file, not writable, or a
    folder holding files of another program (its own outputs.jsonl, which a run would append
    to). An empty or new folder, and one of composer's own runs (to resume), pass."""
    if run_dir.exists() and not run_dir.is_dir():
        raise FolderRefused(f"{run_dir} is not a folder (a file or device is there); set hydra.run.dir to a folder")
    nearest = run_dir if run_dir.exists() else next((p for p in run_dir.parents if p.exists()), None)
    if nearest is not None and not nearest.is_dir():
        raise FolderRefused(f"{run_dir} cannot be made: {nearest} is not a folder; set hydra.run.dir to a folder")
    if nearest is not None and not os.access(nearest, os.W_OK | os.X_OK):
        raise FolderRefused(f"cannot write into {nearest} (no permission, or a read-only filesystem); "
                            "set hydra.run.dir to a folder you can write")
    if nearest is not run_dir:
        return
    manifest = run_dir / MANIFEST
    if manifest.exists():
        try:
            data = read_json(manifest)
        except (OSError, ValueError):
            data = None
        if not (isinstance(data, dict) and "status" in data and "attempts" in data and (run_dir / CONFIG).is_file()):
            raise FolderRefused(f"{run_dir} holds a manifest.json that composer did not write (or a run folder without its "
                                "config.yaml): a run goes into a new or empty folder, or into one of composer's runs to resume it")
        return
    foreign = sorted(p.name for p in run_dir.iterdir() if p.name not in _BEFORE_MANIFEST and p.suffix != ".log")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise FolderRefused(f"{run_dir} was not made by composer (it holds {shown} and no manifest.json), so nothing is "
                            "written into it: choose a new or empty folder with hydra.run.dir=...")


def flatten(value: Any, prefix: str = "", *, lists: bool = False) -> dict[str, Any]:
    """Nested dicts as {dotted.key: leaf}; empty dicts are leaves, and so are lists unless `lists`
    asks for their items as key[i] (a config diff then names the exact leaf that changed)."""
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(flatten(item, f"{prefix}.{key}" if prefix else str(key), lists=lists))
        return flat
    if lists and isinstance(value, list) and value:
        flat = {}
        for index, item in enumerate(value):
            flat.update(flatten(item, f"{prefix}[{index}]", lists=True))
        return flat
    return {prefix: value}


def differences(old: dict[str, Any], new: dict[str, Any], ignored: frozenset[str] = frozenset()) -> list[str]:
    """'key: old -> new' for every leaf that differs, ignoring the given top-level keys."""
    before, after = flatten(old), flatten(new)
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


def previous_attempt(run_dir: Path, config: dict[str, Any], neutral: frozenset[str],
                     normalize: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any] | None:
    """The manifest of an earlier attempt in this folder, if it may be continued with `config`.

    `neutral` names the settings that never change a record's output (schema.OUTPUT_NEUTRAL_KEYS):
    they may differ. Both configs are compared after `normalize` (schema.with_defaults), so a
    folder written by a version that stated more or fewer defaults still resumes.
    Raises ResumeRefused naming every setting that changed since then.
    """
    if not (run_dir / MANIFEST).exists():
        return None
    manifest = read_json(run_dir / MANIFEST)
    changed = differences(normalize(read_config(run_dir)), normalize(config), neutral)
    if changed:
        listing = "\n".join(f"  - {line}" for line in changed)
        raise ResumeRefused(
            f"{run_dir} holds a run with another config, so it cannot be continued:\n{listing}\n"
            "Choose a new folder with hydra.run.dir=..., or run again with the same config to resume."
        )
    return manifest


# A sweep folder's record of itself (composer.sweep): the command's overrides, every job's
# overrides in Hydra's order, the launcher, and each job's state; `composer resume SWEEP_DIR`.
SWEEP_STATE = "sweep.json"
