"""Where a sweep's study lives: its name, and whether its storage (hydra.sweeper.storage, a
database URL) can be opened and holds it. Read by the sweeper and, before a sweep starts, by
composer.multirun (so that a resume that cannot find its study is refused before any job runs).
Optuna is imported only when a storage is opened."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class StorageUnavailable(Exception):
    """The storage cannot be opened here; the message says why (the driver's own words)."""


def study_name(configured: str | None, sweep_dir: str | Path) -> str:
    """The study's name: `hydra.sweeper.study_name`, else the sweep folder's absolute path, so
    that the same folder finds the same study in its storage again."""
    return str(configured) if configured else str(Path(sweep_dir).resolve())


def sqlite_file(url: str) -> Path | None:
    """The database file of an SQLite URL (sqlite:///relative.db, sqlite:////absolute.db), None
    for another database or SQLite in memory."""
    if not url.startswith("sqlite:///"):
        return None
    database = url[len("sqlite:///"):].split("?", 1)[0]
    return Path(database) if database and database != ":memory:" else None


def open_storage(url: str) -> Any:
    """An optuna RDBStorage on `url` (its tables created where missing); StorageUnavailable
    naming the cause when it cannot be opened (no driver, a wrong URL, a server not reachable, a
    file that cannot be written, a schema of another Optuna version)."""
    if not isinstance(url, str) or not url:
        raise StorageUnavailable(f"{url!r} is not a database URL (sqlite:///study.db, postgresql://..., mysql://...)")
    from optuna.storages import RDBStorage

    try:
        return RDBStorage(url)
    except Exception as error:  # noqa: BLE001 - any driver's failure: say which and why
        raise StorageUnavailable(f"{type(error).__name__}: {error}") from error


def has_study(url: str, name: str) -> bool:
    """Whether the storage at `url` holds a study named `name`; an SQLite file that does not
    exist holds none (and is not created). StorageUnavailable when it cannot be opened."""
    database = sqlite_file(url)
    if database is not None and not database.exists():
        return False
    storage = open_storage(url)
    try:
        storage.get_study_id_from_name(name)
    except KeyError:
        return False
    finally:
        storage.remove_session()
    return True


def can_create(url: str, sweep_dir: str | Path) -> None:
    """StorageUnavailable when a new sweep could not open or create its study at `url`: an SQLite
    file in a folder that does not exist and is not the sweep folder (made when the sweep starts)
    or in it; another database that cannot be opened. Nothing is created for SQLite."""
    database = sqlite_file(url)
    if database is None:
        open_storage(url).remove_session()
        return
    folder, sweep = database.resolve().parent, Path(sweep_dir).resolve()
    if not (folder.is_dir() or folder == sweep or sweep in folder.parents):
        raise StorageUnavailable(f"the folder of the SQLite file {database} does not exist")
