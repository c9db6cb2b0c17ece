"""The fixed cost of one `composer` process, before and after a change, side by side (issue 15).

Times whole commands as a user runs them (`python -m composer ...` in a fresh process): the
default job (42 support tickets, MiniLM) end to end, a tiny 24-record job, and `composer plan`.
Each round runs every (command, checkout) pair once, in an order rotated per round; the report is
per-command medians and the ratio after/before, since single timings on a shared machine move by
tens of percent. It also splits the default job's wall time: until the summary appears on stdout,
and from there to the process's exit.

    python bench/fixed_cost.py --before /path/to/old/checkout --rounds 5

`--before` is a checkout of the earlier commit (e.g. `git worktree add /tmp/before <commit>`),
`--after` the later one (default: this checkout); both run with the same interpreter, their
package first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMMANDS = {
    "default job (42 records)": ["run"],
    "tiny job (24 records)": ["run", "experiment=tiny-sentiment", "threads=1"],
    "composer plan": ["plan"],
}


def timed(checkout: Path, args: list[str], workdir: Path) -> tuple[float, float | None]:
    """(seconds to exit, seconds until the summary's first line), for one fresh process."""
    env = {**os.environ, "PYTHONPATH": str(checkout), "HF_HUB_OFFLINE": "1"}
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "composer", *args], cwd=workdir, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    summary = None
    for line in process.stdout:
        if summary is None and line.startswith("run complete"):
            summary = time.perf_counter() - started
    if process.wait() != 0:
        raise SystemExit(f"{checkout}: composer {' '.join(args)} exited {process.returncode}")
    return time.perf_counter() - started, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier commit")
    parser.add_argument("--after", type=Path, default=REPO, help="the later checkout (default: this one)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    checkouts = {"before": args.before.resolve(), "after": args.after.resolve()}
    pairs = [(command, name) for command in COMMANDS for name in checkouts]
    wall: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    tail: dict[str, list[float]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory() as workdir:
        for round_number in range(args.rounds + 1):  # round 0 warms the page cache and is dropped
            shift = round_number % len(pairs)
            for command, name in pairs[shift:] + pairs[:shift]:
                seconds, summary = timed(checkouts[name], COMMANDS[command], Path(workdir))
                if round_number:
                    wall[(command, name)].append(seconds)
                    if command.startswith("default") and summary is not None:
                        tail[name].append(seconds - summary)
    print(f"| command ({args.rounds} rounds, medians) | before | after | after / before |")
    print("|---|---:|---:|---:|")
    for command in COMMANDS:
        before, after = (statistics.median(wall[(command, name)]) for name in checkouts)
        print(f"| {command} | {before:.2f} s | {after:.2f} s | {after / before:.2f} |")
    before, after = (statistics.median(tail[name]) for name in checkouts)
    print(f"| default job: from the summary to the process's exit | {before:.2f} s | {after:.2f} s | {after / before:.2f} |")


if __name__ == "__main__":
    main()
