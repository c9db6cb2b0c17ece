"""Model batches side by side (issue 6, `workers`): threads sharing one model, outputs unchanged.

Each run here asks for 2 workers explicitly (tests pin torch to one thread, so workers=auto
would pick 1), and checks that batches really ran on two threads.
"""

from __future__ import annotations

import threading
import time

import pytest

from composer import api
from composer.records import to_jsonable
from composer.schema import ConfigError
from composer.stages.model import PipelineStage
from conftest import assert_close, stop_requested_at, write_jsonl

WORDS = "the battery lasts for days but support never answered my emails about the broken screen".split()
TEXTS = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + (i * 17) % 40)) for i in range(40)]


@pytest.fixture
def model_threads(monkeypatch) -> set[str]:
    """Names of the threads PipelineStage._predict ran on during a test."""
    seen: set[str] = set()
    original = PipelineStage._predict

    def spy(self, inputs, prepared=None):
        seen.add(threading.current_thread().name)
        return original(self, inputs, prepared)

    monkeypatch.setattr(PipelineStage, "_predict", spy)
    return seen


def _run(tmp_path, name: str, task: str, *overrides: str, texts: list[str] = TEXTS) -> api.RunResult:
    texts = [t + " [MASK]" for t in texts] if task == "fill-mask" else texts
    data = tmp_path / f"input-{len(texts)}.jsonl"
    if not data.exists():
        write_jsonl(data, [{"n": i, "text": t} for i, t in enumerate(texts)])
    result = api.run(["experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}",
                      "input.id_field=n", "progress=false", "batch_size=4", *overrides], run_dir=tmp_path / name)
    assert result.status == "complete", result.manifest().get("error")
    return result


def _assert_same(expected: list[dict], actual: list[dict], where: str) -> None:
    assert [o["id"] for o in actual] == [o["id"] for o in expected] == [str(i) for i in range(len(expected))]
    for a, b in zip(expected, actual):
        assert_close(b["prediction"], a["prediction"], tol=1e-4, where=f"{where} {a['id']}")


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction", "fill-mask"])
def test_two_workers_give_the_one_worker_outputs_in_input_order(task, tmp_path, model_threads):
    one = _run(tmp_path, "one", task, "threads=1", "workers=1")
    assert model_threads == {"MainThread"}
    model_threads.clear()
    two = _run(tmp_path, "two", task, "threads=2", "workers=2")
    assert len({name for name in model_threads if name.startswith("composer-model")}) == 2  # really side by side
    _assert_same(one.outputs(), two.outputs(), f"{task} workers=2")
    split = two.manifest()["threads"]
    assert split == {"threads": 2, "workers": 2, "requested_workers": 2, "intra_op_threads": 1}
    assert two.manifest()["stages"]["model"]["batching"]["workers"] == 2
    assert [t for t in threading.enumerate() if t.name.startswith("composer-model")] == []  # none outlive the run


@pytest.mark.parametrize("overrides", [["sort_window=0"], ["batch_size=auto", "sort_window=0"], ["batch_size=auto"]])
def test_unsorted_windows_and_batch_size_auto_keep_every_worker_busy(overrides, tmp_path, model_threads):
    """Found in the benchmark: unsorted windows held one batch, so with 2 workers one thread ran
    everything at one intra-op thread (half speed); the batch_size=auto probe ran alone too."""
    texts = TEXTS * 8  # enough records for batch_size=auto to probe with 2 workers
    reference = _run(tmp_path, "reference", "text-classification", "threads=1", "workers=1", "sort_window=0", texts=texts).outputs()
    model_threads.clear()
    result = _run(tmp_path, "two", "text-classification", "threads=2", "workers=2", *overrides, texts=texts)
    assert len({name for name in model_threads if name.startswith("composer-model")}) == 2
    _assert_same(reference, result.outputs(), " ".join(overrides))
    batching = result.manifest()["stages"]["model"]["batching"]
    if "batch_size=auto" in overrides:
        assert batching["auto"]["workers"] == 2 and str(batching["batch_size"]) in batching["auto"]["tokens_per_second"]


def test_workers_auto_takes_one_per_thread_where_batches_may_run_side_by_side(tmp_path):
    split = _run(tmp_path, "auto", "text-classification", "threads=2").manifest()["threads"]
    assert split["requested_workers"] == "auto" and split["workers"] == 2 and split["intra_op_threads"] == 1


