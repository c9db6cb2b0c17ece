"""The one unit every executor shares: run these records through these stages and return the
survivors and the failures, in input order.

LocalExecutor calls it for each window (the light transforms in its prefetch thread, the rest
in the main thread); a Ray executor or a server would call it for each block or request. A
batch that fails is retried record by record, so only the records that caused it fail; a
batched stage (stages.base.BatchedStage) runs a window in the batches it plans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from time import perf_counter

from composer.records import Record, RecordFailure
from composer.stages.base import BatchedStage, Stage

QUEUED_PER_WORKER = 2  # batches submitted per model worker: one running, one waiting its turn


@dataclass
class Outcome:
    """What run_records hands back."""

    records: list[Record]  # the survivors, in input order
    failures: list[tuple[int, RecordFailure]]  # (input position, failure), in input order
    undone: int | None = None  # input position of the first record a halt left undone (None: all ran)
    batched: bool = False  # whether a batched stage ran (on_batch followed the first one)


def run_records(
    stages: Sequence[Stage],
    records: list[Record],
    positions: dict[str, int] | None = None,
    *,
    lengths: Mapping[str, dict[str, int]] | None = None,
    halt: Callable[[int], bool] = lambda failures: False,
    on_batch: Callable[[int], None] = lambda n: None,
    workers: ThreadPoolExecutor | None = None,
    seconds: dict[str, float] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Run `records` through `stages` in order; each stage gets the survivors of the one before.

    `positions` maps a record id to its input position (default: its place in `records`);
    failures carry it. A batched stage plans its own batches (with `lengths[stage.name]`
    measured ahead, if any), runs up to its `workers` of them at once on `workers`' threads,
    and after each batch asks `halt(failures so far in this call)` whether to stop: batches
    already running finish, and the records from the first one left undone on are dropped
    (Outcome.undone). `on_batch(n)` hears of each finished batch of the first batched stage
    (progress follows it). `stopped()` is asked before each stage; `seconds` sums each
    stage's time by name."""
    if positions is None:
        positions = {str(record["id"]): i for i, record in enumerate(records)}
    lengths = lengths or {}
    failures: list[tuple[int, RecordFailure]] = []
    undone: int | None = None
    batched = False
    for stage in stages:
        if not records or stopped():
            break
        started = perf_counter()
        if isinstance(stage, BatchedStage):
            records, failed, cut = _run_batched(stage, records, positions, lengths.get(stage.name),
                                                lambda pending: halt(len(failures) + pending),
                                                (lambda n: None) if batched else on_batch, workers)
            batched = True
            if cut is not None:
                undone = cut if undone is None else min(undone, cut)
                records = [r for r in records if positions[str(r["id"])] < undone]
        else:
            kept, lost = _run_stage(stage, records)
            records, failed = kept, _with_positions(lost, positions)
        if seconds is not None:
            seconds[stage.name] = seconds.get(stage.name, 0.0) + perf_counter() - started
        failures += failed
    failures.sort(key=lambda pair: pair[0])
    return Outcome(records, failures, undone, batched)


def _run_stage(stage: Stage, records: list[Record]) -> tuple[list[Record], list[RecordFailure]]:
    """Run a batch; if it fails, retry record by record so only the bad records fail. When no
    record fails alone, the batch itself was the problem: a stage that can run smaller batches
    hears of it (`batch_failed_alone_ok`)."""
    try:
        return stage.process(records), []
    except Exception as error:  # noqa: BLE001 - any stage error is a record error, isolated below
        if len(records) == 1:
            return [], [RecordFailure.from_exception(str(records[0].get("id")), stage.name, error)]
        # Only its type and message: the exception's traceback would keep the failed batch's
        # tensors alive while its records are retried.
        batch_error = (type(error), str(error))
    survivors: list[Record] = []
    failures: list[RecordFailure] = []
    for record in records:
        kept, failed = _run_stage(stage, [record])
        survivors += kept
        failures += failed
    if not failures and isinstance(stage, BatchedStage):
        stage.batch_failed_alone_ok(len(records), *batch_error)
    return survivors, failures


def _with_positions(failed: list[RecordFailure], positions: dict[str, int]) -> list[tuple[int, RecordFailure]]:
    return [(positions.get(str(f.id), len(positions)), f) for f in failed]


def _run_batched(
    stage: BatchedStage,
    records: list[Record],
    positions: dict[str, int],
    lengths: dict[str, int] | None,
    halt: Callable[[int], bool],
    on_batch: Callable[[int], None],
    workers: ThreadPoolExecutor | None = None,
) -> tuple[list[Record], list[tuple[int, RecordFailure]], int | None]:
    """Run a model stage over a window in the batches it plans (length-sorted, under a token
    budget), each batch with per-record error isolation; survivors come back in input order.
    With `workers`, up to the stage's `workers` batches run at once, each on a worker thread
    (torch releases the GIL in the forward pass), and as many more wait in the pool's queue, so
    a worker that finishes a batch starts the next at once instead of waiting for this thread
    to wake and hand it over. A plan item that is a tuple of batches is a round (batch_size=auto's
    probe): its batches run side by side and all finish before the plan is asked for the next
    item, so the plan can time the round.

    After each batch `halt(failures so far)` may stop the window early: batches already running
    finish, queued ones are dropped, and the third value is the input position of the first
    record left undone (None when all were run)."""
    plan = stage.plan_batches(records, lengths)
    done = [False] * len(records)
    kept_ids: set[str] = set()
    failures: list[tuple[int, RecordFailure]] = []
    running: dict[Future, list[int]] = {}

    def collect(finished: set[Future]) -> None:
        for future in finished:
            indices = running.pop(future)
            kept, failed = future.result()
            kept_ids.update(str(r["id"]) for r in kept)
            failures.extend(_with_positions(failed, positions))
            for i in indices:
                done[i] = True
            on_batch(len(indices))

    halted = False
    try:
        width = stage.workers if workers is not None else 1
        in_flight = width * QUEUED_PER_WORKER if width > 1 else 1
        for item in plan:
            for indices in item if isinstance(item, tuple) else (item,):
                batch = [records[i] for i in indices]
                if width > 1:
                    running[workers.submit(_run_stage, stage, batch)] = indices  # type: ignore[union-attr]
                else:
                    future: Future = Future()
                    future.set_result(_run_stage(stage, batch))
                    running[future] = indices
            while running and (isinstance(item, tuple) or len(running) >= in_flight):
                collect(wait(running, return_when=FIRST_COMPLETED).done)
            if not all(done) and halt(len(failures)):
                halted = True
                for future in [f for f in running if f.cancel()]:  # queued, not started
                    del running[future]
                break
        collect(wait(running).done)
    finally:
        for future in running:
            future.cancel()
        wait(running)  # no stage code runs once the run moves on (or closes its stages)
        close = getattr(plan, "close", None)  # a generator's (a plan that is a list has none)
        if close is not None:
            close()
    if halted and not all(done):
        undone = min(positions[str(records[i]["id"])] for i, finished in enumerate(done) if not finished)
        return [r for r in records if str(r["id"]) in kept_ids], failures, undone
    # Outputs of a stage that returns new dicts are found by id, in input order.
    kept_by_id = {str(r["id"]): r for r in records if str(r["id"]) in kept_ids}
    return list(kept_by_id.values()), failures, None
