"""The default job (`composer run`: MiniLM embeddings -> mean_pool -> embedding_classify ->
near_duplicates) at this checkout beside an earlier commit, on the same long-tail texts.

Each round runs both as fresh `composer run` processes, alternating which goes first, and reads
records/s from each run's metrics.json (streaming time: model loading is not in it) and the
process's wall time. The earlier commit runs from a `git worktree` of it with this venv's
libraries (PYTHONPATH puts its package first), so only composer's code differs.

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


def run_default_job(tree: Path, data: Path, runs: Path, threads: int) -> tuple[float, float, list]:
    """(records/s, wall seconds, embeddings) of one `composer run` of the default job on `data`."""
    started = time.perf_counter()
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "composer", "run", "experiment=support-tickets", "input=jsonl", f"input.path={data}", "input.label_field=null",
                           f"threads={threads}", "progress=false", f"runs_root={runs}"], cwd=tree, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"composer run failed in {tree}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    [folder] = [p for p in (runs / "support-tickets").iterdir()]
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
        rates: dict[str, list[float]] = {label: [] for label in trees}
        walls: dict[str, list[float]] = {label: [] for label in trees}
        vectors: dict[str, list] = {}
        for round_index in range(args.rounds):
            order = list(trees) if round_index % 2 == 0 else list(reversed(trees))
            for label in order:
                rate, wall, out = run_default_job(trees[label], data, Path(tempfile.mkdtemp(dir=work)), args.threads)
                rates[label].append(rate)
                walls[label].append(wall)
                vectors.setdefault(label, out)
                print(f"  [{round_index + 1}/{args.rounds}] {label:24s} {rate:7.1f} records/s  wall {wall:6.1f} s", flush=True)
        old, new = vectors.values()
        worst = min(sum(x * y for x, y in zip(a, b)) for a, b in zip(old, new, strict=True))
        print(f"\n{args.n} texts, {args.threads} thread(s); embeddings of the two: min cosine {worst:.7f}")
        print("| default job | records/s (median) | range | wall s (median) |\n|---|---:|---|---:|")
        for label in trees:
            print(f"| {label} | {statistics.median(rates[label]):.1f} | {min(rates[label]):.1f}-{max(rates[label]):.1f} | "
                  f"{statistics.median(walls[label]):.1f} |")
        first, second = (statistics.median(rates[label]) for label in trees)
        print(f"this checkout / baseline: {second / first:.2f}x records/s")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(baseline)], check=False)


if __name__ == "__main__":
    main()
