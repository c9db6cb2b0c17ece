"""Executors run a planned graph (composer.plan.Graph) over its source and hand the results to
its sink. Every executor runs records through the stages with one shared unit,
`composer.executors.unit.run_records`: `LocalExecutor` (threads, windows, prefetch, workers in
this process) and `RayExecutor` (Ray Data actors, `executor=ray`; Ray is imported only then)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from composer.executors.base import Executor
    from composer.plan import Graph
    from composer.schema import ConfigIssue


def executor_issues(config: dict[str, Any], graph: Graph) -> list[ConfigIssue]:
    """Why the config's executor cannot run this graph (empty: it can), for `composer plan` to
    report with every other mistake. Imports no Ray: whether Ray is installed is the run's check."""
    if (config.get("executor") or {}).get("type", "local") == "ray":
        from composer.executors.ray import refusals

        return refusals(graph)
    return []


def executor_for(config: dict[str, Any], graph: Graph) -> Executor:
    """The executor the config's `executor.type` names (a config from before the key: local).
    Raises ConfigError, before anything loads, where the graph cannot run on it."""
    if (config.get("executor") or {}).get("type", "local") == "ray":
        from composer.executors.ray import ray_executor

        return ray_executor(config, graph)
    from composer.executors.local import LocalExecutor

    return LocalExecutor()
