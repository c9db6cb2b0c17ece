"""The run's source as a Ray dataset for `executor=ray` (composer.executors.ray): composer's own
reader in one Ray read task, streamed. Imports Ray: only an executor=ray run imports it."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from typing import Any

from ray.data import Datasource, ReadTask
from ray.data.block import BlockMetadata

from composer.executors.local import batches, unfinished
from composer.stages.base import Source


class SourceBlocks(Datasource):
    """The run's source as a Ray dataset of one read task: composer's reader, the records no
    earlier attempt finished (the resume's running count of written failures needs them in
    order), cut into windows of `size` items, one row each (the items pickled, and which process
    read them), yielded as read."""

    def __init__(self, source: Source, skip_ids: Any, size: int):
        self.source, self.skip_ids, self.size = source, skip_ids, size

    def estimate_inmemory_data_size(self) -> int | None:
        return None

    def get_read_tasks(self, parallelism: int, per_task_row_limit: int | None = None,
                       data_context: Any = None) -> list[ReadTask]:
        return [ReadTask(self._read, BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=None))]

    def _read(self) -> Iterator[Any]:
        import pyarrow as pa
        import ray

        reader = f"{ray.get_runtime_context().get_node_id()}:{os.getpid()}"
        for window in batches(unfinished(self.source.iter_records(), self.skip_ids), self.size):
            yield pa.table({"block": pa.array([pickle.dumps(window, protocol=5)], pa.large_binary()), "reader": [reader]})
