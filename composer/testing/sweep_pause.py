"""Hydra callbacks for tests that stop a sweep at a chosen point (tests/test_sweep_resume.py):
PauseAfterJob holds a sweep between two jobs, StartTogether starts jobs run at once together.

    composer run -m ... +hydra.callbacks.pause._target_=composer.testing.sweep_pause.PauseAfterJob \
        +hydra.callbacks.pause.job=0 +hydra.callbacks.pause.marker=/tmp/paused

When job `job` has ended (its run folder is complete and the sweep's record says so), the process
that ran it writes `marker` and sleeps, so that a test can kill the sweep at that point and no
other. Once the marker exists it never pauses again: the same command, resumed, runs straight
through. Test support only; nothing in composer adds them.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback


class PauseAfterJob(Callback):
    def __init__(self, job: int, marker: str, seconds: float = 600.0) -> None:
        self.job, self.marker, self.seconds = int(job), Path(marker), float(seconds)

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        if int(config.hydra.job.num) != self.job or self.marker.exists():
            return
        temporary = self.marker.with_name(self.marker.name + ".tmp")
        temporary.write_text(str(os.getpid()), encoding="utf-8")
        os.replace(temporary, self.marker)
        time.sleep(self.seconds)


class StartTogether(Callback):
    """Jobs `jobs` (run at once, by a parallel launcher) each write `<marker>.<job>` as they
    start and wait until every one of them has, so that they run side by side from their first
    record: on a busy machine a launcher's second worker process may start seconds after the
    first, time enough for the first job to finish. Once all markers exist it never waits
    again (a resumed sweep runs straight through). Gives up waiting after `seconds`."""

    def __init__(self, jobs: list[int], marker: str, seconds: float = 300.0) -> None:
        self.jobs, self.marker, self.seconds = [int(job) for job in jobs], Path(marker), float(seconds)

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        job = int(config.hydra.job.num)
        if job not in self.jobs:
            return
        self.marker.with_name(f"{self.marker.name}.{job}").write_text(str(os.getpid()), encoding="utf-8")
        deadline = time.monotonic() + self.seconds
        while not all(self.marker.with_name(f"{self.marker.name}.{n}").exists() for n in self.jobs):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
