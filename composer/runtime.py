"""Turning config strings into what transformers needs: model locations, dtypes, quantization.

Model resolution happens before any weights load and fails in seconds with a message that says
what to do: offline, `pipeline()` would first retry the Hub for about 30 s and then raise a long
traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
from dataclasses import dataclass
from collections.abc import Callable
from pathlib import Path
from typing import Any

from composer.provision import ModelUnavailable
from composer.repro import sha256_tree
from composer.schema import ConfigIssue, did_you_mean

TINY_PREFIX = "tiny:"


@dataclass
class ResolvedModel:
    """Where the weights come from, and the facts that pin them for the manifest."""

    requested: str | None  # model.id as configured (None: the task's default)
    source: str  # local | hub | hub-cache | tiny
    load_from: str  # what pipeline(model=...) receives
    revision: str | None  # the commit sha for hub models
    content_sha256: str | None = None  # for local folders (tiny models included)
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _looks_like_path(model_id: str) -> bool:
    return model_id.startswith(("/", "./", "../", "~")) or os.sep + os.sep in model_id or model_id.count("/") > 1


def _hub_offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _cached_snapshot(model_id: str, revision: str | None) -> str | None:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(model_id, revision=revision, local_files_only=True)
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None


def default_model(task: str) -> tuple[str, str | None]:
    """transformers' default model (id, revision) for a task, as `pipeline(task)` would pick."""
    from composer.tasks import task_table

    table = task_table()
    info = table.tasks.get(table.canonical(task) or task)
    if info is None or info.default_model is None:
        raise ModelUnavailable(f"transformers has no default model for task {task!r}: set model.id")
    return info.default_model


def resolve_model(model_id: str | None, revision: str | None, task: str, fallback: str | None = None,
                  fingerprint: bool = True) -> ResolvedModel:
    """Find the model without loading it; raise ModelUnavailable with a message for the user.

    `fingerprint=False` only finds it (what `composer plan` checks): a local folder's content
    is not hashed and a tiny test model is not built, so `content_sha256` stays None.

    With `fallback` (a model id, e.g. `tiny:feature-extraction`), a model that cannot be found
    resolves to the fallback instead, with a note that says so and why. A provisioned copy that
    fails verification is never replaced by the fallback: that error always reaches the user.
    """
    if fallback:
        from composer.provision import ModelVerificationFailed

        try:
            return resolve_model(model_id, revision, task, fingerprint=fingerprint)
        except ModelVerificationFailed:
            raise
        except ModelUnavailable as error:
            resolved = resolve_model(fallback, None, task, fingerprint=fingerprint)
            hint = _provision_hint(model_id)
            reason = str(error) if not hint or hint in str(error) else f"{error}; {hint}"
            wanted = model_id or "the task's default model"
            notice = f"FALLBACK: ran {fallback} instead of {wanted}, which is not available: {reason.rstrip('.')}"
            resolved.note = ". ".join(filter(None, [notice, resolved.note]))
            return resolved
    requested = model_id
    if model_id is None:
        model_id, default_revision = default_model(task)
        revision = revision or default_revision
    if model_id.startswith(TINY_PREFIX):
        from composer.testing import tiny_models
        from composer.testing.tiny_specs import TINY_MODELS

        name = model_id[len(TINY_PREFIX):]
        if name not in TINY_MODELS:
            raise ModelUnavailable(f"model.id {model_id!r}: no such tiny test model (known: "
                                   + ", ".join(TINY_PREFIX + known for known in sorted(TINY_MODELS)) + ")")
        note = "OFFLINE TEST MODEL: tiny, randomly initialised, built locally; predictions are noise"
        if not fingerprint:
            return ResolvedModel(requested, "tiny", str(tiny_models.tiny_model_folder(name)), None, None, note)
        path = tiny_models.tiny_model_path(name)
        return ResolvedModel(requested, "tiny", str(path), None, sha256_tree(path), note)
    local = Path(model_id).expanduser()
    if local.is_dir():
        return ResolvedModel(requested, "local", str(local.resolve()), None, sha256_tree(local) if fingerprint else None)
    if local.exists() or _looks_like_path(model_id):
        raise ModelUnavailable(f"model.id {model_id!r}: no such local directory (a model folder saved with save_pretrained)")
    return _resolve_hub(requested, model_id, revision)


