"""Sentence-embedding benchmark (issue 19): composer's embedding path beside its fastest faithful
peers, on the real all-MiniLM-L6-v2 and long-tail English texts.

Variants, all on the same texts, the same CPU threads and the same model weights:
- `composer`: `composer run` with task=feature-extraction, model=minilm and a `mean_pool` stage,
  default settings otherwise (the default job's embedding path); records/s over its streaming
  time (metrics.json; the model is loaded before, as for the others).
- `pipeline() bs=8`: plain transformers `pipeline("feature-extraction")`, then the mean pool and
  L2 norm in numpy: the reference every other variant's vectors are compared with (cosine).
- `sentence-transformers encode(bs=32)`: the library the model was published for.
- `ONNX Runtime fp32`: the model exported with `torch.onnx.export` and run by onnxruntime on
  length-sorted batches of 32 with the same pooling in numpy. Exported here rather than with
  optimum: optimum-onnx pins transformers < 4.58, which cannot share this environment, while
  torch's own exporter and onnxruntime install beside it (`pip install onnxruntime onnx
  onnxscript sentence-transformers`, not in the project's lock: only this script needs them).

Every variant truncates at the model's max_seq_length (256, sentence-transformers' setting),
the reference included, so cosine compares like with like. Rounds rotate the order (each round
starts one variant later); the table shows the median of the rounds and their range.

    composer models fetch minilm              # once: the verified copy of the real weights
    .venv/bin/python bench/embeddings.py      # 2,000 texts, 3 rounds
    .venv/bin/python bench/embeddings.py --n 500 --rounds 1   # a quick look

Speed on a shared machine is noisy: read the ratios within one run. `--busy N` measures how
each variant copes with a busy machine: N processes spinning on the CPU run beside it the
whole time (one per core is what another user's job does to you).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's sentence_bert_config.json


def long_tail_texts(n: int, seed: int = 0) -> list[str]:
    """English texts of 5-250 words, log-normal lengths (median about 30 words, 40 tokens): the
    long tail of real inputs, where padding and per-record overhead show."""
    text = (REPO / "composer" / "testing" / "corpus.txt").read_text(encoding="utf-8")
    words = text.split()
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        count = min(250, max(5, int(rng.lognormvariate(3.4, 0.8))))
        start = rng.randrange(len(words) - count)
        texts.append(" ".join(words[start:start + count]))
    return texts


def pooled(states, mask):
    """Attention-mask-weighted mean over tokens, then L2 norm (sentence-transformers' recipe)."""
    import numpy as np

    mask = mask[..., None].astype(np.float64)
    summed = (states.astype(np.float64) * mask).sum(axis=1)
    vectors = summed / np.clip(mask.sum(axis=1), 1e-9, None)
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def composer_variant(data: Path, work: Path, threads: int) -> Callable[[], tuple[float, list]]:
    from composer import api

    def run() -> tuple[float, list]:
        result = api.run(["experiment=base", "task=feature-extraction", "model=minilm", "input=jsonl",
                          f"input.path={data}", "postprocess=[{type: mean_pool}]", f"threads={threads}", "progress=false"],
                         run_dir=Path(tempfile.mkdtemp(dir=work)))
        assert result.status == "complete", result.manifest().get("error")
        return result.metrics()["throughput"]["records_per_second"], [row["embedding"] for row in result.outputs()]

    return run


def pipeline_variant(folder: Path, texts: list[str]) -> Callable[[], tuple[float, list]]:
    import numpy as np
    from transformers import pipeline

    pipe = pipeline("feature-extraction", model=str(folder))

    def run() -> tuple[float, list]:
        started = time.perf_counter()
        truncation = {"truncation": True, "max_length": MAX_SEQ_LENGTH}
        states = pipe(texts, batch_size=8, return_tensors=True, tokenize_kwargs=truncation)
        # Batched, each text's states come padded to its batch's longest: pool its own tokens.
        lengths = [len(ids) for ids in pipe.tokenizer(texts, **truncation)["input_ids"]]
        vectors = [pooled(s.numpy()[:, :n], np.ones((1, n)))[0] for s, n in zip(states, lengths)]
        return len(texts) / (time.perf_counter() - started), vectors

    return run


def sentence_transformers_variant(folder: Path, texts: list[str]) -> Callable[[], tuple[float, list]]:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")

    def run() -> tuple[float, list]:
        started = time.perf_counter()
        vectors = model.encode(texts, batch_size=32, normalize_embeddings=True)
        return len(texts) / (time.perf_counter() - started), list(vectors)

    return run


class _LastHiddenState:
    """The encoder called with its three inputs by keyword (transformers 5's forward takes other
    arguments in between), giving only the token states: what the exporter traces."""

    def __new__(cls, model):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

        return Wrapped().eval()


def onnx_variant(folder: Path, texts: list[str], work: Path, threads: int) -> Callable[[], tuple[float, list]]:
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    path = work / "minilm.onnx"
    if not path.exists():
        model = _LastHiddenState(AutoModel.from_pretrained(folder).eval())
        sample = tokenizer(["a sample", "another sample text"], padding=True, return_tensors="pt")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        axes = {name: {0: "batch", 1: "tokens"} for name in names}
        torch.onnx.export(model, tuple(sample[name] for name in names), str(path), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes={**axes, "last_hidden_state": {0: "batch", 1: "tokens"}},
                          opset_version=17, dynamo=False)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run() -> tuple[float, list]:
        started = time.perf_counter()
        lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])
        vectors: list = [None] * len(texts)
        for start in range(0, len(order), 32):
            batch = order[start:start + 32]
            encoded = tokenizer([texts[i] for i in batch], padding=True, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="np")
            states = session.run(None, {k: encoded[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")})[0]
            for i, vector in zip(batch, pooled(states, encoded["attention_mask"])):
                vectors[i] = vector
        return len(texts) / (time.perf_counter() - started), vectors

    return run


def min_cosine(reference: list, vectors: list) -> float:
    import numpy as np

    a = np.asarray(reference, dtype=np.float64)
    b = np.asarray(vectors, dtype=np.float64)
    cosines = (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(cosines.min())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for every variant (default: one per core)")
    parser.add_argument("--only", default=None, help="comma-separated substrings of variant names (the reference always runs)")
    parser.add_argument("--busy", type=int, default=0, help="CPU-spinning processes to run beside every variant")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    import torch
    from transformers import AutoTokenizer

    from composer.provision import MINILM, provisioned_copy

    threads = args.threads or torch.get_num_threads()
    torch.set_num_threads(threads)
    folder = provisioned_copy(MINILM)
    if folder is None:
        sys.exit("run `composer models fetch minilm` first: this bench measures the real weights")
    work = Path(tempfile.mkdtemp(prefix="composer-embeddings-"))
    texts = long_tail_texts(args.n)
    data = work / "texts.jsonl"
    data.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts)), encoding="utf-8")
    tokens = sorted(len(ids) for ids in AutoTokenizer.from_pretrained(folder)(texts)["input_ids"])
    print(f"{args.n} texts, {args.busy} busy process(es) beside, tokens min {tokens[0]} median {tokens[len(tokens) // 2]} max {tokens[-1]}; {threads} thread(s), "
          f"{args.rounds} round(s)", flush=True)
    variants = {
        "pipeline() bs=8 + mean pool (reference)": pipeline_variant(folder, texts),
        "composer feature-extraction + mean_pool": composer_variant(data, work, threads),
        "sentence-transformers encode(bs=32)": sentence_transformers_variant(folder, texts),
        "ONNX Runtime fp32, sorted batches of 32": onnx_variant(folder, texts, work, threads),
    }
    if args.only:
        variants = {k: v for k, v in variants.items() if "reference" in k or any(o in k for o in args.only.split(","))}
    labels = list(variants)
    rates: dict[str, list[float]] = {label: [] for label in labels}
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        vectors = measure(args.rounds, threads, labels, variants, rates)
    finally:
        for spinner in spinners:
            spinner.kill()
    report(args, threads, labels, rates, vectors)


def measure(rounds: int, threads: int, labels: list[str], variants: dict, rates: dict[str, list[float]]) -> dict[str, list]:
    """Each round runs every variant once, starting one variant later than the round before;
    returns each variant's vectors from its first round."""
    import torch

    vectors: dict[str, list] = {}
    for round_index in range(rounds):
        for label in labels[round_index % len(labels):] + labels[:round_index % len(labels)]:
            torch.set_num_threads(threads)  # a composer run leaves its own intra-op split behind
            rate, out = variants[label]()
            rates[label].append(rate)
            vectors.setdefault(label, out)
            print(f"  [{round_index + 1}/{rounds}] {label:44s} {rate:8.1f} texts/s", flush=True)
    return vectors


def report(args: argparse.Namespace, threads: int, labels: list[str], rates: dict[str, list[float]], vectors: dict[str, list]) -> None:
    composer = statistics.median(rates["composer feature-extraction + mean_pool"]) if "composer feature-extraction + mean_pool" in rates else None
    reference = vectors[labels[0]]
    rows = []
    print(f"\n| variant | texts/s (median of {args.rounds}) | range | vs composer | cosine vs pipeline (min) |\n|---|---:|---|---:|---:|")
    for label in labels:
        median = statistics.median(rates[label])
        row = {"variant": label, "texts_per_s": median, "all": rates[label], "min_cosine": min_cosine(reference, vectors[label]),
               "vs_composer": median / composer if composer else None}
        rows.append(row)
        versus = f"{row['vs_composer']:.2f}" if composer else "-"
        print(f"| {label} | {median:.1f} | {min(rates[label]):.1f}-{max(rates[label]):.1f} | {versus} | {row['min_cosine']:.7f} |")
    if args.json:
        args.json.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "threads": threads, "n": args.n, "busy": args.busy,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
