"""Batch size never changes outputs beyond float tolerance (DESIGN.md invariant)."""

from __future__ import annotations

import threading
import time

import pytest

from composer import api
from composer.stages.base import Stage
from conftest import assert_close, stop_requested_at, write_jsonl

WORDS = "the battery lasts for days but support never answered my emails about the broken screen".split()
# 40 texts of 1 to 40 words, shuffled by length so batches mix short and long ones.
TEXTS = [" ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + (i * 17) % 40)) for i in range(40)]


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction", "fill-mask"])
def test_batch_size_1_and_16_give_the_same_outputs(task, tmp_path):
    texts = [t + " [MASK]" for t in TEXTS] if task == "fill-mask" else TEXTS
    data = write_jsonl(tmp_path / "input.jsonl", [{"text": t} for t in texts])
    base = ["experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}", "threads=1"]
    one = api.run([*base, "batch_size=1"], run_dir=tmp_path / "bs1").outputs()
    sixteen = api.run([*base, "batch_size=16"], run_dir=tmp_path / "bs16").outputs()
    assert [o["id"] for o in one] == [o["id"] for o in sixteen] and len(one) == len(texts)
    for a, b in zip(one, sixteen):
        assert_close(b["prediction"], a["prediction"], tol=1e-4, where=f"{task} {a['id']}")


# Length-bucketed batching (issue 6): a window of records is ordered by token length, batched,
# run, and written back in input order; none of it may change a record's output.
def _run_texts(tmp_path, name: str, task: str, *overrides: str) -> tuple[list[dict], dict]:
    texts = [t + " [MASK]" for t in TEXTS] if task == "fill-mask" else TEXTS
    data = tmp_path / "input.jsonl"
    if not data.exists():
        write_jsonl(data, [{"n": i, "text": t} for i, t in enumerate(texts)])
    base = ["experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}",
            "input.id_field=n", "threads=1", "progress=false"]
    result = api.run([*base, *overrides], run_dir=tmp_path / name)
    assert result.status == "complete", result.manifest().get("error")
    return result.outputs(), result.manifest()["stages"]["model"]["batching"]


def _assert_same(expected: list[dict], actual: list[dict], where: str) -> None:
    assert [o["id"] for o in actual] == [o["id"] for o in expected] == [str(i) for i in range(len(TEXTS))]
    for a, b in zip(expected, actual):
        assert b["text"] == a["text"]
        assert_close(b["prediction"], a["prediction"], tol=1e-4, where=f"{where} {a['id']}")


@pytest.mark.parametrize("task", ["text-classification", "token-classification", "feature-extraction", "fill-mask"])
def test_length_sorted_batching_gives_the_unsorted_outputs_in_input_order(task, tmp_path):
    unsorted, facts = _run_texts(tmp_path, "unsorted", task, "batch_size=8", "sort_window=0")
    assert facts["sort_by_length"] is False
    ordered, facts = _run_texts(tmp_path, "sorted", task, "batch_size=8")  # the default: sort_window=auto
    assert facts["sort_by_length"] is True
    _assert_same(unsorted, ordered, task)


def test_a_window_smaller_than_the_input_restores_order_per_window(tmp_path):
    reference, _ = _run_texts(tmp_path, "unsorted", "text-classification", "batch_size=1", "sort_window=0")
    # 40 records in windows of 12: four windows, each sorted by length inside, batches of 4.
    windowed, facts = _run_texts(tmp_path, "windowed", "text-classification", "batch_size=4", "sort_window=12", "prefetch=2")
    assert facts["sort_by_length"] is True
    _assert_same(reference, windowed, "window 12")
    no_prefetch, _ = _run_texts(tmp_path, "no-prefetch", "text-classification", "batch_size=4", "sort_window=12", "prefetch=0")
    _assert_same(reference, no_prefetch, "prefetch 0")


def test_plan_batches_sorts_longest_first_and_respects_the_token_budget():
    from composer.stages.model import PipelineStage

    stage = PipelineStage("model", task="text-classification", batch_size=4, max_batch_tokens=40)
    records = [{"id": str(i), "text": "x"} for i in range(11)]
    sizes = [3, 17, 5, 9, 9, 2, 30, 1, 12, 7, 4]
    batches = list(stage.plan_batches(records, {str(i): n for i, n in enumerate(sizes)}))
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(11))  # every record exactly once
    assert [sizes[i] for i in flat] == sorted(sizes, reverse=True)  # longest first
    for batch in batches:
        assert len(batch) <= 4
        assert len(batch) == 1 or max(sizes[i] for i in batch) * len(batch) <= 40
    assert batches[0] == [6]  # 30 tokens: a second record would make 2 x 30 > 40
    # Without sorting the window keeps input order, cut by the same limits.
    stage = PipelineStage("model", task="text-classification", batch_size=4, sort_by_length=False, max_batch_tokens=40)
    batches = list(stage.plan_batches(records, {str(i): n for i, n in enumerate(sizes)}))
    assert [i for batch in batches for i in batch] == list(range(11))
    # Generation keeps input order by default (sort_window=auto).
    assert PipelineStage("model", task="text-generation").sorts_by_length is False


