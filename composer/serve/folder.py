"""The server's run folder, laid out like a run's (runstore): config.yaml, manifest.json with the
server's facts, outputs.jsonl (appended by the graph's outputs sink as rounds finish) and
errors.jsonl (every record refused or failed, with its id, stage, error type and message)."""

from __future__ import annotations

import datetime as dt
import os
import threading
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from composer import runstore
from composer.records import RecordFailure
from composer.runstore import RunStatus


def default_path(config: dict[str, Any]) -> Path:
    """serve.run_dir, else ${runs_root}/${name}/<timestamp>-serve."""
    chosen = (config.get("serve") or {}).get("run_dir")
    if chosen:
        return Path(chosen)
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S-%f")
    return Path(config["runs_root"]) / str(config["name"]) / f"{stamp}-serve"


class ServerFolder:
    """Claims a new folder (runstore.check_run_folder: never another program's files), writes
    config.yaml and a manifest saying `running`, and appends errors.jsonl from any thread."""

    def __init__(self, path: Path, config: dict[str, Any], overrides: list[str]):
        runstore.check_run_folder(path)
        if (path / runstore.MANIFEST).exists():
            raise runstore.FolderRefused(f"{path} already holds a run or a server's log: choose a new serve.run_dir")
        path.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(config), path / runstore.CONFIG)
        self.path = path
        self.manifest: dict[str, Any] = {**runstore.new_manifest(config, overrides),
                                         "server": {"pid": os.getpid(), "settings": dict(config["serve"])}}
        self._lock = threading.Lock()
        self._errors = runstore.JsonlAppender(path / runstore.ERRORS)
        self.write()

    def write(self) -> None:
        with self._lock:
            runstore.write_json(self.path / runstore.MANIFEST, self.manifest)

    def update(self, **facts: Any) -> None:
        with self._lock:
            self.manifest.update(facts)
        self.write()

    def log_failures(self, failures: list[RecordFailure]) -> None:
        with self._lock:
            self._errors.write_many(failures)

    def close(self, exit_code: int, error: dict[str, str] | None, requests: dict[str, int]) -> None:
        """The manifest's closing facts: status, exit code, counts from the files, requests by
        status; complete (or completed_with_errors) when the server stopped cleanly."""
        with self._lock:
            self._errors.close()
        ok, failed = runstore.count_lines(self.path / runstore.OUTPUTS), runstore.count_lines(self.path / runstore.ERRORS)
        if exit_code != runstore.EXIT_OK:
            status = RunStatus.FAILED
        else:
            status = RunStatus.COMPLETE if failed == 0 else RunStatus.COMPLETED_WITH_ERRORS
        self.manifest["server"]["requests"] = requests
        self.update(status=status, exit_code=exit_code, finished_at=runstore.now(), error=error,
                    counts={"records_in": ok + failed, "records_ok": ok, "records_failed": failed})
