"""What every local-file source shares: the file hashed and counted in one pass for the manifest,
its display name, and the check at planning (no heavy import) that the file is the kind its
`input` says, with the helpers that name what a mistaken file holds (known binary signatures,
control bytes), so the refusal says what to do instead."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from composer.repro import sha256_file
from composer.stages.base import Stage
from composer.stages.sources.base import RowSource

BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 1 << 16
# The first bytes of files that are not text, for saying what a mistaken input file holds.
SIGNATURES = (
    (b"PAR1", "Parquet data (use input=parquet)"),
    (b"\x1f\x8b", "gzip-compressed data (decompress it first)"),
    (b"BZh", "bzip2-compressed data (decompress it first)"),
    (b"\xfd7zXZ\x00", "xz-compressed data (decompress it first)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed data (decompress it first)"),
    (b"PK\x03\x04", "a zip archive (xlsx, docx and jar files are zip archives too)"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"%PDF-", "a PDF document"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"ARROW1", "Arrow IPC data"),
    (b"\x93NUMPY", "a NumPy array"),
    (b"\x80\x04\x95", "a Python pickle"),
    (b"\xff\xfe\x00\x00", "UTF-32 text (save it as UTF-8)"),
    (b"\x00\x00\xfe\xff", "UTF-32 text (save it as UTF-8)"),
    (b"\xff\xfe", "UTF-16 text (save it as UTF-8)"),
    (b"\xfe\xff", "UTF-16 text (save it as UTF-8)"),
)
_CONTROL = re.compile(rb"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")


def known_signature(head: bytes) -> str | None:
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


def looks_binary(data: bytes) -> bool:
    """NUL bytes, or more than 1 in 20 bytes a control character no text file holds."""
    return b"\x00" in data or len(_CONTROL.findall(data)) * 20 > len(data)



def excerpt(text: str, width: int = 60) -> str:
    return ascii(text if len(text) <= width else text[:width] + "...")



class FileSource(RowSource):
    """A local file, hashed and counted in one pass so the manifest can pin the exact input."""

    def __init__(self, name: str, *, path: str, **common: Any):
        super().__init__(name, **common)
        self.path = Path(path).expanduser()
        # The file's name in positions ('line 7 of data.jsonl'): a name whose bytes are not UTF-8
        # holds surrogate escapes, which no errors.jsonl line could be written with.
        self.display_name = self.path.name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        self._scan: dict[str, Any] | None = None

    def bind(self, stages: dict[str, Stage]) -> list[Any]:
        """Also check, from the file's first bytes (no heavy import: `composer plan` stays fast),
        that it is the kind of file the source reads; else a config issue at input.path names
        the file and what it holds, before any model loads."""
        from composer.schema import ConfigIssue

        issues = super().bind(stages)
        if self.path.is_file():  # a missing file is the schema's issue
            try:
                problem = self.sniff()
            except OSError as error:
                problem = f"cannot be read: {error.strerror or error}"
            if problem:
                issues.append(ConfigIssue("path", f"{self.path} {problem}"))
        return issues

    def sniff(self) -> str | None:
        """Why the file is not what this source reads ("is not JSON Lines: ..."), or None."""
        return None

    def _head(self) -> tuple[bytes, int]:
        """The file's first SNIFF_BYTES bytes and its size."""
        with self.path.open("rb") as handle:
            head = handle.read(SNIFF_BYTES)
            handle.seek(0, 2)
            return head, handle.tell()

    def data_fingerprint(self) -> dict[str, Any]:
        if self._scan is None:
            digest, newlines, size = sha256_file(self.path, count=b"\n")
            self._scan = {"kind": "file", "path": str(self.path.resolve()), "sha256": digest, "bytes": size, "lines": newlines}
        return {k: v for k, v in self._scan.items() if k != "lines"}

    def total(self) -> int | None:
        self.data_fingerprint()
        return None
