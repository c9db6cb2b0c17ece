"""Sources: inline records, jsonl/csv/parquet files and `datasets` datasets, all streamed.

Every source turns its rows into records the same way (`RowSource._record`): a stable id from
`id_field` or a content hash, the model input under `field`, the gold label under `label`, and
the `keep` columns. A row that cannot become a record is yielded as a RecordFailure, never
raised, so one bad line does not end the run: bytes that are not UTF-8, a lone surrogate, a line
that is not a JSON object, a value of a type the stage reading it cannot take (a list where a
text task needs text), each fail that record alone, with its line number and the cause.

Files are read as bytes and decoded line by line (JSON Lines split on b"\n" only); a file that
is not what its `input` kind says (binary data as jsonl, text as parquet) is refused at planning,
before any model loads, naming the file and what it holds (`FileSource.bind`).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from composer.records import Record, RecordFailure, canonical_json, content_id
from composer.repro import sha256_bytes, sha256_file, sha256_tree
from composer.stages.base import ModelStage, Source, Stage


# Input that composer read, but that the user should look at (CSV fields spanning lines): a
# warning on stderr (and in run.log and the manifest's warnings, during a run).
log = logging.getLogger("composer.input")

BOM = b"\xef\xbb\xbf"
MAX_NESTING = 100  # deeper rows are a record error: writing them back could exceed Python's recursion limit
_SURROGATE = re.compile("[\ud800-\udfff]")
_LINE_BREAK = re.compile("\r\n|\r|\n")


class RowSource(Source):
    """Common record making for every source; subclasses only say how to read rows."""

    #: True where undecodable bytes reach a row as surrogate escapes (\udc80-\udcff): such a row
    #: is reported as bytes that are not UTF-8 rather than as a lone surrogate.
    surrogate_escapes = False
    #: True where rows() itself fails the rows that could not be written as UTF-8 JSON (it
    #: knows from the bytes which rows need looking at: _unwritable walks every value).
    rows_checked = False

    def __init__(
        self,
        name: str,
        *,
        field: str = "text",
        id_field: str | None = None,
        label_field: str | None = None,
        limit: int | None = None,
        keep: list[str] | tuple[str, ...] = (),
        **params: Any,
    ):
        super().__init__(
            name, {"field": field, "id_field": id_field, "label_field": label_field, "limit": limit, "keep": list(keep), **params}
        )
        self.field, self.id_field, self.label_field, self.limit, self.keep = field, id_field, label_field, limit, list(keep)
        self.writes = ("id", field, *(("label",) if label_field else ()), *self.keep)
        # What the stages reading `field` straight from the source need of its value (bind).
        self.value_checks: list[tuple[str, Callable[[Any], str | None]]] = []

    def bind(self, stages: dict[str, Stage]) -> list[Any]:
        """Learn what the stages reading `field` as the source wrote it need of its value (text for
        a text task's model and for normalize), so a value they cannot take fails its record here,
        naming its line, instead of failing in the stage (or, for a list, running as a batch)."""
        self.value_checks = _value_checks(self, stages)
        return []

    def rows(self) -> Iterator[tuple[str, Any]]:
        """(position, raw row) pairs; position names the row in errors (e.g. 'line 7')."""
        raise NotImplementedError

    def iter_records(self) -> Iterator[Record | RecordFailure]:
        seen: dict[str, int] = {}
        rows = self.rows()
        try:
            for index, (position, row) in enumerate(rows):
                if self.limit is not None and index >= self.limit:
                    return
                yield self._record(position, row, seen)
        finally:
            rows.close()  # now, not at garbage collection: a reader may report what it saw (CsvSource)

    def _record(self, position: str, row: Any, seen: dict[str, int]) -> Record | RecordFailure:
        if isinstance(row, RecordFailure):
            return row
        try:
            return self._make_record(position, row, seen)
        except Exception as error:  # noqa: BLE001 - whatever a row holds, it fails alone
            return RecordFailure(_position_id(position), self.name, type(error).__name__, f"{position}: {error}")

    def _make_record(self, position: str, row: Any, seen: dict[str, int]) -> Record | RecordFailure:
        if not isinstance(row, dict):
            row = {self.field: row}
        if not self.rows_checked:
            failure = self._unwritable(position, row)
            if failure is not None:
                return failure
        if self.id_field:
            if row.get(self.id_field) is None:
                return RecordFailure(position, self.name, "KeyError", f"{position} has no id field {self.id_field!r} (input.id_field)")
            record_id = str(row[self.id_field])
            if record_id in seen:
                return RecordFailure(record_id, self.name, "ValueError", f"{position}: duplicate id {record_id!r} in input.id_field")
            seen[record_id] = 1
        else:
            base = content_id(row)
            seen[base] = seen.get(base, 0) + 1
            record_id = base if seen[base] == 1 else f"{base}-{seen[base]}"
        missing = [f for f in (self.field, *self.keep) if f not in row]
        if missing:
            fields = ", ".join(sorted(map(str, row))) or "none"
            return RecordFailure(
                record_id, self.name, "KeyError",
                f"{position} has no field {missing[0]!r} (fields: {fields}); set input.field/input.keep to existing fields",
            )
        if row[self.field] is None:
            # A short csv row, a column `datasets` filled with null, or an explicit JSON null: the
            # model would fail on it with a message that names neither the row nor the field.
            return RecordFailure(record_id, self.name, "ValueError", f"{position} has no value (null) in field {self.field!r}")
        for reader, check in self.value_checks:
            wrong = check(row[self.field])
            if wrong is not None:
                return RecordFailure(record_id, self.name, "TypeError", f"{position}: field {self.field!r} {wrong}; {reader}")
        record: Record = {"id": record_id, self.field: row[self.field]}
        if self.label_field:
            record["label"] = row.get(self.label_field)
        for name in self.keep:
            record[name] = row[name]
        return record

    def _unwritable(self, position: str, row: Any) -> RecordFailure | None:
        """The failure of a row that cannot be hashed and written as UTF-8 JSON (a lone
        surrogate, bytes that were not UTF-8, nesting too deep); None for a sound row."""
        found = _first_surrogate(row)
        if found is None:
            return None
        record_id = row.get(self.id_field) if self.id_field and isinstance(row, dict) else None
        clean = isinstance(record_id, (str, int)) and not _SURROGATE.search(str(record_id))
        failure_id = str(record_id) if clean else _position_id(position)
        if found == "too deep":
            return RecordFailure(failure_id, self.name, "ValueError", f"{position} is nested more than {MAX_NESTING} levels deep")
        where, char = found
        if self.surrogate_escapes and 0xDC80 <= ord(char) <= 0xDCFF:
            byte = ord(char) - 0xDC00
            return RecordFailure(failure_id, self.name, "UnicodeDecodeError",
                                 f"{position} is not valid UTF-8: byte 0x{byte:02x} in {where}{_latin1_hint(byte)}")
        where = f"field {self.field!r}" if where == "the row" else where  # a JSON string line is the field's value
        return RecordFailure(failure_id, self.name, "UnicodeError",
                             f"{position}: {where} holds a lone surrogate {char!a}, half of a UTF-16 pair, which is not text")


def _position_id(position: str) -> str:
    """The id of a row that has none of its own: its position ('line 7 of a.jsonl' -> 'line-7')."""
    return position.split(" of ")[0].replace(" ", "-")


def _latin1_hint(byte: int) -> str:
    return " (was the file saved as Latin-1 or cp1252? composer reads UTF-8)" if byte >= 0xA0 else ""


def _first_surrogate(row: Any) -> tuple[str, str] | str | None:
    """(where, the character) for the first surrogate code point in a row's keys and strings,
    'too deep' for a row nested more than MAX_NESTING levels, None for a clean row. Iterative:
    a deep row must not exceed the recursion limit here."""
    pending: list[tuple[Any, str, int]] = [(row, "", 0)]
    while pending:
        value, where, depth = pending.pop()
        if depth > MAX_NESTING:
            return "too deep"
        if isinstance(value, str):
            found = _SURROGATE.search(value)
            if found:
                return (f"field {where!r}" if where else "the row"), found.group()
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if isinstance(key, str) and _SURROGATE.search(key):
                    return f"a key under {where!r}" if where else "a field name", _SURROGATE.search(key).group()
                pending.append((item, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(value, (list, tuple)):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in reversed(list(enumerate(value))))
    return None


# Text tasks whose pipelines take one input as a mapping with these keys (text-classification's
# {text, text_pair}), and those that take a chat (a list of {role, content} messages) as one input.
MAPPING_INPUTS = {"text-classification": ("text",), "table-question-answering": ("table", "query")}
CHAT_INPUTS = frozenset({"text-generation"})


def _value_checks(source: RowSource, stages: dict[str, Stage]) -> list[tuple[str, Callable[[Any], str | None]]]:
    """(who reads it, check) for each stage that reads the source's field as the source wrote it
    and needs a certain kind of value: a model stage of a text task (text, or the one structured
    input its pipeline takes), normalize (text), template (text or a number). Stages are looked
    at in graph order; once one rewrites the field, later readers see its value, not the source's."""
    from composer.stages.text import Normalize, Template
    from composer.tasks import task_table

    field, checks = source.field, []
    for stage in stages.values():
        if stage is source:
            continue
        if field in stage.reads:
            if isinstance(stage, ModelStage) and stage.input_field == field:
                info = task_table().tasks.get(str(stage.task))
                if info is not None and info.modality == "text":
                    params = {**stage.build_params, **stage.call_params}
                    checks.append((f"the {info.name} model (stage {stage.name!r}) takes text", _text_input_check(info.name, params)))
            elif isinstance(stage, Normalize) and stage.field == field:
                checks.append((f"stage {stage.name!r} (normalize) takes text", _text_only))
            elif isinstance(stage, Template):
                checks.append((f"stage {stage.name!r} (template) takes text or a number", _scalar_only))
        if field in stage.writes:
            break
    return checks


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"is a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"is a number ({value!r})"
    if isinstance(value, dict):
        return f"is a mapping (keys: {', '.join(map(str, list(value)[:5])) or 'none'})"
    if isinstance(value, (list, tuple)):
        return f"is a list of {len(value)}"
    return f"is {type(value).__name__}"


def _text_only(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{_kind_of(value)}, not text"


def _scalar_only(value: Any) -> str | None:
    return None if isinstance(value, (str, int, float)) else f"{_kind_of(value)}, not text or a number"


def _text_input_check(task: str, params: dict[str, Any]) -> Callable[[Any], str | None]:
    """What one record's input to a text task's pipeline may be: text, or the structured input
    that pipeline takes as one input. A list is a batch to a pipeline (one record would get one
    prediction per item), so it passes only as a chat or, for token-classification with
    is_split_into_words, as words."""
    keys = MAPPING_INPUTS.get(task)

    def check(value: Any) -> str | None:
        if isinstance(value, str):
            return None
        if isinstance(value, dict):
            if keys and all(key in value for key in keys):
                return None
            needs = f" (a {task} input may be a mapping with keys {', '.join(keys)})" if keys else ""
            return f"{_kind_of(value)}, not text{needs}"
        if isinstance(value, list):
            if task in CHAT_INPUTS and value and all(isinstance(m, dict) and "role" in m for m in value):
                return None
            if task == "token-classification" and params.get("is_split_into_words") and all(isinstance(w, str) for w in value):
                return None
            return f"{_kind_of(value)}, not text (the pipeline would run it as a batch of {len(value)} inputs)"
        return f"{_kind_of(value)}, not text"

    return check


class InlineSource(RowSource):
    """Records written in the config itself: strings or mappings."""

    def __init__(self, name: str, *, records: list[Any], **common: Any):
        super().__init__(name, records=list(records), **common)
        self.records = list(records)

    def rows(self) -> Iterator[tuple[str, Any]]:
        for index, row in enumerate(self.records):
            yield f"input.records[{index}]", row

    def total(self) -> int | None:
        return min(len(self.records), self.limit or len(self.records))

    def data_fingerprint(self) -> dict[str, Any]:
        return {"kind": "inline", "sha256": sha256_bytes(canonical_json(self.records).encode("utf-8"))}


class FileSource(RowSource):
    """A local file, hashed and counted in one pass so the manifest can pin the exact input."""

    def __init__(self, name: str, *, path: str, **common: Any):
        super().__init__(name, path=path, **common)
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
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# strict=False: a control character (a bare \r, a tab) inside a string is kept, not an error.
# Made once: json.loads(..., strict=False) would build a decoder for every line.
_JSON = json.JSONDecoder(strict=False)


def _signature(head: bytes) -> str | None:
    return next((name for magic, name in SIGNATURES if head.startswith(magic)), None)


def _looks_binary(data: bytes) -> bool:
    """NUL bytes, or more than 1 in 20 bytes a control character no text file holds."""
    return b"\x00" in data or len(_CONTROL.findall(data)) * 20 > len(data)


def _decode_problem(error: UnicodeDecodeError) -> str:
    bad = error.object[error.start:error.end]
    return f"byte 0x{bad[0]:02x} at column {error.start + 1} ({error.reason}){_latin1_hint(bad[0])}"


def _excerpt(text: str, width: int = 60) -> str:
    return ascii(text if len(text) <= width else text[:width] + "...")


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
        signature = _signature(head)
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
                problem = f"line 1 starts {_excerpt(text)}"
                continue
            try:
                row = _JSON.decode(text)
            except (ValueError, RecursionError) as error:
                problem = problem or f"line {number} reads {_excerpt(text)} ({error})"
                continue
            if isinstance(row, (dict, str)):
                return None
            problem = problem or f"line {number} is a JSON {type(row).__name__}, not an object"
        if problem is None:
            return None  # empty, or blank lines only: no records, not a wrong kind of file
        scope = "of its first 64 KiB " if not whole else ""
        if _looks_binary(head):
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


class CsvSource(FileSource):
    """A CSV file with a header row, read as bytes and decoded per row: a row holding bytes that
    are not UTF-8 fails alone (they reach it as surrogate escapes, see RowSource._unwritable).

    A quoted field may span lines, as CSV allows; but a stray quote makes one too, swallowing the
    lines after it into one field, so every row spanning lines is reported once the file is read
    (a warning with their line numbers, and `multiline_rows` in the manifest's source facts)."""

    surrogate_escapes = True
    rows_checked = True  # only a row with undecodable bytes holds surrogates (escapes): rows() fails it

    def __init__(self, name: str, *, path: str, delimiter: str = ",", **common: Any):
        super().__init__(name, path=path, delimiter=delimiter, **common)
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
                    failure = self._unwritable(position, row) if _SURROGATE.search(joined) else None
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
        signature = _signature(head)
        if signature:
            return f"is not CSV: it holds {signature}"
        header = head.splitlines()[0] if head.strip() else b""
        if header and _looks_binary(header):
            return f"is not CSV: it holds binary data (its header line has NUL or control bytes: {header[:24]!r})"
        return None

    def describe(self) -> dict[str, Any]:
        if not self.multiline_rows:
            return {}
        return {"multiline_rows": {"count": len(self.multiline_rows), "lines": [list(s) for s in self.multiline_rows[:100]]}}


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
        signature = _signature(head)
        if signature:
            return f"is not a Parquet file: it holds {signature}"
        if _looks_binary(head[:4096]):
            return f"is not a Parquet file: it holds binary data that does not start with b'PAR1' (starts {head[:16]!r})"
        text = head[:4096].decode("utf-8", "replace")
        kind = "JSON Lines (use input=jsonl)" if text.lstrip().startswith("{") else "text"
        return f"is not a Parquet file: it holds {kind}, starting {_excerpt(text)}"

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


class DatasetSource(RowSource):
    """Anything `datasets.load_dataset` reads; streamed by default."""

    def __init__(
        self,
        name: str,
        *,
        path: str,
        subset: str | None = None,
        split: str = "train",
        data_files: Any = None,
        streaming: bool = True,
        decode: bool = True,
        **common: Any,
    ):
        super().__init__(
            name, path=path, subset=subset, split=split, data_files=data_files, streaming=streaming, decode=decode, **common
        )
        self.path, self.subset, self.split, self.data_files, self.streaming = path, subset, split, data_files, streaming
        self.decode = decode
        self._dataset: Any = None

    def setup(self) -> None:
        import datasets

        self._dataset = datasets.load_dataset(
            self.path, self.subset, split=self.split, data_files=self.data_files, streaming=self.streaming
        )
        if not self.decode:
            # datasets decodes image/audio columns while iterating, so one corrupt file would end
            # the whole run; undecoded ({bytes, path}) they reach a load stage that fails per record.
            self._dataset = _undecoded(self._dataset)

    def rows(self) -> Iterator[tuple[str, Any]]:
        for number, row in enumerate(self._dataset):
            yield f"row {number} of {self.path}[{self.split}]", row

    def total(self) -> int | None:
        if self.streaming:
            splits = getattr(self._dataset.info, "splits", None) or {}
            count = splits[self.split].num_examples if self.split in splits else None
        else:
            count = len(self._dataset)
        return min(count, self.limit) if count and self.limit else count

    def data_fingerprint(self) -> dict[str, Any]:
        local = [Path(p) for p in self._local_files()]
        fingerprint = {"kind": "dataset", "path": self.path, "subset": self.subset, "split": self.split, "data_files": self.data_files}
        if local:
            fingerprint["sha256"] = sha256_bytes("".join(sha256_tree(p) for p in local).encode())
        else:
            fingerprint["sha256"] = None  # a hub dataset: identified by name, split and config only
        return fingerprint

    def _local_files(self) -> list[str]:
        candidates: list[str] = []
        files = self.data_files
        if isinstance(files, str):
            candidates.append(files)
        elif isinstance(files, list):
            candidates.extend(files)
        elif isinstance(files, dict):
            for value in files.values():
                candidates.extend([value] if isinstance(value, str) else value)
        if not candidates and Path(self.path).expanduser().exists():
            candidates.append(self.path)
        expanded: list[str] = []
        for candidate in candidates:
            matches = sorted(glob.glob(str(Path(candidate).expanduser())))
            expanded.extend(matches)
        return expanded


def _undecoded(dataset: Any) -> Any:
    """The dataset with its image/audio columns left as {bytes, path} instead of decoded."""
    if hasattr(dataset, "decode"):  # IterableDataset (streaming)
        return dataset.decode(False)
    import dataclasses

    for column, feature in dataset.features.items():
        if dataclasses.is_dataclass(feature) and getattr(feature, "decode", False):
            dataset = dataset.cast_column(column, dataclasses.replace(feature, decode=False))
    return dataset


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
        super().__init__(
            name, path=path, extensions=extensions, recursive=recursive, field=field, id_field=id_field or "relative_path", **common
        )
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
