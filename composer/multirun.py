"""What the `composer` command does around a Hydra multirun: refuse a sweep folder that holds
another sweep (or the same one, still running), mark a sweep that Ctrl-C stopped and say how to
finish it, and build the command that resumes a recorded sweep (sweep.json)."""

from __future__ import annotations

import importlib.util
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

    optuna = bool(settings) and settings.get("sweeper") == sweep.OPTUNA_SWEEPER
    if optuna and importlib.util.find_spec("optuna") is None:
        return 'hydra/sweeper=optuna needs Optuna, which is not installed here: pip install "pipeline-composer[optuna]"'
    if settings and settings.get("launcher") == sweep.RAY_LAUNCHER and importlib.util.find_spec("ray") is None:
        return 'hydra/launcher=ray needs Ray, which is not installed here: pip install "pipeline-composer[ray]"'
    if not settings or not (Path(settings["dir"]) / SWEEP_STATE).is_file():
        return _new_storage_refusal(settings) if optuna else None
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
        before = (" (Hydra's own Optuna sweeper, which composer no longer uses: its sweeps are not resumed)"
                  if state["sweeper"] == sweep.HYDRA_OPTUNA_SWEEPER else "")
        return (f"{folder} holds a sweep run by {state['sweeper']}{before} and this command uses {settings['sweeper']}: "
                "a sweep folder takes its own sweep again, and sweeps of Hydra's basic sweeper and of composer's "
                "Optuna sweeper resume, no other. Choose a new folder with hydra.sweep.dir=...")
    if state["sweeper"] == sweep.OPTUNA_SWEEPER and settings["storage"] is None and settings["seed"] is None:
        # Without a storage the study is replayed from the trial folders: each trial asks the
        # seeded sampler again, gets the parameters it had, finds its folder finished and returns
        # the objective it returned, so the study goes on where it stopped, toward n_trials.
        return (f"{folder} holds an Optuna sweep whose sampler has no seed: its trials cannot be replayed from "
                "their folders (the sampler would propose other parameters). Set hydra.sweeper.sampler.seed "
                "when you start a sweep you may resume, or keep its study in a storage (hydra.sweeper.storage=...); "
                "choose a new hydra.sweep.dir=... for this one")
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
        return _stored_study_refusal(folder, state, settings) if state["sweeper"] == sweep.OPTUNA_SWEEPER else None
    listing = "\n".join(f"  - {line}" for line in changed[:20]) + (f"\n  ... and {len(changed) - 20} more" if len(changed) > 20 else "")
    return (f"{folder} holds another sweep ({folder / SWEEP_STATE}), so this command cannot continue it:\n{listing}\n"
            f"Resume it with its own command (`composer resume {folder}`), or start this sweep in a new folder "
            "with hydra.sweep.dir=...")


def _new_storage_refusal(settings: dict[str, Any]) -> str | None:
    """Why a new Optuna sweep cannot keep its study in its storage (hydra.sweeper.storage), or
    None: the storage cannot be opened (no driver, a wrong URL, a server not reachable, an SQLite
    file in a folder that does not exist)."""
    from hydra_plugins.composer_optuna_sweeper._storage import StorageUnavailable, can_create

    storage = settings.get("storage")
    if storage is None:
        return None
    try:
        can_create(storage, settings["dir"])
    except StorageUnavailable as error:
        return (f"hydra.sweeper.storage={storage} cannot be opened ({error}), so the sweep in {settings['dir']} could "
                "not keep its study there. Give a database URL that opens here (sqlite:///study.db; postgresql://... "
                "or mysql://... with its driver installed), or leave the storage unset: the study then lives in "
                "the sweep")
    return None


def _stored_study_refusal(folder: Path, state: dict[str, Any], settings: dict[str, Any]) -> str | None:
    """Why the Optuna sweep in `folder`, its study in a storage, cannot be resumed, or None: the
    storage cannot be opened, or it no longer holds the study while jobs ran (the sweep would
    ask its trials anew over the trial folders). Composer's sweeper then continues the study:
    its finished trials count, the ones a kill left running run again in their folders."""
    from composer import sweep
    from hydra_plugins.composer_optuna_sweeper._storage import StorageUnavailable, has_study, study_name

    storage = settings["storage"]
    if storage is None:
        return None
    name = study_name(settings["settings"].get("study_name"), folder)
    try:
        found = has_study(storage, name)
    except StorageUnavailable as error:
        return (f"{folder} holds an Optuna sweep whose study storage cannot be opened (hydra.sweeper.storage={storage}: "
                f"{error}); resuming needs the study it holds. Make the storage reachable (its driver installed, its "
                f"server up, its file in place) and resume again: composer resume {shell_word(str(folder))}")
    if not found and any(job["status"] != sweep.PENDING for job in state["jobs"]):
        return (f"{folder} holds an Optuna sweep whose study {name!r} is not in its storage (hydra.sweeper.storage="
                f"{storage}): the storage was moved, deleted or replaced, or the sweep folder was moved (a study without "
                "hydra.sweeper.study_name is named after the folder it started in), and without the study the sweep "
                "would ask its trials anew over the trial folders. Put the storage (or the folder) back where it was "
                "and resume again, or start the sweep anew in a new folder (hydra.sweep.dir=...)")
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
