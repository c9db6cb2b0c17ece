"""Test support for tests/test_ray.py: a transform that holds a Ray actor mid-block, so a test can
take a node away while that node's actor has a block in flight. Ray's actors import it from the
repository (the driver's sys.path); composer itself never adds it."""

from __future__ import annotations

import os
import time
from pathlib import Path

from composer.records import Record
from composer.stages.base import Stage


class HoldFrom(Stage):
    """Passes records through unchanged; a batch holding a record whose id is `start` or more
    waits until the file `release` exists, after writing `<release>.waiting.<pid>` with the Ray
    node it runs on. Gives up after `timeout_s` (the test then fails, it does not hang)."""

    def __init__(self, name: str, start: int, release: str, timeout_s: float = 300.0):
        super().__init__(name)
        self.start, self.release, self.timeout_s = start, Path(release), timeout_s

    def process(self, records: list[Record]) -> list[Record]:
        if not self.release.exists() and any(int(r["id"]) >= self.start for r in records):
            import ray

            marker = self.release.with_name(f"{self.release.name}.waiting.{os.getpid()}")
            marker.write_text(ray.get_runtime_context().get_node_id())
            deadline = time.monotonic() + self.timeout_s
            while not self.release.exists():
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{self.release} never appeared")
                time.sleep(0.05)
        return records


class Pause(Stage):
    """Passes records through unchanged, `seconds` after it gets them: blocks that take longer
    to run than to read, so a block read while one actor is busy goes to another."""

    def __init__(self, name: str, seconds: float):
        super().__init__(name)
        self.seconds = seconds

    def process(self, records: list[Record]) -> list[Record]:
        time.sleep(self.seconds)
        return records
