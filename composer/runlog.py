"""A run's log: third-party warnings shown once with a count, kept in the run folder's run.log.

Libraries warn per call: bitsandbytes on CPU says "inputs will be cast to float16" for every
batch (42 identical lines on the default job). While a run executes, RunLog stands in for the
root logger's handlers: the first occurrence of each message goes to stderr, repeats are only
counted, Python `warnings` take the same path, and at the end run.log receives the distinct
messages with their counts, followed by the run's summary (composer.summary).
"""

from __future__ import annotations

import logging
import sys
import threading
from collections import Counter
from pathlib import Path
from types import TracebackType

from composer.runstore import LOG

_FORMAT = "%(name)s: %(levelname)s: %(message)s"


class _OncePerMessage(logging.Handler):
    """Passes each distinct (logger, level, message) to `console` once and counts repeats."""

    def __init__(self, console: logging.Handler) -> None:
        super().__init__(logging.WARNING)
        self.console = console
        self.seen: Counter[str] = Counter()
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        line = self.format(record)
        with self._guard:
            self.seen[line] += 1
            first = self.seen[line] == 1
        if first:
            self.console.handle(record)


class RunLog:
    """While open, the root logger's warnings go through a once-per-message filter to stderr;
    `write(run_dir, summary)` appends them, with their counts and the summary, to run.log."""

    def __init__(self) -> None:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter(_FORMAT))
        self.handler = _OncePerMessage(console)
        self.handler.setFormatter(logging.Formatter(_FORMAT))
        self._saved: tuple[list[logging.Handler], int] | None = None

    def __enter__(self) -> RunLog:
        root = logging.getLogger()
        self._saved = (list(root.handlers), root.level)
        for handler in self._saved[0]:
            root.removeHandler(handler)
        root.addHandler(self.handler)
        root.setLevel(logging.WARNING)
        logging.captureWarnings(True)
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        logging.captureWarnings(False)
        root = logging.getLogger()
        root.removeHandler(self.handler)
        handlers, level = self._saved or ([], logging.WARNING)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)

    def messages(self) -> list[dict[str, object]]:
        """Each distinct message of this attempt with how often it was logged (the manifest's
        `warnings`; the summary names those logged more than once)."""
        return [{"message": line, "count": count} for line, count in self.handler.seen.items()]

    def write(self, run_dir: Path, summary: list[str]) -> None:
        """Append this attempt's distinct messages (with counts) and the summary to run.log."""
        messages = [line + (f"   [x{count}]" if count > 1 else "") for line, count in self.handler.seen.items()]
        with (run_dir / LOG).open("a", encoding="utf-8") as log:
            log.write("\n".join([*messages, *([""] if messages else []), *summary]) + "\n")
