"""The queue of jobs waiting for a worker, for executors that replace workers that die.

When a worker dies with a batch in flight, its jobs go back to the front of the queue (in
their order) to be re-run on another worker, each at most ``max_retries`` times; a job out of
re-runs is given up, and the executor reports it as a failed result saying why. The process
pool and the Ray actor pool share this bookkeeping.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator

from mapframe.executors.base import Job

__all__ = ["JobQueue"]


def _key(job: Job) -> tuple[str, str]:
    return job.phase, job.key


class JobQueue:
    """Jobs waiting for a worker, and how often each was re-run after its worker died.

    Jobs are told apart by ``(phase, key)``; ``retried`` counts the re-runs granted since
    :meth:`reset` (for :class:`~mapframe.executors.ExecutorStatus`).
    """

    def __init__(self) -> None:
        self.retried = 0
        self._jobs: deque[Job] = deque()
        self._reruns: dict[tuple[str, str], int] = {}

    def reset(self) -> None:
        """A new run: no job re-run yet (queued jobs stay)."""
        self._reruns.clear()
        self.retried = 0

    def clear(self) -> None:
        """Drop the queued jobs (re-run counts stay)."""
        self._jobs.clear()

    def extend(self, jobs: Iterable[Job]) -> None:
        """Queue ``jobs`` at the back."""
        self._jobs.extend(jobs)

    def popleft(self) -> Job:
        return self._jobs.popleft()

    def peek(self) -> Job:
        """The next job, left in the queue."""
        return self._jobs[0]

    def __len__(self) -> int:
        return len(self._jobs)

    def __bool__(self) -> bool:
        return bool(self._jobs)

    def __iter__(self) -> Iterator[Job]:
        return iter(self._jobs)

    def reruns(self, job: Job) -> int:
        """How many times ``job`` was re-run after its worker died."""
        return self._reruns.get(_key(job), 0)

    def done(self, jobs: Iterable[Job]) -> None:
        """``jobs`` came back: forget their re-runs."""
        for job in jobs:
            self._reruns.pop(_key(job), None)

    def requeue(self, jobs: Iterable[Job], max_retries: int) -> list[tuple[Job, int]]:
        """A worker died running ``jobs``: queue again, at the front and in order, those
        re-run fewer than ``max_retries`` times so far; return the others (given up) with
        the re-runs they had."""
        again: list[Job] = []
        given_up: list[tuple[Job, int]] = []
        for job in jobs:
            k = _key(job)
            n = self._reruns.get(k, 0)
            if n < max_retries:
                self._reruns[k] = n + 1
                self.retried += 1
                again.append(job)
            else:
                self._reruns.pop(k, None)
                given_up.append((job, n))
        self._jobs.extendleft(reversed(again))
        return given_up
