"""RayExecutor (`executor=ray`): the planned graph on Ray Data, for inputs or clusters larger
than one process, with the local executor's outputs.

    RayExecutor.run      start Ray for the run or join a cluster (executor.address), then _stream
      _stream            the source as a Ray dataset (ray_read.SourceBlocks: one read task on the
                         driver's node streams windows) -> map_batches on an actor pool (_Worker)
                         -> each block back in input order (preserve_order) -> local.write_window
                         (sink, failures, the error policy)
      SourceBlocks       composer's own reader in a Ray read task: unfinished records cut into
                         the local executor's windows, one block each, as they are read
      _Worker            one per actor: plans the config, sets the stages up once (one intra-op
                         thread per CPU it was given), then for each block runs what the local
                         executor runs for a window: local.prepare_window, then unit.run_records

The input is read by composer's own reader, so ids, skipped ids (resume) and the lines a source
cannot read are exactly the local executor's; a block is the local executor's window on this
machine (executor.batch_size to change), so the model stage sorts and batches the same records
together and outputs are the same. The reader runs in one Ray task on the driver's node (where
`composer plan` found the input), not in the driver: it yields block after block as Ray Data
asks for them (a streaming read, held back when the actors fall behind), so neither the driver
nor the object store holds the whole input. Blocks and results cross Ray pickled: a record keeps
its Python types (no Arrow conversion). One reader reads the input in order: ids depend on every
earlier row (a repeated row's id counts its repeats, a resumed run skips by a running count of
the failures written), so a file is not split between parallel readers.

Stages that compare a record with every earlier one (near_duplicates) are refused: split
between actors, each would see only its own blocks. The result cache is a SQLite file: the
actors open it on a one-node cluster; on a cluster of several nodes it is turned off, with a
warning and a note in the manifest (`executor.cache`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from composer.executors.base import Advance, ExecutionPolicy, ExecutionStats, Executor, OnFailures
from composer.executors.local import Window, prepare_window, split_head, window_for, write_window
from composer.executors.unit import Outcome, run_records
from composer.records import Record, RecordFailure
from composer.schema import ConfigError, ConfigIssue
from composer.stages.base import BatchedStage

if TYPE_CHECKING:
    from composer.plan import Graph

log = logging.getLogger(__name__)

ACTOR_START_TIMEOUT_S = 600  # the actor pool must be up (models loaded) within this
READ_CPUS = 0.1  # what the read task reserves: it parses rows, the actors do the work


def refusals(graph: Graph) -> list[ConfigIssue]:
    """Why this graph cannot run on Ray with the local executor's outputs (empty: it can)."""
    return [
        ConfigIssue("executor.type", f"stage {stage.name!r} compares each record with every record before it, so split "
                    "between Ray actors each would see only its own blocks: remove it from the config or use executor=local")
        for stage in graph.stages() if stage.restores_state
    ]


@dataclass
class _ActorFacts:
    """One actor as the manifest shows it: where it ran, the GPUs Ray gave it, its timings."""

    node: str
    pid: int
    cuda_visible_devices: str | None
    setup_seconds: float
    models: dict[str, Any]  # per model stage, what loaded in this actor, where (the stage's manifest facts)
    blocks: int = 0
    records: int = 0
    seconds: float = 0.0


@dataclass
class _Block:
    """What an actor hands back for one block: the window less its records (its failures,
    positions and size, for write_window), the stages' outcome, and what it measured."""

    window: Window
    outcome: Outcome
    batches: int
    stage_seconds: dict[str, float]
    model_batch_seconds: dict[str, list[float]]
    model_input_tokens: dict[str, int]
    actor: str  # "<Ray actor id>:<pid>"
    actor_facts: _ActorFacts
    seconds: float


