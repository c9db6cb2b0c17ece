"""The model stage: one real `transformers.pipeline`, fed batches of records.

Each record's output equals what `pipeline(input)` returns for that input alone: the batch goes
through the pipeline as one list (so the pipeline batches it with `batch_size`), and the one
shape difference transformers has between single and list calls is mirrored.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from composer import modelpool
from composer.records import Record, to_jsonable
from composer.stages.base import Stage, require_field


_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def pickle_only_weights(folder: str) -> list[str]:
    """Weight files that need pickle, when a local model folder has no safetensors at all."""
    root = Path(folder)
    if not root.is_dir() or any(root.glob("*.safetensors")):
        return []
    return sorted(p.name for p in root.iterdir() if p.suffix in _PICKLE_SUFFIXES and "training_args" not in p.name)


class PipelineStage(Stage):
    """Runs a transformers pipeline task over a field (or a mapping of fields) of each record."""

    kind = "model"

    def __init__(
        self,
        name: str,
        *,
        task: str,
        model: dict | None = None,
        quantization: dict | None = None,
        pipeline: dict | None = None,
        call: dict | None = None,
        input_field: str | dict = "text",
        output_field: str = "prediction",
        batch_size: int = 8,
    ):
        model = {"id": None, "revision": None, "dtype": "auto", "device": None, "device_map": None,
                 "trust_remote_code": False, "tokenizer": None, "model_kwargs": {}, **(model or {})}
        quantization = {"backend": "none", "params": {}, **(quantization or {})}
        super().__init__(
            name,
            {"task": task, "model": model, "quantization": quantization, "pipeline": dict(pipeline or {}),
             "call": dict(call or {}), "input_field": input_field, "output_field": output_field},
        )
        self.task, self.model_config, self.quantization = task, model, quantization
        self.build_params, self.call_params = dict(pipeline or {}), dict(call or {})
        self.input_field, self.output_field, self.batch_size = input_field, output_field, batch_size
        self.reads = tuple(input_field.values()) if isinstance(input_field, dict) else (input_field,)
        self.writes = (output_field,)
        self.pipe: Any = None
        self.resolved: Any = None
        self.quantization_object: Any = None
        self.load_seconds: float | None = None
        self.batch_seconds: list[float] = []
        self.cache: Any = None
        self.upstream_fingerprint = ""
        self.cache_hits = self.cache_misses = 0
        self.pool_key: str | None = None
        self.reused = False

    def check(self) -> list:
        """Deep checks that need transformers but no weights: task parameters, quantization, model."""
        from composer.runtime import ModelUnavailable, check_quantization_backend, resolve_model
        from composer.schema import ConfigIssue
        from composer.taskparams import check_task_params

        prefix = self._key_prefix()
        issues = check_task_params(self.task, self.build_params, self.call_params, (f"{prefix}pipeline", f"{prefix}call"))
        issues += check_quantization_backend(self.quantization, f"{prefix}quantization")
        try:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task, self.model_config.get("fallback"))
        except ModelUnavailable as error:
            issues.append(ConfigIssue(f"{prefix}model.id", str(error)))
        if self.resolved is not None and not self.model_config.get("allow_pickle"):
            pickled = pickle_only_weights(self.resolved.load_from)
            if pickled:
                issues.append(ConfigIssue(
                    f"{prefix}model.id",
                    f"{self.resolved.load_from} has only pickle-based weights ({', '.join(pickled)}), and loading "
                    f"pickle can run arbitrary code; convert them to safetensors or set {prefix}model.allow_pickle=true",
                ))
        return issues

    def _key_prefix(self) -> str:
        return "" if self.name == "model" else f"stages.{self.name}."

    def use_cache(self, cache: Any, upstream_fingerprint: str) -> None:
        """Serve outputs from a ResultCache; the model then loads only on the first miss."""
        self.cache, self.upstream_fingerprint = cache, upstream_fingerprint

    def setup(self) -> None:
        if self.cache is None:
            self._load()

    def _load(self) -> None:
        from transformers import pipeline

        from composer.runtime import build_quantization, resolve_model, torch_dtype

        if self.resolved is None:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task, self.model_config.get("fallback"))
        self.quantization_object = build_quantization(self.quantization)
        model_kwargs = dict(self.model_config["model_kwargs"] or {})
        if not self.model_config.get("allow_pickle"):
            model_kwargs.setdefault("use_safetensors", True)  # transformers then refuses .bin weights
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
        if self.resolved.source == "hub":
            kwargs["revision"] = self.resolved.revision
        for key in ("device", "device_map", "tokenizer"):
            if self.model_config[key] is not None:
                kwargs[key] = self.model_config[key]
        # A run in the same process that built this exact pipeline left it in the pool.
        self.pool_key = modelpool.pipeline_key({
            "task": self.task, "resolved": self.resolved.to_json(), "model": self.model_config,
            "quantization": self.quantization, "pipeline": self.build_params,
        })
        started = time.perf_counter()
        self.pipe = modelpool.take(self.pool_key)
        self.reused = self.pipe is not None
        if self.pipe is None:
            self.pipe = pipeline(**kwargs)
        self.load_seconds = time.perf_counter() - started

    def _model_input(self, record: Record) -> Any:
        if isinstance(self.input_field, dict):
            return {arg: require_field(record, field, self.name) for arg, field in self.input_field.items()}
        return require_field(record, self.input_field, self.name)

    def _as_single_call(self, model_input: Any, output: Any) -> Any:
        # TextClassificationPipeline wraps a lone string's result in a list unless top_k is
        # passed at call time (transformers' "legacy" behaviour); list calls do not.
        if self.task == "text-classification" and isinstance(model_input, str) and "top_k" not in self.call_params:
            return [output]
        # Batched feature extraction returns hidden states for the padding positions too; a
        # record's embedding must not depend on its batch-mates, so cut it to its own tokens.
        if self.task == "feature-extraction":
            return self._unpadded(model_input, output)
        return output

    def _unpadded(self, model_input: Any, output: Any) -> Any:
        preprocess_params = self.pipe._sanitize_parameters(**{**self.build_params, **self.call_params})[0]
        length = int(self.pipe.preprocess(model_input, **preprocess_params)["input_ids"].shape[-1])
        left = getattr(self.pipe.tokenizer, "padding_side", "right") == "left"
        return [tokens[len(tokens) - length:] if left else tokens[:length] for tokens in output]

    def process(self, records: list[Record]) -> list[Record]:
        inputs = [self._model_input(record) for record in records]
        if self.cache is None:
            outputs = self._predict(inputs)
        else:
            outputs = self._predict_cached(inputs)
        for record, output in zip(records, outputs):
            record[self.output_field] = output
        return records

    def _predict_cached(self, inputs: list[Any]) -> list[Any]:
        from composer.cache import record_key

        fingerprint = self.fingerprint()
        keys = [record_key(fingerprint, self.upstream_fingerprint, to_jsonable(i)) for i in inputs]
        found = self.cache.get_many(keys)
        todo = [index for index, key in enumerate(keys) if key not in found]
        self.cache_hits += len(keys) - len(todo)
        self.cache_misses += len(todo)
        if todo:
            if self.pipe is None:
                self._load()
            fresh = self._predict([inputs[index] for index in todo])
            self.cache.put_many({keys[index]: output for index, output in zip(todo, fresh)})
            found.update({keys[index]: output for index, output in zip(todo, fresh)})
        return [found[key] for key in keys]

    def _predict(self, inputs: list[Any]) -> list[Any]:
        """Outputs for these inputs, each equal to the pipeline's single-input result (JSON-clean)."""
        started = time.perf_counter()
        if len(inputs) == 1:
            # A one-item list comes back unwrapped from some pipelines (fill-mask); a single
            # call is unambiguous and is exactly the reference result.
            outputs = [self.pipe(inputs[0], **self.call_params)]
        else:
            outputs = self.pipe(inputs, batch_size=self.batch_size, **self.call_params)
            if len(outputs) != len(inputs):
                raise RuntimeError(f"pipeline returned {len(outputs)} outputs for {len(inputs)} inputs")
            outputs = [self._as_single_call(i, o) for i, o in zip(inputs, outputs)]
        self.batch_seconds.append(time.perf_counter() - started)
        return [to_jsonable(output) for output in outputs]

    def describe(self) -> dict[str, Any]:
        from composer.runtime import quantization_json

        facts: dict[str, Any] = {
            "task": self.task,
            "model": self.resolved.to_json() if self.resolved else None,
            "quantization": quantization_json(self.quantization_object),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "allow_pickle": bool(self.model_config.get("allow_pickle")),
            "load_seconds": self.load_seconds,
            "loaded": self.load_seconds is not None,
            "reused": self.reused,  # taken from an earlier run in this process (composer.modelpool)
        }
        if self.cache is not None:
            facts["cache"] = {"path": str(self.cache.path), "hits": self.cache_hits, "misses": self.cache_misses}
        if self.pipe is not None:
            model = self.pipe.model
            facts.update(
                dtype=str(getattr(model, "dtype", None)).replace("torch.", ""),
                device=str(getattr(self.pipe, "device", None)),
                # transformers sets hf_device_map only when a map spans several devices.
                device_map=to_jsonable(self.model_config["device_map"]),
                placement=to_jsonable(getattr(model, "hf_device_map", None) or {"": str(model.device)}),
                # What actually loaded, not what was asked for: a quantization config that
                # transformers ignored would show up here as null.
                quantizer=type(model.hf_quantizer).__name__ if getattr(model, "hf_quantizer", None) else None,
                model_class=type(model).__name__,
                parameters=sum(p.numel() for p in model.parameters()),
            )
        return facts

    def fingerprint(self) -> str:
        """Config, plus what pins the weights: the hub revision sha or the local content hash."""
        import hashlib

        from composer.records import canonical_json

        resolved = self.resolved
        pinned = None if resolved is None else [resolved.requested, resolved.revision, resolved.content_sha256]
        payload = canonical_json({"stage": super().fingerprint(), "weights": pinned})
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]

    def close(self) -> None:
        if self.pipe is not None and self.pool_key is not None:
            modelpool.release(self.pool_key, self.pipe)
        self.pipe = None
