"""Optional experiment tracking: log a finished run folder to MLflow (`logger=mlflow`).

The run folder stays the record; MLflow gets a copy to browse and compare: params (the resolved
config, flattened to dotted keys), metrics (every number in metrics.json, plus counts, wall
time and peak memory from the manifest), tags (status, exit code, run folder, git commit, model
revisions) and, with `artifacts: true`, the folder's files. The default store is local:
`sqlite:///mlflow.db` in the working directory with artifacts under ./mlruns; any tracking URI
(another SQLite file, a server) is an override. A logging failure is reported on stderr and
never changes the run's outcome.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MAX_PARAM = 6000  # MLflow's limit on a param value's length
_KEY = re.compile(r"[^0-9A-Za-z_\-. /:]")


def _key(name: str) -> str:
    """A metric/param name MLflow accepts (letters, digits, _ - . space / :)."""
    return _KEY.sub("_", name)


def run_payload(run_dir: Path, config: dict[str, Any]) -> tuple[dict[str, str], dict[str, float], dict[str, str]]:
    """(params, metrics, tags) for a run folder, read from the folder alone."""
    from composer.report import metric_values
    from composer.runstore import METRICS, flatten, read_manifest

    manifest = read_manifest(run_dir)
    metrics_path = run_dir / METRICS
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.exists() else {}
    params = {}
    for key, value in flatten({k: v for k, v in config.items() if k != "logger"}).items():
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        params[_key(key)] = text[:_MAX_PARAM]
    numbers = {_key(k): float(v) for k, v in metric_values(manifest, metrics).items()}
    tags = {
        "composer.status": str(manifest.get("status")),
        "composer.exit_code": str(manifest.get("exit_code")),
        "composer.run_dir": str(run_dir.resolve()),
        "composer.task": str(manifest.get("task")),
    }
    git = manifest.get("git") or {}
    if git.get("commit"):
        tags["mlflow.source.git.commit"] = git["commit"]
        tags["composer.git_dirty"] = str(bool(git.get("dirty"))).lower()
    for name, stage in (manifest.get("stages") or {}).items():
        if stage.get("kind") == "model":
            model = stage.get("model") or {}
            tags[f"composer.model.{_key(name)}"] = str(model.get("requested"))
            revision = model.get("revision") or model.get("content_sha256")
            if revision:
                tags[f"composer.model.{_key(name)}.revision"] = str(revision)
    for package in ("torch", "transformers"):
        version = (manifest.get("versions") or {}).get(package)
        if version:
            tags[f"composer.version.{package}"] = str(version)
    return params, numbers, tags


def _artifact_location(uri: str) -> str | None:
    """Artifacts of a local SQLite store go beside the database (`mlruns/`), not into the working
    directory of whichever process logged first; other stores keep their own default."""
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///")).expanduser().resolve().parent / "mlruns").as_uri()


def log_run(run_dir: Path, config: dict[str, Any]) -> str | None:
    """Log the run in `run_dir` as one MLflow run; returns its run id (None if logging failed)."""
    settings = config.get("logger") or {}
    if settings.get("type") != "mlflow":
        return None
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        print('composer: logger=mlflow needs mlflow: pip install "pipeline-composer[mlflow]"', file=sys.stderr)
        return None
    try:
        params, numbers, tags = run_payload(run_dir, config)
        tags.update({str(k): str(v) for k, v in (settings.get("tags") or {}).items()})
        uri = settings.get("tracking_uri") or DEFAULT_TRACKING_URI
        client = MlflowClient(tracking_uri=uri)
        name = settings.get("experiment") or str(config.get("name") or "composer")
        experiment = client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else client.create_experiment(name, _artifact_location(uri))
        run = client.create_run(experiment_id, run_name=settings.get("run_name") or run_dir.name, tags=tags)
        from mlflow.entities import Metric, Param

        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, int(time.time() * 1000), 0) for k, v in numbers.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        if settings.get("artifacts", True):
            client.log_artifacts(run.info.run_id, str(run_dir))
        from composer.runstore import FINISHED

        status = "FINISHED" if tags["composer.status"] in FINISHED else "FAILED"
        client.set_terminated(run.info.run_id, status=status)
        print(f"mlflow: logged run {run.info.run_id} to {uri} (experiment {name!r})", file=sys.stderr)
        return run.info.run_id
    except Exception as error:  # noqa: BLE001 - tracking is a copy; the run folder is the record
        print(f"composer: could not log to MLflow: {type(error).__name__}: {error}", file=sys.stderr)
        return None
