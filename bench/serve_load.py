"""Load test of `composer serve` (issue 20) beside the server the transformers guide starts.

"Using pipelines for a webserver" (transformers docs) serves a model with one `pipeline()` call
per request behind a queue: a Starlette app whose handler puts the request's text on an
asyncio.Queue, and one loop task that takes them one at a time, calls the pipeline on each and
hands the answer back. `guide_app` below is that server, as written there, on the same model.

Both servers run as their own processes on 127.0.0.1, with the same model (the benchmark's small
BERT classifier, hidden 256, 4 layers, built offline by bench/bench.py) and the same CPU threads.
For 1, 8 and 32 concurrent clients (threads, one keep-alive connection each, one record per
request, texts of --words words: 10 to 190 by default), each server in turn answers a bounded number of requests
(and at most --max-seconds per level), the two taking turns at going first; the script prints records/s and the p50/p99 latency of a
request, checks that the two servers' answers agree, and writes a markdown table.

    .venv/bin/python bench/serve_load.py                    # about two minutes on 2 cores
    .venv/bin/python bench/serve_load.py --requests 200     # fewer requests per level

Loopback only: nothing listens beyond 127.0.0.1. Speed on a shared machine is noisy: compare
the two servers within one run (their ratio), not numbers across runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the benchmark's own model and texts

REPO = bench.REPO
LEVELS = (1, 8, 32)


def guide_app(model: str):
    """The guide's server: one pipeline() call per request, behind an asyncio.Queue."""
    import asyncio
    import contextlib

    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from transformers import pipeline

    async def homepage(request):
        payload = await request.body()
        string = payload.decode("utf-8")
        response_q: asyncio.Queue = asyncio.Queue()
        await request.app.model_queue.put((string, response_q))
        output = await response_q.get()
        return JSONResponse(output)

    async def server_loop(q):
        pipe = pipeline(task="text-classification", model=model)
        while True:
            (string, response_q) = await q.get()
            out = pipe(string)
            await response_q.put(out)

    @contextlib.asynccontextmanager
    async def lifespan(app):  # the guide's @app.on_event("startup"), which Starlette 1.x has as a lifespan
        q: asyncio.Queue = asyncio.Queue()
        app.model_queue = q
        task = asyncio.create_task(server_loop(q))
        yield
        task.cancel()

    return Starlette(routes=[Route("/", homepage, methods=["POST"])], lifespan=lifespan)


def serve_guide(model: str, port: int) -> None:
    import uvicorn

    uvicorn.run(guide_app(model), host="127.0.0.1", port=port, log_level="warning")


# --- clients -----------------------------------------------------------------------------------

class Client:
    """One keep-alive connection; post() returns (status, JSON answer, seconds)."""

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)

    def post(self, path: str, body: bytes) -> tuple[int, object, float]:
        started = time.perf_counter()
        self.connection.request("POST", path, body=body, headers={"content-type": "application/json"})
        response = self.connection.getresponse()
        data = response.read()
        return response.status, json.loads(data), time.perf_counter() - started


def load(url: str, path: str, bodies: list[bytes], clients: int, max_seconds: float) -> dict:
    """`clients` threads send bodies[i] one request at a time until all are answered or
    max_seconds pass; records/s over the wall time, latency percentiles over the requests."""
    latencies: list[float] = []
    answers: dict[int, object] = {}
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    next_index = [0]
    deadline = time.perf_counter() + max_seconds

    def worker() -> None:
        client = Client(url)
        while time.perf_counter() < deadline:
            with lock:
                index = next_index[0]
                if index >= len(bodies):
                    return
                next_index[0] += 1
            status, answer, seconds = client.post(path, bodies[index])
            with lock:
                latencies.append(seconds)
                answers[index] = answer
                statuses[status] = statuses.get(status, 0) + 1

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - started
    ordered = sorted(latencies)
    return {"clients": clients, "requests": len(latencies), "seconds": wall, "records_per_s": len(latencies) / wall,
            "p50_ms": 1000 * statistics.median(ordered), "p99_ms": 1000 * ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            "statuses": statuses, "answers": answers}


def wait_ready(url: str, path: str, process: subprocess.Popen, body: bytes) -> None:
    """Until `path` answers 200 (the guide server has no readiness route: a first request)."""
    for _ in range(1200):
        if process.poll() is not None:
            raise SystemExit(f"a server exited ({process.returncode}) before it was ready")
        try:
            if Client(url).post(path, body)[0] == 200:
                return
        except (OSError, http.client.HTTPException, ValueError):
            pass
        time.sleep(0.25)
    raise SystemExit(f"{url} did not become ready")