class RayExecutor(Executor):
    """Runs the graph's stages in Ray Data actors and writes the run folder from this process."""

    def __init__(self, config: dict[str, Any]):
        self.config = config
        self._facts: dict[str, Any] = {}  # the manifest's `executor`, filled in as the run goes

    @property
    def settings(self) -> dict[str, Any]:
        return self.config["executor"]

    def stages_set_up_here(self, graph: Graph) -> list[Any]:
        """Only the sink: the actors run every other stage, and each loads its own models (a
        driver without the actors' GPUs or memory could not hold them)."""
        return graph.stages()[-1:]

    def facts(self) -> dict[str, Any]:
        per_actor = {actor: dataclasses.asdict(facts) for actor, facts in self._facts.get("per_actor", {}).items()}
        return {"type": "ray", **self._facts, "blocks": sum(actor["blocks"] for actor in per_actor.values()),
                "per_actor": per_actor}

    def run(self, graph: Graph, stats: ExecutionStats, policy: ExecutionPolicy, on_failures: OnFailures,
            advance: Advance = lambda n: None) -> None:
        import ray

        stats.stage_seconds = {s.name: 0.0 for s in graph.stages()}
        started = time.perf_counter()
        ours = not ray.is_initialized()
        if ours:  # null: a Ray of our own for this run ("local", even where a cluster runs here); else join the address
            address = self.settings["address"]
            try:
                ray.init(address=address or "local", include_dashboard=False, log_to_driver=True)
            except (ConnectionError, ValueError) as error:
                raise RuntimeError(f"executor.address={address!r}: Ray could not start or join a cluster there: {error}") from error
        try:
            self._stream(graph, stats, policy, on_failures, advance)
        finally:
            stats.seconds = time.perf_counter() - started
            if ours:
                ray.shutdown()

    def _stream(self, graph: Graph, stats: ExecutionStats, policy: ExecutionPolicy, on_failures: OnFailures,
                advance: Advance) -> None:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from composer.executors.ray_read import SourceBlocks

        *transforms, sink = graph.nodes[1:]
        width = max((n.stage.workers for n in transforms if isinstance(n.stage, BatchedStage)), default=1)
        size = self.settings["batch_size"] or window_for(graph, transforms, width)
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        cache = bool(self.config["cache"].get("enabled"))
        self._facts.update(ray_version=ray.__version__, address=self.settings["address"], nodes=len(nodes),
                           cluster_resources=ray.cluster_resources(), actors_requested=self.settings["actors"],
                           num_cpus_per_actor=self.settings["num_cpus_per_actor"],
                           num_gpus_per_actor=self.settings["num_gpus_per_actor"], block_records=size,
                           cache="off" if not cache else "on: the actors share the SQLite file")
        if cache and len(nodes) > 1:
            cache = False
            self._facts["cache"] = "off: the result cache is a SQLite file on one machine, and this cluster has several nodes"
            log.warning("cache=on is ignored with executor=ray on a cluster of %d nodes: the result cache is a "
                        "SQLite file on one machine", len(nodes))
        # No more actors than blocks, where the source can count its rows: an actor with nothing
        # to do would only load the models, and Ray Data may cancel it while the pool waits for
        # every actor to start.
        expected = _blocks_expected(graph, policy, size)
        actor_count = min(self.settings["actors"], max(expected, 1)) if expected is not None else self.settings["actors"]
        self._facts["actors"] = actor_count
        actors: dict[str, _ActorFacts] = {}
        self._facts["per_actor"] = actors
        context = ray.data.DataContext.get_current()
        context.execution_options.preserve_order = True  # set before the dataset exists: it is read when it is built
        context.enable_progress_bars = False  # the run's own bar counts records
        # Each window its own block, handed on as soon as read: Ray Data would otherwise gather
        # the reader's rows into blocks of up to 128 MiB, so the actors would wait for that much
        # input and share it as one task.
        context.target_max_block_size = 1
        # A cluster too small for the pool fails with Ray's "Timed out while starting actors"
        # instead of waiting forever.
        context.wait_for_min_actors_s = ACTOR_START_TIMEOUT_S
        # The read task takes a sliver of a CPU: on a small node, whole CPUs taken by the actors
        # would leave it none and the pipeline would wait forever (ray issue 44687).
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        read = ray.data.read_datasource(SourceBlocks(graph.source, policy.skip_ids, size), override_num_blocks=1,
                                        ray_remote_args={"num_cpus": READ_CPUS, "scheduling_strategy": here})
        dataset = read.map_batches(
            _Worker,
            batch_size=1,
            batch_format="numpy",
            # One block in flight per actor: an idle actor takes the next block, and memory stays
            # at a block per actor (plus those preserve_order keeps for the driver).
            compute=ray.data.ActorPoolStrategy(size=actor_count, max_tasks_in_flight_per_actor=1),
            num_cpus=self.settings["num_cpus_per_actor"],
            num_gpus=self.settings["num_gpus_per_actor"] or None,
            fn_constructor_kwargs={"config": self.config, "cache": cache},
        )
        model_stages = {stage.name: stage for stage in graph.model_stages()}
        started = time.perf_counter()
        for row in dataset.iter_rows():
            self._facts.setdefault("reader", row["reader"])
            block: _Block = pickle.loads(row["result"])
            # The pool is up (an actor has loaded its models; Ray Data hands out no block before)
            # about when the first block began: the stream after it is what scales with actors
            # (bench/ray_scaling.py), the start-up before it does not.
            self._facts.setdefault("pool_ready_seconds", time.perf_counter() - started - block.seconds)
            _count(block, stats, actors.setdefault(block.actor, block.actor_facts), model_stages)
            write_window(block.window, block.outcome, sink, stats, policy, on_failures, advance)
        self._facts["stream_seconds"] = time.perf_counter() - started