def _provision_hint(model_id: str | None) -> str | None:
    """How to get a verified copy of `model_id` without the Hub, when composer knows one."""
    from composer.provision import spec_for_hub_id

    spec = spec_for_hub_id(model_id) if model_id else None
    if spec is None:
        return None
    return f"`composer models fetch {spec.name}` provisions a verified copy of revision {spec.revision} (model={spec.name})"


def _resolve_hub(requested: str | None, model_id: str, revision: str | None) -> ResolvedModel:
    from composer import provision

    # A verified copy provisioned without the Hub (`composer models fetch`) stands for the hub id
    # at its pinned revision, online and offline alike; a copy that fails verification is refused.
    spec = provision.spec_for_hub_id(model_id)
    if spec is not None and provision.revision_matches(spec, revision):
        copy = provision.provisioned_copy(spec)
        if copy is not None:
            pins = ", ".join(f"{name} sha256 {spec.files[name]}" for name in ("model.safetensors", "tokenizer.json"))
            note = f"verified local copy of {model_id}@{spec.revision} from {spec.package} at {copy} ({pins})"
            return ResolvedModel(requested, "provisioned", str(copy), spec.revision, provision.content_sha256(spec), note)

    def from_cache(reason: str) -> ResolvedModel:
        snapshot = _cached_snapshot(model_id, revision)
        if snapshot is None:
            hint = _provision_hint(model_id)
            raise ModelUnavailable(
                f"model.id {model_id!r} is not a local directory and {reason}; it is not in the Hugging Face "
                "cache either. Run once with network access, or set model.id to a local model folder"
                + (f"; or {hint}." if hint else ".")
            )
        return ResolvedModel(requested, "hub-cache", snapshot, Path(snapshot).name, note=f"{reason}; used the cached snapshot")

    if _hub_offline():
        return from_cache("HF_HUB_OFFLINE is set")
    # Imported here: a provisioned copy (above) needs no huggingface_hub, which takes ~0.2 s to import.
    from huggingface_hub import model_info
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        info = model_info(model_id, revision=revision, timeout=10)
    except RevisionNotFoundError as error:
        raise ModelUnavailable(f"model.revision {revision!r} does not exist for {model_id!r}") from error
    except RepositoryNotFoundError as error:
        raise ModelUnavailable(
            f"model.id {model_id!r} is neither a local directory nor a model on the Hugging Face Hub "
            "(private or gated models need `huggingface-cli login`)"
        ) from error
    except Exception as error:  # connection refused, DNS, timeouts: the Hub is unreachable
        return from_cache(f"the Hugging Face Hub is unreachable ({type(error).__name__})")
    return ResolvedModel(requested, "hub", model_id, info.sha)


def torch_dtype(name: str) -> Any:
    """'auto' stays a string (transformers reads the checkpoint's dtype); others become torch dtypes."""
    if name == "auto":
        return "auto"
    import torch

    return getattr(torch, name)


def _quantization_class(backend: str) -> type:
    import transformers

    return {"bitsandbytes": transformers.BitsAndBytesConfig, "torchao": transformers.TorchAoConfig}[backend]


def check_quantization_backend(quant: dict, path: str = "quantization") -> list[ConfigIssue]:
    """Bind quantization params to the backend's config class and check the backend is installed.

    The config object is then built for real (cheap, no weights): the backend classes validate
    values only there (both load_in_* flags, dtype names, types), and otherwise those mistakes
    surface only once the model loads, as a long loading traceback.
    """
    backend, params = quant.get("backend", "none"), dict(quant.get("params") or {})
    if backend == "none":
        return []
    package = {"bitsandbytes": "bitsandbytes", "torchao": "torchao"}[backend]
    if importlib.util.find_spec(package) is None:
        return [ConfigIssue(f"{path}.backend", f"{backend} quantization needs `pip install {package}`")]
    issues = []
    if backend == "torchao":
        issues += _check_torchao_quant_type(params.pop("quant_type", None), params.pop("quant_type_kwargs", None), path)
    accepted = set(inspect.signature(_quantization_class(backend).__init__).parameters) - {"self", "kwargs"}
    for name in params:
        if name not in accepted:
            issues.append(ConfigIssue(f"{path}.params.{name}", f"not an argument of the {backend} config" + did_you_mean(name, accepted)))
    if backend == "bitsandbytes":
        import torch

        if params.get("bnb_4bit_quant_type", "fp4") not in ("fp4", "nf4"):
            # BitsAndBytesConfig accepts any string; bitsandbytes rejects it per layer while loading.
            issues.append(ConfigIssue(f"{path}.params.bnb_4bit_quant_type", f"must be nf4 or fp4, got {params['bnb_4bit_quant_type']!r}"))
        for name in ("bnb_4bit_compute_dtype", "bnb_4bit_quant_storage"):
            value = params.get(name)
            if isinstance(value, str) and not isinstance(getattr(torch, value, None), torch.dtype):
                issues.append(ConfigIssue(f"{path}.params.{name}", f"not a torch dtype: {value!r} (e.g. bfloat16, float16, float32, uint8)"))
    if issues:
        return issues
    try:
        build_quantization(quant)
    except Exception as error:  # noqa: BLE001 - the backend's own validation, reported as a config issue
        named = [name for name in sorted(params, key=len, reverse=True) if name in str(error)]
        key = f"{path}.params.{named[0]}" if named else f"{path}.params"
        issues.append(ConfigIssue(key, f"{backend} rejects this: {type(error).__name__}: {error}"))
    return issues


