"""What a run measures of the machine it runs on, and the progress it shows while it goes: device
facts and peak memory for the manifest, and the records bar on stderr. Apart from composer.run so
that the run's lifecycle reads top-down; torch and rich are imported only when called.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Any

_PROC_STATUS, _PROC_CLEAR_REFS = Path("/proc/self/status"), Path("/proc/self/clear_refs")


def device_facts() -> dict[str, Any]:
    """The manifest's `device`: whether CUDA is there, and which devices and version."""
    import torch

    facts: dict[str, Any] = {"cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        facts["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        facts["cuda_version"] = torch.version.cuda
    return facts


def reset_peak_memory() -> None:
    """Make the peaks this run's own. Sweep jobs share a process, and getrusage's ru_maxrss
    survives fork+exec (a run started by a big process reports that process's peak); Linux
    resets VmHWM, the peak peak_memory reads, when "5" is written to clear_refs."""
    import torch

    try:
        _PROC_CLEAR_REFS.write_text("5")
    except OSError:
        pass  # not Linux, or not allowed: the process-wide peak is reported (rss_source says so)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def peak_memory() -> dict[str, Any]:
    """The manifest's `peak_memory`: peak RSS bytes since reset_peak_memory (and where that number
    came from), and peak CUDA bytes allocated when there is a GPU."""
    import torch

    try:
        hwm = next(line for line in _PROC_STATUS.read_text().splitlines() if line.startswith("VmHWM:"))
        peak: dict[str, Any] = {"rss_bytes": int(hwm.split()[1]) * 1024, "rss_source": "VmHWM"}
    except (OSError, StopIteration):
        peak = {"rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "rss_source": "getrusage"}
    if torch.cuda.is_available():
        peak["cuda_bytes"] = int(torch.cuda.max_memory_allocated())
    return peak


def shows_progress(enabled: bool | None) -> bool:
    """`progress: null` means a bar only when stderr is a terminal."""
    from rich.console import Console

    return Console(stderr=True).is_terminal if enabled is None else enabled


def progress_bar(show: bool, total: int | None):
    """A rich Progress on stderr (disabled unless `show`) and its one task, counting records."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    columns = [TextColumn("[bold]records"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn(), TimeRemainingColumn()]
    progress = Progress(*columns, console=console, disable=not show, transient=False)
    return progress, progress.add_task("records", total=total, rate="")