def test_token_budget_batches_give_the_same_outputs(tmp_path):
    reference, _ = _run_texts(tmp_path, "unsorted", "token-classification", "batch_size=8", "sort_window=0")
    budget, facts = _run_texts(tmp_path, "budget", "token-classification", "batch_size=16", "max_batch_tokens=64")
    assert facts["max_batch_tokens"] == 64
    _assert_same(reference, budget, "max_batch_tokens=64")


def test_batch_size_auto_is_measured_and_recorded(tmp_path):
    reference, _ = _run_texts(tmp_path, "unsorted", "text-classification", "batch_size=8", "sort_window=0")
    auto, facts = _run_texts(tmp_path, "auto", "text-classification", "batch_size=auto", "sort_window=40")
    assert facts["requested_batch_size"] == "auto" and facts["auto"]["chosen"] == facts["batch_size"]
    assert facts["auto"]["method"].startswith("cpu") and str(facts["batch_size"]) in facts["auto"]["tokens_per_second"]
    _assert_same(reference, auto, "batch_size=auto")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["batch_size=8", "sort_window=4"], "sort_window: sort_window (4) must be 0 (off) or at least batch_size (8)"),
        (["sort_window=-1"], "sort_window: sort_window must be 0 (off), auto or >= 1, got -1"),
        (["sort_window=big"], "sort_window: expected int or 'auto', got 'big'"),
        (["max_batch_tokens=0"], "max_batch_tokens: max_batch_tokens must be >= 1 or null, got 0"),
        (["prefetch=-1"], "prefetch: prefetch must be >= 0"),
        (["batch_size=biggest"], "batch_size: expected int or 'auto', got 'biggest'"),
    ],
)
def test_batching_settings_are_checked_at_plan_time(overrides, expected):
    from composer.schema import ConfigError

    with pytest.raises(ConfigError) as caught:
        api.plan(["experiment=tiny-sentiment", *overrides])
    assert any(str(issue).startswith(expected) for issue in caught.value.issues), caught.value.issues


def test_a_stop_inside_a_sorted_window_writes_an_input_order_prefix_and_resume_completes_it(tmp_path, monkeypatch):
    reference, _ = _run_texts(tmp_path, "reference", "text-classification", "batch_size=4", "sort_window=0")

    monkeypatch.setattr("composer.run._StopRequests", stop_requested_at(5))  # Ctrl-C at the fifth check between batches
    data = tmp_path / "input.jsonl"
    overrides = ["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "input.id_field=n", "threads=1",
                 "progress=false", "batch_size=4", "sort_window=12"]
    stopped = api.run(overrides, run_dir=tmp_path / "stopped")
    assert stopped.status == "interrupted"
    # Window 1 (12 records) was written whole; window 2 stopped after two of its three batches,
    # longest first, so only the records before the first undone one could be written.
    written = [o["id"] for o in stopped.outputs()]
    assert 12 <= len(written) < 24 and written == [str(i) for i in range(len(written))]
    monkeypatch.undo()
    resumed = api.resume(tmp_path / "stopped")
    assert resumed.status == "complete"
    _assert_same(reference, resumed.outputs(), "resumed")


