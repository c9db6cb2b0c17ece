"""The JSON Lines source: read as bytes, split on b"\\n" only and decoded line by line, so one
line that is not UTF-8, not JSON or not an object fails alone; and its sniff, which refuses a
file none of whose first lines is a JSON object or string."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

from composer.records import RecordFailure
from composer.stages.sources.base import MAX_NESTING, latin1_hint
from composer.stages.sources.files import BOM, FileSource, excerpt, known_signature, looks_binary

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# strict=False: a control character (a bare \r, a tab) inside a string is kept, not an error.
# Made once: json.loads(..., strict=False) would build a decoder for every line.
_JSON = json.JSONDecoder(strict=False)


def _decode_problem(error: UnicodeDecodeError) -> str:
    bad = error.object[error.start:error.end]
    return f"byte 0x{bad[0]:02x} at column {error.start + 1} ({error.reason}){latin1_hint(bad[0])}"



class JsonlSource(FileSource):
    """One JSON object (or string) per line; blank lines are skipped, bad lines become errors.

    Read as bytes and split on b"\n" only (a bare \r inside a line is the line's, and JSON
    takes it as whitespace or, inside a string, as the character); each line is decoded on its
    own, so one line that is not UTF-8 fails alone. Lines of ASCII whitespace are skipped.
    """

    rows_checked = True

    def rows(self) -> Iterator[tuple[str, Any]]:
        name = self.display_name
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(BOM):  # a byte-order mark (files saved on Windows) is not line 1's
                    raw = raw[len(BOM):]
                if not raw.strip():
                    continue
                position = f"line {number} of {name}"
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    yield position, RecordFailure(
                        f"line-{number}", self.name, "UnicodeDecodeError", f"{position} is not valid UTF-8: {_decode_problem(error)}"
                    )
                    continue
                try:
                    row = _JSON.decode(line)
                except (ValueError, RecursionError) as error:  # JSONDecodeError, too many digits, too deep
                    yield position, RecordFailure(f"line-{number}", self.name, type(error).__name__, f"{position}: {error}")
                    continue
                if not isinstance(row, (dict, str)):
                    yield position, RecordFailure(
                        f"line-{number}", self.name, "TypeError",
                        f"{position}: expected a JSON object or string, got {type(row).__name__}",
                    )
                    continue
                # Strictly decoded UTF-8 holds no surrogate: only a \udXXX escape makes one; and
                # a row is no deeper than its brackets. Only such lines are walked.
                if _SURROGATE_ESCAPE.search(raw) or raw.count(b"[") + raw.count(b"{") > MAX_NESTING:
                    failure = self._unwritable(position, row)
                    if failure is not None:
                        yield position, failure
                        continue
                yield position, row

    def sniff(self) -> str | None:
        """Refused when the first 64 KiB hold no line that is a JSON object or string (one bad
        line among good ones is that record's error, not the file's), saying what they hold."""
        head, size = self._head()
        whole = len(head) == size
        head = head[len(BOM):] if head.startswith(BOM) else head
        signature = known_signature(head)
        if signature:
            return f"is not JSON Lines: it holds {signature}"
        lines = head.split(b"\n")
        if not whole and len(lines) > 1:
            lines.pop()  # cut by the sample: judged from the lines it holds whole
        long_line = not whole and len(lines) == 1  # one line longer than the sample
        problem = None
        for number, raw in enumerate(lines, start=1):
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                if not (long_line and error.reason == "unexpected end of data"):
                    problem = problem or f"line {number} is not UTF-8: {_decode_problem(error)}"
                    continue
                text = raw[:error.start].decode("utf-8", "replace")  # cut mid-character by the sample
            if long_line:
                if text.lstrip().startswith(("{", '"')):
                    return None
                problem = f"line 1 starts {excerpt(text)}"
                continue
            try:
                row = _JSON.decode(text)
            except (ValueError, RecursionError) as error:
                problem = problem or f"line {number} reads {excerpt(text)} ({error})"
                continue
            if isinstance(row, (dict, str)):
                return None
            problem = problem or f"line {number} is a JSON {type(row).__name__}, not an object"
        if problem is None:
            return None  # empty, or blank lines only: no records, not a wrong kind of file
        scope = "of its first 64 KiB " if not whole else ""
        if looks_binary(head):
            return f"is not JSON Lines: it holds binary data (no line {scope}is a JSON object)"
        return f"is not JSON Lines: no line {scope}is a JSON object or string ({problem})"

    def total(self) -> int | None:
        self.data_fingerprint()
        lines = self._scan["lines"]
        if self._scan["bytes"] and not self._ends_with_newline():
            lines += 1  # the last line has no newline but is still a row
        return min(lines, self.limit) if self.limit else lines

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, 2)
            return handle.read(1) == b"\n"
