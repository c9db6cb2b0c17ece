"""The `datasets` source: anything `datasets.load_dataset` reads, streamed by default, optionally
with media columns left undecoded so one corrupt file fails its record rather than the run."""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from composer.repro import sha256_bytes, sha256_tree
from composer.stages.sources.base import RowSource


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
        super().__init__(name, **common)
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
