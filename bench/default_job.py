"""The default job (`composer run`: MiniLM embeddings -> mean_pool -> embedding_classify ->
near_duplicates) at this checkout beside an earlier commit, on the same long-tail texts, with the
embedding path alone (task=feature-extraction + mean_pool, bench/embeddings.py's composer variant)
measured in the same rounds, so the two speed-ups are compared under one machine load.

Each round runs every (job, tree) pair as a fresh `composer run` process, alternating the order,
and reads records/s from each run's metrics.json (streaming time: model loading is not in it) and
the process's wall time. The earlier commit runs from a `git worktree` of it with this venv's
libraries (PYTHONPATH puts its package first), so only composer's code and configs differ.

    .venv/bin/python bench/default_job.py --baseline daf820f            # 2,000 texts, 3 rounds
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from embeddings import long_tail_texts  # noqa: E402 - the embedding bench's texts

JOBS = {
    "default job": ["experiment=support-tickets", "input.label_field=null"],
    # Truncated at MiniLM's own 256 tokens in both trees, as the default job is (the baseline's
    # plain feature-extraction truncated at 512): the same work, so the same embeddings.
    "embedding path": ["experiment=base", "task=feature-extraction", "model=minilm", "postprocess=[{type: mean_pool}]",
                       "call.tokenize_kwargs={truncation: true, max_length: 256}"],
}


def run_job(job: list[str], tree: Path, data: Path, runs: Path, threads: int) -> tuple[float, float, list]:
    """(records/s, wall seconds, embeddings) of one `composer run` of `job` on `data` from `tree`."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "composer", "run", *job, "input=jsonl", f"input.path={data}",
                           f"threads={threads}", "progress=false", f"runs_root={runs}"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"composer run failed in {tree}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    [folder] = [p for p in runs.glob("*/*") if (p / "metrics.json").is_file()]
    rate = json.loads((folder / "metrics.json").read_text())["throughput"]["records_per_second"]
    vectors = [json.loads(line)["embedding"] for line in (folder / "outputs.jsonl").read_text().splitlines()]
    return rate, wall, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the earlier commit (any git revision)")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="composer-default-job-"))
    baseline = work / "baseline"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(baseline), args.baseline], check=True)
    try:
        data = work / "texts.jsonl"
        data.write_text("".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(long_tail_texts(args.n))))
        trees = {f"baseline {args.baseline}": baseline, "this checkout": REPO}
        pairs = [(job, tree) for job in JOBS for tree in trees]
        rates: dict[tuple, list[float]] = {pair: [] for pair in pairs}
        walls: dict[tuple, list[float]] = {pair: [] for pair in pairs}
        vectors: dict[tuple, list] = {}
        for round_index in range(args.rounds):
            for job, tree in pairs if round_index % 2 == 0 else reversed(pairs):
                rate, wall, out = run_job(JOBS[job], trees[tree], data, Path(tempfile.mkdtemp(dir=work)), args.threads)
                rates[job, tree].append(rate)
                walls[job, tree].append(wall)
                vectors.setdefault((job, tree), out)
                print(f"  [{round_index + 1}/{args.rounds}] {job:15s} {tree:24s} {rate:7.1f} records/s  wall {wall:6.1f} s", flush=True)
        print(f"\n{args.n} texts, {args.threads} thread(s), median of {args.rounds} rounds")
        print("| job | tree | records/s (median) | range | wall s (median) |\n|---|---|---:|---|---:|")
        for job, tree in pairs:
            print(f"| {job} | {tree} | {statistics.median(rates[job, tree]):.1f} | {min(rates[job, tree]):.1f}-"
                  f"{max(rates[job, tree]):.1f} | {statistics.median(walls[job, tree]):.1f} |")
        for job in JOBS:
            (old, new), (before, after) = ([vectors[job, tree] for tree in trees],
                                           [statistics.median(rates[job, tree]) for tree in trees])
            worst = min(sum(x * y for x, y in zip(a, b)) for a, b in zip(old, new, strict=True))
            print(f"{job}: this checkout / baseline {after / before:.2f}x records/s; embeddings min cosine {worst:.7f}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)


if __name__ == "__main__":
    main()
