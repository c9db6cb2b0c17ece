"""The ASGI app (Starlette): the routes, and a lifespan that loads the models off the event loop
(/readyz says when they are in), starts the batcher, and at shutdown runs what is queued, closes
the stages and closes the run folder's manifest.

Every answer is the record as the graph's outputs sink writes it to outputs.jsonl (the same
dict, the same JSON), or, for a record that failed, {"id", "error": {status, stage, type,
message}} with 422 (the record's content: a value the stage could not take) or 500 (anything
else); in a list each record is answered in its place, and the response takes the first
failure's status. A request's records are waited for at most serve.timeout_s (504).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import traceback
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from composer.executors.unit import Outcome
from composer.records import Record, RecordFailure, to_jsonable
from composer.runstore import EXIT_FAILED, EXIT_OK
from composer.serve.batcher import Batcher, NotAccepting, QueueFull
from composer.serve.bodies import BodyRefused, accepted, check_media, predict_rows, read_limited, stream_rows
from composer.serve.folder import ServerFolder
from composer.serve.metrics import CONTENT_TYPE, ServeMetrics
from composer.serve.openapi import openapi_schema
from composer.serve.service import Service

# Failures caused by what the record holds (a value a stage cannot take): the caller's to fix.
CONTENT_ERRORS = frozenset({"ValueError", "TypeError", "KeyError", "IndexError", "UnicodeError", "UnicodeDecodeError",
                            "UnidentifiedImageError", "FetchError"})
RETRY_LOADING_S, RETRY_FULL_S = 5, 1


@dataclass
class ServerState:
    """What the routes share: the service, the run folder, the metrics, the batcher (once the
    models are in) and the phase: loading -> ready -> stopping (or failed)."""

    service: Service
    folder: ServerFolder
    settings: dict[str, Any]
    batcher: Batcher | None = None
    phase: str = "loading"
    error: dict[str, str] | None = None
    on_fatal: Callable[[], None] = lambda: None
    metrics: ServeMetrics = field(init=False)

    def __post_init__(self) -> None:
        self.metrics = ServeMetrics(lambda: self.batcher.depth if self.batcher is not None else 0)
        self.media = self.service.media_fields()

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.error is not None else EXIT_OK

    def stop_accepting(self) -> None:
        """SIGTERM: refuse new requests (503), stop waiting to fill rounds, run what is queued.
        Called from a signal handler or another thread, so it only sets flags."""
        if self.phase != "failed":
            self.phase = "stopping"
        if self.batcher is not None:
            self.batcher.drain()

    def run_round(self, records: list[Record]) -> Outcome:
        outcome = self.service.run(records)
        self.folder.log_failures([failure for _, failure in outcome.failures])
        return outcome


def create_app(state: ServerState) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state))
        try:
            yield
        finally:
            state.stop_accepting()
            await loading  # a set-up thread cannot be cut short; a stop while loading waits for it
            if state.batcher is not None:
                await asyncio.to_thread(state.batcher.stop)
                # The stages' facts as they end, as a run's manifest has them (result-cache hits,
                # the batches' sizes), while the stages are still open.
                state.folder.update(stages=state.service.stage_facts())
            await asyncio.to_thread(state.service.close)
            state.folder.close(state.exit_code, state.error, dict(state.metrics.by_status))

    async def predict(request: Request) -> Response:
        started = perf_counter()
        response = await _predict(state, request)
        state.metrics.answered("predict", response.status_code, perf_counter() - started)
        return response

    async def predict_stream(request: Request) -> Response:
        started = perf_counter()
        try:
            records, _ = await _accept(state, request, stream=True)
            futures = _submit(state, records)
        except _Refusal as refusal:
            state.metrics.answered("stream", refusal.response.status_code, perf_counter() - started)
            return refusal.response
        return StreamingResponse(_lines(state, records, futures, started), media_type="application/x-ndjson")

    async def healthz(request: Request) -> Response:
        return _json(200, {"status": "ok"})

    async def readyz(request: Request) -> Response:
        return _json(200 if state.phase == "ready" else 503, {"status": state.phase, **({"error": state.error} if state.error else {})})

    async def metrics(request: Request) -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    schema = openapi_schema(state.service.source, sorted({f for s in state.service.stages for f in s.writes}),
                            f"composer serve: {state.service.config['name']}")

    async def openapi(request: Request) -> Response:
        return _json(200, schema)

    return Starlette(routes=[
        Route("/v1/predict", predict, methods=["POST"]),
        Route("/v1/predict/stream", predict_stream, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
    ], lifespan=lifespan)


async def _load(state: ServerState) -> None:
    """Set up the stages on a thread (the models load), then start taking requests."""
    try:
        facts = await asyncio.to_thread(state.service.set_up)
    except Exception as error:  # noqa: BLE001 - reported, recorded in the manifest, and the server stops
        state.phase, state.error = "failed", {"type": type(error).__name__, "message": str(error), "traceback": traceback.format_exc()}
        print(f"composer: serve failed while loading: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
        state.on_fatal()
        return
    settings = state.settings
    service = state.service
    state.batcher = Batcher(state.run_round, service.round_size, service.graph.window, settings["max_wait_ms"] / 1000,
                            settings["max_queue"], state.metrics.batch_size.observe)
    state.batcher.start()
    state.folder.manifest["server"].update(round_records=service.round_size, max_round_records=max(service.graph.window, service.round_size))
    state.folder.update(**facts, stages=state.service.stage_facts())
    if state.phase == "loading":  # not stopped meanwhile
        state.phase = "ready"
        print("composer: ready", file=sys.stderr, flush=True)
    else:
        state.batcher.drain()


class _Refusal(Exception):
    def __init__(self, response: Response):
        self.response = response


async def _predict(state: ServerState, request: Request) -> Response:
    try:
        records, single = await _accept(state, request, stream=False)
        futures = _submit(state, records)
    except _Refusal as refusal:
        return refusal.response
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(asyncio.wrap_future(f) for f in futures)), state.settings["timeout_s"])
    except asyncio.TimeoutError:
        for future in futures:
            future.cancel()  # those still queued are dropped unrun
        state.metrics.records.labels("timeout").inc(len(futures))
        return _json(504, {"error": f"not answered within {state.settings['timeout_s']} s (serve.timeout_s)"})
    except Exception as error:  # noqa: BLE001 - the round itself failed, not one record
        state.metrics.records.labels("failed").inc(len(futures))
        return _json(500, {"error": f"{type(error).__name__}: {error}"})
    answered = [_answer(state, item) for item in answers]
    if single:
        return _json(*answered[0])
    status = next((status for status, _ in answered if status != 200), 200)
    return _json(status, [body for _, body in answered])


async def _accept(state: ServerState, request: Request, stream: bool) -> tuple[list[Record], bool]:
    """The request's records, checked before they may queue, and whether the body was one record;
    raises _Refusal with the answer."""
    if state.phase != "ready":
        reason = {"loading": "the models are loading", "stopping": "the server is shutting down"}.get(state.phase, "the server failed to load")
        raise _Refusal(_json(503, {"error": reason}, {"Retry-After": str(RETRY_LOADING_S if state.phase == "loading" else RETRY_FULL_S)}))
    try:
        body = await read_limited(request.headers, request.stream(), state.settings["max_body_bytes"])
        if stream:
            rows, single = stream_rows(body), False
        else:
            rows, single = predict_rows(body)
        positions = [position for position, _ in rows]
        try:
            records = accepted(state.service.make_records(rows), positions)
        except BodyRefused as refused:
            state.folder.log_failures(refused.failures)
            raise
        await check_media(records, state.media, bool(state.settings["allow_urls"]), positions)
    except BodyRefused as refused:
        raise _Refusal(_json(refused.status, refused.json())) from None
    return records, single


def _submit(state: ServerState, records: list[Record]) -> list[Future]:
    assert state.batcher is not None
    try:
        return state.batcher.submit(records)
    except QueueFull as full:
        raise _Refusal(_json(503, {"error": str(full)}, {"Retry-After": str(RETRY_FULL_S)})) from None
    except NotAccepting as stopping:
        raise _Refusal(_json(503, {"error": str(stopping)}, {"Retry-After": str(RETRY_FULL_S)})) from None


async def _lines(state: ServerState, records: list[Record], futures: list[Future], started: float) -> AsyncIterator[bytes]:
    """One JSON line per record as it finishes; those unanswered at the deadline get 504 lines."""
    loop = asyncio.get_running_loop()
    pending = {asyncio.wrap_future(f): str(r["id"]) for r, f in zip(records, futures)}
    deadline = loop.time() + state.settings["timeout_s"]
    try:
        while pending:
            done, _ = await asyncio.wait(pending, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED)
            if not done:
                state.metrics.records.labels("timeout").inc(len(pending))
                for future, record_id in pending.items():
                    future.cancel()
                    yield _line({"id": record_id, "error": {"status": 504, "message": f"not answered within {state.settings['timeout_s']} s (serve.timeout_s)"}})
                return
            for future in done:
                record_id = pending.pop(future)
                try:
                    item = future.result()
                except Exception as error:  # noqa: BLE001 - the round failed: this record's line says so
                    state.metrics.records.labels("failed").inc()
                    yield _line({"id": record_id, "error": {"status": 500, "message": f"{type(error).__name__}: {error}"}})
                else:
                    yield _line(_answer(state, item)[1])
    finally:
        state.metrics.answered("stream", 200, perf_counter() - started)


def _answer(state: ServerState, item: Record | RecordFailure) -> tuple[int, Any]:
    if isinstance(item, RecordFailure):
        state.metrics.records.labels("failed").inc()
        status = 422 if item.error_type in CONTENT_ERRORS else 500
        return status, {"id": item.id, "error": {"status": status, "stage": item.stage, "type": item.error_type, "message": item.message}}
    state.metrics.records.labels("ok").inc()
    return 200, item


def _json(status: int, value: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(_dumps(value), status_code=status, media_type="application/json", headers=headers)


def _line(value: Any) -> bytes:
    return _dumps(value) + b"\n"


def _dumps(value: Any) -> bytes:
    """JSON as the run folder's JsonlAppender writes a line (to_jsonable, ensure_ascii=False)."""
    return json.dumps(to_jsonable(value), ensure_ascii=False).encode("utf-8")