def _check_torchao_quant_type(quant_type: Any, quant_type_kwargs: Any, path: str) -> list[ConfigIssue]:
    """quant_type must name a torchao config class, and quant_type_kwargs must bind to it."""
    import torchao.quantization
    from torchao.core.config import AOBaseConfig

    quant_class = getattr(torchao.quantization, str(quant_type), None)
    if not (inspect.isclass(quant_class) and issubclass(quant_class, AOBaseConfig)):
        options = [n for n in dir(torchao.quantization) if n.endswith("Config")]
        return [ConfigIssue(f"{path}.params.quant_type", f"torchao has no {quant_type!r} config class" + did_you_mean(str(quant_type), options))]
    if quant_type_kwargs is not None and not isinstance(quant_type_kwargs, dict):
        return [ConfigIssue(f"{path}.params.quant_type_kwargs", f"expected a mapping of {quant_type} arguments, got {quant_type_kwargs!r}")]
    signature = inspect.signature(quant_class).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature.values()):
        return []
    accepted = set(signature)
    return [
        ConfigIssue(f"{path}.params.quant_type_kwargs.{name}", f"not an argument of {quant_type}" + did_you_mean(name, accepted))
        for name in quant_type_kwargs or {}
        if name not in accepted
    ]


def build_quantization(quant: dict) -> Any | None:
    """The real BitsAndBytesConfig / TorchAoConfig object for a quantization config, or None."""
    backend, params = quant.get("backend", "none"), dict(quant.get("params") or {})
    if backend == "none":
        return None
    if backend == "torchao":
        import torchao.quantization

        quant_class = getattr(torchao.quantization, params.pop("quant_type"))
        params["quant_type"] = quant_class(**(params.pop("quant_type_kwargs", None) or {}))
    return _quantization_class(backend)(**{k: v for k, v in params.items() if v is not None})


def quantization_json(config: Any | None) -> dict[str, Any] | None:
    """The quantization object as JSON for the manifest (its own to_dict, made JSON-clean)."""
    if config is None:
        return None
    from composer.records import to_jsonable

    return {"class": type(config).__name__, **to_jsonable(config.to_dict())}


def onednn_linear(model: Any) -> int:
    """Swap the model's fp32 `nn.Linear` layers for oneDNN ones whose weights are packed once
    (torch.utils.mkldnn.MkldnnLinear), and return how many were swapped. torch's CPU linear
    repacks the weight on every call through MKL; for the small matrices of encoder models that
    costs about a third of the time (bench/RESULTS.md: x1.38 on a 4-layer BERT). Outputs differ
    only in float rounding (1e-7 here). A layer whose weight another module shares (a language-
    model head tied to the embeddings) is left alone, so the tie stays."""
    import collections

    import torch
    import torch.utils.mkldnn

    if not torch.backends.mkldnn.is_available():
        return 0
    uses = collections.Counter(id(p) for _, p in model.named_parameters(remove_duplicate=False))
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and child.weight.dtype == torch.float32 and uses[id(child.weight)] == 1:
                setattr(module, name, torch.utils.mkldnn.MkldnnLinear(child, torch.float32))
                swapped += 1
    return swapped


_TORCH_DEFAULT_THREADS: int | None = None
MAX_AUTO_WORKERS = 8


def torch_default_threads() -> int:
    """torch's own intra-op thread count (one per core), read before any run changed it: a later
    run in the same process (an in-process sweep) with threads=null gets the default again."""
    global _TORCH_DEFAULT_THREADS
    import torch

    if _TORCH_DEFAULT_THREADS is None:
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    return _TORCH_DEFAULT_THREADS


