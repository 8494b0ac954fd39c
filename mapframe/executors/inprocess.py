"""The default executor: evaluations run in this process, batched."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, ClassVar

from mapframe.executors.base import Executor, ExecutorStatus, Job, JobResult, MergeSpec
from mapframe.executors.worker import WorkerRuntime, check_batch_output
from mapframe.settings import int_setting

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator

__all__ = ["InProcessExecutor", "check_batch_output"]


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
        self.batch_size = (None if batch_size is None  # True is no batch size
                           else int_setting(batch_size, "batch_size", 1))
        self._queue: deque[Job] = deque()
        self._runtime: WorkerRuntime | None = None
        self._busy = 0

    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        runtime = WorkerRuntime(evaluator, merge_spec, name="local")
        runtime.on_row = self._row_finished
        # Errors surface as raised here (nothing remote to name): keep the evaluator's own.
        evaluator.setup(merge_spec.build() if merge_spec is not None else None)
        runtime.ready = True
        self._runtime = runtime

    def submit(self, jobs: Sequence[Job]) -> None:
        self._queue.extend(jobs)

    def as_completed(self) -> Iterator[JobResult]:
        rt = self._runtime
        assert rt is not None, "start() was not called"
        while self._queue:
            jobs = [self._queue.popleft() for _ in range(len(self._queue))]
            self._busy = 1
            try:
                # Each batch's results go out as it finishes: the session stores them before
                # the next batch starts, so a kill loses one batch at most.
                for part in rt.iter_run(jobs, self.batch_size):
                    yield from part
            finally:
                self._busy = 0

    def _row_finished(self) -> None:
        if self.on_row is not None:
            self.on_row()

    def status(self) -> ExecutorStatus:
        return ExecutorStatus(workers=1 if self._runtime is not None else 0, busy=self._busy,
                              queued=len(self._queue), busy_workers=min(self._busy, 1))

    def shutdown(self) -> None:
        self._queue.clear()
        if self._runtime is not None:
            self._runtime.close()
            self._runtime = None

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "batch_size": self.batch_size}
