"""Executors run a planned graph (composer.plan.Graph) over its source and hand the results to
its sink. Every executor runs records through the stages with one shared unit,
`composer.executors.unit.run_records`; `LocalExecutor` (threads, windows, prefetch, workers) is
today's only one."""
