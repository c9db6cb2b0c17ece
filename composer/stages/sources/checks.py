"""What the stages reading a source's field need of its value (text for a text task's model and
for normalize, text or a number for template), as per-record checks: a value they cannot take
fails its record at the source, naming its line, instead of failing inside the stage (or, for a
list, running as a batch). Looked up once, at bind, from the planned graph."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from composer.stages.base import ModelStage, Stage


# Text tasks whose pipelines take one input as a mapping with these keys (text-classification's
# {text, text_pair}), and those that take a chat (a list of {role, content} messages) as one input.
MAPPING_INPUTS = {"text-classification": ("text",), "table-question-answering": ("table", "query")}
CHAT_INPUTS = frozenset({"text-generation"})


def value_checks(source: Stage, field: str, stages: dict[str, Stage]) -> list[tuple[str, Callable[[Any], str | None]]]:
    """(who reads it, check) for each stage that reads the source's field as the source wrote it
    and needs a certain kind of value: a model stage of a text task (text, or the one structured
    input its pipeline takes), normalize (text), template (text or a number). Stages are looked
    at in graph order; once one rewrites the field, later readers see its value, not the source's."""
    from composer.stages.text import Normalize, Template
    from composer.tasks import task_table

    checks: list[tuple[str, Callable[[Any], str | None]]] = []
    for stage in stages.values():
        if stage is source:
            continue
        if field in stage.reads:
            if isinstance(stage, ModelStage) and stage.input_field == field:
                info = task_table().tasks.get(str(stage.task))
                if info is not None and info.modality == "text":
                    params = {**stage.build_params, **stage.call_params}
                    checks.append((f"the {info.name} model (stage {stage.name!r}) takes text", _text_input_check(info.name, params)))
            elif isinstance(stage, Normalize) and stage.field == field:
                checks.append((f"stage {stage.name!r} (normalize) takes text", _text_only))
            elif isinstance(stage, Template):
                checks.append((f"stage {stage.name!r} (template) takes text or a number", _scalar_only))
        if field in stage.writes:
            break
    return checks


def _kind_of(value: Any) -> str:
    if isinstance(value, bool):
        return f"is a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"is a number ({value!r})"
    if isinstance(value, dict):
        return f"is a mapping (keys: {', '.join(map(str, list(value)[:5])) or 'none'})"
    if isinstance(value, (list, tuple)):
        return f"is a list of {len(value)}"
    return f"is {type(value).__name__}"


def _text_only(value: Any) -> str | None:
    return None if isinstance(value, str) else f"{_kind_of(value)}, not text"


def _scalar_only(value: Any) -> str | None:
    return None if isinstance(value, (str, int, float)) else f"{_kind_of(value)}, not text or a number"


def _text_input_check(task: str, params: dict[str, Any]) -> Callable[[Any], str | None]:
    """What one record's input to a text task's pipeline may be: text, or the structured input
    that pipeline takes as one input. A list is a batch to a pipeline (one record would get one
    prediction per item), so it passes only as a chat or, for token-classification with
    is_split_into_words, as words."""
    keys = MAPPING_INPUTS.get(task)

    def check(value: Any) -> str | None:
        if isinstance(value, str):
            return None
        if isinstance(value, dict):
            if keys and all(key in value for key in keys):
                return None
            needs = f" (a {task} input may be a mapping with keys {', '.join(keys)})" if keys else ""
            return f"{_kind_of(value)}, not text{needs}"
        if isinstance(value, list):
            if task in CHAT_INPUTS and value and all(isinstance(m, dict) and "role" in m for m in value):
                return None
            if task == "token-classification" and params.get("is_split_into_words") and all(isinstance(w, str) for w in value):
                return None
            return f"{_kind_of(value)}, not text (the pipeline would run it as a batch of {len(value)} inputs)"
        return f"{_kind_of(value)}, not text"

    return check
