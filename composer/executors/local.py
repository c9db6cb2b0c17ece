"""LocalExecutor: today's executor, in one process, read top-down.

    LocalExecutor.run                    count time around the stream
      _stream                            windows in, then each window out through the sink
        _read_windows                    source -> unfinished records -> head transforms ->
                                         lengths measured and inputs tokenized ahead
        _prefetched                      ... in a background thread, `prefetch` windows ahead
        _run_window                      the rest of the stages (unit.run_records, model
                                         batches on worker threads), then the sink, in input order

A window is the unit of reading, length sorting and loss on a crash: it is written once done,
and stopping early writes the input-order prefix before the first record left undone.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from composer.executors.base import Advance, ExecutionPolicy, ExecutionStats, Executor, OnFailures, RunAborted, RunInterrupted
from composer.executors.unit import Outcome, run_records
from composer.plan import Graph, Node
from composer.records import Record, RecordFailure
from composer.stages.base import BatchedStage, Stage

BATCHES_PER_WORKER = 8  # an automatic window holds at least this many batches per worker


class LocalExecutor(Executor):
    """Threads, windows, prefetch and model workers in this process."""

    def facts(self) -> dict[str, Any]:
        return {"type": "local"}

    def run(self, graph: Graph, stats: ExecutionStats, policy: ExecutionPolicy, on_failures: OnFailures,
            advance: Advance = lambda n: None) -> None:
        """Stream the source through the stages, counting into `stats` as batches finish (so the
        counts stay true when the run is aborted); records leave in input order."""
        stats.stage_seconds = {s.name: 0.0 for s in graph.stages()}
        started = time.perf_counter()
        try:
            _stream(graph, stats, policy, on_failures, advance)
        finally:
            stats.seconds = time.perf_counter() - started


def _stream(graph: Graph, stats: ExecutionStats, policy: ExecutionPolicy, on_failures: OnFailures, advance: Advance) -> None:
    """Windows of records go through the stages (model stages batch each window their own way)
    and leave in input order. A window is written once done; stopping early (on_error=fail,
    max_errors, a stop request) writes the records before the first one left undone or failed,
    so outputs.jsonl stays an input-order prefix that resume continues."""
    *transforms, sink = graph.nodes[1:]
    head, tail = split_head(transforms)
    stop = threading.Event()
    width = max((node.stage.workers if isinstance(node.stage, BatchedStage) else 1 for node in tail), default=1)
    windows = _read_windows(graph, head, stats, policy, window_for(graph, tail, width), tail[0].stage if tail else None, stop)
    if graph.prefetch > 0:
        windows = _prefetched(windows, graph.prefetch, stop)
    workers = ThreadPoolExecutor(width, thread_name_prefix="composer-model") if width > 1 else None
    try:
        for window in windows:
            _run_window(window, tail, sink, stats, policy, on_failures, advance, workers)
    finally:
        try:
            windows.close()
        finally:  # even when a second Ctrl-C cut the close short: no batch outlives the run
            if workers is not None:
                workers.shutdown(wait=True)


def window_for(graph: Graph, tail: list[Node], width: int) -> int:
    """Records per window once the workers are known: batches run side by side only within a
    window, so an unsorted window (one batch) grows to one batch per worker, and a window of
    composer's choosing holds at least BATCHES_PER_WORKER batches per worker (batch_size=auto's
    probe, one round per candidate, then stays within half of it). A sort_window the user set
    is kept."""
    if not any(isinstance(node.stage, BatchedStage) and node.stage.sorts_by_length for node in tail):
        return graph.window * width
    if graph.auto_window:
        return max(graph.window, graph.batch * width * BATCHES_PER_WORKER)
    return graph.window


def split_head(nodes: list[Node]) -> tuple[list[Node], list[Node]]:
    """The leading transforms cheap and safe to run in the prefetch thread (a Ray actor runs
    them first too, in prepare_window), and the rest."""
    head = 0
    while head < len(nodes) and nodes[head].stage.prefetchable:
        head += 1
    return nodes[:head], nodes[head:]


@dataclass
class Window:
    """Records read from the source together, after the light transforms that precede the first
    model stage. `positions` maps a record id to its place in the input, which is the order the
    window's records leave in; `lengths` holds, per model stage, each record's input length,
    measured ahead by the prefetch thread."""

    size: int
    records: list[Record]
    failures: list[tuple[int, RecordFailure]]
    positions: dict[str, int]
    lengths: dict[str, dict[str, int]]


def _read_windows(graph: Graph, head: list[Node], stats: ExecutionStats, policy: ExecutionPolicy, window: int,
                  first: Stage | None = None, stop: threading.Event | None = None) -> Generator[Window, None, None]:
    """Windows of unfinished records with the head transforms applied and input lengths measured:
    the work that can overlap with the model's forward passes. The model stage that comes right
    after the head (`first`) also tokenizes its inputs here (its `prepare`). `stop` (an Event
    set when the run stops) ends it between stages, so the prefetch thread never outlives the run."""
    items = unfinished(graph.source.iter_records(), policy.skip_ids)
    stopped = stop.is_set if stop is not None else (lambda: False)
    for batch in batches(items, window):
        if stopped():
            return
        prepared = prepare_window(graph, batch, head, first, stats.stage_seconds, stopped)
        if prepared is None:
            return
        yield prepared


def prepare_window(graph: Graph, batch: list[Record | RecordFailure], head: list[Node], first: Stage | None,
                   seconds: dict[str, float], stopped: Callable[[], bool] = lambda: False) -> Window | None:
    """One window from the source's items (records, and the failures the source found, in input
    order): the head transforms applied, input lengths measured, and the inputs of `first` (the
    model stage right after the head) tokenized ahead. None when `stopped()` cut it short. The Ray
    executor's actors prepare each block with it too, so a block is the window this executor runs."""
    batched = [n.stage for n in graph.nodes if isinstance(n.stage, BatchedStage)]
    records: list[Record] = []
    failures: list[tuple[int, RecordFailure]] = []
    positions: dict[str, int] = {}
    for position, item in enumerate(batch):
        if isinstance(item, RecordFailure):
            failures.append((position, item))
        else:
            records.append(item)
            positions[str(item["id"])] = position
    done = run_records([node.stage for node in head], records, positions, seconds=seconds, stopped=stopped)
    records, failures = done.records, failures + done.failures
    if stopped():
        return None
    lengths: dict[str, dict[str, int]] = {}
    for stage in batched:
        if stage is first:
            try:
                lengths[stage.name] = stage.prepare(records)
            except Exception:  # noqa: BLE001 - the stage then tokenizes in process()
                pass
        elif stage.wants_lengths:
            try:
                lengths[stage.name] = stage.input_lengths(records)
            except Exception:  # noqa: BLE001 - a field written later in the graph; measured then
                pass
    return Window(len(batch), records, failures, positions, lengths)


def batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def unfinished(items: Iterator[Record | RecordFailure], skip_ids: Any) -> Iterator[Any]:
    """The items no earlier attempt finished: `skip_ids` is a runstore.Written (which matches a
    source's failures line by line) or a plain set of ids. (The manifest counts the skipped:
    the lines earlier attempts wrote.)"""
    skips = getattr(skip_ids, "skips", None) or (lambda item: (item.id if isinstance(item, RecordFailure) else item["id"]) in skip_ids)
    return (item for item in items if not skips(item))


_DONE = object()


def _prefetched(windows: Generator[Window, None, None], depth: int, stopping: threading.Event) -> Generator[Window, None, None]:
    """Produce `windows` in a background thread, at most `depth` ahead of the consumer, so that
    reading, light transforms and tokenizing overlap with the model (torch and the tokenizers
    release the GIL). Memory stays bounded: depth + 2 windows exist at any time. When the
    consumer stops, `stopping` (which `windows` watches) is set and the thread is waited for,
    so no stage code runs after the run closes its stages."""
    import queue

    handoff: queue.Queue = queue.Queue(maxsize=depth)

    def put(item: Any) -> bool:
        while not stopping.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for window in windows:
                if not put(window):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(error)
        finally:
            windows.close()  # the source's file closes now, in this thread, not at garbage collection

    worker = threading.Thread(target=produce, name="composer-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handoff.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopping.set()
        # At most one head stage's work on one window remains; a second Ctrl-C interrupts the wait.
        worker.join()


def _run_window(
    window: Window,
    tail: list[Node],
    sink: Node,
    stats: ExecutionStats,
    policy: ExecutionPolicy,
    on_failures: OnFailures,
    advance: Advance,
    workers: ThreadPoolExecutor | None = None,
) -> None:
    """The rest of the stages over one window, then the sink: the survivors in input order, the
    failures to `on_failures`; raises RunAborted or RunInterrupted once the prefix is written."""
    stats.records_in += window.size
    advanced = 0

    def halt(pending: int) -> bool:
        if policy.on_error == "fail" and (window.failures or pending):
            return True
        if policy.max_errors is not None and _errors_so_far(policy, stats, len(window.failures) + pending) >= policy.max_errors:
            return True
        return policy.should_stop()

    def on_batch(n: int) -> None:  # progress and batch counts follow the first model stage
        nonlocal advanced
        stats.batches += 1
        advanced += n
        advance(n)

    done = run_records([node.stage for node in tail], window.records, window.positions, lengths=window.lengths,
                       halt=halt, on_batch=on_batch, workers=workers, seconds=stats.stage_seconds)
    write_window(window, done, sink, stats, policy, on_failures, advance, advanced)


def write_window(window: Window, done: Outcome, sink: Node, stats: ExecutionStats, policy: ExecutionPolicy,
                 on_failures: OnFailures, advance: Advance, advanced: int = 0) -> None:
    """Write a window the stages are done with (`done`: run_records' outcome over its records):
    the survivors in input order to the sink, the failures (the window's own and the stages')
    to `on_failures`, cut at the first record left undone or, with on_error=fail, at the first
    failure; then raise RunAborted or RunInterrupted as the policy says. `advanced`: records the
    progress bar already heard of. The Ray executor writes each block it gets back with it."""
    records, failures, cut = done.records, window.failures + done.failures, done.undone  # input position from which this window is not written
    positions = window.positions
    if not done.batched:
        stats.batches += 1
    failures.sort(key=lambda pair: pair[0])
    if failures and policy.on_error == "fail":
        cut = failures[0][0] if cut is None else min(cut, failures[0][0])
    if cut is not None:
        records = [r for r in records if positions[str(r["id"])] < cut]
        # Failures past the cut are left for resume to find again, in their place: written now,
        # they would come before those of the records left undone ahead of them. on_error=fail
        # keeps the failure that stops the run.
        stopper = failures[0] if failures and policy.on_error == "fail" else None
        failures = [pair for pair in failures if pair[0] < cut or pair is stopper]
    stats.records_failed += len(failures)
    on_failures([failure for _, failure in failures])
    if failures and policy.on_error == "fail":
        # Outputs hold the records before the failing one, in input order; the rest is dropped.
        first = failures[0][1]
        sink.stage.process(records)
        stats.records_ok += len(records)
        raise RunAborted(f"record {first.id!r} failed in stage {first.stage!r} and on_error=fail: {first.message}")
    sink.stage.process(records)
    stats.records_ok += len(records)
    finished = len(records) + len(failures) if cut is not None else window.size
    if finished > advanced:
        advance(finished - advanced)
    failed_total = _errors_so_far(policy, stats, 0)
    if policy.max_errors is not None and failed_total >= policy.max_errors:
        raise RunAborted(f"{failed_total} records failed, reaching max_errors={policy.max_errors}")
    if policy.should_stop() or cut is not None:
        raise RunInterrupted("stopped on request after finishing the batches in flight")


def _errors_so_far(policy: ExecutionPolicy, stats: ExecutionStats, pending: int) -> int:
    return policy.errors_before + stats.records_failed + pending
