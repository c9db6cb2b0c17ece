"""Where composer's time goes next to the hand loop (issue 6's "within 3%" target).

Runs composer (defaults) and the like-for-like hand loop (composer's batches, 2 workers x 1
thread, on composer's own loaded model with its oneDNN linear layers) on the same texts and
model as bench/bench.py, alternately, and prints per run: records/s, wall time, the process's
CPU seconds during the run, the CPU seconds spent inside batches, how busy the worker threads
were, and how long the first batch waited.
Composer's batches are traced by wrapping `composer.executors.unit._run_stage` (a private function: this
is a diagnostic, not an API).

    .venv/bin/python bench/trace.py --model small-256x4 --n 2048 --repeats 3 --work /tmp/benchwork

With --constant-forward the model's forward returns constant logits in both, so what is left is
everything around it (reading, tokenizing, batching, collate, postprocess, writing): a steadier
measure of composer's own cost per record than the noisy wall-clock ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402 - the benchmark's own model, data and hand loop


def summary(label: str, n: int, spans: list, started: float, ended: float, cpu: float) -> str:
    busy: dict[int, float] = {}
    for thread, start, end, _ in spans:
        busy[thread] = busy.get(thread, 0.0) + end - start
    wall = ended - started
    return (f"{label:9s} {n / wall:7.1f} records/s  wall {wall:6.2f} s  CPU {cpu:6.2f} s  in batches {sum(s[3] for s in spans):6.2f} s  "
            f"workers busy {sum(busy.values()) / (len(busy) * wall):6.1%}  first batch after {1000 * (min(s[1] for s in spans) - started):4.0f} ms"
            f"  CPU per record {1e6 * cpu / n:4.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="small-256x4", choices=["small-256x4", "bert-base"])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--work", type=Path, required=True, help="folder for the model, data and runs")
    parser.add_argument("--constant-forward", action="store_true", help="the model's forward returns constant logits")
    args = parser.parse_args()

    import torch
    from transformers import AutoTokenizer

    from composer.executors import local, unit
    from composer.stages.base import BatchedStage

    torch.set_num_threads(args.threads)
    folder = bench.build_model(args.model, args.work / "models" / args.model)
    texts = bench.make_texts(args.n, seed=42)
    data = args.work / f"texts-{args.model}-{args.n}.jsonl"
    data.write_text("".join(json.dumps({"n": i, "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = bench.composers_pipeline(folder, data, args.work, args.threads).model  # both on the very same weights
    if args.constant_forward:
        from transformers import BertForSequenceClassification
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = torch.tensor([[0.0, 1.0]])
        BertForSequenceClassification.forward = lambda self, input_ids=None, **_: SequenceClassifierOutput(
            logits=logits.expand(input_ids.shape[0], 2))
    order = bench.windows_sorted([len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"]], 256)

    spans: list = []
    marks: dict[str, float] = {}
    run_stage, execute = unit._run_stage, local._stream

    def traced_stage(stage, records):
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return run_stage(stage, records)
        finally:
            if isinstance(stage, BatchedStage):
                spans.append((threading.get_ident(), started, time.perf_counter(), time.thread_time() - cpu))

    def traced_execute(*a, **k):
        marks["start"], marks["cpu"] = time.perf_counter(), time.process_time()
        try:
            return execute(*a, **k)
        finally:
            marks["end"], marks["cpu"] = time.perf_counter(), time.process_time() - marks["cpu"]

    unit._run_stage, local._stream = traced_stage, traced_execute
    for _ in range(args.repeats):
        spans.clear()
        bench.composer_run(folder, data, args.work, args.threads, [])
        print(summary("composer", args.n, spans, marks["start"], marks["end"], marks["cpu"]), flush=True)
        spans.clear()
        started, cpu = time.perf_counter(), time.process_time()
        bench.hand_loop(model, tokenizer, texts, 8, order, args.threads, spans)
        print(summary("hand loop", args.n, spans, started, time.perf_counter(), time.process_time() - cpu), flush=True)


if __name__ == "__main__":
    main()