def test_batch_size_auto_on_cuda_shrinks_from_256_until_a_batch_fits():
    from composer.stages.model import PipelineStage

    class OutOfMemoryAbove32:
        """Stands in for a pipeline on a GPU that fits 32 copies of the longest input."""

        device = "cuda:0"

        def __call__(self, inputs, batch_size, **call):
            if batch_size > 32:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return [{"label": "x", "score": 1.0}] * len(inputs)

    stage = PipelineStage("model", task="text-classification", batch_size="auto")
    stage.pipe = OutOfMemoryAbove32()
    records = [{"id": str(i), "text": "word " * (i + 1)} for i in range(40)]
    batches = list(stage.plan_batches(records, {str(i): i + 1 for i in range(40)}))
    tried = stage.batch_choice["tried"]  # accelerate shrinks the batch after each out-of-memory error
    assert tried[0] == 256 and tried == sorted(tried, reverse=True) and tried[-2] > 32
    assert stage.batch_size == tried[-1] <= 32 and stage.batch_choice["method"].startswith("cuda")
    assert batches[0][0] == 39 and all(len(b) <= stage.batch_size for b in batches)  # longest first
    assert sorted(i for b in batches for i in b) == list(range(40))


@pytest.mark.parametrize("fails_alone", [False, True])
def test_batch_size_auto_on_cuda_when_batches_fail_for_another_reason(fails_alone):
    """Found beside the one-record fallback: the CUDA probe let any error but out-of-memory
    escape and end the run. A pipeline that cannot batch (no pad token) runs one record per
    batch; an input that fails alone too leaves the default size (its record then fails in its
    own batch)."""
    from composer.stages.model import PipelineStage

    class CannotBatch:
        device = "cuda:0"

        def __call__(self, inputs, batch_size=None, **call):
            if fails_alone or isinstance(inputs, list):
                raise ValueError("Pipeline with tokenizer without pad_token cannot do batching.")
            return {"label": "x", "score": 1.0}

    stage = PipelineStage("model", task="text-classification", batch_size="auto")
    stage.pipe = CannotBatch()
    records = [{"id": str(i), "text": "word " * (i + 1)} for i in range(10)]
    batches = list(stage.plan_batches(records, {str(i): i + 1 for i in range(10)}))
    assert stage.batch_choice["tried"] == [256]  # not out of memory: accelerate does not shrink and retry
    if fails_alone:
        assert stage.batch_size == 8 and stage.one_record_because is None and stage.batch_choice["method"].startswith("default")
    else:
        assert stage.batch_size == 1 and "cannot do batching" in stage.one_record_because
    assert sorted(i for b in batches for i in b) == list(range(10)) and all(len(b) <= stage.batch_size for b in batches)


class SlowHead(Stage):
    """A prefetchable transform whose second window takes longer than the old 5 s join timeout."""

    prefetchable = True
    calls = 0

    def __init__(self, name: str):
        super().__init__(name)
        self.reads, self.writes = ("text",), ()

    def process(self, records):
        SlowHead.calls += 1
        if SlowHead.calls == 2:
            time.sleep(6)
        return records


def test_a_stopped_run_leaves_no_prefetch_thread_behind(tmp_path):
    """Found in review: the run closed its stages after waiting 5 s while the prefetch thread
    was still inside a head stage, which then kept running stage code."""
    SlowHead.calls = 0
    texts = ["fine"] * 3 + ["word " * 600] + ["fine"] * 8  # the 4th is too long for the model: on_error=fail stops
    data = write_jsonl(tmp_path / "in.jsonl", [{"text": t} for t in texts])
    result = api.run(["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "threads=1", "on_error=fail",
                      "sort_window=4", "batch_size=4", "allow_any_target=true", "preprocess=[{_target_: test_batching.SlowHead}]"],
                     run_dir=tmp_path / "run")
    assert result.status == "aborted"
    assert [t for t in threading.enumerate() if t.name == "composer-prefetch"] == []
    assert [o["text"] for o in result.outputs()] == ["fine"] * 3


