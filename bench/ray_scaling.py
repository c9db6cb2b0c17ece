"""executor=ray beside the local executor on this machine, and how Ray scales on a simulated
cluster (issue 18): records/s with 1 and 2 actors, and the overhead Ray adds per block.

    python bench/ray_scaling.py [--records 512] [--block 32]

One config (experiment=tiny-sentiment: the tiny BERT classifier, built offline) over `--records`
generated reviews. The local executor runs first; then a ray.cluster_utils Cluster with two
1-CPU nodes (a head and a worker) and this process as its driver, where executor=ray runs with 1
and 2 actors of 0.75 CPU (so one actor per node). Ray's numbers are taken from the manifest: the
stream (from the actor pool being up to the last block back: Ray Data's start and the actors'
model loading left out, and reported apart) and the whole run's wall time. The per-block overhead is the slope between one actor's
stream time with blocks of 8 and of 64 records (the same records, so the same model work).
Last, the rate of the one reader executor=ray runs (ray_read.SourceBlocks: composer's reader,
windows of --block, each pickled), in this process over the same file read 20 times: above the
actors' rate, one reader is not what limits a run. Prints Markdown for bench/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from composer import api  # noqa: E402

WORDS = "the package arrived broken support never answered great value would buy again short one fine".split()


def _reviews(path: Path, count: int) -> Path:
    with path.open("w") as out:
        for i in range(count):
            text = " ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(4 + i % 29))
            out.write(json.dumps({"id": f"{i:05d}", "text": text, "label": "POSITIVE" if i % 2 else "NEGATIVE"}) + "\n")
    return path


def _run(work: Path, name: str, overrides: list[str]) -> dict:
    started = time.perf_counter()
    result = api.run([*overrides, "progress=false"], run_dir=work / name)
    wall = time.perf_counter() - started
    assert result.status == "complete", (name, result.status)
    manifest, metrics = result.manifest(), result.metrics()
    return {"wall": wall, "seconds": metrics["throughput"]["seconds"], "records": metrics["throughput"]["records"],
            "executor": manifest["executor"]}


def _reader_rate(overrides: list[str], block: int, passes: int = 20) -> float:
    """Records/s of composer's reader as the Ray read task runs it, the median of 3 timings."""
    import pickle
    import statistics

    from composer.executors.local import batches, unfinished
    from composer.plan import plan

    source = plan(api.compose(overrides)).source
    rates = []
    for _ in range(3):
        started, count = time.perf_counter(), 0
        for _ in range(passes):
            for window in batches(unfinished(source.iter_records(), set()), block):
                pickle.dumps(window, protocol=5)
                count += len(window)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=512)
    parser.add_argument("--block", type=int, default=32)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    data = _reviews(work / "reviews.jsonl", args.records)
    base = ["experiment=tiny-sentiment", "input=jsonl", f"input.path={data}", "input.id_field=id", "input.label_field=label"]
    rows = []
    local = _run(work, "local", base)
    rows.append(("local executor (this process)", local["wall"], local["records"] / local["seconds"], None))

    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False,
                                                            "object_store_memory": 80 * 2**20})
    cluster.add_node(num_cpus=1, object_store_memory=80 * 2**20)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        ray_args = [*base, "executor=ray", "executor.num_cpus_per_actor=0.75"]
        streams = {}
        for actors, block in ((1, args.block), (2, args.block), (1, 8), (1, 64)):
            run = _run(work, f"ray-{actors}-{block}", [*ray_args, f"executor.actors={actors}", f"executor.batch_size={block}"])
            facts = run["executor"]
            stream = facts["stream_seconds"] - facts["pool_ready_seconds"]
            streams[(actors, block)] = (stream, facts["blocks"])
            if block == args.block:
                rows.append((f"executor=ray, {actors} actor{'s' if actors > 1 else ''}, blocks of {block}", run["wall"],
                             run["records"] / stream, facts["pool_ready_seconds"]))
    finally:
        ray.shutdown()
        cluster.shutdown()
    (small, small_blocks), (large, large_blocks) = streams[(1, 8)], streams[(1, 64)]
    overhead = (small - large) / (small_blocks - large_blocks)
    print(f"{args.records} texts, tiny BERT classifier, load average {os.getloadavg()[0]:.1f} at the end\n")
    print("| executor | run wall s | records/s (stream) | actor pool ready after s |")
    print("|---|---:|---:|---:|")
    for name, wall, rate, first in rows:
        print(f"| {name} | {wall:.1f} | {rate:.0f} | {'' if first is None else f'{first:.1f}'} |")
    print(f"\nper-block overhead (1 actor, blocks of 8 vs 64): {overhead * 1000:.1f} ms per block "
          f"({small:.2f} s for {small_blocks} blocks, {large:.2f} s for {large_blocks})")
    print(f"one reader (composer's, windows of {args.block} pickled, in process): {_reader_rate(base, args.block):.0f} records/s")


if __name__ == "__main__":
    main()