def make_texts(n: int, low: int, high: int, seed: int = 7) -> list[str]:
    """n texts of low to high words from the benchmark's corpus (bench.make_texts, any length)."""
    vocab = bench.words()
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(low, high))) for _ in range(n)]


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="requests per level and server (1 client: a quarter)")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="at most this long per level and server")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2, help="CPU threads each server uses")
    parser.add_argument("--words", default="10-190", help="words per text, MIN-MAX (bench.py's texts: 10-190)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    parser.add_argument("--guide-server", metavar="MODEL", help=argparse.SUPPRESS)  # run the guide's server (subprocess)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.guide_server:
        serve_guide(args.guide_server, args.port)
        return

    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    model = bench.build_model("small-256x4", work / "small-256x4")
    low, high = (int(n) for n in args.words.split("-"))
    texts = make_texts(args.requests, low, high)
    data = work / "texts.jsonl"
    data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    composer = subprocess.Popen(
        [sys.executable, "-m", "composer", "serve", "experiment=tiny-sentiment", f"model.id={model}", "input=jsonl",
         f"input.path={data}", f"threads={args.threads}", "progress=false", "serve.max_queue=4096",
         f"serve.run_dir={work / 'served'}", "--port", "0"],
        cwd=work, env=env, stdout=subprocess.PIPE, stderr=(work / "serve.log").open("w"), text=True)
    composer_url = re.search(r"http://127\.0\.0\.1:\d+", composer.stdout.readline()).group()
    guide_port = free_port()
    guide = subprocess.Popen([sys.executable, __file__, "--guide-server", str(model), "--port", str(guide_port)], cwd=work, env=env,
                             stderr=(work / "guide.log").open("w"))
    guide_url = f"http://127.0.0.1:{guide_port}"
    servers = {"composer serve": (composer_url, "/v1/predict", [json.dumps({"text": t}).encode() for t in texts]),
               "guide (one pipeline() per request)": (guide_url, "/", [t.encode() for t in texts])}
    try:
        wait_ready(composer_url, "/v1/predict", composer, servers["composer serve"][2][0])
        wait_ready(guide_url, "/", guide, servers["guide (one pipeline() per request)"][2][0])
        rows = []
        for level, clients in enumerate(LEVELS):
            count = max(args.requests // 4, clients) if clients == 1 else args.requests
            order = list(servers.items())
            for name, (url, path, bodies) in order if level % 2 == 0 else order[::-1]:  # whoever goes first meets other load
                result = load(url, path, bodies[:count], clients, args.max_seconds)
                rows.append((name, result))
                print(f"{clients:>2} clients  {name:<36} {result['records_per_s']:7.1f} records/s  p50 {result['p50_ms']:7.1f} ms  "
                      f"p99 {result['p99_ms']:7.1f} ms  ({result['requests']} requests, statuses {result['statuses']})", flush=True)
        agree = answers_agree(rows)
    finally:
        for process in (composer, guide):
            process.send_signal(signal.SIGTERM)
        composer_exit = composer.wait(timeout=300)
        guide.wait(timeout=60)
    table = markdown(rows, args, agree, composer_exit)
    print(table)
    if args.out:
        args.out.write_text(table)


def answers_agree(rows: list[tuple[str, dict]]) -> bool:
    """The two servers' labels equal and scores within 1e-4 for every text both answered."""
    composer = {i: a["prediction"][0] for name, r in rows if name == "composer serve" for i, a in r["answers"].items()}
    guide = {i: a[0] for name, r in rows if name != "composer serve" for i, a in r["answers"].items()}
    shared = set(composer) & set(guide)
    return bool(shared) and all(composer[i]["label"] == guide[i]["label"] and abs(composer[i]["score"] - guide[i]["score"]) < 1e-4
                                for i in shared)


def markdown(rows: list[tuple[str, dict]], args: argparse.Namespace, agree: bool, composer_exit: int) -> str:
    lines = ["| clients | server | records/s | p50 ms | p99 ms | requests | x guide records/s |", "|---:|---|---:|---:|---:|---:|---:|"]
    guide_rate = {r["clients"]: r["records_per_s"] for name, r in rows if name != "composer serve"}
    for name, r in rows:
        ratio = f"{r['records_per_s'] / guide_rate[r['clients']]:.2f}x" if name == "composer serve" else ""
        lines.append(f"| {r['clients']} | {name} | {r['records_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['requests']} | {ratio} |")
    lines.append("")
    lines.append(f"texts of {args.words} words; threads per server: {args.threads}; answers agree (labels, scores within 1e-4): {agree}; "
                 f"composer serve exited {composer_exit} on SIGTERM")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
