"""`composer verify RUN_DIR`: re-execute a run from its folder alone and say what drifted.

The folder's resolved config.yaml is run again into a temporary folder; outputs are compared
line by line (byte for byte, keyed by record id) and the recorded facts that pin a run are
compared one by one: library versions, model revisions and content hashes, dtypes, devices,
quantization, and the input's fingerprint.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from composer import runstore

# Facts recorded per model stage that pin what produced its outputs.
MODEL_FACTS = ("model.revision", "model.content_sha256", "dtype", "device", "device_map", "quantization", "quantizer")


@dataclass
class VerifyReport:
    records: int
    changed: list[str] = field(default_factory=list)  # ids whose output line differs
    missing: list[str] = field(default_factory=list)  # ids the original has and the re-run lacks
    extra: list[str] = field(default_factory=list)  # ids only the re-run has
    drift: list[str] = field(default_factory=list)  # 'fact: before -> after'

    @property
    def identical(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.drift)

    def lines(self) -> list[str]:
        if self.identical:
            return [f"identical: {self.records} records byte for byte, no recorded fact drifted"]
        out = []
        for label, ids in (("records whose output changed", self.changed), ("records missing", self.missing),
                           ("records not in the original", self.extra)):
            if ids:
                shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
                out.append(f"{label}: {shown}")
        out += [f"drift: {line}" for line in self.drift]
        return out


def _lines_by_id(path: Path) -> dict[str, str]:
    import json

    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as handle:
        return {json.loads(line)["id"]: line for line in handle if line.strip()}


def _pick(facts: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        facts = facts.get(key) if isinstance(facts, dict) else None
    return facts


def _facts(manifest: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {f"versions.{k}": v for k, v in manifest.get("versions", {}).items()}
    facts["input"] = manifest.get("input")
    facts["device"] = manifest.get("device")
    for name, stage in manifest.get("stages", {}).items():
        if stage.get("kind") == "model":
            facts.update({f"stages.{name}.{fact}": _pick(stage, fact) for fact in MODEL_FACTS})
    return facts


def compare(original: Path, rerun: Path) -> VerifyReport:
    before = {**_lines_by_id(original / runstore.OUTPUTS), **_lines_by_id(original / runstore.ERRORS)}
    after = {**_lines_by_id(rerun / runstore.OUTPUTS), **_lines_by_id(rerun / runstore.ERRORS)}
    report = VerifyReport(records=len(before))
    report.changed = [i for i in before if i in after and before[i] != after[i]]
    report.missing = [i for i in before if i not in after]
    report.extra = [i for i in after if i not in before]
    old_facts = _facts(runstore.read_json(original / runstore.MANIFEST))
    new_facts = _facts(runstore.read_json(rerun / runstore.MANIFEST))
    for key in sorted(set(old_facts) | set(new_facts)):
        if old_facts.get(key) != new_facts.get(key):
            report.drift.extend(runstore.differences({key: old_facts.get(key)}, {key: new_facts.get(key)}))
    return report


def verify(run_dir: Path) -> VerifyReport:
    """Re-execute the run in `run_dir` from its folder alone and compare."""
    from composer import api
    from composer.schema import ConfigError, validate

    manifest = runstore.read_json(run_dir / runstore.MANIFEST)
    if manifest["status"] not in runstore.FINISHED:
        raise ValueError(f"{run_dir} is {manifest['status']}, not finished: resume it before verifying")
    config = {**runstore.read_config(run_dir), "progress": False}
    issues = validate(config)
    if issues:
        raise ConfigError(issues)
    with tempfile.TemporaryDirectory(prefix="composer-verify-") as temporary:
        rerun = Path(temporary) / "run"
        api.execute_config(config, rerun, manifest.get("overrides", []))
        return compare(run_dir, rerun)
