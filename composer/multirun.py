"""What the `composer` command does around a Hydra multirun: refuse a sweep folder that holds
another sweep (or the same one, still running), mark a sweep that Ctrl-C stopped and say how to
finish it, and build the command that resumes a recorded sweep (sweep.json)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from composer.runstore import EXIT_INTERRUPTED


def refusal(task_overrides: list[str], settings: dict[str, Any], source: dict[str, str | None],
            configs: list[dict]) -> str | None:
    """Why this multirun (its sweep settings: callbacks.sweep_settings, {} where they cannot be
    worked out; its configs' source: callbacks.config_source) may not go into its sweep folder, or
    None. A folder holding a recorded sweep (sweep.json) takes only the same sweep again, to
    resume it: the same sweeper and configs, the same jobs in the same order, and each job's
    config equal to its run's, apart from the settings that change no output
    (schema.OUTPUT_NEUTRAL_KEYS). Each difference is named."""
    from composer import sweep
    from composer.runstore import CONFIG, SWEEP_STATE, differences, read_config
    from composer.schema import OUTPUT_NEUTRAL_KEYS, with_defaults

    if settings and settings.get("sweeper") == sweep.OPTUNA_SWEEPER:
        unusable = unusable_optuna_storage(settings.get("storage"))
        if unusable is not None:
            return unusable
    if not settings or not (Path(settings["dir"]) / SWEEP_STATE).is_file():
        return None
    folder = Path(settings["dir"])
    try:
        state = sweep.read_state(folder)
    except (OSError, sweep.SweepStateError) as error:
        return str(error)
    running = sweep.still_running(state)
    if running is not None:
        return (f"the sweep in {folder} is still running (composer process {running} on this machine): two commands "
                "would run the same jobs into the same folders. Wait for it to end, or stop it (Ctrl-C) and resume "
                "it then.")
    if state["sweeper"] != settings["sweeper"] or state["sweeper"] not in (sweep.BASIC_SWEEPER, sweep.OPTUNA_SWEEPER):
        return (f"{folder} holds a sweep run by {state['sweeper']} and this command uses {settings['sweeper']}: a sweep "
                "folder takes its own sweep again, and sweeps of Hydra's basic sweeper and of the Optuna sweeper "
                "resume, no other. Choose a new folder with hydra.sweep.dir=...")
    if state["sweeper"] == sweep.OPTUNA_SWEEPER:
        # The study is replayed from the trial folders: each trial asks the seeded sampler again,
        # gets the parameters it had, finds its folder finished and returns the objective it
        # returned, so the study goes on where it stopped, toward the configured n_trials.
        if settings["storage"] is not None:
            return (f"{folder} holds an Optuna sweep with a study storage (hydra.sweeper.storage="
                    f"{settings['storage']}): its study already holds the trials that ran, so running it again would "
                    "number its trials anew over the trial folders. Composer resumes Optuna sweeps without a storage "
                    "(the default), replaying the study from the trial folders; choose a new hydra.sweep.dir=...")
        if settings["seed"] is None:
            return (f"{folder} holds an Optuna sweep whose sampler has no seed: its trials cannot be replayed from "
                    "their folders (the sampler would propose other parameters). Set hydra.sweeper.sampler.seed "
                    "when you start a sweep you may resume; choose a new hydra.sweep.dir=... for this one")
    changed = sweep.identity_differences(state, task_overrides, settings["sweeper"], settings["settings"], source,
                                         OUTPUT_NEUTRAL_KEYS)
    if not changed and state["sweeper"] == sweep.BASIC_SWEEPER:
        for number, (job, config) in enumerate(zip(state["jobs"], configs)):
            job_dir = folder / job.get("dir", str(number))
            try:
                before = read_config(job_dir) if (job_dir / CONFIG).is_file() else None
            except (OSError, ValueError):
                before = None  # a damaged config.yaml: the run-level resume says so for that job
            if isinstance(before, dict):
                changed += [f"job {number}: {line}" for line in differences(with_defaults(before), with_defaults(config),
                                                                            OUTPUT_NEUTRAL_KEYS)]
    if not changed:
        return None
    listing = "\n".join(f"  - {line}" for line in changed[:20]) + (f"\n  ... and {len(changed) - 20} more" if len(changed) > 20 else "")
    return (f"{folder} holds another sweep ({folder / SWEEP_STATE}), so this command cannot continue it:\n{listing}\n"
            f"Resume it with its own command (`composer resume {folder}`), or start this sweep in a new folder "
            "with hydra.sweep.dir=...")


def unusable_optuna_storage(storage: Any) -> str | None:
    """Why an Optuna study storage (hydra.sweeper.storage) cannot open here, before a trial runs,
    or None. Hydra's Optuna sweeper (hydra-optuna-sweeper, whose last release is 1.3) requires
    optuna < 3, whose SQL storages do not work with SQLAlchemy 2 (optuna supports it from 3.1);
    the project's mlflow extra installs SQLAlchemy 2, and then optuna fails with a bare
    AssertionError from inside its storage once the sweep has started."""
    from importlib.metadata import PackageNotFoundError, version

    from packaging.version import Version

    if storage is None or str(storage).startswith("redis"):
        return None
    try:
        optuna, sqlalchemy = Version(version("optuna")), Version(version("sqlalchemy"))
    except PackageNotFoundError:
        return None  # the sweeper says what is missing itself
    if optuna < Version("3.1") and sqlalchemy >= Version("2"):
        return (f"hydra.sweeper.storage={storage}: Hydra's Optuna sweeper needs optuna<3 (installed: {optuna}), whose "
                f"SQL storages do not work with SQLAlchemy 2 (installed: {sqlalchemy}; the mlflow extra needs it). Leave "
                "the storage unset: the study then lives in the sweep, which composer resumes by replaying its seeded "
                "sampler over the trial folders (`composer resume SWEEP_DIR`). Or run the sweep in an environment with "
                "SQLAlchemy<2 and without the mlflow extra")
    return None


def restore_signal_handlers() -> None:
    """The Ctrl-C handlers from before the multirun, when it ended early (Hydra stopped on an
    error, a second Ctrl-C): the sweep's own handler outlives it in no caller."""
    import signal

    from composer.callbacks import active_sweep

    for signum, handler in active_sweep.pop("handlers", {}).items():
        signal.signal(signum, handler)


def interrupted(sweep_dir: Path | None) -> int:
    """Ctrl-C stopped a multirun: the running job(s) recorded `interrupted` in their folders;
    the sweep says so too, and how to finish it."""
    from composer.callbacks import active_sweep
    from composer.sweep import SWEEP_INTERRUPTED, end_sweep

    restore_signal_handlers()
    active_sweep.clear()
    if sweep_dir is None:
        print("composer: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if sweep_dir.is_dir():
        end_sweep(sweep_dir, SWEEP_INTERRUPTED)
    print(f"composer: sweep interrupted; finish it with: composer resume {shell_word(str(sweep_dir))}", file=sys.stderr)
    return EXIT_INTERRUPTED


def shell_word(text: str) -> str:
    import shlex

    return shlex.quote(text)


def override_value(text: str) -> str:
    """`text` as a value in a Hydra override: quoted when it holds characters the grammar reads."""
    if all(c.isalnum() or c in "_-./" for c in text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"
