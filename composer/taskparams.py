"""Which task parameters a transformers pipeline really accepts.

`pipeline()` and `Pipeline.__call__` pass keyword arguments to `_sanitize_parameters`, which
silently drops the ones it does not know: `call.topk=3` would run and be ignored. This module
works out the accepted names from the pipeline class without loading a model:

- the named parameters of `_sanitize_parameters` (and of `__call__`);
- keys the method reads out of its `**kwargs` (`kwargs["candidate_labels"]`, `"x" in kwargs`,
  `kwargs.get("x")`), found in its syntax tree;
- where `**kwargs` is forwarded whole: to `generate()` (every GenerationConfig field and
  generate() argument) or to the tokenizer (its `__call__` arguments). A var-keyword forwarded
  elsewhere cannot be checked; those tasks accept any name and say so (`open_kwargs`).
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
from dataclasses import dataclass

from composer.schema import ConfigIssue, did_you_mean
from composer.tasks import task_table

# Arguments of pipeline() itself that are not model settings (those live under `model.`).
FACTORY_PARAMS = frozenset({"use_fast", "token", "feature_extractor", "image_processor", "processor", "config"})
# Keys that have a proper home elsewhere in the config; named so the error can point there.
MISPLACED = {
    "quantization_config": "quantization=<none|bnb-8bit|bnb-4bit|torchao-int8>",
    "model_kwargs": "model.model_kwargs",
    "dtype": "model.dtype",
    "torch_dtype": "model.dtype",
    "device": "model.device",
    "device_map": "model.device_map",
    "trust_remote_code": "model.trust_remote_code",
    "revision": "model.revision",
    "model": "model.id",
    "tokenizer": "model.tokenizer",
    "batch_size": "batch_size",
    "num_workers": "batch_size",
}


@dataclass(frozen=True)
class AcceptedParams:
    names: frozenset[str]
    open_kwargs: bool  # a **kwargs we could not follow: any name passes


def pipeline_class(task: str) -> type:
    impl = task_table().tasks[task_table().canonical(task)].impl
    module, _, name = impl.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _keys_read_from(function: object, kwargs_name: str) -> tuple[set[str], bool]:
    """Keys read out of `kwargs_name` inside `function`, and whether it is also used whole."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    keys: set[str] = set()
    keyed_uses: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == kwargs_name:
            if isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
                keys.add(node.slice.value)
                keyed_uses.add(id(node.value))
        elif isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.left.value, str):
            for comparator in node.comparators:
                if isinstance(comparator, ast.Name) and comparator.id == kwargs_name:
                    keys.add(node.left.value)
                    keyed_uses.add(id(comparator))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == kwargs_name
            and node.func.attr in ("get", "pop", "setdefault")
            and node.args
            and isinstance(node.args[0], ast.Constant)
        ):
            keys.add(node.args[0].value)
            keyed_uses.add(id(node.func.value))
    whole = any(
        isinstance(node, ast.Name) and node.id == kwargs_name and id(node) not in keyed_uses
        for node in ast.walk(tree)
        if not isinstance(getattr(node, "ctx", None), ast.Store)
    )
    return keys, whole


@functools.lru_cache(maxsize=1)
def _generate_params() -> frozenset[str]:
    from transformers import GenerationConfig
    from transformers.generation.utils import GenerationMixin

    names = set(GenerationConfig().to_dict())
    names |= set(inspect.signature(GenerationMixin.generate).parameters) - {"self", "kwargs", "inputs"}
    return frozenset(names)


@functools.lru_cache(maxsize=1)
def _tokenizer_params() -> frozenset[str]:
    from transformers import PreTrainedTokenizerBase

    return frozenset(inspect.signature(PreTrainedTokenizerBase.__call__).parameters) - {"self", "kwargs", "text"}


@functools.lru_cache(maxsize=None)
def accepted_params(task: str) -> AcceptedParams:
    """Every parameter name the task's pipeline uses, at build time or call time."""
    cls = pipeline_class(task)
    names: set[str] = set()
    open_kwargs = False
    sanitize = cls._sanitize_parameters
    for parameter in inspect.signature(sanitize).parameters.values():
        if parameter.name == "self":
            continue
        if parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            names.add(parameter.name)
            continue
        read, whole = _keys_read_from(sanitize, parameter.name)
        names |= read
        if whole:
            if "generate" in parameter.name:
                names |= _generate_params()
            elif "tokenizer" in parameter.name:
                names |= _tokenizer_params()
            else:
                open_kwargs = True
    call_skip = {"self", "args", "kwargs", "inputs"}
    positional = [p for p in inspect.signature(cls.__call__).parameters.values() if p.name not in call_skip]
    names |= {p.name for p in positional[1:] if p.kind is not inspect.Parameter.VAR_KEYWORD}
    return AcceptedParams(frozenset(names), open_kwargs)


def check_task_params(task: str, build: dict, call: dict, prefix: tuple[str, str] = ("pipeline", "call")) -> list[ConfigIssue]:
    """Issues for `pipeline.<p>` / `call.<p>` names the task's pipeline would silently ignore."""
    accepted = accepted_params(task)
    issues = []
    for where, params in zip(prefix, (build, call)):
        for name in params or {}:
            path = f"{where}.{name}"
            if name in MISPLACED:
                issues.append(ConfigIssue(path, f"not a task parameter; set {MISPLACED[name]} instead"))
            elif where == prefix[0] and name in FACTORY_PARAMS:
                continue
            elif name not in accepted.names and not accepted.open_kwargs:
                choices = sorted(n for n in accepted.names if not n.startswith("_"))
                listing = ", ".join(choices) if len(choices) <= 25 else "see its documentation"
                hint = did_you_mean(name, choices) or f"; {task} accepts: {listing}"
                issues.append(ConfigIssue(path, f"the {task} pipeline does not accept {name!r}" + hint))
    return issues
