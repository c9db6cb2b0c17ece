"""An opt-in cache of model-stage outputs, shared by runs and sweep jobs (`cache=on`).

Keys are built from exactly what changes a record's model output (DESIGN.md, the way DVC and
Ludwig key their caches): the model stage's fingerprint (its config, and the weights' revision
sha or content hash, dtype, quantization, device), the fingerprints of every stage upstream of
it, and the record's model input. Batch size, threads and the like are not in the key, so they
hit.

Storage is one SQLite file in WAL mode rather than a file per key: a 100k-record run would
otherwise leave 100k small files, while SQLite gives atomic per-batch transactions, and WAL lets
readers carry on while a writer commits. Concurrent sweep jobs (separate processes) wait on each
other through SQLite's busy timeout, with a retry loop on top for "database is locked".
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from composer.records import canonical_json

T = TypeVar("T")
_RETRIES = 20
_KEYS_PER_QUERY = 500  # SQLite before 3.32 allows 999 variables per statement; a window may hold more records


def default_path() -> Path:
    root = os.environ.get("COMPOSER_CACHE_DIR") or Path.home() / ".cache" / "composer"
    return Path(root) / "results.sqlite"


def record_key(stage_fingerprint: str, upstream_fingerprint: str, model_input: Any) -> str:
    payload = canonical_json([stage_fingerprint, upstream_fingerprint, model_input])
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResultCache:
    """Model outputs by key, in a SQLite file safe for many processes at once."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # One connection for the run, used by its model worker threads one at a time (the lock).
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        self._retry(lambda: self._db.execute("PRAGMA journal_mode=WAL"))
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._retry(lambda: self._db.execute(
            "CREATE TABLE IF NOT EXISTS results (key TEXT PRIMARY KEY, value TEXT NOT NULL, created REAL NOT NULL)"
        ))

    def _retry(self, operation: Callable[[], T]) -> T:
        for attempt in range(_RETRIES):
            try:
                with self._lock:
                    return operation()
            except sqlite3.OperationalError as error:
                if "locked" not in str(error) and "busy" not in str(error) or attempt == _RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    def _select_keys(self, columns: str, keys: list[str]) -> list[tuple]:
        """Rows of the results among `keys`, asked _KEYS_PER_QUERY keys at a time."""
        rows: list[tuple] = []
        for start in range(0, len(keys), _KEYS_PER_QUERY):
            chunk = keys[start:start + _KEYS_PER_QUERY]
            query = f"SELECT {columns} FROM results WHERE key IN ({','.join('?' * len(chunk))})"
            rows += self._retry(lambda: self._db.execute(query, chunk).fetchall())
        return rows

    def get_many(self, keys: list[str]) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in self._select_keys("key, value", keys)}

    def present(self, keys: list[str]) -> set[str]:
        """The keys that have a result, without reading the results (embeddings are large)."""
        return {key for (key,) in self._select_keys("key", list(dict.fromkeys(keys)))}

    def put_many(self, items: dict[str, Any]) -> None:
        if not items:
            return
        rows = [(key, json.dumps(value, ensure_ascii=False), time.time()) for key, value in items.items()]

        def write() -> None:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT OR IGNORE INTO results (key, value, created) VALUES (?, ?, ?)", rows)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

        self._retry(write)

    def info(self) -> dict[str, Any]:
        entries = self._retry(lambda: self._db.execute("SELECT COUNT(*) FROM results").fetchone()[0])
        size = sum(p.stat().st_size for p in self.path.parent.glob(self.path.name + "*") if p.is_file())
        return {"path": str(self.path), "entries": entries, "bytes": size}

    def clear(self) -> int:
        removed = self._retry(lambda: self._db.execute("DELETE FROM results").rowcount)
        self._retry(lambda: self._db.execute("VACUUM"))
        return removed

    def close(self) -> None:
        self._db.close()