def _count(block: _Block, stats: ExecutionStats, actor: _ActorFacts, model_stages: dict[str, Any]) -> None:
    """Add a block's measurements to the run's: records in, batches, per-stage seconds, the
    model stages' batch latencies and input tokens (metrics.json), the actor's own counts."""
    stats.records_in += block.window.size
    stats.batches += block.batches
    for name, seconds in block.stage_seconds.items():
        stats.stage_seconds[name] = stats.stage_seconds.get(name, 0.0) + seconds
    for name, stage in model_stages.items():
        stage.batch_seconds.extend(block.model_batch_seconds.get(name, []))
        stage.input_tokens += block.model_input_tokens.get(name, 0)
    actor.blocks += 1
    actor.records += block.window.size
    actor.seconds += block.seconds


def _blocks_expected(graph: Graph, policy: ExecutionPolicy, size: int) -> int | None:
    """How many blocks the run will read at most, where the source can count its rows cheaply
    (None where it cannot): its rows less the lines earlier attempts wrote, a window each."""
    total = graph.source.total()
    if total is None:
        return None
    return -(-max(total - len(policy.skip_ids), 0) // size)


class _Worker:
    """A Ray Data actor: the config planned and its stages set up once, then block after block
    run as the local executor runs a window."""

    def __init__(self, config: dict[str, Any], cache: bool):
        import ray

        from composer.plan import plan
        from composer.runtime import set_up_stages

        started = time.perf_counter()
        # What a run quiets in its own process (run._quiet_library_noise), here in the actor's:
        # torchao's CUDA kernels it cannot load on CPU.
        logging.getLogger("torchao").setLevel(logging.ERROR)
        context = ray.get_runtime_context()
        # An actor Ray restarts (its node lost) keeps its id but is a new process: both are listed.
        self.id = f"{context.get_actor_id()}:{os.getpid()}"
        self.graph = plan(config, deep=True)
        if cache:
            self.graph.attach_cache(config["cache"])
        *transforms, _sink = self.graph.nodes[1:]
        # One torch intra-op thread per CPU Ray gave this actor (at least one): actors share a node.
        set_up_stages(config, [node.stage for node in transforms], max(1, int(config["executor"]["num_cpus_per_actor"])))
        self.head, self.tail = split_head(transforms)
        self.fail_fast = config["on_error"] == "fail"
        width = max((n.stage.workers for n in self.tail if isinstance(n.stage, BatchedStage)), default=1)
        self.workers = ThreadPoolExecutor(width, thread_name_prefix="composer-model") if width > 1 else None
        self.facts = _ActorFacts(node=context.get_node_id(), pid=os.getpid(),
                                 cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                                 setup_seconds=time.perf_counter() - started,
                                 models={stage.name: stage.describe() for stage in self.graph.model_stages()})

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [pickle.dumps(self._run(pickle.loads(payload)), protocol=5) for payload in batch["block"]]
        return {"result": np.array(results, dtype=object), "reader": batch["reader"]}

    def _run(self, items: list[Record | RecordFailure]) -> _Block:
        """One block, as LocalExecutor runs a window: head transforms and tokenizing ahead
        (prepare_window), then the rest of the stages with the shared unit. With on_error=fail
        the block stops at its first failure, as a window does; max_errors and stop requests
        are the driver's, between blocks."""
        started = time.perf_counter()
        seconds: dict[str, float] = {}
        models = self.graph.model_stages()
        before = {s.name: (len(s.batch_seconds), s.input_tokens) for s in models}
        first = self.tail[0].stage if self.tail else None
        window = prepare_window(self.graph, items, self.head, first, seconds)
        assert window is not None  # nothing stops it here
        count = 0

        def on_batch(n: int) -> None:
            nonlocal count
            count += 1

        outcome = run_records([n.stage for n in self.tail], window.records, window.positions, lengths=window.lengths,
                              halt=lambda pending: self.fail_fast and bool(window.failures or pending),
                              on_batch=on_batch, workers=self.workers, seconds=seconds)
        return _Block(
            window=Window(window.size, [], window.failures, window.positions, {}),
            outcome=outcome,
            batches=count,
            stage_seconds=seconds,
            model_batch_seconds={s.name: s.batch_seconds[before[s.name][0]:] for s in models},
            model_input_tokens={s.name: s.input_tokens - before[s.name][1] for s in models},
            actor=self.id,
            actor_facts=self.facts,
            seconds=time.perf_counter() - started,
        )


def ray_executor(config: dict[str, Any], graph: Graph) -> RayExecutor:
    """The Ray executor for a planned graph, or ConfigError (before anything loads) naming why
    it cannot run: Ray is not installed, or a stage cannot be split between actors."""
    issues = refusals(graph)
    try:
        import ray  # noqa: F401 - only whether it imports
    except ImportError as error:
        issues.append(ConfigIssue("executor.type", f"executor=ray needs Ray ({error}): pip install \"pipeline-composer[ray]\""))
    if issues:
        raise ConfigError(issues)
    return RayExecutor(config)
