"""Images and documents: the vision experiments run offline with tiny models, record by record
equal to the plain `pipeline()` call; image sources (folder, base64, URL, `datasets` imagefolder)
and the load_image transform (EXIF orientation, RGB, crop/resize); bad images become one
errors.jsonl line each, naming the record, and the other records' outputs stay intact.

Images are made here with numpy/PIL; the URL source is served by a local http.server thread.
"""

from __future__ import annotations

import base64
import http.server
import io
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont

from composer import api
from composer.records import to_jsonable
from composer.stages.vision import LoadImage
from conftest import assert_close, read_jsonl, run_cli, write_jsonl

COMMON = ["threads=1", "progress=false"]


def noise_image(height: int, width: int, seed: int) -> Image.Image:
    return Image.fromarray((np.random.default_rng(seed).random((height, width, 3)) * 255).astype("uint8"))


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def reference_pipeline(task: str, name: str):
    from transformers import pipeline

    from composer.testing import tiny_model_path

    return pipeline(task, model=str(tiny_model_path(name)))


def run(tmp_path: Path, name: str, *overrides: str) -> api.RunResult:
    return api.run([*COMMON, *overrides], run_dir=tmp_path / name)


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """Three images in two subfolders, and a text file the extension filter leaves out."""
    root = tmp_path_factory.mktemp("photos")
    (root / "cats").mkdir()
    (root / "dogs").mkdir()
    noise_image(40, 50, 1).save(root / "cats" / "one.png")
    noise_image(30, 20, 2).save(root / "cats" / "two.jpg", quality=95)
    noise_image(64, 64, 3).save(root / "dogs" / "three.png")
    (root / "notes.txt").write_text("not an image")
    return root


@pytest.fixture(scope="module")
def classifier():
    return reference_pipeline("image-classification", "image-classification")


# --- image-classification: folder, base64, datasets imagefolder ------------------------------------------------------


def test_image_classification_over_a_folder_with_top_k(tmp_path, photo_folder, classifier):
    result = run(
        tmp_path, "run", "experiment=image-classification", "model=tiny-image-classification",
        "input=image_folder", f"input.path={photo_folder}", "input.label_field=folder", "batch_size=2",
    )
    assert (result.status, result.exit_code) == ("complete", 0)
    outputs = result.outputs()
    # Ids are paths relative to the folder, sorted; notes.txt is filtered out by extension.
    assert [o["id"] for o in outputs] == ["cats/one.png", "cats/two.jpg", "dogs/three.png"]
    assert [o["label"] for o in outputs] == ["cats", "cats", "dogs"]
    for output in outputs:
        image = Image.open(photo_folder / output["id"]).convert("RGB")
        assert output["image"] == to_jsonable(image)  # the loaded image, summarised (mode, size, pixel hash)
        assert len(output["prediction"]) == 3  # call.top_k=3
        assert_close(output["prediction"], to_jsonable(classifier(image, top_k=3)), where=output["id"])
    assert result.manifest()["input"]["kind"] == "folder"


def test_image_classification_over_base64_input(tmp_path, classifier):
    images = [noise_image(32, 32, 4), noise_image(48, 24, 5)]
    encoded = [base64.b64encode(png_bytes(image)).decode("ascii") for image in images]
    data = write_jsonl(tmp_path / "images.jsonl", [{"id": "a", "image": encoded[0]}, {"id": "b", "image": encoded[1]}])
    result = run(
        tmp_path, "run", "experiment=image-classification-base64", "model=tiny-image-classification",
        f"input.path={data}", "input.id_field=id", "call.top_k=2",
    )
    assert result.status == "complete"
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == ["a", "b"]
    for output, image in zip(outputs, images):
        assert output["image"]["width"] == image.width  # the base64 text is not copied into outputs.jsonl
        assert_close(output["prediction"], to_jsonable(classifier(image, top_k=2)), where=output["id"])
    # A data URI needs no `source: base64`: the default (auto) recognises it.
    uri = "data:image/png;base64," + encoded[0]
    loaded = LoadImage("load", field="image").process([{"id": "u", "image": uri}])[0]["image"]
    assert to_jsonable(loaded) == to_jsonable(images[0])


