"""What runs inside one worker, whatever the engine: the evaluator, set up once, evaluating
batches of jobs.

Every executor (in-process, process pool, Ray actors, Dask workers) keeps one
:class:`WorkerRuntime` per worker. :meth:`WorkerRuntime.setup` loads the checkpoints and
builds the resident model once; :meth:`WorkerRuntime.run` evaluates jobs against it and turns
evaluator exceptions into failed :class:`~mapframe.executors.JobResult` s, so one failing
point never loses the others.
"""

from __future__ import annotations

import math
import os
import socket
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import CheckpointError, EvaluatorBugError, MapframeError

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator
    from mapframe.executors.base import Job, JobResult, MergeSpec

__all__ = ["WorkerRuntime", "WorkerSetupError", "batch_share", "check_batch_output",
           "default_worker_name"]


class WorkerSetupError(MapframeError, RuntimeError):
    """A worker could not set the evaluator up (a checkpoint it cannot read, a missing
    dataset, ...). The message names the worker and the cause."""


def default_worker_name(prefix: str = "worker") -> str:
    """``prefix@host:pid``: enough to find the machine and process that failed."""
    return f"{prefix}@{socket.gethostname()}:{os.getpid()}"


#: Seconds of work a time-sized batch aims at (evaluators without a batch limit).
BATCH_TARGET_S = 2.0


