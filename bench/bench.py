"""Throughput benchmark (issue 6): composer vs plain `pipeline()` and a hand-written loop.

Everything runs offline on models and data this script builds: a bert-base-sized classifier
(hidden 768, 12 layers) and a small one (hidden 256, 4 layers), both randomly initialised (speed
does not depend on the weights) and saved with save_pretrained next to a WordPiece tokenizer
trained with `tokenizers`; texts of 10 to 190 words (about 12 to 200 tokens) in random order.

In one process and on the same texts it measures, per model: plain `pipeline()` at batch_size
1/8/32 and on composer's batches, a hand loop (tokenizer + model, unsorted and length-sorted in
composer's windows), and `composer run` with default settings plus variants that switch one
feature off, printing records/s (median over repeats, interleaved so that load changes hit every
variant alike, each repeat starting one variant later), the ratio to plain
`pipeline(batch_size=8)`, peak RSS and whether outputs match pipeline(bs=1). All of them run on
the malloc tuning composer sets (tune_malloc, process-wide); what that tuning is worth is
measured apart, with fresh `composer run` processes. Then it times `composer plan` and
`composer --help`, and compares the peak RSS of streaming 10k and 100k jsonl records through the
tiny test model (separate processes).

    .venv/bin/python bench/bench.py --quick          # minutes; fewer texts and repeats
    .venv/bin/python bench/bench.py                  # the full run (long on 2 cores)

Speed on a shared machine is noisy: compare ratios within one run, not numbers across runs.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # composer's own default (runtime.set_run_threads)
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODELS = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small-256x4": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def words() -> list[str]:
    text = (REPO / "composer" / "testing" / "corpus.txt").read_text(encoding="utf-8").lower()
    return [w.strip(".,;:!?\"'()") for w in text.split() if w.strip(".,;:!?\"'()")]


def make_texts(n: int, seed: int = 0) -> list[str]:
    vocab = words()
    rng = random.Random(seed)
    return [" ".join(rng.choice(vocab) for _ in range(rng.randint(10, 190))) for _ in range(n)]


def build_model(name: str, folder: Path) -> Path:
    """A randomly initialised BERT classifier and a trained WordPiece tokenizer, saved offline."""
    if (folder / "config.json").exists():
        return folder
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    raw = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    raw.normalizer = normalizers.BertNormalizer(lowercase=True)
    raw.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    raw.train_from_iterator(make_texts(2000, seed=1), trainers.WordPieceTrainer(vocab_size=8000, special_tokens=specials, show_progress=False))
    raw.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", raw.token_to_id("[CLS]")), ("[SEP]", raw.token_to_id("[SEP]"))],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=512, num_labels=2,
                        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1}, **MODELS[name])
    model = BertForSequenceClassification(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder


def windows_sorted(lengths: list[int], window: int) -> list[list[int]]:
    """composer's default batching: windows of `window` records, each longest first."""
    order = []
    for start in range(0, len(lengths), window):
        chunk = range(start, min(start + window, len(lengths)))
        order += sorted(chunk, key=lambda i: (-lengths[i], i))
    return order


def hand_loop(model, tokenizer, texts: list[str], batch_size: int, order: list[int], workers: int = 1,
              spans: list | None = None) -> list[dict]:
    """Tokenizer + model over `order` in batches; with workers > 1 the batches run side by side
    on that many threads (one intra-op thread each, each thread with its own tokenizer copy),
    the split composer's workers=auto makes. `spans` (bench/trace.py) collects each batch's
    (thread, start, end, thread CPU seconds)."""
    import copy
    import threading

    import torch

    results: list[dict] = [None] * len(texts)  # type: ignore[list-item]
    own = threading.local()

    def run(indices: list[int]) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        if workers > 1 and not hasattr(own, "tokenizer"):
            own.tokenizer = copy.deepcopy(tokenizer)
        with torch.inference_mode():
            encoded = getattr(own, "tokenizer", tokenizer)([texts[i] for i in indices], padding=True, truncation=True, return_tensors="pt")
            probs = model(**encoded).logits.softmax(-1)
        for i, row in zip(indices, probs.tolist()):
            best = max(range(len(row)), key=row.__getitem__)
            results[i] = {"label": model.config.id2label[best], "score": row[best]}
        if spans is not None:
            spans.append((threading.get_ident(), started, time.perf_counter(), time.thread_time() - cpu))

    batches = [order[start:start + batch_size] for start in range(0, len(order), batch_size)]
    if workers <= 1:
        for batch in batches:
            run(batch)
    else:
        side_by_side(run, batches, workers)
    return results