def test_image_dataset_column_is_streamed_with_a_limit(tmp_path, photo_folder, classifier):
    result = run(
        tmp_path, "run", "experiment=image-classification", "model=tiny-image-classification",
        "input=image_dataset", f"input.path={photo_folder}", "input.limit=2", "input.label_field=label",
    )
    assert result.status == "complete"
    outputs = result.outputs()
    assert len(outputs) == 2 and result.manifest()["counts"]["records_in"] == 2
    expected = sorted(["cats/one.png", "cats/two.jpg", "dogs/three.png"])[:2]
    for output, relative in zip(outputs, expected):
        image = Image.open(photo_folder / relative).convert("RGB")
        assert output["image"] == to_jsonable(image)
        assert output["label"] == 0  # imagefolder's class index of `cats`
        assert_close(output["prediction"], to_jsonable(classifier(image, top_k=3)), where=relative)
    assert result.config()["input"]["streaming"] is True and result.config()["input"]["decode"] is False
    # Undecoded (input.decode=false), a corrupt file in the imagefolder fails its record, not the run.
    folder = tmp_path / "photos"
    shutil.copytree(photo_folder, folder)
    (folder / "notes.txt").unlink()
    (folder / "dogs" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    mixed = run(tmp_path, "mixed", "experiment=image-classification", "model=tiny-image-classification",
                "input=image_dataset", f"input.path={folder}")
    assert (mixed.status, len(mixed.outputs())) == ("completed_with_errors", 3)
    [error] = mixed.errors()
    assert error["stage"] == "load_image" and "broken.png" in error["message"] and "Truncated" in error["message"]


def test_result_cache_keys_images_by_their_pixels(tmp_path, photo_folder):
    """A loaded image's cache key is its pixel hash (its repr would hold a memory address)."""
    folder = tmp_path / "photos"
    shutil.copytree(photo_folder, folder)
    base = ["experiment=image-classification", "model=tiny-image-classification", "input=image_folder",
            f"input.path={folder}", "cache=on", f"cache.path={tmp_path / 'cache.sqlite'}"]
    first = run(tmp_path, "first", *base)
    second = run(tmp_path, "second", *base, "batch_size=1")
    assert second.outputs() == first.outputs()
    assert second.manifest()["stages"]["model"]["cache"]["hits"] == 3
    changed = Image.open(folder / "dogs" / "three.png")
    changed.putpixel((0, 0), (0, 0, 0) if changed.getpixel((0, 0)) != (0, 0, 0) else (255, 255, 255))
    changed.save(folder / "dogs" / "three.png")
    third = run(tmp_path, "third", *base)
    assert third.manifest()["stages"]["model"]["cache"] == {"path": str(tmp_path / "cache.sqlite"), "hits": 2, "misses": 1}


# --- bad images --------------------------------------------------------------------------------------------------


def test_bad_images_become_errors_naming_the_record(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    noise_image(32, 32, 6).save(folder / "good.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    (folder / "empty.jpg").write_bytes(b"")
    noise_image(1, 1, 7).save(folder / "pixel.png")
    done = run_cli(
        "run", *COMMON, "experiment=image-classification", "model=tiny-image-classification",
        "input=image_folder", f"input.path={folder}", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert done.returncode == 1, done.stderr  # completed with record errors
    outputs = read_jsonl(tmp_path / "run" / "outputs.jsonl")
    assert [o["id"] for o in outputs] == ["good.png"] and len(outputs[0]["prediction"]) == 3
    errors = {e["id"]: e for e in read_jsonl(tmp_path / "run" / "errors.jsonl")}
    assert set(errors) == {"corrupt.png", "empty.jpg", "pixel.png"}
    assert all(e["stage"] == "load_image" for e in errors.values())
    assert "'corrupt.png'" in errors["corrupt.png"]["message"] and "not an image format" in errors["corrupt.png"]["message"]
    assert "not an image format" in errors["empty.jpg"]["message"]
    assert "1x1 pixels" in errors["pixel.png"]["message"] and "min_side" in errors["pixel.png"]["message"]


def test_missing_path_and_non_image_file_fail_per_record(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    good = tmp_path / "good.png"
    noise_image(16, 16, 8).save(good)
    records = [{"id": "missing", "image": str(tmp_path / "nope.png")}, {"id": "text", "image": str(notes)}, {"id": "ok", "image": str(good)}]
    data = write_jsonl(tmp_path / "paths.jsonl", records)
    result = run(
        tmp_path, "run", "experiment=image-classification", "model=tiny-image-classification",
        "input=jsonl", f"input.path={data}", "input.field=image", "input.id_field=id",
    )
    assert (result.status, result.exit_code) == ("completed_with_errors", 1)
    assert [o["id"] for o in result.outputs()] == ["ok"]
    errors = {e["id"]: e for e in result.errors()}
    assert errors["missing"]["error_type"] == "FileNotFoundError" and "nope.png" in errors["missing"]["message"]
    assert "not an image format" in errors["text"]["message"]


# --- the load_image transform ------------------------------------------------------------------------------------


def test_exif_orientation_is_honoured_and_images_become_rgb(tmp_path):
    image = Image.new("RGB", (40, 20), "white")
    image.paste((255, 0, 0), (0, 0, 10, 20))  # a red band on the left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=95)
    grey = tmp_path / "grey.png"
    Image.new("L", (8, 8), 128).save(grey)
    loaded = LoadImage("load").process([{"id": "r", "image": str(path)}, {"id": "g", "image": str(grey)}])
    rotated, converted = loaded[0]["image"], loaded[1]["image"]
    assert rotated.size == (20, 40)  # displayed upright: portrait, not the stored landscape
    top, bottom = rotated.getpixel((10, 2)), rotated.getpixel((10, 38))
    assert top[0] > 200 and top[1] < 60 and bottom[1] > 200  # the red band is now on top, white below
    assert converted.mode == "RGB"
    # Through a run, the model sees the upright image.
    result = run(tmp_path, "run", "experiment=image-classification", "model=tiny-image-classification",
                 "input=image_folder", f"input.path={tmp_path}", "input.extensions=[jpg]")
    assert result.outputs()[0]["image"]["width"] == 20 and result.outputs()[0]["image"]["height"] == 40


def _plan_issues(overrides: list[str]) -> list:
    from composer.schema import ConfigError

    with pytest.raises(ConfigError) as caught:
        api.plan(overrides)
    return caught.value.issues


def test_crop_resize_and_max_side(tmp_path):
    record = {"id": "x", "image": noise_image(60, 100, 9)}
    cropped = LoadImage("load", crop=[10, 0, 60, 40], resize=[25, 20]).process([dict(record)])[0]["image"]
    assert cropped.size == (25, 20)
    assert to_jsonable(cropped) == to_jsonable(record["image"].crop((10, 0, 60, 40)).resize((25, 20)))
    shrunk = LoadImage("load", max_side=50).process([dict(record)])[0]["image"]
    assert shrunk.size == (50, 30)
    with pytest.raises(ValueError, match="resize must be a list of 2"):
        LoadImage("load", resize=[10])
    # found in review: these failed once per record instead of once, naming the key
    for bad, message in (({"crop": [50, 0, 10, 40]}, "right > left"), ({"resize": [0, 0]}, "at least 1"),
                         ({"max_side": -5}, "max_side must be a positive")):
        with pytest.raises(ValueError, match=message):
            LoadImage("load", **bad)
    issues = [str(issue) for issue in _plan_issues(["experiment=image-classification", "preprocess.0.crop=[50,0,10,40]"])]
    assert any(issue.startswith("preprocess[0]") and "right > left" in issue for issue in issues), issues


# --- URLs: timeout and size cap ----------------------------------------------------------------------------------


class _ImageServer(http.server.BaseHTTPRequestHandler):
    payload = b""

    trickled: list[int] = []  # bytes /trickle.png sent before the client hung up (or all of them)

    def do_GET(self):  # noqa: N802 - http.server's name
        if self.path == "/trickle.png":
            self._trickle()
            return
        if self.path == "/slow.png":
            time.sleep(2)
        if self.path == "/missing.png":
            self.send_error(404, "Not Found")
            return
        body = self.payload * (50 if self.path == "/big.png" else 1)
        self.send_response(200)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self):
        """80 bytes, one every 0.1 s: each socket read gets data in time, the whole fetch does not."""
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        sent = 0
        try:
            for byte in self.payload[:80]:
                self.wfile.write(bytes([byte]))
                self.wfile.flush()
                sent += 1
                time.sleep(0.1)
        except OSError:  # the client gave up
            pass
        self.trickled.append(sent)

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    _ImageServer.payload = png_bytes(noise_image(32, 32, 10))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_url_images_with_timeout_and_size_cap(tmp_path, image_server, classifier):
    names = ["ok", "slow", "big", "missing"]
    data = write_jsonl(tmp_path / "urls.jsonl", [{"id": n, "image": f"{image_server}/{n}.png"} for n in names])
    cap = len(_ImageServer.payload) * 10
    result = run(
        tmp_path, "run", "experiment=image-classification", "model=tiny-image-classification", "input=jsonl",
        f"input.path={data}", "input.field=image", "input.id_field=id", "preprocess.0.timeout=0.5", f"preprocess.0.max_bytes={cap}",
    )
    assert result.status == "completed_with_errors"
    [output] = result.outputs()
    assert output["id"] == "ok"
    image = Image.open(io.BytesIO(_ImageServer.payload)).convert("RGB")
    assert_close(output["prediction"], to_jsonable(classifier(image, top_k=3)))
    errors = {e["id"]: e["message"] for e in result.errors()}
    assert set(errors) == {"slow", "big", "missing"}
    assert "timeout" in errors["slow"] and "/slow.png" in errors["slow"]
    assert "max_bytes" in errors["big"] and f"cap of {cap}" in errors["big"]
    assert "HTTP 404" in errors["missing"]


def test_a_server_that_trickles_bytes_cannot_outlast_the_timeout(image_server):
    from composer.fetch import FetchError, fetch_bytes

    _ImageServer.trickled.clear()
    with pytest.raises(FetchError, match=r"no answer within 0.5 s \(timeout\)"):
        fetch_bytes(f"{image_server}/trickle.png", timeout=0.5, max_bytes=10**6)
    for _ in range(100):  # the server notices the hang-up at its next write
        if _ImageServer.trickled:
            break
        time.sleep(0.1)
    assert _ImageServer.trickled and _ImageServer.trickled[0] < 80  # the client stopped reading long before the end


# --- document question answering ---------------------------------------------------------------------------------


def invoice_image() -> Image.Image:
    image = Image.new("RGB", (640, 320), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=32)
    for y, line in ((20, "INVOICE"), (100, "Invoice number: 12345"), (180, "Total: 99.00 USD")):
        draw.text((24, y), line, fill="black", font=font)
    return image


@pytest.fixture(scope="module")
def docqa():
    return reference_pipeline("document-question-answering", "document-question-answering")


@pytest.mark.skipif(shutil.which("tesseract") is None, reason="needs the tesseract binary (apt-get install tesseract-ocr; .ci/run does)")
def test_document_qa_with_ocr_and_the_question_from_config(tmp_path, docqa):
    invoice_image().save(tmp_path / "invoice.png")
    data = write_jsonl(tmp_path / "docs.jsonl", [{"id": "inv-1", "image": str(tmp_path / "invoice.png")}])
    question = "What is the invoice number?"
    result = run(
        tmp_path, "run", "experiment=document-qa", "model=tiny-document-question-answering",
        "input=jsonl", f"input.path={data}", "input.field=image", "input.id_field=id",
    )
    assert result.status == "complete", result.errors()
    [output] = result.outputs()
    assert output["question"] == question
    expected = to_jsonable(docqa(image=invoice_image(), question=question, top_k=1))
    assert_close(output["prediction"], expected)
    # OCR ran: the (noise) answer is a span of the words Tesseract read off the drawn invoice.
    from transformers.pipelines.document_question_answering import apply_tesseract

    words, _ = apply_tesseract(invoice_image(), lang=None, tesseract_config="")
    assert "12345" in words and "INVOICE" in words
    assert set(output["prediction"][0]["answer"].split()) <= set(words)


def test_document_qa_with_word_boxes_from_the_record(tmp_path, docqa):
    invoice_image().save(tmp_path / "invoice.png")
    boxes = {
        "inv-1": [["Invoice", [40, 300, 200, 380]], ["number:", [210, 300, 420, 380]], ["12345", [430, 300, 560, 380]]],
        "inv-2": [["Total:", [40, 560, 180, 640]], ["99.00", [190, 560, 330, 640]]],
    }
    rows = [{"id": key, "image": str(tmp_path / "invoice.png"), "word_boxes": value} for key, value in boxes.items()]
    data = write_jsonl(tmp_path / "docs.jsonl", rows)
    result = run(
        tmp_path, "run", "experiment=document-qa", "model=tiny-document-question-answering",
        "input=jsonl", f"input.path={data}", "input.field=image", "input.id_field=id", "input.keep=[word_boxes]",
        "model_input={image:image,question:question,word_boxes:word_boxes}", "preprocess.1.template=Which number?",
    )
    assert result.status == "complete", result.errors()
    assert result.config()["batch_size"] == 1  # the pipeline cannot batch documents of different lengths
    outputs = result.outputs()
    assert [o["id"] for o in outputs] == ["inv-1", "inv-2"]
    for output in outputs:
        words = boxes[output["id"]]
        expected = to_jsonable(docqa(image=invoice_image(), question="Which number?", word_boxes=words, top_k=1))
        assert_close(output["prediction"], expected, where=output["id"])
        assert set(output["prediction"][0]["answer"].split()) <= {word for word, _ in words}


# --- zero-shot, object detection, image-text-to-text ------------------------------------------------------------


def test_zero_shot_with_the_tutorial_labels(tmp_path):
    labels = ["urgent", "not urgent", "phone", "tablet", "computer"]
    result = run(tmp_path, "run", "experiment=zero-shot")
    assert result.status == "complete"
    reference = reference_pipeline("zero-shot-classification", "zero-shot-classification")
    outputs = result.outputs()
    assert len(outputs) == 3
    for output in outputs:
        assert sorted(output["prediction"]["labels"]) == sorted(labels)
        expected = to_jsonable(reference(output["text"], candidate_labels=labels, multi_label=False))
        assert_close(output["prediction"], expected, where=output["id"])


def test_object_detection_boxes_match_the_pipeline(tmp_path, photo_folder):
    result = run(
        tmp_path, "run", "experiment=object-detection", "model=tiny-object-detection",
        "input=image_folder", f"input.path={photo_folder}", "call.threshold=0.0",
    )
    assert result.status == "complete"
    assert result.config()["batch_size"] == 1  # the pipeline cannot stack differently resized images
    reference = reference_pipeline("object-detection", "object-detection")
    for output in result.outputs():
        image = Image.open(photo_folder / output["id"]).convert("RGB")
        assert len(output["prediction"]) == 5  # every one of the 5 detection tokens at threshold 0
        for found in output["prediction"]:
            assert found["label"] in {"cat", "dog", "bird"}
            assert 0 <= found["box"]["xmin"] <= found["box"]["xmax"] <= image.width
        assert_close(output["prediction"], to_jsonable(reference(image, threshold=0.0)), tol=1e-4, where=output["id"])


def test_inputs_the_pipeline_cannot_batch_fall_back_to_one_record_per_batch(tmp_path):
    """Differently sized images cannot be stacked by the detection pipeline: batches fail, each of
    their images then runs alone, and once that recurs the rest of the run uses one-image batches
    (said in the manifest and the summary) instead of failing once per batch; outputs are the
    plain ones."""
    folder = tmp_path / "sizes"
    folder.mkdir()
    sizes = [(40, 50), (30, 20), (64, 64), (24, 48), (50, 30), (36, 60), (44, 28)]
    for k, (height, width) in enumerate(sizes):
        noise_image(height, width, k).save(folder / f"{k}.png")
    done = run_cli(
        "run", *COMMON, "experiment=object-detection", "model=tiny-object-detection", "input=image_folder",
        f"input.path={folder}", "call.threshold=0.0", "batch_size=2", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    batching = manifest["stages"]["model"]["batching"]
    assert (batching["requested_batch_size"], batching["batch_size"]) == (2, 1)
    assert batching["one_record_because"].startswith("batches of 2 failed (RuntimeError: ")
    assert "one record per batch: batches of 2 failed" in done.stdout
    # [0, 1] and [2, 3] failed and ran alone (the second failure makes it a pattern); 4, 5 and 6
    # then ran one per batch (not [4, 5], [6]).
    assert manifest["counts"] == {"records_in": 7, "records_ok": 7, "records_failed": 0, "batches": 5}
    reference = reference_pipeline("object-detection", "object-detection")
    outputs = read_jsonl(tmp_path / "run" / "outputs.jsonl")
    assert [o["id"] for o in outputs] == [f"{k}.png" for k in range(len(sizes))]
    for output in outputs:
        image = Image.open(folder / output["id"]).convert("RGB")
        assert_close(output["prediction"], to_jsonable(reference(image, threshold=0.0)), tol=1e-4, where=output["id"])


def test_one_odd_image_among_many_does_not_switch_the_run_to_one_per_batch(tmp_path):
    """Only the batch holding the odd-sized image fails (and runs alone); the other same-size
    images keep batching."""
    folder = tmp_path / "uniform"
    folder.mkdir()
    for k in range(7):
        height, width = (30, 20) if k == 3 else (40, 50)
        noise_image(height, width, k).save(folder / f"{k}.png")
    result = run(tmp_path, "run", "experiment=object-detection", "model=tiny-object-detection", "input=image_folder",
                 f"input.path={folder}", "call.threshold=0.0", "batch_size=2")
    assert result.status == "complete" and len(result.outputs()) == 7
    batching = result.manifest()["stages"]["model"]["batching"]
    assert batching["batch_size"] == 2 and "one_record_because" not in batching
    assert result.manifest()["counts"]["batches"] == 4  # [0, 1], [2, 3] (failed, ran alone), [4, 5], [6]


def test_image_text_to_text_answers_a_chat_per_image(tmp_path, photo_folder):
    result = run(
        tmp_path, "run", "experiment=image-text-to-text", "model=tiny-image-text-to-text",
        "input=image_folder", f"input.path={photo_folder}", "call.max_new_tokens=4", "batch_size=2",
        "preprocess.1.prompt='What is in {id}?'",
    )
    assert result.status == "complete", result.errors()
    reference = reference_pipeline("image-text-to-text", "image-text-to-text")
    outputs = result.outputs()
    assert len(outputs) == 3
    for output in outputs:
        image = Image.open(photo_folder / output["id"]).convert("RGB")
        chat = [{"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": f"What is in {output['id']}?"}]}]
        expected = reference(text=chat, max_new_tokens=4, do_sample=False, return_full_text=False)
        assert output["prediction"][0]["generated_text"] == expected[0]["generated_text"]


def test_folder_input_problems_are_config_errors(tmp_path):
    with pytest.raises(Exception, match=r"input\.path: folder not found"):
        api.plan([*COMMON, "experiment=image-classification", "input=image_folder", f"input.path={tmp_path / 'none'}"])
    with pytest.raises(Exception, match=r"preprocess\[0\].*crop must be a list of 4"):
        api.plan([*COMMON, "experiment=image-classification", "preprocess.0.crop=[1,2]"])
