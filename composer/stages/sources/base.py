"""What every source shares: turning a raw row into a record (a stable id, the model input, the
label, the kept columns) or into a RecordFailure naming the row, so a reader only says how it
reads rows. Also the soundness walk that finds what could not be hashed and written as UTF-8
JSON (lone surrogates, undecodable bytes, nesting too deep), shared by the file readers that
check their own rows."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from composer.records import Record, RecordFailure, content_id
from composer.stages.base import Source, Stage
from composer.stages.sources.checks import value_checks

MAX_NESTING = 100  # deeper rows are a record error: writing them back could exceed Python's recursion limit
SURROGATE = re.compile("[\ud800-\udfff]")


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
    ):
        super().__init__(name)
        self.field, self.id_field, self.label_field, self.limit, self.keep = field, id_field, label_field, limit, list(keep)
        self.writes = ("id", field, *(("label",) if label_field else ()), *self.keep)
        # What the stages reading `field` straight from the source need of its value (bind).
        self.value_checks: list[tuple[str, Callable[[Any], str | None]]] = []

    def bind(self, stages: dict[str, Stage]) -> list[Any]:
        """Learn what the stages reading `field` as the source wrote it need of its value (text for
        a text task's model and for normalize), so a value they cannot take fails its record here,
        naming its line, instead of failing in the stage (or, for a list, running as a batch)."""
        self.value_checks = value_checks(self, self.field, stages)
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

    def record_from_row(self, position: str, row: Any, seen: dict[str, int]) -> Record | RecordFailure:
        """One raw row as the record iter_records would make of it (the same id, fields and
        checks), or the failure naming `position`; `seen` holds the ids made so far (duplicates).
        For callers handed rows one at a time: composer.serve, whose answers must equal a run's.
        A row handed over was not read by this source, so it is always checked for what could
        not be hashed and written (a lone surrogate, nesting too deep), as rows_checked readers
        check their own."""
        if self.rows_checked:
            failure = self._unwritable(position, row)
            if failure is not None:
                return failure
        return self._record(position, row, seen)

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
        clean = isinstance(record_id, (str, int)) and not SURROGATE.search(str(record_id))
        failure_id = str(record_id) if clean else _position_id(position)
        if found == "too deep":
            return RecordFailure(failure_id, self.name, "ValueError", f"{position} is nested more than {MAX_NESTING} levels deep")
        where, char = found
        if self.surrogate_escapes and 0xDC80 <= ord(char) <= 0xDCFF:
            byte = ord(char) - 0xDC00
            return RecordFailure(failure_id, self.name, "UnicodeDecodeError",
                                 f"{position} is not valid UTF-8: byte 0x{byte:02x} in {where}{latin1_hint(byte)}")
        where = f"field {self.field!r}" if where == "the row" else where  # a JSON string line is the field's value
        return RecordFailure(failure_id, self.name, "UnicodeError",
                             f"{position}: {where} holds a lone surrogate {char!a}, half of a UTF-16 pair, which is not text")


def _position_id(position: str) -> str:
    """The id of a row that has none of its own: its position ('line 7 of a.jsonl' -> 'line-7')."""
    return position.split(" of ")[0].replace(" ", "-")


def latin1_hint(byte: int) -> str:
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
            found = SURROGATE.search(value)
            if found:
                return (f"field {where!r}" if where else "the row"), found.group()
        elif isinstance(value, dict):
            for key, item in reversed(list(value.items())):
                if isinstance(key, str) and SURROGATE.search(key):
                    return f"a key under {where!r}" if where else "a field name", SURROGATE.search(key).group()
                pending.append((item, f"{where}.{key}" if where else str(key), depth + 1))
        elif isinstance(value, (list, tuple)):
            pending.extend((item, f"{where}[{i}]", depth + 1) for i, item in reversed(list(enumerate(value))))
    return None
