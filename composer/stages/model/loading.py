"""Loading the model stage's pipeline, and what is known of the model before and after.

ModelLoader finds the model once (provisioned, local, cached or the Hub: runtime.resolve_model)
and keeps that ResolvedModel, since checks, loading, the tokenizer copy for token counting and
the feature-extractor lookup all need it; it builds the pipeline with the safety gates
(no pickle weights unless allowed), quantization and oneDNN linear layers, or takes the same
pipeline from the process's model pool, and hands it back there when the stage closes. Where
the model lands (by config, or once loaded) also decides whether worker threads may share it
and whether oneDNN layers go in, so those rules are here too. It never holds the stage: the
stage keeps the pipeline it is given and passes it back in where a question needs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from composer import modelpool
from composer.records import to_jsonable
from composer.stages.model.batching import SORTED_TASKS

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Tasks whose batches may run side by side on threads sharing one model (workers > 1): a
# record's output depends neither on its batch-mates nor on random numbers drawn in call order.
CONCURRENT_TASKS = SORTED_TASKS | {"image-classification", "audio-classification"}


def pickle_only_weights(folder: str) -> list[str]:
    """Weight files that need pickle, when a local model folder has no safetensors at all."""
    root = Path(folder)
    if not root.is_dir() or any(root.glob("*.safetensors")):
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix in _PICKLE_SUFFIXES and "training_args" not in p.name)


def _accelerator_blocker(device: Any) -> str | None:
    """Why a model on `device` runs one batch at a time (None on CPU)."""
    return None if str(device) in ("cpu", "-1") else f"the model runs on {device}; one batch at a time keeps the accelerator busy"


def padding_changes_outputs(pipe: Any) -> bool:
    """Whether a record's output would depend on its batch-mates' lengths: audio feature
    extractors that pad without an attention mask (wav2vec2-base and its fine-tunes, e.g.
    facebook/wav2vec2-base-960h) let the model see the zeros, so such models get one record
    per call. Whisper's extractor pads every input to its fixed window (n_samples) anyway."""
    extractor = getattr(pipe, "feature_extractor", None)
    return (
        extractor is not None
        and getattr(extractor, "return_attention_mask", True) is False
        and getattr(extractor, "n_samples", None) is None
    )