def test_feature_extraction_tokenizes_each_record_once(tmp_path, monkeypatch):
    """Found in review: cutting batched feature-extraction output to each record's own tokens
    tokenized every record a second time on the main thread, though its length was known."""
    from composer.testing import tiny_model_path

    calls = _tokenizer_calls(monkeypatch, str(tiny_model_path("feature-extraction")))
    texts = [("word " * n).strip() for n in (3, 9, 1, 6, 12, 4, 8, 2)]
    result = api.run(["experiment=tiny-sentiment", "task=feature-extraction", "model=tiny-feature-extraction", "input=inline",
                      f"input.records={texts}", "batch_size=4", "threads=1"], run_dir=tmp_path / "run")
    # One window: its texts in one call, then its shortest and longest alone (the check against
    # the pipeline's own preprocess), all ahead of the model.
    assert result.status == "complete"
    assert calls == [("composer-prefetch", texts), ("composer-prefetch", ["word"]), ("composer-prefetch", [texts[4]])]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(result.manifest()["stages"]["model"]["model"]["load_from"])
    assert [len(o["prediction"][0]) for o in result.outputs()] == [len(tokenizer(t)["input_ids"]) for t in texts]


@pytest.mark.parametrize("task", ["text-classification", "feature-extraction"])
def test_batches_tokenized_together_skip_the_pipelines_collate_once_it_is_checked(task, tmp_path, monkeypatch):
    """The pipeline's own collate runs for the first padded batch only, as the check of
    RowCollator's; the outputs stay those of the plain pipeline on each text."""
    from transformers import pipeline
    from transformers.pipelines import base

    from composer.records import to_jsonable
    from composer.testing import tiny_model_path

    collated: list[int] = []
    original = base.pad_collate_fn
    monkeypatch.setattr(base, "pad_collate_fn", lambda *a: (lambda items: collated.append(len(items)) or original(*a)(items)))
    outputs, facts = _run_texts(tmp_path, "run", task, "batch_size=4")
    assert collated == [4] and facts["batch_size"] == 4  # ten batches of four distinct lengths
    monkeypatch.undo()
    reference = pipeline(task, model=str(tiny_model_path(task)))
    for output, text in zip(outputs, TEXTS):
        expected = to_jsonable(reference(text))
        if task == "text-classification":
            expected = [expected[0]] if isinstance(expected, list) else [expected]
        assert_close(output["prediction"], expected, tol=1e-5, where=f"{task} {output['id']}")


PAIRS = [{"text": ("word " * n).strip(), "other": "a pair " * (n % 3 + 1)} for n in (3, 9, 1, 6, 12, 4, 8, 2)]


def _tokenizer_calls(monkeypatch, model: str) -> list[tuple[str, list]]:
    """(thread name, texts) for every call of the tokenizer class that `model` loads."""
    from transformers import AutoTokenizer

    calls: list[tuple[str, list]] = []
    cls = type(AutoTokenizer.from_pretrained(model))
    original = cls.__call__

    def call(self, text=None, *args, **kwargs):
        calls.append((threading.current_thread().name, text if isinstance(text, list) else [text]))
        return original(self, text, *args, **kwargs)

    monkeypatch.setattr(cls, "__call__", call)
    return calls


