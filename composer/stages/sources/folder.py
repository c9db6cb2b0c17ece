"""The folder source: one record per file of a local folder (a path for a load stage to read),
identified by its path relative to the folder, hashed file by file for the manifest."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from composer.repro import sha256_bytes, sha256_file
from composer.stages.sources.base import RowSource


class FolderSource(RowSource):
    """The files of a local folder (recursive by default), one record each, in sorted path order.

    A record holds the file's path under `field` for a load stage to read; its id is the path
    relative to the folder (stable across machines, and it names the file in errors.jsonl), and
    `folder` holds the parent folder's name, the imagefolder convention for a class label
    (`input.label_field=folder`).
    """

    def __init__(
        self,
        name: str,
        *,
        path: str,
        extensions: list[str] | tuple[str, ...] | None = None,
        recursive: bool = True,
        field: str = "path",
        id_field: str | None = None,
        **common: Any,
    ):
        extensions = [e.lower().lstrip(".") for e in extensions] if extensions else None
        super().__init__(name, field=field, id_field=id_field or "relative_path", **common)
        self.root = Path(path).expanduser()
        self.extensions, self.recursive = extensions, recursive

    def files(self) -> list[Path]:
        pattern = self.root.rglob("*") if self.recursive else self.root.glob("*")
        return sorted(
            (p for p in pattern if p.is_file() and (self.extensions is None or p.suffix.lower().lstrip(".") in self.extensions)),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )

    def rows(self) -> Iterator[tuple[str, Any]]:
        for file in self.files():
            relative = file.relative_to(self.root).as_posix()
            yield relative, {"relative_path": relative, self.field: str(file), "folder": file.parent.name}

    def total(self) -> int | None:
        count = len(self.files())
        return min(count, self.limit) if self.limit else count

    def data_fingerprint(self) -> dict[str, Any]:
        files = self.files()
        digest = sha256_bytes("".join(f"{p.relative_to(self.root).as_posix()}\0{sha256_file(p)[0]}\n" for p in files).encode())
        return {"kind": "folder", "path": str(self.root.resolve()), "extensions": self.extensions, "files": len(files), "sha256": digest}
