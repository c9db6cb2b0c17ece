"""`composer serve`: the planned graph of a config, served over HTTP.

    server.py    the process: bind, run uvicorn, turn SIGTERM into "answer what is queued, exit 0"
    app.py       the routes (predict, stream, health, readiness, metrics, OpenAPI) and lifespan
    service.py   the graph planned once and set up the way a run sets up; one round of records
                 through the stages after the source (executors.unit.run_records)
    batcher.py   dynamic batching: a bounded queue, rounds of up to batch_size x workers records
                 gathered for at most serve.max_wait_ms, run on one thread, answered one by one
    bodies.py    request bodies -> records, refused (413/422) before they reach the queue
    addresses.py which media URLs a server may fetch for a caller
    metrics.py   Prometheus metrics (prometheus-client)
    folder.py    the server's run folder: config.yaml, manifest.json, outputs.jsonl, errors.jsonl
    openapi.py   the OpenAPI schema, from the fields the graph reads

Why Starlette (under uvicorn) and not FastAPI: FastAPI's value is request models declared as
pydantic types, from which it validates bodies and writes the OpenAPI schema. Here the fields a
body must hold are known only once a config is planned, and a body must become a record exactly
the way the run's source makes one (same id, same checks, same messages: RowSource.record_from_row),
so validation is the source's, not a model's; and the limits that come first (body size, a queue
bound, JSON lines read and answered as a stream) work on the raw request. Starlette gives that
raw request, streaming responses and a lifespan, and is what FastAPI itself is built on, without
pydantic in the way; the schema is written from the graph (openapi.py).
"""
