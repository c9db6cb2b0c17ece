"""`composer verify RUN_DIR`: re-execute a run from its folder alone and say what drifted.

The folder's resolved config.yaml is run again into a temporary folder; outputs are compared
line by line (byte for byte, keyed by record id, and in order: outputs.jsonl keeps the input's
order, so the same lines in another order are drift too, named "reordered") and the recorded
facts that pin a run are compared one by one: library versions, model revisions and content
hashes, dtypes, devices, quantization, and the input's fingerprint.
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
    # per file whose shared lines come in another order, where they first part:
    # 'outputs.jsonl line N holds id X where the re-run has id Y (same lines, another order)'
    reordered: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)  # 'fact: before -> after'

    @property
    def identical(self) -> bool:
        return not (self.changed or self.missing or self.extra or self.reordered or self.drift)

    def lines(self) -> list[str]:
        if self.identical:
            return [f"identical: {self.records} records byte for byte, no recorded fact drifted"]
        out = []
        for label, ids in (("records whose output changed", self.changed), ("records missing", self.missing),
                           ("records not in the original", self.extra)):
            if ids:
                shown = ", ".join(ids[:20]) + (f", ... ({len(ids)} in all)" if len(ids) > 20 else "")
                out.append(f"{label}: {shown}")
        out += [f"reordered: {line}" for line in self.reordered]
        out += [f"drift: {line}" for line in self.drift]
        return out


def _lines(path: Path) -> list[tuple[str, str]]:
    """(record id, line) of each line of a run folder's JSON Lines file, in file order; a line
    that is no record raises runstore.RunFolderError naming it."""
    import json

    if not path.exists():
        return []
    lines = []
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
                lines.append((str(json.loads(line)["id"]), line))
            except (ValueError, KeyError, TypeError) as error:
                raise runstore.damaged_line(path, number, f"is not a record ({type(error).__name__}: {error})") from None
    return lines


def _keyed(lines: dict[str, list[tuple[str, str]]]) -> dict[tuple[str, str, int], str]:
    """Each line by (file, id, occurrence): an id repeated in the input (its duplicates fail
    with that id) names several lines, each compared with its counterpart."""
    keyed: dict[tuple[str, str, int], str] = {}
    for name, pairs in lines.items():
        seen: dict[str, int] = {}
        for record_id, line in pairs:
            seen[record_id] = seen.get(record_id, 0) + 1
            keyed[(name, record_id, seen[record_id])] = line
    return keyed


def _order_drift(name: str, before: list[tuple[str, str]], after: list[tuple[str, str]]) -> str | None:
    """Where the lines both files hold part order, or None when they come in the same order.

    Lines are matched as (id, line) pairs, so an input with a repeated id (its duplicates fail
    with the same id) is compared line for line too."""
    shared_before, shared_after = set(before), set(after)
    kept_before = [(i, pair) for i, pair in enumerate(before, start=1) if pair in shared_after]
    kept_after = [pair for pair in after if pair in shared_before]
    for (number, old), new in zip(kept_before, kept_after):
        if old != new:
            return f"{name} line {number} holds id {old[0]!r} where the re-run has id {new[0]!r} (same lines, another order)"
    return None


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
    names = (runstore.OUTPUTS, runstore.ERRORS)
    old_lines = {name: _lines(original / name) for name in names}
    new_lines = {name: _lines(rerun / name) for name in names}
    before, after = _keyed(old_lines), _keyed(new_lines)
    report = VerifyReport(records=sum(len(lines) for lines in old_lines.values()))
    report.changed = [key[1] for key in before if key in after and before[key] != after[key]]
    report.missing = [key[1] for key in before if key not in after]
    report.extra = [key[1] for key in after if key not in before]
    report.reordered = [line for name in names if (line := _order_drift(name, old_lines[name], new_lines[name]))]
    old_facts = _facts(runstore.read_manifest(original))
    new_facts = _facts(runstore.read_manifest(rerun))
    for key in sorted(set(old_facts) | set(new_facts)):
        if old_facts.get(key) != new_facts.get(key):
            report.drift.extend(runstore.differences({key: old_facts.get(key)}, {key: new_facts.get(key)}))
    return report


def verify(run_dir: Path) -> VerifyReport:
    """Re-execute the run in `run_dir` from its folder alone and compare."""
    from composer.run import execute_config
    from composer.schema import ConfigError
    from composer.validation import validate

    manifest = runstore.read_manifest(run_dir)
    if manifest["status"] not in runstore.FINISHED:
        raise ValueError(f"{run_dir} is {manifest['status']}, not finished: resume it before verifying")
    config = {**runstore.read_config(run_dir), "progress": False}
    issues = validate(config)
    if issues:
        raise ConfigError(issues)
    with tempfile.TemporaryDirectory(prefix="composer-verify-") as temporary:
        rerun = Path(temporary) / "run"
        execute_config(config, rerun, manifest.get("overrides", []))
        return compare(run_dir, rerun)
