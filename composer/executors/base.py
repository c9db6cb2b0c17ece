"""What every executor shares: the interface, the policy a run hands it, the counts it keeps,
and the two ways a run stops early."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from composer.records import RecordFailure

if TYPE_CHECKING:
    from composer.plan import Graph


OnFailures = Callable[[list[RecordFailure]], None]  # hears of failed records, in input order, as windows finish
Advance = Callable[[int], None]  # hears how many more records finished (the progress bar)


class RunAborted(Exception):
    """on_error=fail met a bad record, or max_errors was reached."""


class RunInterrupted(Exception):
    """A stop was requested; the batches in flight were finished and the input-order prefix written."""


@dataclass
class ExecutionStats:
    records_in: int = 0
    records_ok: int = 0
    records_failed: int = 0
    batches: int = 0
    seconds: float = 0.0
    stage_seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class ExecutionPolicy:
    """How a run treats failures, what it skips, and when it stops."""

    on_error: str = "skip"
    max_errors: int | None = None
    errors_before: int = 0  # failures recorded by earlier attempts (they count toward max_errors)
    skip_ids: Any = field(default_factory=set)  # finished by an earlier attempt: a runstore.Written, or a set of ids
    should_stop: Callable[[], bool] = lambda: False  # checked between batches (Ctrl-C, SIGTERM)


class Executor(ABC):
    """Runs a planned graph: reads the graph's source (skipping `policy.skip_ids`), runs its
    stages over the records with the shared unit (composer.executors.unit.run_records), and
    hands the survivors to the graph's sink (its last node) in input order and the failures to
    `on_failures`. The stages it names (stages_set_up_here) are set up before and all are closed
    after, by the run (composer.run)."""

    @abstractmethod
    def run(self, graph: Graph, stats: ExecutionStats, policy: ExecutionPolicy, on_failures: OnFailures,
            advance: Advance = lambda n: None) -> None:
        """Stream the source through the stages, counting into `stats` as records finish (so the
        counts stay true when the run stops early) and calling `advance(n)` as n records finish.
        Raises RunAborted (on_error=fail, max_errors) or RunInterrupted (a stop request) after
        writing the input-order prefix of what finished."""

    def stages_set_up_here(self, graph: Graph) -> list[Any]:
        """The stages the run sets up in its own process before `run` (loading their models):
        every stage after the source, where this process runs them. An executor whose stages
        run elsewhere names fewer, so this process loads no model it will not run."""
        return graph.stages()[1:]

    @abstractmethod
    def facts(self) -> dict[str, Any]:
        """What the manifest's `executor` holds once the run is over: at least its `type`."""
