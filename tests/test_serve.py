"""`composer serve` (issue 20): real HTTP clients against servers on 127.0.0.1.

End to end, the server is the real CLI in a subprocess: answers equal `composer run`'s outputs
for the same records under concurrent clients, bodies are refused with the field named, the run
folder logs what was answered, /metrics parses, and SIGTERM answers every queued request and exits
0. In process (a uvicorn server on a thread), a stage that holds each round until the test opens
it makes a full queue (503) and a timeout (504) happen deterministically, without timing.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from composer import api
from composer.records import Record, content_id
from composer.runstore import EXIT_FAILED
from composer.schema import ConfigError
from composer.serve.addresses import refused_url
from composer.serve.bodies import BodyRefused, check_media
from composer.serve.server import Server
from composer.serve.service import ServeRefused
from composer.stages.base import Stage
from conftest import ROWS, assert_close, read_jsonl, run_cli, write_jsonl

# The sample reviews and variations of them: 40 rows, read by their content hash (no id_field).
SERVED_ROWS = [{"text": row["text"], "title": row["title"]} for row in ROWS] + [
    {"text": f"{ROWS[i % 5]['text']} ({'very ' * (i % 7)}much so, said reader {i})"} for i in range(35)
]
BASE = ["experiment=tiny-sentiment", "input=jsonl", "threads=1", "progress=false"]
WAIT_LIMIT_S = 300  # how long a test waits for a server to come up before it fails (not a timed assertion)


# --- a real HTTP client (the standard library's) -----------------------------------------------

def call(url: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
         chunked: bool = False) -> tuple[int, dict[str, str], bytes]:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=WAIT_LIMIT_S)
    try:
        if chunked:
            connection.request(method, path, body=iter([body or b""]), headers=headers or {}, encode_chunked=True)
        else:
            connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def post(url: str, path: str, value) -> tuple[int, dict[str, str], object]:
    status, headers, body = call(url, "POST", path, json.dumps(value).encode(), {"content-type": "application/json"})
    return status, headers, json.loads(body)


def post_lines(url: str, rows: list[dict]) -> tuple[int, list[dict]]:
    body = "".join(json.dumps(row) + "\n" for row in rows).encode()
    status, _, data = call(url, "POST", "/v1/predict/stream", body, {"content-type": "application/x-ndjson"})
    return status, [json.loads(line) for line in data.decode().splitlines() if line.strip()]


def metric_samples(url: str) -> dict[str, list]:
    status, headers, body = call(url, "GET", "/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def queue_depth(url: str) -> float:
    return metric_samples(url)["composer_serve_queue_depth"][0].value


def wait_until(condition, what: str, process: subprocess.Popen | None = None, log: Path | None = None) -> None:
    deadline = time.monotonic() + WAIT_LIMIT_S
    while not condition():
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the server exited ({process.returncode}) while waiting for {what}:\n{log.read_text() if log else ''}")
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def ready(url: str) -> bool:
    try:
        return call(url, "GET", "/readyz")[0] == 200
    except OSError:
        return False


# --- the real CLI in a subprocess ----------------------------------------------------------------

def start_cli_server(overrides: list[str], cwd: Path) -> tuple[subprocess.Popen, str, Path]:
    log = cwd / "serve.log"
    process = subprocess.Popen([sys.executable, "-m", "composer", "serve", *overrides, "--port", "0"], cwd=cwd,
                               stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=os.environ.copy())
    line = process.stdout.readline()  # the first line says where it listens
    found = re.search(r"serving (http://127\.0\.0\.1:\d+)", line)
    assert found, (line, log.read_text())
    url = found.group(1)
    wait_until(lambda: ready(url), "/readyz", process, log)
    return process, url, log


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("serve")
    write_jsonl(folder / "rows.jsonl", SERVED_ROWS)
    return folder


@pytest.fixture(scope="module")
def run_outputs(workdir) -> list[dict]:
    """What `composer run` writes for SERVED_ROWS, in input order."""
    run_cli("run", *BASE, f"input.path={workdir / 'rows.jsonl'}", f"hydra.run.dir={workdir / 'run'}", cwd=workdir, check=True)
    outputs = read_jsonl(workdir / "run" / "outputs.jsonl")
    assert len(outputs) == len(SERVED_ROWS)
    return outputs


@pytest.fixture(scope="module")
def served(workdir):
    """`composer serve` over the same config, with a small body limit; stopped with SIGTERM."""
    overrides = [*BASE, f"input.path={workdir / 'rows.jsonl'}", "serve.max_body_bytes=4096", f"serve.run_dir={workdir / 'served'}"]
    process, url, log = start_cli_server(overrides, workdir)
    yield url, workdir / "served"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=WAIT_LIMIT_S) == 0, log.read_text()


def test_answers_equal_composer_run_outputs_under_concurrent_clients(served, run_outputs):
    url, _ = served
    expected = {out["id"]: out for out in run_outputs}

    def single(index: int) -> list[tuple[int, dict]]:
        status, _, answer = post(url, "/v1/predict", SERVED_ROWS[index])
        return [(index, answer)] if status == 200 else [(index, {"status": status, "answer": answer})]

    def listed(indices: list[int]) -> list[tuple[int, dict]]:
        status, _, answers = post(url, "/v1/predict", [SERVED_ROWS[i] for i in indices])
        assert status == 200, answers
        return list(zip(indices, answers))

    def streamed(indices: list[int]) -> list[tuple[int, dict]]:
        status, answers = post_lines(url, [SERVED_ROWS[i] for i in indices])
        assert status == 200 and len(answers) == len(indices), answers
        by_id = {answer["id"]: answer for answer in answers}  # lines come as records finish
        return [(i, by_id[run_outputs[i]["id"]]) for i in indices]

    # 0-23: evens alone, odds in lists of three; 24-31: two JSON-lines streams; 32-39: alone.
    jobs = [(single, i) for i in range(0, 24, 2)] + [(listed, [i, i + 2, i + 4]) for i in (1, 7, 13, 19)]
    jobs += [(streamed, [i, i + 2, i + 4, i + 6]) for i in (24, 25)] + [(single, i) for i in range(32, 40)]
    with ThreadPoolExecutor(16) as clients:
        results = [pair for done in clients.map(lambda job: job[0](job[1]), jobs) for pair in done]
    assert sorted(index for index, _ in results) == list(range(40))
    for index, answer in results:
        assert answer.get("id") == run_outputs[index]["id"], (index, answer)  # the run's content hash
        assert_close(answer, expected[answer["id"]], where=f"record {index}")


def test_the_run_folder_logs_what_the_server_answered(served):
    url, folder = served
    status, _, answer = post(url, "/v1/predict", {"text": "a record only this test sends", "id_hint": 1})
    assert status == 200
    assert answer in [json.loads(line) for line in (folder / "outputs.jsonl").read_text().splitlines()]
    assert post(url, "/v1/predict", {"txt": "no text field"})[0] == 422
    errors = read_jsonl(folder / "errors.jsonl")
    assert any(e["stage"] == "source" and "has no field 'text'" in e["message"] for e in errors)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "running" and manifest["server"]["url"] == url
    assert manifest["stages"]["model"]["fingerprint"] and manifest["threads"]["threads"] == 1
    assert (folder / "config.yaml").is_file()


def test_bad_bodies_are_refused_naming_what_is_wrong(served):
    url, _ = served
    status, _, body = call(url, "POST", "/v1/predict", b"{not json", {"content-type": "application/json"})
    assert status == 422 and "not JSON" in json.loads(body)["error"]
    status, _, answer = post(url, "/v1/predict", {"title": "no text"})
    assert status == 422 and answer["issues"][0]["field"] == "text" and "has no field 'text'" in answer["issues"][0]["message"]
    status, _, answer = post(url, "/v1/predict", [{"text": "fine"}, {"text": 5}, "a string"])
    assert status == 422 and [issue["where"] for issue in answer["issues"]] == ["body[2]"]  # the shape first
    status, _, answer = post(url, "/v1/predict", [{"text": "fine"}, {"text": 5}])
    assert status == 422 and answer["issues"] == [{"where": "body[1]", "field": "text", "message": answer["issues"][0]["message"]}]
    assert "is a number (5), not text" in answer["issues"][0]["message"]
    status, answers = post_lines(url, [{"text": "fine"}])
    assert status == 200 and len(answers) == 1
    status, _, body = call(url, "POST", "/v1/predict/stream", b'{"text": "fine"}\n[1, 2]\n')
    assert status == 422 and json.loads(body)["issues"][0]["where"] == "line 2"
    status, _, body = call(url, "POST", "/v1/predict", b"[" * 2000 + b"]" * 2000)
    assert status == 422 and "nested too deeply" in json.loads(body)["error"]
    status, _, answer = post(url, "/v1/predict", {"text": "deep", "extra": json.loads("[" * 150 + "]" * 150)})
    assert status == 422 and "nested more than 100 levels" in answer["issues"][0]["message"]  # as the run's source says
    status, _, body = call(url, "POST", "/v1/predict", b'{"text": "half a pair \\ud800"}')
    assert status == 422 and "lone surrogate" in json.loads(body)["issues"][0]["message"]
    big = json.dumps({"text": "x" * 5000}).encode()
    status, _, body = call(url, "POST", "/v1/predict", big, {"content-type": "application/json"})
    assert status == 413 and "serve.max_body_bytes" in json.loads(body)["error"]
    status, _, body = call(url, "POST", "/v1/predict", big, {"content-type": "application/json"}, chunked=True)  # no Content-Length
    assert status == 413 and "serve.max_body_bytes" in json.loads(body)["error"]


def test_operations_endpoints_and_metrics_parse(served):
    url, _ = served
    assert call(url, "GET", "/healthz")[0] == 200
    assert json.loads(call(url, "GET", "/readyz")[2]) == {"status": "ready"}
    schema = json.loads(call(url, "GET", "/openapi.json")[2])
    record = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]["oneOf"][0]
    assert record["required"] == ["text"] and record["properties"]["text"] == {"type": "string"}
    assert post(url, "/v1/predict", {"text": "counted"})[0] == 200
    assert post(url, "/v1/predict", {"nothing": 1})[0] == 422
    samples = metric_samples(url)
    by_status = {s.labels["status"]: s.value for s in samples["composer_serve_requests_total"] if s.labels["endpoint"] == "predict"}
    assert by_status["200"] >= 1 and by_status["422"] >= 1
    assert samples["composer_serve_batch_records_count"][0].value >= 1
    assert samples["composer_serve_queue_depth"][0].value == 0
    assert any(s.value >= 1 for s in samples["composer_serve_request_seconds_count"] if s.labels["endpoint"] == "predict")
    assert any(s.labels == {"outcome": "ok"} for s in samples["composer_serve_records_total"])


def test_sigterm_under_load_answers_every_queued_request_and_exits_0(tmp_path, workdir, run_outputs):
    """Rounds wait (almost) forever to fill, so every request is queued when SIGTERM comes: the
    server stops waiting, answers them all, and exits 0 with a complete manifest."""
    folder = tmp_path / "served"
    overrides = [*BASE, f"input.path={workdir / 'rows.jsonl'}", "batch_size=64", "serve.max_wait_ms=600000", f"serve.run_dir={folder}"]
    process, url, log = start_cli_server(overrides, tmp_path)
    rows = SERVED_ROWS[:24]
    with ThreadPoolExecutor(len(rows)) as clients:
        answers = [clients.submit(post, url, "/v1/predict", row) for row in rows]
        wait_until(lambda: queue_depth(url) == len(rows), "every request to be queued", process, log)
        process.send_signal(signal.SIGTERM)
        results = [answer.result() for answer in answers]
    assert process.wait(timeout=WAIT_LIMIT_S) == 0, log.read_text()
    for index, (status, _, answer) in enumerate(results):
        assert status == 200, answer
        assert_close(answer, run_outputs[index], where=f"record {index}")
    assert len(read_jsonl(folder / "outputs.jsonl")) == len(rows)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["exit_code"] == 0
    assert manifest["server"]["requests"] == {"200": len(rows)} and manifest["counts"]["records_ok"] == len(rows)


# --- in process: a stage that holds rounds -----------------------------------------------------

class Gate(Stage):
    """Holds every round in the stages until the test opens it (configured as a postprocess)."""

    entered = threading.Event()
    opened = threading.Event()

    def process(self, records: list[Record]) -> list[Record]:
        Gate.entered.set()
        Gate.opened.wait()
        return records


class InProcess:
    """A Server on a thread, over a config composed from overrides; stopped as SIGTERM would."""

    def __init__(self, overrides: list[str], folder: Path):
        config = api.compose([*overrides, f"serve.run_dir={folder}"])
        self.server = Server(config, overrides, "127.0.0.1", 0)
        self.url = self.server.url
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InProcess:
        self.thread.start()
        wait_until(lambda: ready(self.url), "/readyz")
        return self

    def __exit__(self, *exc) -> None:
        Gate.opened.set()
        self.server.stop()
        self.thread.join()


@pytest.fixture
def gate_overrides(workdir) -> list[str]:
    Gate.entered.clear()
    Gate.opened.clear()
    yield [*BASE, f"input.path={workdir / 'rows.jsonl'}", "allow_any_target=true", "postprocess=[{_target_: test_serve.Gate}]"]
    Gate.opened.set()


class Picky(Stage):
    """Fails the records whose text says boom (a value it cannot take) or crash (its own fault)."""

    def process(self, records: list[Record]) -> list[Record]:
        for record in records:
            if "boom" in record["text"]:
                raise ValueError(f"{record['text']!r} says boom")
            if "crash" in record["text"]:
                raise RuntimeError("the stage broke")
        return records


def test_a_record_that_fails_in_a_stage_fails_alone(tmp_path, workdir):
    overrides = [*BASE, f"input.path={workdir / 'rows.jsonl'}", "allow_any_target=true", "postprocess=[{_target_: test_serve.Picky}]"]
    with InProcess(overrides, tmp_path / "served") as served:
        with ThreadPoolExecutor(4) as clients:
            boom = clients.submit(post, served.url, "/v1/predict", {"text": "boom here"})
            mixed = clients.submit(post, served.url, "/v1/predict", [{"text": "fine one"}, {"text": "boom again"}])
            crash = clients.submit(post, served.url, "/v1/predict", {"text": "crash now"})
            fine = clients.submit(post, served.url, "/v1/predict", {"text": "fine two"})
        status, _, answer = boom.result()
        assert status == 422 and answer == {"id": content_id({"text": "boom here"}), "error": {
            "status": 422, "stage": "stage", "type": "ValueError", "message": "'boom here' says boom"}}
        status, _, answers = mixed.result()
        assert status == 422 and answers[0]["prediction"] and answers[1]["error"]["message"] == "'boom again' says boom"
        status, _, answer = crash.result()
        assert status == 500 and answer["error"]["type"] == "RuntimeError"
        assert fine.result()[0] == 200
    errors = read_jsonl(tmp_path / "served" / "errors.jsonl")
    assert sorted(e["message"] for e in errors) == ["'boom again' says boom", "'boom here' says boom", "the stage broke"]
    assert len(read_jsonl(tmp_path / "served" / "outputs.jsonl")) == 2


def test_a_full_queue_answers_503_with_retry_after(tmp_path, gate_overrides):
    with InProcess([*gate_overrides, "serve.max_queue=2", "serve.max_wait_ms=0"], tmp_path / "served") as served:
        with ThreadPoolExecutor(3) as clients:
            first = clients.submit(post, served.url, "/v1/predict", SERVED_ROWS[0])
            assert Gate.entered.wait(WAIT_LIMIT_S)  # the first round is held in the stages
            queued = [clients.submit(post, served.url, "/v1/predict", row) for row in SERVED_ROWS[1:3]]
            wait_until(lambda: served.server.state.batcher.depth == 2, "two queued records")
            status, headers, answer = post(served.url, "/v1/predict", SERVED_ROWS[3])
            assert status == 503 and headers["retry-after"] == "1" and "serve.max_queue" in answer["error"]
            Gate.opened.set()
            assert [f.result()[0] for f in [first, *queued]] == [200, 200, 200]


def test_records_with_one_id_never_share_a_round_and_all_are_answered(tmp_path, gate_overrides):
    """run_records keys a round's records by id: the same record sent by three callers at once
    waits for the next round, and each caller gets the same answer, with the run's id."""
    with InProcess(gate_overrides, tmp_path / "served") as served:
        with ThreadPoolExecutor(4) as clients:
            first = clients.submit(post, served.url, "/v1/predict", SERVED_ROWS[0])
            assert Gate.entered.wait(WAIT_LIMIT_S)
            same = [clients.submit(post, served.url, "/v1/predict", SERVED_ROWS[1]) for _ in range(3)]
            wait_until(lambda: served.server.state.batcher.depth == 3, "three queued copies")
            Gate.opened.set()
            answers = [future.result() for future in [first, *same]]
        assert [status for status, _, _ in answers] == [200] * 4
        assert answers[1][2] == answers[2][2] == answers[3][2] and answers[1][2]["id"] == content_id(SERVED_ROWS[1])
        rounds = metric_samples(served.url)["composer_serve_batch_records_count"][0].value
        assert rounds == 4  # the held one, then one copy per round
        status, _, twice = post(served.url, "/v1/predict", [SERVED_ROWS[2], SERVED_ROWS[2]])
        assert status == 200 and [a["id"] for a in twice] == [content_id(SERVED_ROWS[2]), content_id(SERVED_ROWS[2]) + "-2"]


