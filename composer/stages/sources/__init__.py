"""Sources: inline records, jsonl/csv/parquet files, `datasets` datasets and folders, all streamed.

Every source turns its rows into records the same way (`RowSource._record`): a stable id from
`id_field` or a content hash, the model input under `field`, the gold label under `label`, and
the `keep` columns. A row that cannot become a record is yielded as a RecordFailure, never
raised, so one bad line does not end the run: bytes that are not UTF-8, a lone surrogate, a line
that is not a JSON object, a value of a type the stage reading it cannot take (a list where a
text task needs text), each fail that record alone, with its line number and the cause.

Files are read as bytes and decoded line by line (JSON Lines split on b"\n" only); a file that
is not what its `input` kind says (binary data as jsonl, text as parquet) is refused at planning,
before any model loads, naming the file and what it holds (`FileSource.bind`).

One module per job: `base` (record making), `checks` (what the reading stages need of a value),
`files` (the shared file machinery and kind sniffing), one module per reader (`inline`, `jsonl`,
`delimited` for CSV/TSV, `parquet`, `dataset`, `folder`). Configs name the classes re-exported
here (`composer.stages.sources:JsonlSource`).
"""

from composer.stages.sources.dataset import DatasetSource
from composer.stages.sources.delimited import CsvSource
from composer.stages.sources.folder import FolderSource
from composer.stages.sources.inline import InlineSource
from composer.stages.sources.jsonl import JsonlSource
from composer.stages.sources.parquet import ParquetSource

__all__ = ["CsvSource", "DatasetSource", "FolderSource", "InlineSource", "JsonlSource", "ParquetSource"]
