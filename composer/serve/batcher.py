"""Dynamic batching: records from many requests gathered into rounds and run on one thread.

Requests put their records on a bounded queue (serve.max_queue records; past it, QueueFull, which
the app answers with 503 and Retry-After) and get one future per record. One thread, never the
event loop, takes a round: the first waiting record and whatever joins it within max_wait, until
the round is full (one batch per model worker); records already waiting beyond that join it, up
to `max_round` (the graph's window), so that under load the model stage orders more records by
length before cutting its batches, as it does a run's window. It runs the round through the
stages (Service.run);
each future then gets its record's output or failure, so requests are answered one by one as
their records finish. A round never holds one id twice (run_records keys records by id): a
second record with an id already in the round waits for the next one.

drain() (SIGTERM) stops the waiting and refuses new records; the thread runs what is queued and
then ends. A future cancelled while queued (its request timed out) is dropped unrun.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from composer.executors.unit import Outcome
from composer.records import Record, RecordFailure

Answer = Record | RecordFailure


class QueueFull(Exception):
    """The queue holds serve.max_queue records: the request is refused, not queued."""


class NotAccepting(Exception):
    """The server is stopping (SIGTERM) and takes no new records."""


@dataclass
class _Waiting:
    record: Record
    future: Future = field(default_factory=Future)
    since: float = field(default_factory=time.monotonic)


class Batcher:
    """The queue and the thread that runs it in rounds; `run` is Service.run, `on_round(n)`
    hears the size of each round (metrics)."""

    def __init__(self, run: Callable[[list[Record]], Outcome], round_size: int, max_round: int, max_wait_s: float,
                 max_queue: int, on_round: Callable[[int], None] = lambda n: None):
        self._run, self._round_size, self._max_wait, self._max_queue = run, round_size, max_wait_s, max_queue
        self._max_round = max(max_round, round_size)
        self._on_round = on_round
        self._queue: deque[_Waiting] = deque()
        self._changed = threading.Condition()
        self._draining = False
        self._thread = threading.Thread(target=self._loop, name="composer-serve-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def depth(self) -> int:
        """Records waiting for a round (queued, not yet running)."""
        return len(self._queue)

    def submit(self, records: list[Record]) -> list[Future]:
        """Queue `records` (all or none); one future per record, in order."""
        with self._changed:
            if self._draining:
                raise NotAccepting("the server is shutting down")
            if len(self._queue) + len(records) > self._max_queue:
                raise QueueFull(f"{len(self._queue)} records are waiting and the queue holds at most {self._max_queue} "
                                "(serve.max_queue)")
            waiting = [_Waiting(record) for record in records]
            self._queue.extend(waiting)
            self._changed.notify()
        return [w.future for w in waiting]

    def drain(self) -> None:
        """Stop waiting to fill rounds and refuse new records; what is queued still runs."""
        with self._changed:
            self._draining = True
            self._changed.notify()

    def stop(self) -> None:
        """drain(), then wait until the queue has run."""
        self.drain()
        if self._thread.is_alive():
            self._thread.join()

    def _loop(self) -> None:
        while True:
            taken = self._take()
            if taken is None:
                return
            if taken:
                self._run_round(taken)

    def _take(self) -> list[_Waiting] | None:
        """The next round (possibly empty: every record in it was cancelled), or None when the
        batcher is draining and nothing is left."""
        with self._changed:
            while not self._queue:
                if self._draining:
                    return None
                self._changed.wait()
            deadline = self._queue[0].since + self._max_wait
            while len(self._queue) < self._round_size and not self._draining:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            round_: list[_Waiting] = []
            ids: set[str] = set()
            later: list[_Waiting] = []
            while self._queue and len(round_) < self._max_round:
                waiting = self._queue.popleft()
                if str(waiting.record["id"]) in ids:
                    later.append(waiting)
                elif waiting.future.set_running_or_notify_cancel():
                    ids.add(str(waiting.record["id"]))
                    round_.append(waiting)
            self._queue.extendleft(reversed(later))
            return round_

    def _run_round(self, round_: list[_Waiting]) -> None:
        self._on_round(len(round_))
        try:
            outcome = self._run([w.record for w in round_])
        except BaseException as error:  # noqa: BLE001 - every request of the round hears of it
            for waiting in round_:
                waiting.future.set_exception(error)
            return
        answers: dict[str, Answer] = {str(r["id"]): r for r in outcome.records}
        answers.update((failure.id, failure) for _, failure in outcome.failures)
        for waiting in round_:
            record_id = str(waiting.record["id"])
            if record_id in answers:
                waiting.future.set_result(answers[record_id])
            else:
                waiting.future.set_exception(RuntimeError(f"record {record_id!r} left the stages without an output or a failure"))
