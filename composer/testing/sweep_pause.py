"""A Hydra callback for tests that stop a sweep between two jobs (tests/test_sweep_resume.py).

    composer run -m ... +hydra.callbacks.pause._target_=composer.testing.sweep_pause.PauseAfterJob \
        +hydra.callbacks.pause.job=0 +hydra.callbacks.pause.marker=/tmp/paused

When job `job` has ended (its run folder is complete and the sweep's record says so), the process
that ran it writes `marker` and sleeps, so that a test can kill the sweep at that point and no
other. Once the marker exists it never pauses again: the same command, resumed, runs straight
through. Test support only; nothing in composer adds it.
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