@pytest.mark.parametrize(
    ("task", "call", "pairs", "batch_size"),
    [("token-classification", {}, False, 4), ("zero-shot-classification", {"candidate_labels": ["urgent", "billing", "phone"]}, False, 4),
     ("text-classification", {}, True, 4), ("text-classification", {}, False, 1), ("fill-mask", {}, False, 7),
     ("token-classification", {}, False, 1)],
)
def test_inputs_are_tokenized_once_ahead_for_chunk_pipelines_and_text_pairs(task, call, pairs, batch_size, tmp_path, monkeypatch):
    """Found in review: NER and zero-shot (chunk pipelines) were tokenized on the main thread in
    process(), not ahead; a {text, text_pair} input was tokenized ahead and then again, since
    its dict is rebuilt for the call. And a batch of one record (batch_size=1, or the last of a
    window: 8 records in sevens) threw its prepared tokens away and ran the whole pipeline."""
    from transformers import pipeline

    from composer.records import to_jsonable
    from composer.stages.model.prepared import TOKENIZED_TOGETHER_TASKS
    from composer.testing import tiny_model_path

    reference = pipeline(task, model=str(tiny_model_path(task)))
    threads: list[str] = []
    original = type(reference).preprocess
    monkeypatch.setattr(type(reference), "preprocess", lambda self, *a, **k: threads.append(threading.current_thread().name) or original(self, *a, **k))
    tokenized = _tokenizer_calls(monkeypatch, str(tiny_model_path(task)))
    rows = PAIRS if pairs else [{"text": p["text"] + (" [MASK]" if task == "fill-mask" else "")} for p in PAIRS]
    data = write_jsonl(tmp_path / "in.jsonl", rows)
    overrides = ["model_input={text: text, text_pair: other}", "input.keep=[other]"] if pairs else []
    overrides += [f"call.candidate_labels=[{','.join(call['candidate_labels'])}]"] if call else []
    result = api.run(["experiment=tiny-sentiment", f"task={task}", f"model=tiny-{task}", "input=jsonl", f"input.path={data}",
                      f"batch_size={batch_size}", "threads=1", "progress=false", *overrides], run_dir=tmp_path / "run")
    assert result.status == "complete", result.manifest().get("error")
    assert {name for name, _ in tokenized} == {"composer-prefetch"}  # ahead of the model, never again
    if task in TOKENIZED_TOGETHER_TASKS and not pairs:  # one window: its texts in one call, then the check
        shortest, longest = min(rows, key=lambda r: len(r["text"]))["text"], max(rows, key=lambda r: len(r["text"]))["text"]
        assert threads == ["composer-prefetch"] * 2
        assert [t for _, t in tokenized] == [[r["text"] for r in rows], [shortest], [longest]]
    else:
        assert threads == ["composer-prefetch"] * len(PAIRS)  # once per record
    monkeypatch.undo()
    for output, row in zip(result.outputs(), rows):
        model_input = {"text": row["text"], "text_pair": row["other"]} if pairs else row["text"]
        assert_close(output["prediction"], to_jsonable(reference(model_input, **call)), tol=1e-5, where=f"{task} {output['id']}")


