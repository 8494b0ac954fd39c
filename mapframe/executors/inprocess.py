"""The default executor: evaluations run in this process, batched."""

from __future__ import annotations

import time
import traceback
from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.errors import ConfigError, EvaluationError
from mapframe.executors.base import Executor, Job, JobResult, MergeSpec

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator

__all__ = ["InProcessExecutor", "check_batch_output"]


def check_batch_output(out: object, n_rows: int, n_tasks: int, who: str) -> np.ndarray:
    """Validate an evaluator's return value for a batch of ``n_rows`` coefficient vectors."""
    try:
        arr = np.asarray(out, dtype=float)
    except (TypeError, ValueError):
        raise EvaluationError(
            f"{who} returned {type(out).__name__}, not numbers; it must return an array of "
            f"shape ({n_rows}, {n_tasks}) (one row per coefficient vector, one column per task)"
        ) from None
    if arr.shape != (n_rows, n_tasks):
        if arr.shape == (n_tasks,) and n_rows == 1:
            return arr.reshape(1, n_tasks)
        raise EvaluationError(
            f"{who} returned shape {arr.shape} for {n_rows} coefficient vector(s) and "
            f"{n_tasks} task(s); it must return shape ({n_rows}, {n_tasks})"
        )
    return arr


class InProcessExecutor(Executor):
    """Evaluates jobs in the calling process, in batches of up to ``batch_size``.

    ``batch_size`` defaults to the evaluator's ``max_batch_size`` (all pending jobs when
    that is ``None``). When a batch raises, its jobs are retried one at a time so that only
    the failing points are reported as failed. A batch whose output has the wrong shape is a
    bug in the evaluator, not a failing point: that raises
    :class:`~mapframe.errors.EvaluationError` at once.
    """

    name: ClassVar[str] = "inprocess"

    def __init__(self, batch_size: int | None = None) -> None:
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self._queue: deque[Job] = deque()
        self._evaluator: Evaluator | None = None

    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        evaluator.setup(merge_spec.build() if merge_spec is not None else None)
        self._evaluator = evaluator

    def submit(self, jobs: Sequence[Job]) -> None:
        self._queue.extend(jobs)

    def _chunk(self) -> int:
        assert self._evaluator is not None
        sizes = [s for s in (self.batch_size, self._evaluator.max_batch_size) if s]
        return min(sizes) if sizes else max(len(self._queue), 1)

    def _run(self, jobs: list[Job]) -> list[JobResult]:
        ev = self._evaluator
        assert ev is not None
        C = np.stack([j.coefficients for j in jobs])
        t0 = time.perf_counter()
        try:
            out = ev.evaluate(C)
        except Exception as exc:
            if len(jobs) > 1:
                return [r for j in jobs for r in self._run([j])]
            msg = f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc(limit=-3)
            return [JobResult(jobs[0], None, f"{msg}\n{tb}", time.perf_counter() - t0)]
        per = (time.perf_counter() - t0) / len(jobs)
        arr = check_batch_output(out, len(jobs), len(ev.tasks), f"evaluator {ev.name!r}")
        return [JobResult(j, arr[i], None, per) for i, j in enumerate(jobs)]

    def as_completed(self) -> Iterator[JobResult]:
        while self._queue:
            n = self._chunk()
            jobs = [self._queue.popleft() for _ in range(min(n, len(self._queue)))]
            yield from self._run(jobs)

    def shutdown(self) -> None:
        self._queue.clear()
        if self._evaluator is not None:
            self._evaluator.close()
            self._evaluator = None

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "batch_size": self.batch_size}
