"""One run's lifecycle: plan it deeply, check the folder (resume or refuse), write the manifest,
seed, split threads, catch stop signals, hand the graph to an executor, then write the counts,
timings, peak memory and metrics, and the log. `execute_config` is the one place a run happens:
the Python API (composer.api), the CLI's Hydra job and `composer verify` all call it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from composer import runfacts, runstore
from composer.executors import executor_for
from composer.executors.base import ExecutionPolicy, ExecutionStats, Executor, RunAborted, RunInterrupted
from composer.metrics import latency_summary, quality_accumulator
from composer.plan import MODEL, Graph, plan as plan_graph
from composer.runlog import RunLog
from composer.schema import OUTPUT_NEUTRAL_KEYS, with_defaults
from composer.runstore import EXIT_ABORTED, EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_RECORD_ERRORS  # noqa: F401 - api re-exports
from composer.runstore import RunStatus


@dataclass
class RunResult:
    """A finished (or stopped) run: its folder and how it ended. Everything else is read from disk."""

    run_dir: Path
    status: str  # a RunStatus value (a member when this process ran it; equal to the word either way)
    exit_code: int

    @classmethod
    def load(cls, run_dir: str | Path) -> RunResult:
        manifest = runstore.read_manifest(Path(run_dir))
        return cls(Path(run_dir), manifest["status"], manifest.get("exit_code", EXIT_FAILED))

    def manifest(self) -> runstore.Manifest:
        return runstore.read_manifest(self.run_dir)

    def metrics(self) -> dict[str, Any]:
        return runstore.read_json(self.run_dir / runstore.METRICS)

    def outputs(self) -> list[dict[str, Any]]:
        return runstore.read_jsonl(self.run_dir / runstore.OUTPUTS)

    def errors(self) -> list[dict[str, Any]]:
        return runstore.read_jsonl(self.run_dir / runstore.ERRORS)

    def config(self) -> dict[str, Any]:
        return runstore.read_config(self.run_dir)


def execute_config(config: dict[str, Any], run_dir: Path, overrides: list[str]) -> RunResult:
    """Run a validated config into `run_dir` (see _execute_config), with the run's log: library
    warnings once each on stderr, their counts in the manifest (`warnings`), and run.log in
    the folder ending with the summary that the CLI prints."""
    with RunLog() as log:
        return _execute_config(config, run_dir, overrides, log)


def _execute_config(config: dict[str, Any], run_dir: Path, overrides: list[str], log: RunLog) -> RunResult:
    """Run a validated config into `run_dir`, or continue the run already there.

    Config mistakes raise ConfigError, and a folder holding another config's run raises
    ResumeRefused, before anything loads; every other outcome is recorded in the manifest.
    An earlier attempt's finished records are skipped by id, so a resumed run's outputs equal
    an uninterrupted run's.
    """
    _quiet_library_noise()
    graph = plan_graph(config, run_dir=str(run_dir), deep=True)
    executor = executor_for(config, graph)
    cache = graph.attach_cache(config["cache"])
    attempt = _open_folder(config, run_dir, overrides, graph)
    if isinstance(attempt, RunResult):
        return attempt  # finished before: nothing to do
    outcome = _execute(config, run_dir, graph, cache, attempt, executor)
    return _finish(config, run_dir, graph, log, attempt, outcome)


@dataclass
class _Attempt:
    """This attempt's share of the run folder: the manifest it updates, its own entry in the
    manifest's `attempts`, what earlier attempts wrote (skipped by id), and the damaged line
    that, when set, fails this attempt before anything loads."""

    manifest: runstore.Manifest
    entry: runstore.Attempt
    skip_ids: runstore.Written | set[str]
    damaged: runstore.RunFolderError | None
    # Per model stage, the input tokens of the records earlier attempts wrote (_earlier_input_tokens).
    earlier_tokens: dict[str, int | None] = field(default_factory=dict)


@dataclass
class _Outcome:
    """How the attempt ended (a failure until it says otherwise) and what it counted."""

    stats: ExecutionStats
    wall_started: float
    status: RunStatus = RunStatus.FAILED
    exit_code: int = EXIT_FAILED
    error: dict[str, str] | None = None


def _open_folder(config: dict[str, Any], run_dir: Path, overrides: list[str], graph: Graph) -> _Attempt | RunResult:
    """Claim `run_dir` for this attempt: refuse a folder that is not composer's or holds another
    config's run or another input, repair the lines a crash tore, and write the manifest saying
    `running` before anything heavy loads, so that a crash from here on leaves a folder that
    resume continues. A run that finished before is returned as it is, untouched."""
    runstore.check_run_folder(run_dir)  # a file, or another program's folder: refused, nothing written
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = runstore.previous_attempt(run_dir, config, OUTPUT_NEUTRAL_KEYS, with_defaults)
    graph.source.setup()
    input_fingerprint = graph.source.data_fingerprint()
    if manifest is not None:
        if manifest["status"] in runstore.FINISHED:
            return RunResult(run_dir, manifest["status"], manifest["exit_code"])
        if manifest.get("input") not in (None, input_fingerprint):
            changed = runstore.differences(manifest["input"], input_fingerprint)
            raise runstore.ResumeRefused(f"the input changed since the run in {run_dir} began: " + "; ".join(changed))
        for name in (runstore.OUTPUTS, runstore.ERRORS):
            runstore.repair_torn_tail(run_dir / name)
        try:
            skip_ids, damaged = runstore.written_ids(run_dir), None
        except runstore.RunFolderError as error:  # a damaged line: this attempt fails, saying where
            skip_ids, damaged = set(), error
    else:
        manifest, skip_ids, damaged = _new_manifest(config, overrides), set(), None
        OmegaConf.save(OmegaConf.create(config), run_dir / runstore.CONFIG)
    manifest.update(status=RunStatus.RUNNING, input=input_fingerprint)
    entry: runstore.Attempt = {"started_at": runstore.now(), "skipped": len(skip_ids)}
    manifest["attempts"].append(entry)
    runstore.write_manifest(run_dir, manifest)
    return _Attempt(manifest, entry, skip_ids, damaged)


def _execute(config: dict[str, Any], run_dir: Path, graph: Graph, cache: Any, attempt: _Attempt, executor: Executor) -> _Outcome:
    """Set up and stream the graph, turning every way it can end into an outcome: all records
    done (with or without failures), aborted, interrupted, or failed with the error. Whatever
    happened, the error lines are closed, the cache and the stages too, and the stages' facts
    are taken for the manifest, so that the folder is complete before it is closed."""
    errors = runstore.JsonlAppender(run_dir / runstore.ERRORS)
    outcome = _Outcome(ExecutionStats(), time.perf_counter())
    try:
        if attempt.damaged is not None:
            raise attempt.damaged
        show_progress = _set_up(config, run_dir, graph, attempt, executor)
        _stream(config, run_dir, graph, attempt.skip_ids, errors, outcome.stats, show_progress, executor)
        failed = runstore.count_lines(run_dir / runstore.ERRORS)
        outcome.status = RunStatus.COMPLETE if failed == 0 else RunStatus.COMPLETED_WITH_ERRORS
        outcome.exit_code = EXIT_OK if failed == 0 else EXIT_RECORD_ERRORS
    except RunAborted as error:
        outcome.status, outcome.exit_code = RunStatus.ABORTED, EXIT_ABORTED
        outcome.error = {"type": "RunAborted", "message": str(error)}
    except (RunInterrupted, KeyboardInterrupt) as error:
        outcome.status, outcome.exit_code = RunStatus.INTERRUPTED, EXIT_INTERRUPTED
        outcome.error = {"type": type(error).__name__, "message": str(error) or "interrupted"}
    except Exception as error:  # noqa: BLE001 - recorded in the manifest and reported without a traceback
        outcome.error = {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
    finally:
        errors.close()
        if cache is not None:
            cache.close()
        attempt.manifest["executor"] = executor.facts()
        attempt.manifest["stages"] = {stage.name: _stage_facts(graph, stage) for stage in graph.stages()}
        for stage in graph.stages():
            stage.close()
    return outcome


def _set_up(config: dict[str, Any], run_dir: Path, graph: Graph, attempt: _Attempt, executor: Executor) -> bool:
    """Set up the stages the executor runs in this process (runtime.set_up_stages: seeds,
    threads, the models; a resumed attempt's stages restore their state from the outputs earlier
    attempts wrote), recording each choice in the manifest. Returns whether the progress bar
    shows."""
    from composer.runtime import set_up_stages

    manifest = attempt.manifest
    runfacts.reset_peak_memory()
    show_progress = runfacts.shows_progress(config["progress"])

    def restore(stage: Any) -> None:
        if attempt.skip_ids and stage.restores_state:
            stage.restore(runstore.iter_jsonl(run_dir / runstore.OUTPUTS))

    done = set_up_stages(config, executor.stages_set_up_here(graph), config["threads"], show_progress, restore)
    manifest["deterministic"], manifest["device"] = done.deterministic, runfacts.device_facts()
    manifest["allocator"], manifest["threads"] = done.allocator, done.threads
    attempt.entry["setup_seconds"] = done.setup_seconds
    if attempt.skip_ids:
        attempt.earlier_tokens = _earlier_input_tokens(graph, run_dir)
    return show_progress


def _stream(config: dict[str, Any], run_dir: Path, graph: Graph, skip_ids: runstore.Written | set[str],
            errors: runstore.JsonlAppender, stats: ExecutionStats, show_progress: bool, executor: Executor) -> None:
    """Hand the records to the executor, skipping those earlier attempts finished, with the
    progress bar and Ctrl-C / SIGTERM caught (_StopRequests) so that a stop ends cleanly."""
    total = graph.source.total()
    progress, task_id = runfacts.progress_bar(show_progress, None if total is None else max(total - len(skip_ids), 0))
    with progress, _StopRequests() as stop:
        def advance(n: int) -> None:
            done = progress.tasks[0].completed + n
            elapsed = max(progress.tasks[0].elapsed or 0.0, 1e-9)
            progress.update(task_id, completed=done, rate=f"{done / elapsed:.1f}/s")

        policy = ExecutionPolicy(
            on_error=config["on_error"],
            max_errors=config["max_errors"],
            errors_before=runstore.count_lines(run_dir / runstore.ERRORS),
            skip_ids=skip_ids,
            should_stop=lambda: stop.requested,
        )
        executor.run(graph, stats, policy, errors.write_many, advance=advance)


def _finish(config: dict[str, Any], run_dir: Path, graph: Graph, log: RunLog, attempt: _Attempt,
            outcome: _Outcome) -> RunResult:
    """Close the attempt on disk: its entry, metrics.json, then the manifest's status, exit code,
    counts (from the files, so they hold every attempt's lines), timings, peak memory, error and
    warnings; then run.log ending with the summary, and the copy to an experiment tracker."""
    from composer.summary import summary_lines

    manifest, entry, stats = attempt.manifest, attempt.entry, outcome.stats
    entry.update(
        finished_at=runstore.now(),
        status=outcome.status,
        records_ok=stats.records_ok,
        records_failed=stats.records_failed,
        batches=stats.batches,
    )
    runstore.write_json(run_dir / runstore.METRICS, _metrics(graph, stats, run_dir, config, attempt.earlier_tokens))
    manifest.update(
        status=outcome.status,
        exit_code=outcome.exit_code,
        finished_at=entry["finished_at"],
        counts={
            "records_in": runstore.count_lines(run_dir / runstore.OUTPUTS) + runstore.count_lines(run_dir / runstore.ERRORS),
            "records_ok": runstore.count_lines(run_dir / runstore.OUTPUTS),
            "records_failed": runstore.count_lines(run_dir / runstore.ERRORS),
            "batches": sum(a.get("batches", 0) for a in manifest["attempts"]),
        },
        timings={
            "wall_seconds": time.perf_counter() - outcome.wall_started,
            "processing_seconds": stats.seconds,
            "stage_seconds": stats.stage_seconds,
        },
        peak_memory=runfacts.peak_memory(),
        error=outcome.error,
        warnings=log.messages(),
    )
    runstore.write_manifest(run_dir, manifest)
    log.write(run_dir, summary_lines(run_dir))
    if (config.get("logger") or {}).get("type", "none") != "none":
        from composer.mlflow_logger import log_run

        log_run(run_dir, config)
    return RunResult(run_dir, outcome.status, outcome.exit_code)


def _quiet_library_noise() -> None:
    """Silence import-time warnings that say nothing about the user's run: torchao reports
    CUDA kernels and Triton it cannot load on CPU, and torch flags torchao's pytree use."""
    for name in ("torchao", "torch.utils._pytree"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _new_manifest(config: dict[str, Any], overrides: list[str]) -> runstore.Manifest:
    """The manifest of a run's first attempt: what it is and what it runs on (a resume keeps it)."""
    return {**runstore.new_manifest(config, overrides), "attempts": []}


class _StopRequests:
    """Ctrl-C / SIGTERM during a run: the first finishes the batches in flight and stops cleanly
    (manifest `interrupted`, exit 130); a second stops without finishing the window (batches
    already running on worker threads still finish: a thread cannot be cut off mid-batch)."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\ncomposer: stopping after the batches in flight (press Ctrl-C again to stop sooner: "
              "batches already running still finish)", file=sys.stderr)

    def __enter__(self) -> _StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _stage_facts(graph: Graph, stage: Any) -> dict[str, Any]:
    node = next(n for n in graph.nodes if n.stage is stage)
    return {
        "kind": stage.kind,
        "type": type(stage).__name__,
        "inputs": node.inputs,
        "reads": list(stage.reads),
        "writes": list(stage.writes),
        "fingerprint": stage.fingerprint(),
        **stage.describe(),
    }


def _metrics(graph: Graph, stats: ExecutionStats, run_dir: Path, config: dict[str, Any],
             earlier_tokens: dict[str, int | None]) -> dict[str, Any]:
    """Quality, and the records and input tokens, over every record the run wrote (a resumed run
    counts what its earlier attempts wrote, `earlier_tokens` for the tokens, so that these equal an
    uninterrupted run's); seconds, rates and latency of this attempt (timings: they measure it)."""
    seconds = stats.seconds
    main_model = next(stage for stage in graph.model_stages() if stage.name == MODEL)
    # Tokens exist where a model reads text: its tokenizer's count of the inputs it ran.
    tokens = {stage.name: _run_tokens(stage, earlier_tokens) for stage in graph.model_stages()}
    metrics: dict[str, Any] = {
        "throughput": {
            "records": runstore.count_lines(run_dir / runstore.OUTPUTS),
            "seconds": seconds,
            "records_per_second": stats.records_ok / seconds if seconds > 0 else None,
            "input_tokens": tokens[MODEL],
            "tokens_per_second": main_model.input_tokens / seconds if main_model.input_tokens and seconds > 0 else None,
        },
        "models": {
            stage.name: {"load_seconds": stage.load_seconds, "input_tokens": tokens[stage.name],
                         "latency": latency_summary(stage.batch_seconds)}
            for stage in graph.model_stages()
        },
        "quality": {},
    }
    # Gold labels belong to the main task; an extra fan-out model (say, a topic classifier) is
    # not scored against them.
    # A postprocessor that turns the model's output into labels (embedding_classify over
    # feature-extraction) is what the gold labels score, whatever the model's task.
    labeller = next((n.stage for n in graph.nodes if n.path.startswith("postprocess") and n.stage.produces_labels), None)
    # The metrics are the config's `metrics` (auto: by task, and a labeller makes it classification).
    quality = quality_accumulator("text-classification" if labeller else main_model.task,
                                  labeller.writes[0] if labeller else main_model.output_field, config.get("metrics", "auto"))
    if quality is not None and config["input"].get("label_field"):
        quality.add(runstore.iter_jsonl(run_dir / runstore.OUTPUTS))
        if (result := quality.result()) is not None:
            metrics["quality"][MODEL] = result
    return metrics


def _earlier_input_tokens(graph: Graph, run_dir: Path, chunk: int = 1024) -> dict[str, int | None]:
    """Per model stage, the input tokens of the records that earlier attempts wrote to
    outputs.jsonl, counted now by the stage's tokenizer from the input each row holds (None when
    a row lacks it: a later stage took it away). A killed attempt never recorded its counts; with
    these a resumed run's token counts are an uninterrupted run's."""
    import itertools

    counts: dict[str, int | None] = {}
    for stage in graph.model_stages():
        rows, total = runstore.iter_jsonl(run_dir / runstore.OUTPUTS), 0
        try:
            while block := list(itertools.islice(rows, chunk)):
                # As for a batch: the exact counts are kept under the records' ids, then taken.
                stage.input_lengths(block)
                total += stage.tokens.take([str(row["id"]) for row in block])
        except Exception:  # noqa: BLE001 - a metric must not fail the run: this count is unknown
            counts[stage.name] = None
        else:
            counts[stage.name] = total
    return counts


def _run_tokens(stage: Any, earlier_tokens: dict[str, int | None]) -> int | None:
    """A model stage's input tokens over the whole run (this attempt's and the earlier ones');
    None when there are none (not text) or the earlier ones are unknown."""
    earlier = earlier_tokens.get(stage.name, 0)
    return stage.input_tokens + earlier if earlier is not None and stage.input_tokens + earlier else None