def test_a_request_not_answered_in_time_gets_504(tmp_path, gate_overrides):
    with InProcess([*gate_overrides, "serve.timeout_s=0.2"], tmp_path / "served") as served:
        status, _, answer = post(served.url, "/v1/predict", SERVED_ROWS[0])
        assert status == 504 and "serve.timeout_s" in answer["error"]
        status, lines = post_lines(served.url, SERVED_ROWS[1:3])
        assert status == 200 and [line["error"]["status"] for line in lines] == [504, 504]
        assert {line["id"] for line in lines} == {content_id(row) for row in SERVED_ROWS[1:3]}
        samples = metric_samples(served.url)
        assert {s.labels["outcome"]: s.value for s in samples["composer_serve_records_total"]}["timeout"] == 3


def test_models_that_fail_to_load_stop_the_server_with_exit_4(tmp_path, workdir):
    """/readyz never says ready, the manifest says failed and why, and run() returns EXIT_FAILED."""
    from composer.testing import tiny_model_path

    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model_path("text-classification"), broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    overrides = [*BASE, f"input.path={workdir / 'rows.jsonl'}", f"model.id={broken}"]
    server = Server(api.compose([*overrides, f"serve.run_dir={tmp_path / 'served'}"]), overrides, "127.0.0.1", 0)
    assert server.run() == EXIT_FAILED
    manifest = json.loads((tmp_path / "served" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and manifest["exit_code"] == EXIT_FAILED and manifest["error"]["message"]


# --- what is refused before serving, and the URL policy -------------------------------------------

def test_serve_settings_are_checked_and_stateful_graphs_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"serve.max_queue: serve.max_queue must be > 0, got 0"):
        api.compose(["experiment=tiny-sentiment", "serve.max_queue=0"])
    from composer.serve.service import Service

    with pytest.raises(ServeRefused, match="compares each record with the records before it"):
        Service(api.compose([]), tmp_path / "served")  # the default job flags near-duplicates


def test_media_urls_are_refused_unless_allowed_and_never_inside_the_network():
    assert "serve.allow_urls=true" in refused_url("https://example.com/cat.png", allow_urls=False)
    for url, why in [("http://127.0.0.1/a.png", "loopback"), ("http://localhost:8000/a.png", "loopback"),
                     ("http://[::1]/a.png", "loopback"), ("http://169.254.169.254/latest/meta-data", "link-local"),
                     ("http://10.1.2.3/a.png", "private"), ("http://192.168.0.7/a.png", "private")]:
        assert why in (refused_url(url, allow_urls=True) or ""), url
    assert refused_url("http://93.184.216.34/a.png", allow_urls=True) is None  # a public address, named literally

    def media(records: list[dict], allow: bool, bare_base64: bool = False) -> BodyRefused | None:
        try:
            asyncio.run(check_media(records, {"image": bare_base64}, allow, [f"body[{i}]" for i in range(len(records))]))
        except BodyRefused as refused:
            return refused
        return None

    refused = media([{"image": "data:image/png;base64,AAAA"}, {"image": "/etc/passwd"}, {"image": "http://10.0.0.1/x.png"}], True)
    assert refused.status == 422 and [(i.where, i.field) for i in refused.issues] == [("body[1]", "image"), ("body[2]", "image")]
    assert "file on the server" in refused.issues[0].message and "private" in refused.issues[1].message
    assert media([{"image": "/9j/4AAQSkZJRg=="}], False, bare_base64=True) is None  # load_image source=base64


def test_media_fields_over_http_take_data_uris_and_refuse_files_and_inside_addresses(tmp_path, workdir):
    """An image config served with serve.allow_urls=true: a data: URI is classified, while a path
    on the server and URLs of loopback or private hosts are refused before the queue, naming the
    field (no fetch is tried: the refusal comes from the address alone)."""
    import base64
    import io

    from PIL import Image

    overrides = ["experiment=image-classification-base64", "model=tiny-image-classification", f"input.path={workdir / 'rows.jsonl'}",
                 "threads=1", "progress=false", "preprocess=[{type: load_image, field: image}]", "serve.allow_urls=true"]
    png = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(png, format="PNG")
    data_uri = "data:image/png;base64," + base64.b64encode(png.getvalue()).decode()
    with InProcess(overrides, tmp_path / "served") as served:
        status, _, answer = post(served.url, "/v1/predict", {"image": data_uri})
        assert status == 200 and len(answer["prediction"]) == 3
        for value, why in [("/etc/passwd", "file on the server"), ("http://127.0.0.1:9/cat.png", "loopback"),
                           ("http://10.0.0.1/cat.png", "private")]:
            status, _, answer = post(served.url, "/v1/predict", {"image": value})
            assert status == 422 and answer["issues"][0]["field"] == "image" and why in answer["issues"][0]["message"], answer



def test_with_the_result_cache_a_server_answers_from_what_runs_computed(tmp_path, workdir, run_outputs):
    """cache=on: a server shares the result cache's entries with `composer run` (same keys), so
    records a run computed are answered without the model loading, and equal the run's outputs."""
    cache = ["cache=on", f"cache.path={tmp_path / 'cache.sqlite'}"]
    rows = f"input.path={workdir / 'rows.jsonl'}"
    run_cli("run", *BASE, rows, *cache, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, check=True)
    with InProcess([*BASE, rows, *cache], tmp_path / "served") as server:
        status, _, answers = post(server.url, "/v1/predict", SERVED_ROWS[:6])
    assert status == 200, answers
    for answer, expected in zip(answers, run_outputs[:6], strict=True):
        assert_close(answer, expected, where=answer["id"])
    model = json.loads((tmp_path / "served" / "manifest.json").read_text())["stages"]["model"]
    assert model["cache"]["hits"] == 6 and model["cache"]["misses"] == 0 and model["loaded"] is False
