"""The transformers pipeline tasks, known without importing transformers.

`composer plan` must validate `task=` in well under a second and without importing torch, but
importing `transformers.pipelines` pulls in torch. The task table is a literal dict in
`transformers/pipelines/__init__.py`, so it is read from that file's syntax tree instead: the
answer always matches the transformers version that is installed, with no copy to keep in sync.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

# Tasks whose outputs carry class labels, so gold labels in the input give accuracy and F1.
LABELLED_TASKS = frozenset(
    {
        "text-classification",
        "zero-shot-classification",
        "image-classification",
        "audio-classification",
        "zero-shot-image-classification",
        "zero-shot-audio-classification",
        "video-classification",
    }
)


@dataclass(frozen=True)
class TaskInfo:
    """What the installed transformers says about one pipeline task."""

    name: str
    impl: str  # dotted path of the pipeline class
    modality: str  # text, image, audio, multimodal, video
    default_model: tuple[str, str | None] | None = None  # (id, revision) that pipeline(task) loads


@dataclass(frozen=True)
class TaskTable:
    tasks: dict[str, TaskInfo]
    aliases: dict[str, str]

    def canonical(self, task: str) -> str | None:
        """The canonical task name for a task or alias, or None if transformers has no such task."""
        task = self.aliases.get(task, task)
        return task if task in self.tasks else None

    def names(self) -> list[str]:
        return sorted([*self.tasks, *self.aliases])


@functools.lru_cache(maxsize=1)
def transformers_root() -> Path:
    """The folder of the installed transformers package, found without importing it."""
    spec = importlib.util.find_spec("transformers")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("transformers is not installed; install pipeline-composer's dependencies")
    return Path(next(iter(spec.submodule_search_locations)))


def _literal_dict(node: ast.Dict) -> dict[str, ast.expr]:
    return {ast.literal_eval(k): v for k, v in zip(node.keys, node.values) if k is not None}


def _default_model(node: ast.expr | None) -> tuple[str, str | None] | None:
    """The `default: {"model": (id, revision)}` entry of a task, where it is a literal."""
    try:
        model = ast.literal_eval(node).get("model") if node is not None else None
    except (ValueError, AttributeError):
        return None
    if isinstance(model, str):
        return model, None
    return (model[0], model[1]) if isinstance(model, tuple) and len(model) == 2 else None


@functools.lru_cache(maxsize=1)
def task_table() -> TaskTable:
    """Parse SUPPORTED_TASKS and TASK_ALIASES from the installed transformers."""
    tree = ast.parse((transformers_root() / "pipelines" / "__init__.py").read_text(encoding="utf-8"))
    found: dict[str, ast.Dict] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        if isinstance(target, ast.Name) and isinstance(getattr(node, "value", None), ast.Dict):
            found[target.id] = node.value
    if "SUPPORTED_TASKS" not in found or "TASK_ALIASES" not in found:
        raise RuntimeError("could not read the task table of the installed transformers")
    tasks = {}
    for name, spec in _literal_dict(found["SUPPORTED_TASKS"]).items():
        fields = _literal_dict(spec) if isinstance(spec, ast.Dict) else {}
        impl = fields.get("impl")
        modality = fields.get("type")
        tasks[name] = TaskInfo(
            name=name,
            impl=ast.literal_eval(impl) if isinstance(impl, ast.Constant) else "",
            modality=ast.literal_eval(modality) if isinstance(modality, ast.Constant) else "",
            default_model=_default_model(fields.get("default")),
        )
    aliases = {k: ast.literal_eval(v) for k, v in _literal_dict(found["TASK_ALIASES"]).items()}
    return TaskTable(tasks=tasks, aliases=aliases)