@pytest.fixture(scope="module")
def padless_classifier(tmp_path_factory) -> str:
    """The tiny text classifier with its tokenizer's pad token removed (as GPT-2-based
    classifiers ship): pipeline() runs it one input at a time but refuses to batch it."""
    import shutil

    from transformers import AutoTokenizer

    from composer.testing import tiny_model_path

    folder = tmp_path_factory.mktemp("padless") / "model"
    shutil.copytree(tiny_model_path("text-classification"), folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = None
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_a_model_that_cannot_batch_runs_one_record_per_batch(padless_classifier, tmp_path):
    """Found in review: a batch of one record tokenized ahead was padded anyway (and failed for
    want of a pad token) although pipe(x) runs it. Batches that keep failing while each record
    runs alone switch the stage, mid-window, to one record per batch."""
    from transformers import pipeline

    from composer.records import to_jsonable

    reference = pipeline("text-classification", model=padless_classifier)
    texts = [("word " * n).strip() for n in (9, 3, 12, 1, 6, 4)]
    base = ["experiment=tiny-sentiment", f"model.id={padless_classifier}", "input=inline", "threads=1", "progress=false"]
    alone = api.run([*base, f"input.records=[{texts[0]}]"], run_dir=tmp_path / "alone")
    assert alone.status == "complete", alone.errors()
    assert "one_record_because" not in alone.manifest()["stages"]["model"]["batching"]
    result = api.run([*base, f"input.records=[{','.join(texts)}]", "batch_size=2"], run_dir=tmp_path / "run")
    assert result.status == "complete", result.errors()
    batching = result.manifest()["stages"]["model"]["batching"]
    assert batching["batch_size"] == 1 and "cannot do batching" in batching["one_record_because"]
    # One sorted window: [12, 9] and [6, 4] failed and ran alone, then [3] and [1] were planned alone.
    assert result.manifest()["counts"]["batches"] == 4
    for output in [*alone.outputs(), *result.outputs()]:
        assert_close(output["prediction"], to_jsonable(reference(output["text"])), where=output["text"])


@pytest.mark.parametrize("case", ["miss", "all cached", "cannot batch", "lands on cpu", "cpu"])
def test_batch_size_auto_with_the_result_cache(case, tmp_path, monkeypatch):
    """Bug: with the result cache the model is not loaded when the first window is planned, so
    the device was read as CPU and a GPU run measured tokens/s instead of finding the largest
    batch that fits. Now a window with a miss loads the model and probes it where it landed; a
    window served wholly from the cache loads nothing and leaves the probe to a later window.
    Review findings: a model that turns out unable to batch keeps one record per batch, and a
    model a device_map kept on CPU is probed as on CPU; on CPU the model loads before the first
    probe round, which timed the load along with the batches and so never chose the smallest size."""
    from composer.cache import ResultCache
    from composer.stages.model import PipelineStage

    class OutOfMemoryAbove32:
        device = "cpu" if case in ("lands on cpu", "cpu") else "cuda:0"

        def __call__(self, inputs, batch_size, **call):
            if batch_size > 32:
                raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return [{"label": "x", "score": 1.0}] * len(inputs)

    def load():
        stage.pipe = OutOfMemoryAbove32()
        if case == "cannot batch":
            stage.one_record_at_a_time("the feature extractor pads without an attention mask")

    stage = PipelineStage("model", task="text-classification", batch_size="auto", model={"device": "cpu" if case == "cpu" else "cuda"})
    monkeypatch.setattr(stage, "fingerprint", lambda: "fingerprint")
    monkeypatch.setattr(stage, "_load", load)
    stage.use_cache(ResultCache(tmp_path / "cache.sqlite"), "upstream")
    records = [{"id": str(i), "text": "word " * (i + 1)} for i in range(40)]
    if case == "all cached":
        stage.cache.put_many({key: [{"label": "x", "score": 1.0}] for key in stage._cache_keys([r["text"] for r in records])})
    planned = stage.plan_batches(records, {str(i): i + 1 for i in range(40)})
    plan = [next(planned)]
    loaded_before_the_first_batch = stage.pipe is not None
    plan += list(planned)
    batches = [b for item in plan for b in (item if isinstance(item, tuple) else (item,))]
    assert sorted(i for b in batches for i in b) == list(range(40))
    if case == "all cached":
        assert stage.pipe is None and stage.batch_size is None and stage.batch_choice["method"].startswith("not probed")
        assert all(len(b) <= 8 for b in batches)
        # The input grew since the cached run: the first window with a miss loads and probes.
        fresh = [{"id": f"new{i}", "text": "other " * (i + 1)} for i in range(40)]
        list(stage.plan_batches(fresh, {f"new{i}": i + 1 for i in range(40)}))
        assert stage.pipe is not None and stage.batch_choice["method"].startswith("cuda") and stage.batch_size <= 32
    elif case == "cannot batch":
        assert stage.batch_size == 1 and stage.batch_choice is None and all(len(b) == 1 for b in batches)
    elif case in ("lands on cpu", "cpu"):
        assert any(isinstance(item, tuple) for item in plan) and stage.batch_choice["method"].startswith("cpu")
        assert loaded_before_the_first_batch
    else:
        assert all(isinstance(item, list) for item in plan)  # no CPU probe rounds
        assert stage.batch_choice["method"].startswith("cuda") and stage.batch_size <= 32


def test_batch_size_auto_probes_only_records_the_result_cache_lacks(tmp_path, monkeypatch):
    """Found in review: in a window partly served from the cache the CPU probe timed cache
    lookups as if they were batches, so whichever size drew the most hits won."""
    from composer.cache import ResultCache
    from composer.stages.model import PipelineStage

    class CpuPipe:
        device = "cpu"

    stage = PipelineStage("model", task="text-classification", batch_size="auto")
    stage.pipe = CpuPipe()
    monkeypatch.setattr(stage, "fingerprint", lambda: "fingerprint")
    stage.use_cache(ResultCache(tmp_path / "cache.sqlite"), "upstream")
    records = [{"id": str(i), "text": f"record {i}"} for i in range(256)]
    stage.cache.put_many({key: [] for key in stage._cache_keys([r["text"] for r in records[::2]])})  # even ids cached
    rounds = [item for item in stage.plan_batches(records, {str(i): 10 + i % 7 for i in range(256)}) if isinstance(item, tuple)]
    probed = [i for round_ in rounds for batch in round_ for i in batch]
    assert len(rounds) >= 2 and probed and all(i % 2 == 1 for i in probed)
