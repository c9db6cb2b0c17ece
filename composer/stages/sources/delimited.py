"""The CSV (or TSV) source: read as bytes and decoded per row, so bytes that are not UTF-8 fail
their row alone; rows whose quoted fields span lines are reported once the file is read, since
a stray quote makes such rows too."""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterator
from typing import Any

from composer.records import RecordFailure
from composer.stages.sources.base import SURROGATE
from composer.stages.sources.files import BOM, FileSource, known_signature, looks_binary

# Input that composer read, but that the user should look at (CSV fields spanning lines): a
# warning on stderr (and in run.log and the manifest's warnings, during a run).
log = logging.getLogger("composer.input")

_LINE_BREAK = re.compile("\r\n|\r|\n")


class CsvSource(FileSource):
    """A CSV file with a header row, read as bytes and decoded per row: a row holding bytes that
    are not UTF-8 fails alone (they reach it as surrogate escapes, see RowSource._unwritable).

    A quoted field may span lines, as CSV allows; but a stray quote makes one too, swallowing the
    lines after it into one field, so every row spanning lines is reported once the file is read
    (a warning with their line numbers, and `multiline_rows` in the manifest's source facts)."""

    surrogate_escapes = True
    rows_checked = True  # only a row with undecodable bytes holds surrogates (escapes): rows() fails it

    def __init__(self, name: str, *, path: str, delimiter: str = ",", **common: Any):
        super().__init__(name, path=path, **common)
        self.delimiter = "\t" if delimiter == "tab" else delimiter
        self.multiline_rows: list[tuple[int, int]] = []  # (first line, last line) of each row spanning lines

    def rows(self) -> Iterator[tuple[str, Any]]:
        self.multiline_rows = []
        name = self.display_name
        with self.path.open("rb") as raw:
            # newline="": the csv module splits rows itself (a quoted field may hold line breaks).
            handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(handle, delimiter=self.delimiter)
            try:
                header = next(reader, None)
                if header is None:
                    return
                # Column names with bytes that are not UTF-8 keep U+FFFD in their place (the
                # other columns still work); bad bytes in a row fail that row.
                header = [column.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for column in header]
                failed_at = None
                while True:
                    try:
                        fields = next(reader)
                    except StopIteration:
                        return
                    except csv.Error as error:  # a field over csv.field_size_limit(): that row fails, reading goes on
                        line = reader.line_num
                        yield f"row {line} of {self.display_name}", RecordFailure(
                            f"row-{line}", self.name, "csv.Error", f"the row ending on line {line} of {self.display_name}: {error}"
                        )
                        if failed_at == line:
                            return  # no progress: the reader cannot go past it
                        failed_at = line
                        continue
                    if not fields:
                        continue  # a blank line (csv.DictReader skips them too)
                    joined = "".join(fields)
                    # reader.line_num: the file line the row ends on (the header is line 1).
                    position = self._position(reader.line_num, fields) if "\n" in joined or "\r" in joined \
                        else f"row {reader.line_num} of {name}"
                    row = dict(zip(header, fields)) if len(fields) == len(header) else self._row(header, fields)
                    failure = self._unwritable(position, row) if SURROGATE.search(joined) else None
                    yield position, failure or row
            finally:
                self._report_multiline()

    def _position(self, end: int, fields: list[str]) -> str:
        """Where a row whose fields hold line breaks is: it ends on line `end` and starts as many
        lines before as its fields hold line breaks (CRLF counts one, as in the file)."""
        start = end - sum(len(_LINE_BREAK.findall(value)) for value in fields)
        if start == end:
            return f"row {start} of {self.display_name}"
        self.multiline_rows.append((start, end))
        return f"row {start} of {self.display_name} (lines {start}-{end})"

    @staticmethod
    def _row(header: list[str], fields: list[str]) -> dict[Any, Any]:
        """The row as csv.DictReader makes it: extra fields in a list under None, missing ones None."""
        row: dict[Any, Any] = dict(zip(header, fields))
        if len(fields) > len(header):
            row[None] = fields[len(header):]
        for name in header[len(fields):]:
            row.setdefault(name, None)
        return row

    def _report_multiline(self) -> None:
        spans = self.multiline_rows
        if not spans:
            return
        listed = ", ".join(f"{a}-{b}" for a, b in spans[:10]) + (f" and {len(spans) - 10} more" if len(spans) > 10 else "")
        a, b = max(spans, key=lambda span: span[1] - span[0])
        longest = f"; the longest: lines {a}-{b}" if len(spans) > 1 else ""
        log.warning(
            f"{self.display_name}: {len(spans)} row{'s' if len(spans) > 1 else ''} with a quoted field spanning lines "
            f"(lines {listed}{longest}). Quoted line breaks are valid CSV, but a stray '\"' makes one too, "
            "swallowing the lines after it into one field: check these lines"
        )

    def sniff(self) -> str | None:
        """Refused when it holds a known binary format, or its header line is binary data."""
        head, _ = self._head()
        head = head[len(BOM):] if head.startswith(BOM) else head
        signature = known_signature(head)
        if signature:
            return f"is not CSV: it holds {signature}"
        header = head.splitlines()[0] if head.strip() else b""
        if header and looks_binary(header):
            return f"is not CSV: it holds binary data (its header line has NUL or control bytes: {header[:24]!r})"
        return None

    def describe(self) -> dict[str, Any]:
        if not self.multiline_rows:
            return {}
        return {"multiline_rows": {"count": len(self.multiline_rows), "lines": [list(s) for s in self.multiline_rows[:100]]}}
