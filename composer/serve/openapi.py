"""The OpenAPI schema of a server, written from the graph it serves: a record holds the source's
input field (a string where a text stage reads it), the id field when input.id_field names one,
and the kept columns; an answer is the record as outputs.jsonl holds it."""

from __future__ import annotations

from typing import Any

from composer.stages.sources.base import RowSource

ERROR = {"type": "object", "properties": {"error": {"type": "string"}, "issues": {"type": "array", "items": {
    "type": "object", "properties": {"where": {"type": "string"}, "field": {"type": ["string", "null"]}, "message": {"type": "string"}}}}}}
FAILED = {"type": "object", "properties": {"id": {"type": "string"}, "error": {"type": "object", "properties": {
    "status": {"type": "integer"}, "stage": {"type": "string"}, "type": {"type": "string"}, "message": {"type": "string"}}}}}


def openapi_schema(source: RowSource, writes: list[str], title: str) -> dict[str, Any]:
    required = [source.field, *source.keep, *([source.id_field] if source.id_field else [])]
    properties: dict[str, Any] = {name: {} for name in required}
    if source.value_checks:
        properties[source.field] = {"type": "string"}
    if source.label_field:
        properties[source.label_field] = {"description": "the gold label, carried into the answer as `label`"}
    record = {"type": "object", "required": required, "properties": properties, "additionalProperties": True}
    answer = {"type": "object", "required": ["id"], "properties": {name: {} for name in ["id", *writes]}}
    refusals = {
        "413": {"description": "the body exceeds serve.max_body_bytes", "content": {"application/json": {"schema": ERROR}}},
        "422": {"description": "not JSON, or a record this config cannot read (the field is named); or the record failed in a stage",
                "content": {"application/json": {"schema": {"oneOf": [ERROR, FAILED]}}}},
        "500": {"description": "the record failed in a stage for a reason of the server's", "content": {"application/json": {"schema": FAILED}}},
        "503": {"description": "the queue is full (serve.max_queue), the model is loading, or the server is stopping; see Retry-After"},
        "504": {"description": "not answered within serve.timeout_s"},
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": {
            "/v1/predict": {"post": {
                "summary": "Run one record, or a list of them, through the config's stages",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [record, {"type": "array", "items": record}]}}}},
                "responses": {"200": {"description": "the record (or the list, in order) as `composer run` writes it to outputs.jsonl",
                                      "content": {"application/json": {"schema": {"oneOf": [answer, {"type": "array", "items": {"oneOf": [answer, FAILED]}}]}}}},
                              **refusals}}},
            "/v1/predict/stream": {"post": {
                "summary": "JSON lines in, JSON lines out as records finish (each line an answer or a failure with its status)",
                "requestBody": {"required": True, "content": {"application/x-ndjson": {"schema": record}}},
                "responses": {"200": {"description": "one line per record, in the order they finish",
                                      "content": {"application/x-ndjson": {"schema": {"oneOf": [answer, FAILED]}}}}, **refusals}}},
            "/healthz": {"get": {"summary": "the process is up", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "the models are loaded and requests are taken",
                                "responses": {"200": {"description": "ready"}, "503": {"description": "loading, failed or stopping"}}}},
            "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text exposition format"}}}},
        },
    }
