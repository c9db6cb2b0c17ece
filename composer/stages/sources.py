"""Sources: inline records, jsonl/csv/parquet files and `datasets` datasets, all streamed.

Every source turns its rows into records the same way (`RowSource._record`): a stable id from
`id_field` or a content hash, the model input under `field`, the gold label under `label`, and
the `keep` columns. A row that cannot become a record is yielded as a RecordFailure, never
raised, so one bad line does not end the run.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from composer.records import Record, RecordFailure, canonical_json, content_id
from composer.repro import sha256_bytes, sha256_file, sha256_tree
from composer.stages.base import Source


class RowSource(Source):
    """Common record making for every source; subclasses only say how to read rows."""

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

    def rows(self) -> Iterator[tuple[str, Any]]:
        """(position, raw row) pairs; position names the row in errors (e.g. 'line 7')."""
        raise NotImplementedError

    def iter_records(self) -> Iterator[Record | RecordFailure]:
        seen: dict[str, int] = {}
        for index, (position, row) in enumerate(self.rows()):
            if self.limit is not None and index >= self.limit:
                return
            yield self._record(position, row, seen)

    def _record(self, position: str, row: Any, seen: dict[str, int]) -> Record | RecordFailure:
        if isinstance(row, RecordFailure):
            return row
        if not isinstance(row, dict):
            row = {self.field: row}
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
        record: Record = {"id": record_id, self.field: row[self.field]}
        if self.label_field:
            record["label"] = row.get(self.label_field)
        for name in self.keep:
            record[name] = row[name]
        return record


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
        self._scan: dict[str, Any] | None = None

    def data_fingerprint(self) -> dict[str, Any]:
        if self._scan is None:
            digest, newlines, size = sha256_file(self.path, count=b"\n")
            self._scan = {"kind": "file", "path": str(self.path.resolve()), "sha256": digest, "bytes": size, "lines": newlines}
        return {k: v for k, v in self._scan.items() if k != "lines"}

    def total(self) -> int | None:
        self.data_fingerprint()
        return None


class JsonlSource(FileSource):
    """One JSON object (or string) per line; blank lines are skipped, bad lines become errors."""

    def rows(self) -> Iterator[tuple[str, Any]]:
        # utf-8-sig: a byte-order mark (common in files saved on Windows) is not part of line 1.
        with self.path.open(encoding="utf-8-sig") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                position = f"line {number} of {self.path.name}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as error:
                    yield position, RecordFailure(f"line-{number}", self.name, "JSONDecodeError", f"{position}: {error}")
                    continue
                if not isinstance(row, (dict, str)):
                    yield position, RecordFailure(
                        f"line-{number}", self.name, "TypeError",
                        f"{position}: expected a JSON object or string, got {type(row).__name__}",
                    )
                    continue
                yield position, row

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
    """A CSV file with a header row."""

    def __init__(self, name: str, *, path: str, delimiter: str = ",", **common: Any):
        super().__init__(name, path=path, delimiter=delimiter, **common)
        self.delimiter = delimiter

    def rows(self) -> Iterator[tuple[str, Any]]:
        with self.path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle, delimiter=self.delimiter)
            for row in reader:
                # The file line the row ends on (the header is row 1): DictReader skips blank
                # lines and a quoted field may span lines, so counting rows would drift.
                yield f"row {reader.line_num} of {self.path.name}", row


class ParquetSource(FileSource):
    """A Parquet file, read in record batches."""

    def rows(self) -> Iterator[tuple[str, Any]]:
        import pyarrow.parquet as pq

        number = 0
        for batch in pq.ParquetFile(self.path).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                yield f"row {number} of {self.path.name}", row

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
