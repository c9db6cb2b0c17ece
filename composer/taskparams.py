"""Which task parameters a transformers pipeline really accepts, known without importing it.

`pipeline()` and `Pipeline.__call__` pass keyword arguments to `_sanitize_parameters`, which
silently drops the ones it does not know: `call.topk=3` would run and be ignored. This module
works out the accepted names from the pipeline class's source, read as a syntax tree (as
`composer.tasks` reads the task table), so that plain `composer plan` catches a bad `call.` or
`pipeline.` key in well under a second and without importing torch:

- the named parameters of `_sanitize_parameters` (and of `__call__`), inherited ones included;
- keys the method reads out of its `**kwargs` (`kwargs["candidate_labels"]`, `"x" in kwargs`,
  `kwargs.get("x")`);
- where `**kwargs` is forwarded whole: to `generate()` (every GenerationConfig field and
  generate() argument) or to the tokenizer (its `__call__` arguments). A var-keyword forwarded
  elsewhere cannot be checked; those tasks accept any name and say so (`open_kwargs`).
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

from composer.schema import ConfigIssue, did_you_mean
from composer.tasks import task_table, transformers_root

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


@functools.lru_cache(maxsize=None)
def _module_tree(module: str) -> ast.Module:
    """The syntax tree of a transformers module (`transformers.pipelines.base`), unimported."""
    parts = module.split(".")[1:]
    path = transformers_root().joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return ast.parse(path.read_text(encoding="utf-8"))


def _absolute(module: str, node: ast.ImportFrom) -> str:
    """The dotted module an import inside `module` (itself a file, not a package) names."""
    if not node.level:
        return node.module or ""
    base = module.split(".")[: -node.level]
    return ".".join(base + ([node.module] if node.module else []))


def _find_class(module: str, name: str) -> tuple[str, ast.ClassDef]:
    """The definition of class `name` as seen from `module`, following `from x import name`."""
    tree = _module_tree(module)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and any((alias.asname or alias.name) == name for alias in node.names):
            original = next(alias.name for alias in node.names if (alias.asname or alias.name) == name)
            return _find_class(_absolute(module, node), original)
    raise LookupError(f"class {name} not found from {module}")


def _find_method(module: str, cls: ast.ClassDef, method: str) -> ast.FunctionDef | None:
    """The method as Python finds it: the class's own last definition (overloads come first),
    else the first base (depth first) that defines it."""
    own = [node for node in cls.body if isinstance(node, ast.FunctionDef) and node.name == method]
    if own:
        return own[-1]
    for base in cls.bases:
        if isinstance(base, ast.Name):
            try:
                found = _find_method(*_find_class(module, base.id), method)
            except LookupError:
                continue
            if found is not None:
                return found
    return None


def _method(dotted_class: str, method: str) -> ast.FunctionDef:
    module, _, name = dotted_class.rpartition(".")
    found = _find_method(*_find_class(module, name), method)
    if found is None:
        raise LookupError(f"{dotted_class}.{method} not found")
    return found


def _parameters(function: ast.FunctionDef) -> tuple[list[str], str | None]:
    """(named parameters in order, the **kwargs name) of a function definition."""
    arguments = function.args
    named = [a.arg for a in [*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs]]
    return named, arguments.kwarg.arg if arguments.kwarg else None


def _keys_read_from(function: ast.FunctionDef, kwargs_name: str) -> tuple[set[str], bool]:
    """Keys read out of `kwargs_name` inside `function`, and whether it is also used whole."""
    keys: set[str] = set()
    keyed_uses: set[int] = set()
    for node in ast.walk(function):
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
        for node in ast.walk(function)
        if not isinstance(getattr(node, "ctx", None), ast.Store)
    )
    return keys, whole


@functools.lru_cache(maxsize=1)
def _generate_params() -> frozenset[str]:
    """GenerationConfig's fields (what its __init__ takes from **kwargs or sets on self) and
    generate()'s own arguments."""
    init = _method("transformers.generation.configuration_utils.GenerationConfig", "__init__")
    _, kwargs_name = _parameters(init)
    names = _keys_read_from(init, kwargs_name)[0] if kwargs_name else set()
    names |= {
        target.attr
        for node in ast.walk(init) if isinstance(node, (ast.Assign, ast.AnnAssign))
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
        and not target.attr.startswith("_")
    }
    generate, _ = _parameters(_method("transformers.generation.utils.GenerationMixin", "generate"))
    return frozenset(names | (set(generate) - {"self", "kwargs", "inputs"}))


@functools.lru_cache(maxsize=1)
def _tokenizer_params() -> frozenset[str]:
    named, _ = _parameters(_method("transformers.tokenization_utils_base.PreTrainedTokenizerBase", "__call__"))
    return frozenset(named) - {"self", "kwargs", "text"}


@functools.lru_cache(maxsize=None)
def accepted_params(task: str) -> AcceptedParams:
    """Every parameter name the task's pipeline uses, at build time or call time."""
    impl = task_table().tasks[task_table().canonical(task)].impl
    sanitize = _method(impl, "_sanitize_parameters")
    named, kwargs_name = _parameters(sanitize)
    names = set(named) - {"self"}
    open_kwargs = False
    if kwargs_name:
        read, whole = _keys_read_from(sanitize, kwargs_name)
        names |= read
        if whole:
            if "generate" in kwargs_name:
                names |= _generate_params()
            elif "tokenizer" in kwargs_name:
                names |= _tokenizer_params()
            else:
                open_kwargs = True
    call, _ = _parameters(_method(impl, "__call__"))
    positional = [name for name in call if name not in {"self", "args", "kwargs", "inputs"}]
    names |= set(positional[1:])
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