def side_by_side(run, batches: list[list[int]], workers: int) -> None:
    """`run` over `batches` on `workers` threads with one intra-op thread each (composer's split)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, batches))
    finally:
        torch.set_num_threads(threads)


def pipeline_loop(pipe, texts: list[str], batch_size: int, order: list[int], workers: int) -> list[dict]:
    """Plain `pipeline()` called on composer's batches (`order`), side by side on `workers` threads
    with one intra-op thread each, each thread with its own pipeline copy (own tokenizer). The
    gap between it and the hand loop is the pipeline's own per-record work (preprocess, collate,
    unbatch, postprocess); between it and composer, composer's net cost: reading, bookkeeping and
    writing, less what tokenizing a window in one call and padding each batch in one array per
    field save over the pipeline's per-record preprocess and collate."""
    import threading

    results: list[dict] = [None] * len(texts)  # type: ignore[list-item]
    own = threading.local()

    def run(indices: list[int]) -> None:
        if not hasattr(own, "pipe"):
            own.pipe = copy.copy(pipe)
            own.pipe.tokenizer = copy.deepcopy(pipe.tokenizer)
        for i, output in zip(indices, own.pipe([texts[i] for i in indices], batch_size=len(indices))):
            results[i] = output

    side_by_side(run, [order[start:start + batch_size] for start in range(0, len(order), batch_size)], workers)
    return results


def match(reference: list[dict], outputs: list[dict], tol: float = 1e-4) -> bool:
    for a, b in zip(reference, outputs, strict=True):
        if abs(a["score"] - b["score"]) > tol or (a["label"] != b["label"] and abs(a["score"] - 0.5) > tol):
            return False
    return True


def kept_pipeline():
    """The pipeline the last composer run left in composer.modelpool for the next run (its
    private list: this is a benchmark, not an API)."""
    from composer import modelpool

    return modelpool._kept[-1][1]


def composers_pipeline(folder: Path, data: Path, work: Path, threads: int):
    """Composer's own loaded pipeline (oneDNN linear layers in place), from one warm-up run.
    The like-for-like loops run on its model: two loads of the same weights differed by 1-5% in
    forward speed (bench/RESULTS.md), which would otherwise sit inside "composer vs the hand
    loop"."""
    composer_run(folder, data, work, threads, [])
    return kept_pipeline()


def composer_run(folder: Path, data: Path, work: Path, threads: int, overrides: list[str]) -> tuple[float, list[dict], dict]:
    from composer import api

    run_dir = Path(tempfile.mkdtemp(dir=work))
    result = api.run(["experiment=tiny-sentiment", f"model.id={folder}", "input=jsonl", f"input.path={data}", "input.id_field=n",
                      f"threads={threads}", "progress=false", *overrides], run_dir=run_dir)
    assert result.status == "complete", result.manifest().get("error")
    rate = result.metrics()["throughput"]["records_per_second"]
    outputs = [row["prediction"][0] for row in result.outputs()]
    return rate, outputs, result.manifest()["stages"]["model"].get("batching", {})


