"""The Parquet source: rows read in record batches; the file is refused at planning unless it has
the Parquet magic bytes at both ends, and its footer is read at setup, before any model loads."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from composer.stages.sources.files import FileSource, excerpt, known_signature, looks_binary


class ParquetSource(FileSource):
    """A Parquet file, read in record batches."""

    def rows(self) -> Iterator[tuple[str, Any]]:
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield f"row {number} of {self.display_name}", row

    def sniff(self) -> str | None:
        """Refused unless it starts and ends with the Parquet magic bytes (setup reads its footer)."""
        head, size = self._head()
        if head.startswith(b"PAR1") and size >= 12:
            with self.path.open("rb") as handle:
                handle.seek(-4, 2)
                if handle.read(4) == b"PAR1":
                    return None
            return "is not a whole Parquet file: it starts like one but does not end with the footer's b'PAR1' (cut short?)"
        if not head:
            return "is not a Parquet file: it is empty"
        signature = known_signature(head)
        if signature:
            return f"is not a Parquet file: it holds {signature}"
        if looks_binary(head[:4096]):
            return f"is not a Parquet file: it holds binary data that does not start with b'PAR1' (starts {head[:16]!r})"
        text = head[:4096].decode("utf-8", "replace")
        kind = "JSON Lines (use input=jsonl)" if text.lstrip().startswith("{") else "text"
        return f"is not a Parquet file: it holds {kind}, starting {excerpt(text)}"

    def setup(self) -> None:
        """Read the footer now: a damaged one is an input error before any model loads."""
        import pyarrow.parquet as pq

        from composer.schema import ConfigError, ConfigIssue

        try:
            pq.ParquetFile(self.path).metadata
        except Exception as error:  # noqa: BLE001 - pyarrow's errors: ArrowInvalid, OSError
            raise ConfigError([ConfigIssue("input.path", f"{self.path} is not a readable Parquet file: {error}")]) from None

    def total(self) -> int | None:
        import pyarrow.parquet as pq

        rows = pq.ParquetFile(self.path).metadata.num_rows
        return min(rows, self.limit) if self.limit else rows