def set_run_threads(threads: int | None) -> int:
    """Give torch the run's CPU threads (null: torch's default) for setup, and return the count;
    split_threads divides them once the models have loaded.

    The Rust tokenizer's own thread pool stays off unless the environment turns it on
    (TOKENIZERS_PARALLELISM): it would size itself to every core whatever `threads` says, and
    compete with the model's threads wherever a batch of texts is tokenized beside a forward
    pass (bench/RESULTS.md measured what it gives). It is set here, before any run thread
    starts: left unset, transformers switches it off from a worker thread at a pipeline's first
    batch, while the prefetch thread may be reading it."""
    import torch

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    default = torch_default_threads()  # read first, before this or any later run changes it
    total = threads or default
    torch.set_num_threads(total)
    return total


def split_threads(total: int, workers: int | str, stages: list[Any]) -> dict[str, Any]:
    """Divide the run's `total` CPU threads between model batches run at once (`workers`, each
    on its own Python thread) and torch's intra-op pool, set that pool, and tell each model
    stage its workers. Returns the split for the manifest.

    On CPU, batches side by side with one intra-op thread each beat one batch at a time over all
    threads (bench/RESULTS.md: x1.06-1.10 on 2 cores): small matrix products scale poorly across
    threads, while separate batches share nothing but the weights. workers=auto takes one
    worker per thread (at most MAX_AUTO_WORKERS) when every model stage can run batches side by
    side (PipelineStage.concurrency_blocker names why not: a task whose outputs could depend on
    it, a GPU, quantized weights), else 1. An explicit count that planning could not check (the
    model turned out to be on a GPU) gives that stage one worker, and the manifest says why.
    """
    import torch

    blockers = {stage.name: stage.concurrency_blocker() for stage in stages}
    blocked = {name: why for name, why in blockers.items() if why}
    if workers == "auto":
        wanted = 1 if blocked else max(1, min(total, MAX_AUTO_WORKERS))
    else:
        wanted = int(workers)
    for stage in stages:
        stage.workers = 1 if blockers[stage.name] else wanted
    count = max((stage.workers for stage in stages), default=1)
    torch.set_num_threads(max(1, total // count))
    split: dict[str, Any] = {"threads": total, "workers": count, "requested_workers": workers, "intra_op_threads": torch.get_num_threads()}
    if blocked and (workers == "auto" or wanted > 1):
        split["one_worker_because"] = blocked
    return split


@dataclass
class StagesSetUp:
    """What set_up_stages chose, for the manifest (a run's, a server's, a Ray actor's facts)."""

    deterministic: bool
    allocator: dict[str, Any]
    threads: dict[str, Any]
    setup_seconds: float


def set_up_stages(config: dict[str, Any], stages: list[Any], threads: int | None, show_progress: bool = False,
                  after_setup: Callable[[Any], None] | None = None) -> StagesSetUp:
    """Make a process ready to run records through `stages`, the same way wherever they run (a
    run, `composer serve`, a Ray actor), so that outputs do not depend on where: seed, show or
    hide transformers' "Loading weights" bars (a run's own bar replaces them), give torch the
    process's `threads`, tune malloc, set every stage up (the models load; `after_setup` runs
    after each, e.g. a resumed run's stage restoring its state), split the threads between
    the model workers of its model stages (after setup: whether batches may run side by side
    depends on where a model loaded), and seed again: a model loaded fresh may have drawn random
    numbers, one reused from an earlier run in this process (composer.modelpool) did not, and
    sampling must not care."""
    import time

    from transformers.utils import logging as transformers_logging

    from composer.allocator import tune_malloc
    from composer.repro import seed_everything

    deterministic = bool(config.get("deterministic", False))
    seed_everything(config["seed"], deterministic)
    if show_progress:
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.disable_progress_bar()
    total = set_run_threads(threads)
    allocator = tune_malloc(bool(config.get("tune_malloc", True)))
    started = time.perf_counter()
    for stage in stages:
        stage.setup()
        if after_setup is not None:
            after_setup(stage)
    setup_seconds = time.perf_counter() - started
    split = split_threads(total, config["workers"], [stage for stage in stages if stage.kind == "model"])
    seed_everything(config["seed"], deterministic)
    return StagesSetUp(deterministic, allocator, split, setup_seconds)