class ModelLoader:
    """The model of one stage: its pipeline's configuration checked without loading it, the
    model resolved once, loaded (or taken from the pool) on request, and what its placement
    allows."""

    def __init__(self, task: str, model_config: dict[str, Any], quantization: dict[str, Any], build_params: dict[str, Any],
                 onednn_linear: bool) -> None:
        self.task, self.model_config, self.quantization, self.build_params = task, model_config, quantization, build_params
        self.onednn_linear = onednn_linear
        self.resolved: Any = None
        self.quantization_object: Any = None
        self.load_seconds: float | None = None
        self.pool_key: str | None = None
        self.reused = False

    def resolved_model(self) -> Any:
        """Where the model comes from, found without loading it, once."""
        from composer.runtime import resolve_model

        if self.resolved is None:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task, self.model_config.get("fallback"))
        return self.resolved

    def revision_kwargs(self) -> dict[str, Any]:
        """from_pretrained's `revision` for a hub model; a local or provisioned folder has none."""
        return {"revision": self.resolved.revision} if self.resolved.source == "hub" else {}

    def configured_blocker(self) -> str | None:
        """Why the config alone says batches must run one at a time (workers = 1), or None: a
        task whose outputs may depend on batch-mates, or a model not wholly on CPU by config."""
        if self.task not in CONCURRENT_TASKS:
            return (f"{self.task} outputs may depend on batch-mates or on the order random numbers are drawn; "
                    f"workers > 1 is for {', '.join(sorted(CONCURRENT_TASKS))}")
        if self.quantization.get("backend", "none") != "none":
            return "quantized weights"
        if self.model_config["device_map"] is not None:
            return "device_map spreads the model over devices"
        device = self.model_config["device"]
        return None if device is None else _accelerator_blocker(device)

    def concurrency_blocker(self, pipe: Any) -> str | None:
        """The config's reasons, or a model (`pipe`, None while not loaded) that landed on a GPU by default."""
        return self.configured_blocker() or _accelerator_blocker(pipe.device if pipe is not None else self.configured_device())

    def _uses_onednn(self) -> bool:
        """Whether to swap in oneDNN linear layers once loaded (runtime.onednn_linear): asked for,
        and a model whose batches may share it by its config (an encoder task, unquantized, not
        spread over devices, not put on a GPU); the loaded model must also be on CPU in fp32."""
        return self.onednn_linear and self.configured_blocker() is None

    def configured_device(self) -> str:
        """Where pipeline() will put the model (it is not loaded yet when the result cache is on):
        the configured device, or, as pipeline() does without one, cuda:0 when CUDA is there."""
        import torch

        device = self.model_config["device"]
        if device is None:
            return "cuda:0" if torch.cuda.is_available() else "cpu"
        if isinstance(device, int):
            return "cpu" if device < 0 else f"cuda:{device}"
        return str(device)

    def check(self, deep: bool, prefix: str, call_params: dict[str, Any]) -> tuple[list[Any], list[str]]:
        """The stage's checks (PipelineStage.check) at config keys under `prefix`: the pipeline's
        build and call parameters, with `deep` the quantization backend and its arguments, then
        that the model can be found (with `deep` pinned: a local folder hashed, a tiny one
        built) and has weights it may load. Returns the ConfigIssues and the lines describing
        each check that passed."""
        from composer.runtime import ModelUnavailable, check_quantization_backend, resolve_model
        from composer.schema import ConfigIssue
        from composer.taskparams import check_task_params

        checked: list[str] = []
        issues = check_task_params(self.task, self.build_params, call_params, (f"{prefix}pipeline", f"{prefix}call"))
        if not issues and (self.build_params or call_params):
            names = [f"{prefix}pipeline.{n}" for n in self.build_params] + [f"{prefix}call.{n}" for n in call_params]
            checked.append(f"{', '.join(names)}: accepted by the {self.task} pipeline")
        if deep:
            found = check_quantization_backend(self.quantization, f"{prefix}quantization")
            if not found and self.quantization.get("backend", "none") != "none":
                checked.append(f"quantization {self.quantization['backend']}: backend installed, arguments accepted")
            issues += found
        try:
            model = self.model_config
            resolved = (self.resolved_model() if deep else
                        resolve_model(model["id"], model["revision"], self.task, model.get("fallback"), fingerprint=False))
        except ModelUnavailable as error:
            issues.append(ConfigIssue(f"{prefix}model.id", str(error)))
            return issues, checked
        pinned = f", sha256 {resolved.content_sha256[:12]}" if resolved.content_sha256 else ""
        pinned += f", revision {resolved.revision}" if resolved.revision else ""
        checked.append(f"{prefix}model.id {resolved.requested or 'null (the task default)'}: found ({resolved.source}: "
                       f"{resolved.load_from}{pinned})" + (f"; {resolved.note}" if resolved.note else ""))
        if not self.model_config.get("allow_pickle"):
            pickled = pickle_only_weights(resolved.load_from)
            if pickled:
                issues.append(ConfigIssue(
                    f"{prefix}model.id",
                    f"{resolved.load_from} has only pickle-based weights ({', '.join(pickled)}), and loading "
                    f"pickle can run arbitrary code; convert them to safetensors or set {prefix}model.allow_pickle=true",
                ))
        return issues, checked

    def load(self) -> Any:
        """The pipeline: built, or taken from the pool where a run in this process built this
        exact one."""
        from transformers import pipeline

        from composer.runtime import build_quantization, torch_dtype

        self.resolved_model()
        self.quantization_object = build_quantization(self.quantization)
        model_kwargs = dict(self.model_config["model_kwargs"] or {})
        if not self.model_config.get("allow_pickle"):
            # transformers then refuses .bin weights. Set, not defaulted: the schema refuses
            # model_kwargs.use_safetensors, and a config that skipped validation must not load
            # pickle weights either while the manifest says allow_pickle: false.
            model_kwargs["use_safetensors"] = True
            model_kwargs.pop("weights_only", None)
        if self.quantization_object is not None:
            # pipeline() ignores a top-level quantization_config: it must travel in model_kwargs.
            model_kwargs["quantization_config"] = self.quantization_object
        kwargs: dict[str, Any] = {
            "task": self.task,
            "model": self.resolved.load_from,
            "dtype": torch_dtype(self.model_config["dtype"]),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "model_kwargs": model_kwargs,
            **self.build_params,
        }
        kwargs.update(self.revision_kwargs())
        for key in ("device", "device_map", "tokenizer"):
            if self.model_config[key] is not None:
                kwargs[key] = self.model_config[key]
        self.pool_key = modelpool.pipeline_key({
            "task": self.task, "resolved": self.resolved.to_json(), "model": self.model_config,
            "quantization": self.quantization, "pipeline": self.build_params, "onednn_linear": self._uses_onednn(),
        })
        started = time.perf_counter()
        pipe = modelpool.take(self.pool_key)
        self.reused = pipe is not None
        if pipe is None:
            pipe = pipeline(**kwargs)
            if self._uses_onednn() and pipe.device.type == "cpu" and pipe.model.dtype == torch_dtype("float32"):
                from composer.runtime import onednn_linear

                onednn_linear(pipe.model)
            modelpool.hold(self.pool_key, pipe)
        self.load_seconds = time.perf_counter() - started
        return pipe

    def release(self, pipe: Any) -> None:
        """Hand a pipeline from load() back to the model pool (the next run may reuse it)."""
        if self.pool_key is not None:
            modelpool.release(self.pool_key, pipe)

    def tokenizer_without_model(self) -> Any:
        """The model's tokenizer, read from its files when the weights are not loaded (the result
        cache may never load them), so lengths and token counts are the tokenizer's own; None for
        models without one (images, audio) or when it cannot be read."""
        from transformers import AutoTokenizer

        if self.resolved is None:
            return None
        try:
            return AutoTokenizer.from_pretrained(self.model_config["tokenizer"] or self.resolved.load_from, **self.revision_kwargs())
        except Exception:  # noqa: BLE001 - no tokenizer: a character count stands in for lengths
            return None

    def sampling_rate(self, pipe: Any) -> int | None:
        """The audio rate the model's feature extractor expects. Read from the loaded pipeline's
        processor, or, while a result cache has kept the model unloaded (`pipe` None), from the
        model folder's preprocessor config alone (no weights load)."""
        extractor = getattr(pipe, "feature_extractor", None)
        if extractor is None and pipe is None:
            from transformers import AutoFeatureExtractor

            extractor = AutoFeatureExtractor.from_pretrained(self.resolved_model().load_from, **self.revision_kwargs())
        return getattr(extractor, "sampling_rate", None)

    def facts(self) -> dict[str, Any]:
        """The manifest's facts on the model as configured and loaded (or not)."""
        from composer.runtime import quantization_json

        return {
            "model": self.resolved.to_json() if self.resolved else None,
            "quantization": quantization_json(self.quantization_object),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "allow_pickle": bool(self.model_config.get("allow_pickle")),
            "load_seconds": self.load_seconds,
            "loaded": self.load_seconds is not None,
            "reused": self.reused,  # taken from an earlier run in this process (composer.modelpool)
        }

    def pipeline_facts(self, pipe: Any) -> dict[str, Any]:
        """The manifest's facts on a loaded pipeline: what actually loaded, where."""
        model = pipe.model
        onednn = [m for m in model.modules() if type(m).__name__ == "MkldnnLinear"]
        return {
            "dtype": str(getattr(model, "dtype", None)).replace("torch.", ""),
            "device": str(getattr(pipe, "device", None)),
            # transformers sets hf_device_map only when a map spans several devices.
            "device_map": to_jsonable(self.model_config["device_map"]),
            "placement": to_jsonable(getattr(model, "hf_device_map", None) or {"": str(model.device)}),
            # What actually loaded, not what was asked for: a quantization config that
            # transformers ignored would show up here as null.
            "quantizer": type(model.hf_quantizer).__name__ if getattr(model, "hf_quantizer", None) else None,
            "model_class": type(model).__name__,
            # oneDNN linear layers keep their weights as buffers (runtime.onednn_linear).
            "parameters": sum(p.numel() for p in model.parameters())
            + sum(b.numel() for m in onednn for b in m.buffers(recurse=False)),
            "onednn_linear_layers": len(onednn),
        }