class BatchTimer:
    """Sizes the batches of an evaluator without a batch limit by time: one point first,
    then twice as many while a batch takes under :data:`BATCH_TARGET_S` seconds, half as
    many beyond twice that. Used by :class:`WorkerRuntime` for the batches it evaluates and
    by the executors that send each batch to a remote worker in one call (Ray, Dask). A
    killed driver or worker then loses a few seconds of work, not a share of the whole
    design."""

    def __init__(self) -> None:
        self.step = 1

    def cap(self, *limits: int | None) -> int | None:
        """The time cap, or ``None`` when a fixed limit is set (it sizes batches itself)."""
        return None if any(limits) else self.step

    def update(self, results: Sequence[JobResult]) -> None:
        """Learn from a finished batch (its jobs' ``duration`` are the batch time shared)."""
        self.learn(len(results), sum(float(r.duration or 0.0) for r in results))

    def learn(self, n: int, took: float) -> None:
        """Learn that a batch of ``n`` points took ``took`` seconds."""
        if n == 0 or n < self.step // 2:
            return  # a remainder says little about the batch size
        if took < BATCH_TARGET_S:
            self.step = min(2 * max(self.step, n), 1 << 16)
        elif took > 2 * BATCH_TARGET_S:
            self.step = max(1, n // 2)


def batch_share(queued: int, workers: int, *caps: int | None) -> int:
    """Jobs per batch so that ``queued`` jobs keep ``workers`` busy: an even share,
    ``ceil(queued / workers)``, capped by each of ``caps`` that is set (the executor's
    ``batch_size``, the evaluator's ``max_batch_size``); at least 1."""
    share = math.ceil(queued / max(1, workers))
    return max(1, min([share, *(c for c in caps if c)]))


def check_batch_output(out: object, n_rows: int, n_tasks: int, who: str,
                       expected: str | None = None) -> np.ndarray:
    """Validate an evaluator's return value for a batch of ``n_rows`` coefficient vectors.
    ``expected`` says what it must return instead (default: an array of shape
    ``(n_rows, n_tasks)``), for callers whose contract reads otherwise."""
    values = _detached(out)
    must = expected or (f"an array of shape ({n_rows}, {n_tasks}) (one row per coefficient "
                        "vector, one column per task)")
    if np.iscomplexobj(values) or (isinstance(values, (list, tuple)) and any(
            isinstance(v, complex) or np.iscomplexobj(v) for v in values)):
        raise EvaluatorBugError(
            f"{who} returned complex numbers; metrics must be real (take .real or abs() "
            "in the evaluator if that is what the metric means)")
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise EvaluatorBugError(
            f"{who} returned {type(out).__name__}, not numbers; it must return {must}"
        ) from None
    if arr.shape != (n_rows, n_tasks):
        if arr.shape == (n_tasks,) and n_rows == 1:
            return arr.reshape(1, n_tasks)
        raise EvaluatorBugError(
            f"{who} returned shape {arr.shape} for {n_rows} coefficient vector(s) and "
            f"{n_tasks} task(s); it must return "
            f"{expected or f'shape ({n_rows}, {n_tasks})'} (a bug in the evaluator, not a "
            "failing point)"
        )
    return arr


def _detached(out: Any) -> Any:
    """A torch tensor (one that requires grad included) as a numpy array; else ``out``."""
    if type(out).__module__.startswith("torch") and hasattr(out, "detach"):
        return out.detach().cpu().numpy()
    if isinstance(out, (list, tuple)):
        return type(out)(_detached(v) for v in out)
    return out


class WorkerRuntime:
    """One worker's evaluator, set up once and kept resident.

    Call order::

        rt = WorkerRuntime(evaluator, merge_spec, name)
        rt.setup()                   # loads checkpoints, evaluator.setup(merger); once
        rt.run(jobs, batch_size)     # any number of times -> list[JobResult]
        rt.iter_run(jobs, batch_size)  # the same, each batch's results as it finishes
        rt.close()                   # evaluator.close(); once

    ``run`` evaluates jobs in batches of up to ``batch_size`` (default: the evaluator's
    ``max_batch_size``). With neither set (a vectorised function with no limit), batches are
    sized by time: the first holds one point, and each next one doubles while a batch takes
    less than :data:`BATCH_TARGET_S` seconds (halves beyond twice that), so the evaluator
    keeps its vectorisation while a killed worker loses only a few seconds of work; executors
    pass each batch's results on as it finishes (:meth:`iter_run`). When a batch raises, its
    jobs are retried one at a time so that only the failing points come back failed. A batch whose
    output has the wrong shape, or an evaluator that raises
    :class:`~mapframe.errors.EvaluatorBugError`, is a bug in the evaluator, not a failing
    point: that error propagates (whatever ``on_error`` says).
    """

    def __init__(self, evaluator: Evaluator, merge_spec: MergeSpec | None,
                 name: str | None = None) -> None:
        self.evaluator = evaluator
        self.merge_spec = merge_spec
        self.name = name or default_worker_name()
        self.ready = False
        self.setup_s = 0.0
        #: Sizes batches by time (see the class docs), kept from one call to the next.
        self._timer = BatchTimer()
        #: Called each time the evaluator finishes one row of a batch
        #: (:meth:`Evaluator.row_finished <mapframe.evaluators.Evaluator.row_finished>`).
        self.on_row: Callable[[], None] | None = None

    def setup(self) -> float:
        """Load the checkpoints and set the evaluator up; return the seconds it took.

        Raises :class:`WorkerSetupError` naming this worker (and, through the cause's
        message, the checkpoint file) when that fails.
        """
        t0 = time.perf_counter()
        try:
            merger = self.merge_spec.build() if self.merge_spec is not None else None
            self.evaluator.setup(merger)
        except MapframeError as exc:
            what = ("could not load a checkpoint" if isinstance(exc, CheckpointError)
                    else "could not set up")
            raise WorkerSetupError(
                f"worker {self.name} {what} for evaluator {self.evaluator.name!r}: {exc}"
            ) from exc
        except Exception as exc:
            raise WorkerSetupError(
                f"worker {self.name} could not set up evaluator {self.evaluator.name!r}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.ready = True
        self.setup_s = time.perf_counter() - t0
        return self.setup_s

    def run(self, jobs: Sequence[Job], batch_size: int | None = None) -> list[JobResult]:
        """Evaluate ``jobs``; one :class:`JobResult` per job, in the order given."""
        return [r for part in self.iter_run(jobs, batch_size) for r in part]

    def iter_run(self, jobs: Sequence[Job], batch_size: int | None = None,
                 ) -> Iterator[list[JobResult]]:
        """Evaluate ``jobs`` batch by batch, yielding each batch's results (in the order
        given) as soon as it is done."""
        if not self.ready:
            self.setup()
        jobs = list(jobs)
        fixed = min([s for s in (batch_size, self.evaluator.max_batch_size) if s], default=0)
        i = 0
        while i < len(jobs):
            step = fixed or self._timer.step
            t0 = time.perf_counter()
            part = self._run(jobs[i:i + step])
            i += step
            if not fixed:
                self._timer.learn(len(part), time.perf_counter() - t0)
            yield part

    def _run(self, jobs: list[Job]) -> list[JobResult]:
        from mapframe.executors.base import JobResult

        ev = self.evaluator
        C = np.stack([j.coefficients for j in jobs])
        marks: list[float] = []

        def row_done() -> None:
            marks.append(time.perf_counter())
            if self.on_row is not None:
                self.on_row()

        ev._row_listener = row_done
        t0 = time.perf_counter()
        try:
            out = ev.evaluate(C)
        except EvaluatorBugError:
            raise  # every point would fail the same way: not a failed point
        except Exception as exc:
            if len(jobs) > 1:
                return [r for j in jobs for r in self._run([j])]
            msg = f"{type(exc).__name__}: {exc}"
            tb = traceback.format_exc(limit=-3)
            return [JobResult(jobs[0], None, f"{msg}\n{tb}", time.perf_counter() - t0,
                              self.name)]
        finally:
            ev._row_listener = None
        took = time.perf_counter() - t0
        arr = check_batch_output(out, len(jobs), len(ev.tasks), f"evaluator {ev.name!r}")
        # Each row timed on its own when the evaluator said when each finished; else the
        # batch time shared.
        durations = (np.diff([t0, *marks]).tolist() if len(marks) == len(jobs)
                     else [took / len(jobs)] * len(jobs))
        return [JobResult(j, arr[i], None, durations[i], self.name)
                for i, j in enumerate(jobs)]

    def close(self) -> None:
        """Release the evaluator's resources."""
        if self.ready:
            self.ready = False
            self.evaluator.close()