def test_workers_auto_keeps_generation_to_one_batch_at_a_time(tmp_path):
    result = api.run(["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "input=inline",
                      "input.records=[hello there, a short prompt]", "call.max_new_tokens=2", "threads=2", "progress=false"],
                     run_dir=tmp_path / "gen")
    assert result.status == "complete", result.manifest().get("error")
    split = result.manifest()["threads"]
    assert split["workers"] == 1 and split["intra_op_threads"] == 2
    assert "text-generation" in split["one_worker_because"]["model"]


def test_more_workers_for_a_task_that_must_run_one_batch_at_a_time_is_a_plan_error():
    with pytest.raises(ConfigError) as caught:
        api.plan(["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "workers=2"])
    assert any(str(issue).startswith("workers: stage 'model' runs one batch at a time (text-generation outputs may depend")
               for issue in caught.value.issues)
    for blocker, why in (("model.device_map=auto", "device_map spreads"), ("quantization=bnb-8bit", "quantized weights"),
                         ("model.device=cuda:0", "the model runs on cuda:0")):
        with pytest.raises(ConfigError) as caught:
            api.plan(["experiment=tiny-sentiment", "workers=2", blocker])
        assert any(str(issue).startswith(f"workers: stage 'model' runs one batch at a time ({why}") for issue in caught.value.issues), caught.value.issues
    with pytest.raises(ConfigError) as caught:
        api.plan(["experiment=tiny-sentiment", "workers=0"])
    assert any(str(issue).startswith("workers: workers must be >= 1") for issue in caught.value.issues)


def test_two_workers_share_the_result_cache(tmp_path, model_threads):
    cache = [f"cache.path={tmp_path / 'cache.sqlite'}", "cache=on", "threads=2", "workers=2"]
    reference = _run(tmp_path, "reference", "text-classification", "threads=1", "workers=1").outputs()
    first = _run(tmp_path, "first", "text-classification", *cache)
    _assert_same(reference, first.outputs(), "cache miss")
    again = _run(tmp_path, "again", "text-classification", *cache)
    _assert_same(reference, again.outputs(), "cache hit")
    facts = again.manifest()["stages"]["model"]
    assert facts["cache"]["hits"] == len(TEXTS) and facts["cache"]["misses"] == 0 and facts["loaded"] is False
    assert first.manifest()["stages"]["model"]["cache"]["misses"] == len(TEXTS)


def test_a_stop_with_batches_running_side_by_side_writes_a_prefix_that_resume_completes(tmp_path, monkeypatch):
    reference = _run(tmp_path, "reference", "text-classification", "threads=1", "workers=1", "sort_window=0").outputs()

    monkeypatch.setattr("composer.run._StopRequests", stop_requested_at(4))
    data = tmp_path / f"input-{len(TEXTS)}.jsonl"
    stopped = api.run(["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "input.id_field=n", "progress=false",
                       "batch_size=4", "sort_window=20", "threads=2", "workers=2"], run_dir=tmp_path / "stopped")
    assert stopped.status == "interrupted"
    written = [o["id"] for o in stopped.outputs()]
    assert len(written) < len(TEXTS) and written == [str(i) for i in range(len(written))]
    monkeypatch.undo()
    resumed = api.resume(tmp_path / "stopped")
    assert resumed.status == "complete"
    _assert_same(reference, resumed.outputs(), "resumed")


def test_a_stop_drops_the_batches_still_queued_for_the_workers(tmp_path, monkeypatch):
    """Each worker has a batch running and one queued; a stop lets the running ones finish but
    starts none of the queued ones."""
    started: list[int] = []
    stopped = threading.Event()
    original = PipelineStage.process

    def process(self, records):
        started.append(len(records))
        if len(started) > 1:  # hold every batch but the first until the stop, then give it time to cancel
            stopped.wait(10)
            time.sleep(0.2)
        return original(self, records)

    class StopOnceFourAreIn(stop_requested_at(4)):  # a look follows each of the 4 submissions
        @property
        def requested(self) -> bool:
            type(self).checks += 1
            if type(self).checks >= 4:
                # The first worker, free again, takes the third batch as the main thread looks
                # (it wakes on the first batch's end); wait for it, or the look could win the race.
                deadline = time.monotonic() + 10
                while len(started) < 3 and time.monotonic() < deadline:
                    time.sleep(0.001)
                stopped.set()
            return stopped.is_set()

    monkeypatch.setattr(PipelineStage, "process", process)
    monkeypatch.setattr("composer.run._StopRequests", StopOnceFourAreIn)
    data = tmp_path / "input.jsonl"
    write_jsonl(data, [{"n": i, "text": t} for i, t in enumerate(TEXTS)])
    result = api.run(["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "input.id_field=n", "progress=false",
                      "batch_size=4", "sort_window=40", "threads=2", "workers=2"], run_dir=tmp_path / "run")
    assert result.status == "interrupted"
    # Four batches in: the first finished (then the stop), the second (other worker) and third
    # (taken by the first worker as it freed) were running; the fourth was queued and never ran.
    assert len(started) == 3


def test_threads_null_returns_to_torchs_default_after_a_run_that_set_more(tmp_path, monkeypatch):
    """Bug (twice): a run with threads=null kept the intra-op count an earlier run in the
    process had set, also when that first run was the one to read torch's default."""
    import torch

    from composer import runtime

    monkeypatch.setattr(runtime, "_TORCH_DEFAULT_THREADS", None)  # as in a fresh process
    torch.set_num_threads(1)  # torch's default here (conftest)
    _run(tmp_path, "two", "text-classification", "threads=2", "workers=1")
    split = _run(tmp_path, "default", "text-classification", "workers=1").manifest()["threads"]
    assert split["threads"] == 1 and split["intra_op_threads"] == 1


def test_setup_runs_with_the_runs_threads_and_batches_with_the_split(tmp_path, monkeypatch):
    """Found in review: the split moved after setup, so loading and setup-time encoding ran at
    whatever thread count an earlier run had left, ignoring `threads`."""
    import torch

    seen = []
    original = PipelineStage.setup
    monkeypatch.setattr(PipelineStage, "setup", lambda self: seen.append(torch.get_num_threads()) or original(self))
    torch.set_num_threads(1)
    _run(tmp_path, "two", "text-classification", "threads=2", "workers=2")
    assert seen == [2] and torch.get_num_threads() == 1  # setup on both threads, then 2 workers x 1


@pytest.mark.parametrize("asked", [None, "true"])
def test_the_tokenizers_own_thread_pool_is_chosen_before_the_first_window(asked, tmp_path, monkeypatch):
    """Found in review: composer's choice (off), or the environment's, must be in place before
    the prefetch thread tokenizes the first window. Through the Python API it was left to
    transformers, which switches the pool off from a worker thread at a pipeline's first batch
    (an environment write while the prefetch thread may read it); since RowCollator, batches of
    texts tokenized together no longer make that call, and the pool stayed on for the run."""
    import os

    from composer.stages.model.preparer import Preparer

    seen = []
    original = Preparer.prepare
    monkeypatch.setattr(Preparer, "prepare", lambda self, values: seen.append(os.environ.get("TOKENIZERS_PARALLELISM")) or original(self, values))
    if asked is None:
        monkeypatch.delenv("TOKENIZERS_PARALLELISM", raising=False)
    else:
        monkeypatch.setenv("TOKENIZERS_PARALLELISM", asked)
    _run(tmp_path, "run", "text-classification", "workers=2")
    assert seen and set(seen) == {asked or "false"}


def test_batch_size_auto_probes_every_size_on_records_of_similar_length():
    """Found in review: with 2 workers the probe's rounds spanned nearly the whole window, so
    batch sizes were compared on records of very different lengths."""
    stage = PipelineStage("model", task="text-classification", batch_size="auto")
    stage.workers = 2
    records = [{"id": str(i), "text": "x"} for i in range(256)]  # a window of 256 (sort_window=256)
    plan = stage.plan_batches(records, {str(i): i + 1 for i in range(256)})
    rounds = []
    for item in plan:
        if not isinstance(item, tuple):
            break
        rounds.append(item)
    assert [len(r[0]) for r in rounds] == list(PipelineStage.PROBE_SIZES)[:len(rounds)] and all(len(r) == 2 for r in rounds)
    lengths = [i + 1 for r in rounds for batch in r for i in batch]
    assert len(rounds) >= 2 and min(lengths) >= 64 and max(lengths) <= 192  # the middle half of the window


def test_numbers_without_a_fast_isfinite_are_still_made_json():
    """Found in review: the one-call fast path raised for float8 tensors (no isfinite)."""
    import torch

    from composer.records import to_jsonable

    assert to_jsonable(torch.tensor([1.0, 2.0]).to(torch.float8_e4m3fn)) == [1.0, 2.0]


def test_windows_hold_enough_batches_for_every_worker():
    """Found in review: with batch_size=64 and 8 workers a 256-record window held 4 batches,
    leaving half of the workers idle; an unsorted window held one batch."""
    from composer.executors.local import window_for
    from composer.plan import Graph, Node

    sorting = Node(PipelineStage("model", task="text-classification"), [], "model")
    unsorted = Node(PipelineStage("model", task="text-generation"), [], "model")
    assert window_for(Graph([], window=256, batch=64), [sorting], 8) == 64 * 8 * 8
    assert window_for(Graph([], window=256, batch=8), [sorting], 2) == 256  # already 16 batches per worker
    assert window_for(Graph([], window=100, batch=64, auto_window=False), [sorting], 8) == 100  # the user's sort_window
    assert window_for(Graph([], window=8, batch=8), [unsorted], 2) == 16


def _two_ways(tmp_path, base: list[str], model_threads: set[str]) -> None:
    one = api.run([*base, "threads=1", "workers=1", "progress=false"], run_dir=tmp_path / "one")
    model_threads.clear()
    two = api.run([*base, "threads=2", "workers=2", "progress=false"], run_dir=tmp_path / "two")
    assert one.status == two.status == "complete", two.manifest().get("error")
    assert len({name for name in model_threads if name.startswith("composer-model")}) == 2
    assert [o["id"] for o in two.outputs()] == [o["id"] for o in one.outputs()] and len(one.outputs()) == 12
    for a, b in zip(one.outputs(), two.outputs()):
        assert_close(b["prediction"], a["prediction"], tol=1e-5, where=a["id"])


def test_image_classification_with_two_workers(tmp_path, model_threads):
    from test_vision import noise_image

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        noise_image(16 + 4 * i, 40 - 2 * i, i).save(folder / f"{i:02d}.png")
    _two_ways(tmp_path, ["experiment=image-classification", "model=tiny-image-classification", "input=image_folder",
                         f"input.path={folder}", "batch_size=2"], model_threads)


def test_audio_classification_with_two_workers(tmp_path, model_threads):
    import numpy as np
    import soundfile

    paths = []
    for i in range(12):
        samples = np.random.default_rng(i).normal(0, 0.1, 1600 + 800 * i).astype(np.float32)
        paths.append(tmp_path / f"clip{i:02d}.wav")
        soundfile.write(paths[-1], samples, 16_000)
    _two_ways(tmp_path, ["experiment=audio-classification", "model.id=tiny:audio-classification",
                         f"input.records=[{','.join(map(str, paths))}]", "batch_size=2"], model_threads)


def test_onednn_linear_layers_on_cpu_keep_outputs_and_tied_heads(tmp_path):
    """CPU fp32 encoders get oneDNN linear layers (weights packed once); outputs stay within fp32
    rounding of torch's own, a head tied to the embeddings stays tied, generation is untouched."""
    from composer import modelpool

    fast = _run(tmp_path, "fast", "fill-mask", "threads=1")
    plain = _run(tmp_path, "plain", "fill-mask", "threads=1", "onednn_linear=false")
    facts, plain_facts = fast.manifest()["stages"]["model"], plain.manifest()["stages"]["model"]
    assert facts["onednn_linear_layers"] > 0 and plain_facts["onednn_linear_layers"] == 0
    assert facts["parameters"] == plain_facts["parameters"]
    _assert_same(plain.outputs(), fast.outputs(), "onednn_linear")
    modelpool.clear()
    from transformers import pipeline

    from composer.stages.model import PipelineStage as Stage
    from composer.testing import tiny_model_path

    stage = Stage("model", task="fill-mask", model={"id": str(tiny_model_path("fill-mask"))})
    stage.setup()
    decoder = stage.pipe.model.get_output_embeddings()
    assert type(decoder).__name__ == "Linear" and decoder.weight is stage.pipe.model.get_input_embeddings().weight
    stage.close()
    reference = pipeline("fill-mask", model=str(tiny_model_path("fill-mask")))
    assert_close(fast.outputs()[0]["prediction"], to_jsonable(reference(fast.outputs()[0]["text"])), tol=1e-5)
    generation = api.run(["experiment=tiny-sentiment", "task=text-generation", "model=tiny-text-generation", "input=inline",
                          "input.records=[hello]", "call.max_new_tokens=2", "threads=1", "progress=false"], run_dir=tmp_path / "gen")
    assert generation.manifest()["stages"]["model"]["onednn_linear_layers"] == 0