def bench_model(name: str, n: int, repeats: int, threads: int, work: Path, only: list[str] | None = None) -> list[dict]:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    torch.set_num_threads(threads)
    from composer.allocator import tune_malloc

    # Process-wide and for good once a composer run sets it: set before any variant, so every
    # one runs on the same allocator (allocator_gain measures what it is worth).
    print(f"  malloc: {tune_malloc(True)}", flush=True)
    folder = build_model(name, work / "models" / name)
    texts = make_texts(n, seed=42)
    data = work / f"texts-{name}-{n}.jsonl"
    data.write_text("".join(json.dumps({"n": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    pipe = pipeline("text-classification", model=str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]]
    print(f"\n== {name}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters, {n} texts of "
          f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}), {threads} thread(s), {repeats} repeat(s)", flush=True)
    sorted_order = windows_sorted(lengths, 256)
    shared = {"pipe": composers_pipeline(folder, data, work, threads)}

    def composer_defaults():
        result = composer_run(folder, data, work, threads, [])[:2]
        shared["pipe"] = kept_pipeline()  # the same one unless a variant with other settings evicted it
        return result

    def timed(fn):
        started = time.perf_counter()
        out = fn()
        return n / (time.perf_counter() - started), out

    variants = {
        "pipeline() bs=1": lambda: timed(lambda: pipe(texts, batch_size=1)),
        "pipeline() bs=8": lambda: timed(lambda: pipe(texts, batch_size=8)),
        "pipeline() bs=32": lambda: timed(lambda: pipe(texts, batch_size=32)),
        "hand loop bs=8 unsorted": lambda: timed(lambda: hand_loop(model, tokenizer, texts, 8, list(range(n)))),
        "hand loop bs=8 sorted (composer's batches)": lambda: timed(lambda: hand_loop(model, tokenizer, texts, 8, sorted_order)),
        f"hand loop bs=8 sorted, {threads} workers x 1 thread": lambda: timed(lambda: hand_loop(model, tokenizer, texts, 8, sorted_order, threads)),
        f"hand loop bs=8 sorted, {threads} workers x 1 thread, oneDNN linear":
            lambda: timed(lambda: hand_loop(shared["pipe"].model, tokenizer, texts, 8, sorted_order, threads)),
        f"pipeline() on composer's batches, {threads} workers x 1 thread, oneDNN linear":
            lambda: timed(lambda: pipeline_loop(shared["pipe"], texts, 8, sorted_order, threads)),
        "composer defaults": composer_defaults,
        "composer workers=1 (one batch at a time)": lambda: composer_run(folder, data, work, threads, ["workers=1"])[:2],
        "composer onednn_linear=false (torch's own linear)": lambda: composer_run(folder, data, work, threads, ["onednn_linear=false"])[:2],
        "composer sort_window=0 (unsorted)": lambda: composer_run(folder, data, work, threads, ["sort_window=0"])[:2],
        "composer prefetch=0": lambda: composer_run(folder, data, work, threads, ["prefetch=0"])[:2],
        "composer batch_size=32": lambda: composer_run(folder, data, work, threads, ["batch_size=32"])[:2],
        "composer max_batch_tokens=2048 batch_size=64": lambda: composer_run(folder, data, work, threads, ["batch_size=64", "max_batch_tokens=2048"])[:2],
        "composer batch_size=auto": lambda: composer_run(folder, data, work, threads, ["batch_size=auto"])[:2],
    }
    if only:  # keep pipeline(bs=1) (the reference outputs) and bs=8 (the baseline ratio)
        variants = {k: v for k, v in variants.items() if k in ("pipeline() bs=1", "pipeline() bs=8") or any(o in k for o in only)}
    rates: dict[str, list[float]] = {k: [] for k in variants}
    outputs: dict[str, list[dict]] = {}
    rss: dict[str, float] = {}
    labels = list(variants)
    for repeat in range(repeats):
        # Each repeat starts one variant later, so no variant always runs first or after the same one.
        for label in labels[repeat % len(labels):] + labels[:repeat % len(labels)]:
            torch.set_num_threads(threads)  # a composer run leaves its own intra-op split behind
            rate, out = variants[label]()
            rates[label].append(rate)
            outputs.setdefault(label, [dict(o) for o in out])
            rss[label] = peak_rss_mb()
            print(f"  [{repeat + 1}/{repeats}] {label:48s} {rate:9.1f} rec/s", flush=True)
    chosen = composer_run(folder, data, work, threads, ["batch_size=auto"])[2] if name == "small-256x4" and not only else None
    reference = [dict(o) for o in outputs["pipeline() bs=1"]]
    base = statistics.median(rates["pipeline() bs=8"])
    rows = []
    for label in variants:
        median = statistics.median(rates[label])
        rows.append({"model": name, "variant": label, "records_per_s": median, "all": rates[label],
                     "ratio_vs_pipeline_bs8": median / base, "peak_rss_mb": rss[label], "outputs_match": match(reference, outputs[label])})
    # Repeats run back to back, so a per-repeat ratio cancels the machine's slow drifts that the
    # medians of each variant keep: the steadier figure for "within 3% of the hand loop".
    hand = f"hand loop bs=8 sorted, {threads} workers x 1 thread, oneDNN linear"
    plain = f"pipeline() on composer's batches, {threads} workers x 1 thread, oneDNN linear"
    for ours, theirs, label in [("composer defaults", hand, "composer defaults vs the like-for-like hand loop"),
                                ("composer defaults", plain, "composer defaults vs pipeline() on its batches and workers"),
                                (plain, hand, "pipeline() on composer's batches vs the like-for-like hand loop")]:
        if ours in rates and theirs in rates:
            ratios = sorted(a / b - 1 for a, b in zip(rates[ours], rates[theirs]))
            rows.append({"model": name, "variant": f"{label}, per repeat",
                         "auto": {"median": f"{statistics.median(ratios):+.1%}", "range": f"{ratios[0]:+.1%} .. {ratios[-1]:+.1%}"}})
    if chosen:
        rows.append({"model": name, "variant": "batch_size=auto choice (extra run)", "auto": chosen})
    if not only or any("allocator" in o for o in only):
        rows.append({"model": name, "variant": "allocator: composer run tune_malloc=true vs false (fresh processes)",
                     "auto": allocator_gain(folder, data, work, threads, repeats)})
    if not only:
        rows.append({"model": name, "variant": "model reuse across in-process runs (16 records each)", "auto": model_reuse(folder, data, work, threads)})
    return rows


def allocator_gain(folder: Path, data: Path, work: Path, threads: int, repeats: int) -> dict:
    """records/s of `composer run` in fresh processes with tune_malloc=true and false, alternating
    (in-process, glibc cannot go back once tuned), and the minor page faults of each."""
    rates: dict[str, list[float]] = {"true": [], "false": []}
    faults: dict[str, list[int]] = {"true": [], "false": []}
    code = ("import resource, sys; from composer.cli import main; code = main(sys.argv[1:]); "
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt); sys.exit(code)")
    for repeat in range(repeats):
        for mode in ("true", "false") if repeat % 2 == 0 else ("false", "true"):  # alternating which runs first
            run_dir = Path(tempfile.mkdtemp(dir=work)) / "run"
            done = subprocess.run([sys.executable, "-c", code, "run", "experiment=tiny-sentiment", f"model.id={folder}", "input=jsonl",
                                   f"input.path={data}", "input.id_field=n", f"threads={threads}", "progress=false",
                                   f"tune_malloc={mode}", f"hydra.run.dir={run_dir}"], cwd=work, check=True, capture_output=True, text=True)
            rates[mode].append(json.loads((run_dir / "metrics.json").read_text())["throughput"]["records_per_second"])
            faults[mode].append(int(done.stdout.split()[-1]))
    ratios = sorted(t / f - 1 for t, f in zip(rates["true"], rates["false"]))
    return {f"tune_malloc={mode}": f"{statistics.median(rates[mode]):.1f} records/s, {statistics.median(faults[mode])} minor faults"
            for mode in rates} | {"per repeat": f"{statistics.median(ratios):+.1%} ({ratios[0]:+.1%} .. {ratios[-1]:+.1%})"}


def model_reuse(folder: Path, data: Path, work: Path, threads: int) -> dict:
    """Two in-process runs of one model, as in a sweep over batch_size: the second takes the
    pipeline the first left in composer.modelpool instead of loading it again."""
    from composer import api, modelpool

    modelpool.clear()
    facts = {}
    for label, extra in (("first run (loads)", "batch_size=8"), ("second run (reuses)", "batch_size=4")):
        started = time.perf_counter()
        result = api.run(["experiment=tiny-sentiment", f"model.id={folder}", "input=jsonl", f"input.path={data}", "input.id_field=n",
                          "input.limit=16", f"threads={threads}", "progress=false", extra], run_dir=Path(tempfile.mkdtemp(dir=work)))
        model = result.manifest()["stages"]["model"]
        facts[label] = {"wall_s": time.perf_counter() - started, "load_s": model["load_seconds"], "reused": model.get("reused")}
    modelpool.clear()
    return facts


def time_cli(args: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "composer", *args], cwd=REPO, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def streaming_rss(counts: list[int], work: Path) -> dict[int, dict]:
    """Peak RSS of a fresh `composer run` process streaming N jsonl records (tiny test model)."""
    vocab = words()
    rng = random.Random(3)
    results = {}
    for count in counts:
        data = work / f"stream-{count}.jsonl"
        with data.open("w", encoding="utf-8") as handle:
            for i in range(count):
                handle.write(json.dumps({"n": i, "text": " ".join(rng.choice(vocab) for _ in range(rng.randint(3, 40)))}) + "\n")
        run_dir = Path(tempfile.mkdtemp(dir=work)) / f"stream-run-{count}"  # fresh: an old folder would be resumed
        started = time.perf_counter()
        # The peak is read from /proc (VmHWM, reset at exec): getrusage's ru_maxrss, which the
        # manifest records, starts a child at its parent's high-water mark (Linux keeps it across
        # fork + exec), so a child of this big process would report the parent's peak.
        code = ("import sys; from composer.cli import main; code = main(sys.argv[1:]); "
                "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0]); sys.exit(code)")
        done = subprocess.run([sys.executable, "-c", code, "run", "experiment=tiny-sentiment", "input=jsonl", f"input.path={data}",
                               "input.id_field=n", "threads=1", "progress=false", f"hydra.run.dir={run_dir}"],
                              cwd=work, check=True, capture_output=True, text=True)
        manifest = json.loads((run_dir / "manifest.json").read_text())
        results[count] = {"peak_rss_mb": int(done.stdout.split()[-1]) / 1024, "seconds": time.perf_counter() - started,
                          "records_ok": manifest["counts"]["records_ok"]}
        print(f"  streaming {count:>7} records: peak RSS {results[count]['peak_rss_mb']:.0f} MB in {results[count]['seconds']:.0f} s", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer texts and repeats (minutes, noisier)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads every variant may use (default: torch's, one per core)")
    parser.add_argument("--models", default="small-256x4,bert-base")
    parser.add_argument("--skip-streaming", action="store_true")
    parser.add_argument("--n", type=int, default=None, help="texts per model (overrides the mode's)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--only", default=None, help="comma-separated substrings of variant names to run (plus pipeline bs=1/8)")
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="folder for models, data and runs (default: a temp folder)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.threads is None:
        import torch

        args.threads = torch.get_num_threads()
    work = args.work or Path(tempfile.mkdtemp(prefix="composer-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    sizes = {"bert-base": (96, 1), "small-256x4": (512, 3)} if args.quick else {"bert-base": (512, 3), "small-256x4": (2048, 3)}
    report: dict = {"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "threads": args.threads, "cpus": os.cpu_count(), "models": []}
    for name in args.models.split(","):
        n, repeats = sizes[name]
        n, repeats = args.n or n, args.repeats or repeats
        rows = bench_model(name, n, repeats, args.threads, work, args.only.split(",") if args.only else None)
        report["models"] += rows
        print(f"\n  {'variant':48s} {'rec/s':>9s} {'x pipe bs8':>10s} {'peak RSS':>9s}  outputs match pipeline(bs=1)")
        for row in rows:
            if "records_per_s" in row:
                print(f"  {row['variant']:48s} {row['records_per_s']:9.1f} {row['ratio_vs_pipeline_bs8']:9.2f}x {row['peak_rss_mb']:7.0f}MB  {row['outputs_match']}")
            else:
                print(f"  {row['variant']}: {row['auto']}")
    if not args.skip_cli:
        print("\n== CLI start-up (median of 3, fresh processes)")
    report["cli"] = {} if args.skip_cli else {
        "python -c pass": statistics.median(
            [(lambda s: (subprocess.run([sys.executable, "-c", "pass"], check=True), time.perf_counter() - s)[1])(time.perf_counter()) for _ in range(3)]),
        "composer --help": time_cli(["--help"]),
        "composer plan": time_cli(["plan", "experiment=tiny-sentiment"]),
    }
    for label, seconds in report["cli"].items():
        print(f"  {label:20s} {seconds:6.2f} s")
    if not args.skip_streaming:
        print("\n== streaming memory (tiny test model, fresh process per size)")
        report["streaming"] = streaming_rss([10_000, 100_000], work)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
