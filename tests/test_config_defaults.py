"""One source of config defaults (issue 17, item 5): the schema's dataclasses hold every default,
config.yaml and the group files state only what differs, and stage fingerprints come from the
stages' own constructor arguments."""

from __future__ import annotations

import dataclasses
import inspect
from pathlib import Path

import pytest
import yaml

from composer import api, schema
from composer.configuration import compose_config, config_dir
from composer.plan import STAGE_TYPES, load_class
from composer.schema import ConfigError

GROUPS = {"model": schema.ModelConfig, "input": schema.InputConfig, "quantization": schema.QuantizationConfig,
          "cache": schema.CacheConfig, "logger": schema.LoggerConfig, "executor": schema.ExecutorConfig}


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_group_files_state_only_what_differs_from_the_schema(group):
    default = dataclasses.asdict(GROUPS[group]())
    restated = []
    for path in sorted((config_dir() / group).glob("*.yaml")):
        values = yaml.safe_load(path.read_text()) or {}
        # An input file names its reader even where it is the default one (inline).
        restated += [f"{path.name}: {key}" for key, value in values.items()
                     if key in default and value == default[key] and not (group == "input" and key == "type")]
    assert not restated, f"these keys restate the default of composer/schema.py: {restated}"


def test_root_config_holds_no_values_of_its_own():
    root = yaml.safe_load((config_dir() / "config.yaml").read_text())
    assert set(root) == {"defaults", "hydra"}
    assert root["defaults"][0] == schema.DEFAULTS_NODE


def test_composed_config_has_every_default():
    plain = compose_config(["experiment=base"]).plain
    assert set(plain) == {f.name for f in dataclasses.fields(schema.ComposerConfig)}
    assert plain["model"] == {**dataclasses.asdict(schema.ModelConfig()), "id": "tiny:text-classification"}
    assert plain["batch_size"] == 8 and plain["sort_window"] == "auto" and plain["name"] == "text-classification"


def test_input_keys_follow_the_input_type(tmp_path):
    """A type's own keys are in its resolved config and reach its source; another type's keys
    are left out while they hold their default, and named when set."""
    data = tmp_path / "rows.csv"
    data.write_text("text\tlabel\nfine\tpos\n")
    jsonl = compose_config(["experiment=base"]).plain["input"]
    assert "delimiter" not in jsonl and "split" not in jsonl and "records" not in jsonl
    overrides = ["experiment=base", "input=csv", f"input.path={data}", "input.delimiter=tab"]
    csv = compose_config(overrides).plain["input"]
    assert csv["delimiter"] == "tab" and "split" not in csv
    assert api.plan(overrides)[1].source.delimiter == "\t"
    with pytest.raises(ConfigError) as error:
        api.plan(["experiment=base", "input.delimiter=tab"])
    assert "input.delimiter: unknown parameter of JsonlSource" in str(error.value)


def test_with_defaults_reads_configs_that_stated_fewer_keys():
    plain = compose_config(["experiment=base"]).plain
    older = {**plain, "model": {k: v for k, v in plain["model"].items() if k != "fallback"}}
    del older["tune_malloc"]
    assert schema.with_defaults(older) == schema.with_defaults(plain) == plain


def test_output_neutral_keys_are_declared_on_the_schema():
    assert schema.OUTPUT_NEUTRAL_KEYS == {"progress", "threads", "batch_size", "max_errors", "on_error", "cache", "sort_window",
                                          "max_batch_tokens", "prefetch", "workers", "onednn_linear", "tune_malloc", "serve", "executor"}


@pytest.mark.parametrize("type_name", sorted(t for t in STAGE_TYPES if t not in ("model",)))
def test_stage_params_are_its_constructor_arguments(type_name):
    """Every constructor argument a stage does not declare output-neutral is in its params (the
    fingerprint), defaults included, so a new parameter cannot be left out by hand."""
    cls = load_class(STAGE_TYPES[type_name])
    signature = inspect.signature(cls.__init__)
    expected = {name for name, p in signature.parameters.items()
                if name not in ("self", "name") and p.kind is not inspect.Parameter.VAR_KEYWORD} - cls.output_neutral
    stage = _example(cls, type_name)
    assert expected <= set(stage.params), (type_name, expected - set(stage.params))
    assert not set(stage.params) & cls.output_neutral


def _example(cls: type, type_name: str):
    """A stage of `cls` built the way the planner builds it (required arguments only)."""
    nasty = Path(__file__).parent / "data" / "nasty"
    required = {
        "jsonl": {"path": str(nasty / "carriage_returns.jsonl")},
        "csv": {"path": str(nasty / "latin1_row.csv")},
        "parquet": {"path": str(nasty / "jsonl_named.parquet")},
        "template": {"template": "Review: {text}"},
        "rename": {"mapping": {"a": "b"}},
        "select": {"fields": ["id"]},
        "map_labels": {"mapping": {"a": "b"}},
        "embedding_classify": {"labels": {"a": "one"}, "model": {"id": "tiny:feature-extraction"}},
        "semantic_search": {"queries": ["q"], "model": {"id": "tiny:feature-extraction"}},
        "image_chat": {"prompt": "Describe"},
        "threshold": {"min_score": 0.5},
        "inline": {"records": ["x"]},
        "folder": {"path": str(nasty)},
        "dataset": {"path": "json"},
    }
    return cls(type_name, **required.get(type_name, {}))


def test_model_stage_fingerprint_ignores_batching_only():
    cls = load_class(STAGE_TYPES["model"])
    base = cls("model", task="text-classification", model={"id": "tiny:text-classification"}, batch_size=8)
    same = cls("model", task="text-classification", model={"id": "tiny:text-classification"}, batch_size=2,
               sort_by_length=False, max_batch_tokens=64, onednn_linear=False)
    other = cls("model", task="text-classification", model={"id": "tiny:text-classification"}, call={"top_k": 2})
    assert base.params == same.params and base.params != other.params


def test_readme_config_reference_states_the_schema_defaults():
    """README's config reference is documentation of composer/schema.py: its defaults must agree."""
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    flat = _flatten(schema.defaults())
    checked = 0
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`") or "(group)" in cells[0] or not cells[1]:
            continue
        keys = [key.strip().strip("`") for key in cells[0].split(",")]
        values = [value.strip().strip("`") for value in cells[1].split(",")]
        if len(keys) != len(values) or not all(key in flat for key in keys):
            continue
        for key, value in zip(keys, values):
            assert yaml.safe_load(value) == flat[key] or value == flat[key], (key, value, flat[key])
            checked += 1
    assert checked >= 30, checked


def _flatten(values: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        flat[f"{prefix}{key}"] = value
    return flat
