"""The model stage: one real `transformers.pipeline`, fed batches of records.

Each record's output equals what `pipeline(input)` returns for that input alone: the batch goes
through the pipeline as one list (so the pipeline batches it with `batch_size`), and the one
shape difference transformers has between single and list calls is mirrored.
"""

from __future__ import annotations

import time
from typing import Any

from composer.records import Record, to_jsonable
from composer.stages.base import Stage, require_field


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

    def check(self) -> list:
        """Deep checks that need transformers but no weights: task parameters, quantization, model."""
        from composer.runtime import ModelUnavailable, check_quantization_backend, resolve_model
        from composer.schema import ConfigIssue
        from composer.taskparams import check_task_params

        prefix = self._key_prefix()
        issues = check_task_params(self.task, self.build_params, self.call_params, (f"{prefix}pipeline", f"{prefix}call"))
        issues += check_quantization_backend(self.quantization, f"{prefix}quantization")
        try:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task)
        except ModelUnavailable as error:
            issues.append(ConfigIssue(f"{prefix}model.id", str(error)))
        return issues

    def _key_prefix(self) -> str:
        return "" if self.name == "model" else f"stages.{self.name}."

    def setup(self) -> None:
        from transformers import pipeline

        from composer.runtime import build_quantization, resolve_model, torch_dtype

        if self.resolved is None:
            self.resolved = resolve_model(self.model_config["id"], self.model_config["revision"], self.task)
        self.quantization_object = build_quantization(self.quantization)
        model_kwargs = dict(self.model_config["model_kwargs"] or {})
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
        started = time.perf_counter()
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
        for record, output in zip(records, outputs):
            record[self.output_field] = to_jsonable(output)
        return records

    def describe(self) -> dict[str, Any]:
        from composer.runtime import quantization_json

        facts: dict[str, Any] = {
            "task": self.task,
            "model": self.resolved.to_json() if self.resolved else None,
            "quantization": quantization_json(self.quantization_object),
            "trust_remote_code": bool(self.model_config["trust_remote_code"]),
            "load_seconds": self.load_seconds,
        }
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
        self.pipe = None
