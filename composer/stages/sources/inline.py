"""The inline source: records written in the config itself, hashed as canonical JSON."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from composer.records import canonical_json
from composer.repro import sha256_bytes
from composer.stages.sources.base import RowSource


class InlineSource(RowSource):
    """Records written in the config itself: strings or mappings."""

    def __init__(self, name: str, *, records: list[Any], **common: Any):
        super().__init__(name, **common)
        self.records = list(records)

    def rows(self) -> Iterator[tuple[str, Any]]:
        for index, row in enumerate(self.records):
            yield f"input.records[{index}]", row

    def total(self) -> int | None:
        return min(len(self.records), self.limit or len(self.records))

    def data_fingerprint(self) -> dict[str, Any]:
        return {"kind": "inline", "sha256": sha256_bytes(canonical_json(self.records).encode("utf-8"))}
