"""The evaluation seam: an :class:`Executor` runs evaluation jobs and hands back results.

The study never calls an evaluator directly. It submits :class:`Job` s and consumes
:class:`JobResult` s in whatever order they complete, storing each as it arrives. The
default executor runs them in this process; distributed executors (Ray, Dask, ...) run the
same evaluator in workers behind the same interface.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError, one_line

if TYPE_CHECKING:
    from mapframe.evaluators.base import Evaluator
    from mapframe.executors.jobqueue import JobQueue
    from mapframe.merging.base import MergeStrategy
    from mapframe.merging.checkpoints import CheckpointHook, CheckpointLoader, TaskVectors
    from mapframe.merging.merger import Merger

__all__ = ["Executor", "ExecutorStatus", "Job", "JobResult", "MergeSpec"]


@dataclass(frozen=True)
class Job:
    """One coefficient vector to evaluate."""

    key: str
    coefficients: np.ndarray
    phase: str = "search"
    round: int = 0


@dataclass(frozen=True)
class JobResult:
    """What came back for a :class:`Job`: metrics, or the error that stopped it."""

    job: Job
    metrics: np.ndarray | None
    error: str | None = None
    duration: float = 0.0
    worker: str = "local"


@dataclass(frozen=True)
class ExecutorStatus:
    """A snapshot of an executor's workers, for progress displays.

    ``workers``: workers up now; ``busy``: evaluations running now (a worker may run a batch
    of several); ``queued``: submitted jobs not yet running; ``retried``: jobs re-run because
    their worker died; ``lost_workers``: workers that died (and were replaced, where the
    engine can); ``busy_workers``: workers running something now (``None``: not tracked).
    """

    workers: int
    busy: int
    queued: int = 0
    retried: int = 0
    lost_workers: int = 0
    busy_workers: int | None = None


@dataclass
class MergeSpec:
    """How to build a :class:`~mapframe.merging.merger.Merger` wherever evaluation runs.

    Holds either checkpoint paths (cheap to send to workers, each of which loads them once)
    or already loaded :class:`TaskVectors`.
    """

    strategy: MergeStrategy
    pretrained: str | None = None
    finetuned: Mapping[str, str] = field(default_factory=dict)
    task_vectors: TaskVectors | None = None
    allow_pickle: bool = False
    #: The evaluator's checkpoint adapter (``Evaluator.prepare_checkpoint``), when it has one.
    prepare: CheckpointHook | None = None
    #: The evaluator's own loader (``Evaluator.load_task_vectors``), when it has one: it
    #: reads ``pretrained`` and ``finetuned`` (files or folders) instead of mapframe.
    loader: CheckpointLoader | None = None
    #: How checkpoint files are known in the study's fingerprint: ``"stat"`` (path, size,
    #: modification time: free) or ``"hash"`` (path and SHA-256 of the contents: reads every
    #: byte once per run, and sees a file rewritten with the same size and time).
    fingerprint: str = "stat"

    def build(self) -> Merger:
        from mapframe.merging.checkpoints import TaskVectors
        from mapframe.merging.merger import Merger

        tv = self.task_vectors
        if tv is None:
            assert self.pretrained is not None
            if self.loader is not None:
                tv = self.loader(self.pretrained, dict(self.finetuned))
            if tv is None:
                tv = TaskVectors.from_files(self.pretrained, self.finetuned, self.allow_pickle,
                                           prepare=self.prepare)
            self.task_vectors = tv
        return Merger(self.strategy, tv)

    def describe(self) -> dict[str, object]:
        def stat(p: str) -> dict[str, object]:
            path = Path(p)
            if self.fingerprint == "hash":
                return {"path": os.path.abspath(p), "sha256": content_digest(path)}
            if path.is_dir():
                # A model folder: every file in it counts (shards, index, config, adapter).
                files = sorted(f for f in path.rglob("*") if f.is_file()
                               and not any(part.startswith(".") for part in
                                           f.relative_to(path).parts))
                digest = hashlib.sha256()
                for f in files:
                    fst = f.stat()
                    digest.update(f"{f.relative_to(path).as_posix()}\0{fst.st_size}\0"
                                  f"{fst.st_mtime_ns}\n".encode())
                return {"path": os.path.abspath(p), "files": len(files),
                        "size": sum(f.stat().st_size for f in files),
                        "digest": digest.hexdigest()[:16]}
            st = path.stat() if path.exists() else None
            # Size and modification time: a checkpoint retrained in place must not reuse the
            # evaluations of its old weights (hashing multi-GB files would cost more).
            return {"path": os.path.abspath(p), "size": st.st_size if st else None,
                    "mtime_ns": st.st_mtime_ns if st else None}

        return {
            "strategy": self.strategy.describe(),
            "pretrained": stat(self.pretrained) if self.pretrained else None,
            "finetuned": {k: stat(v) for k, v in self.finetuned.items()},
            "in_memory": (self.task_vectors.fingerprint()
                          if self.pretrained is None and self.task_vectors is not None else None),
        }


def call_with_deadline(fn: Callable[[], Any], seconds: float, name: str) -> tuple[bool, Any]:
    """Run ``fn()`` in a daemon thread named ``name`` and wait at most ``seconds``: returns
    ``(True, its value)``, raises what it raised, or returns ``(False, None)`` when it is
    still running (it is left behind). For cluster connections whose own timeouts do not
    cover every way of hanging."""
    box: dict[str, Any] = {}

    def call() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=call, name=name, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        return False, None
    if "error" in box:
        raise box["error"]
    return True, box.get("value")


def take_batch(queue: JobQueue, size: int) -> list[Job]:
    """The next batch from ``queue`` for a worker: a job re-run after its worker died goes
    alone (it may be what killed the worker: alone, it cannot take healthy batch-mates down
    with it again), any other up to ``size`` jobs, stopping before a re-run one. For the
    executors that re-queue a dead worker's jobs (process pool, Ray, Dask)."""
    if queue.reruns(queue.peek()):
        return [queue.popleft()]
    batch: list[Job] = []
    while queue and len(batch) < size and not queue.reruns(queue.peek()):
        batch.append(queue.popleft())
    return batch


def unsendable_evaluator_error(evaluator_name: str, exc: BaseException, *, to: str,
                               serializer: str) -> ConfigError:
    """The one-line :class:`~mapframe.errors.ConfigError` an executor raises when the
    evaluator (or its merge spec) cannot be serialised to send to its workers.

    ``to`` names the receivers ("worker processes", "Dask workers", "Ray actors");
    ``serializer`` is ``"pickle"`` (functions travel by name: a lambda or nested function
    cannot) or ``"cloudpickle"`` (functions travel by value, but not what they capture: a
    lock, an open file, a connection)."""
    if serializer == "pickle":
        advice = ("define its function at module level in an importable module (not a "
                  "lambda or a nested function)")
    else:
        advice = ("define its function at module level in an importable module (not a "
                  "lambda capturing a lock, a file or a connection)")
    return ConfigError(
        f"evaluator {evaluator_name!r} (or its merge spec) cannot be serialised to send to "
        f"{to} ({one_line(exc)}); {advice}, or use executor='inprocess'")


def content_digest(path: Path) -> str | None:
    """SHA-256 of a file's bytes, or of a folder's files (names and bytes, in name order,
    hidden files left out); ``None`` when ``path`` does not exist."""
    if not path.exists():
        return None
    files = [path] if path.is_file() else sorted(
        f for f in path.rglob("*") if f.is_file()
        and not any(part.startswith(".") for part in f.relative_to(path).parts))
    digest = hashlib.sha256()
    for f in files:
        if f is not path:
            digest.update(f.relative_to(path).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


class Executor(Component):
    """Runs evaluation jobs, here or elsewhere, and yields results as they complete.

    Call order, driven by :class:`~mapframe.study.MergeStudy`::

        executor.start(evaluator, merge_spec)   # once; merge_spec is None for objectives
        executor.submit(jobs)                   # any number of times
        for result in executor.as_completed():  # results of all submitted jobs, any order
            ...                                 # the study stores each one immediately
        executor.shutdown()                     # once

    ``capacity`` says how many evaluations can run at once; the study passes it to
    :meth:`Sampler.batch_size <mapframe.samplers.Sampler.batch_size>` so that adaptive
    samplers can size their rounds to keep every worker busy. Executors report evaluator
    exceptions as :class:`JobResult` s with ``error`` set rather than raising, so one failing
    point never loses the others.
    """

    kind: ClassVar[str] = "executor"
    #: Set by the evaluation session: called in this process each time one evaluation of a
    #: running batch finishes, before the batch's results come out of :meth:`as_completed`
    #: (progress inside a large batch). Executors whose batches run in this process call it
    #: (:class:`InProcessExecutor`); executors with remote workers may leave it uncalled.
    on_row: Callable[[], None] | None = None

    @abstractmethod
    def start(self, evaluator: Evaluator, merge_spec: MergeSpec | None) -> None:
        """Prepare workers: each sets up ``evaluator`` with ``merge_spec.build()``."""

    @abstractmethod
    def submit(self, jobs: Sequence[Job]) -> None:
        """Queue jobs for evaluation."""

    @abstractmethod
    def as_completed(self) -> Iterator[JobResult]:
        """Yield one result per submitted job, as each completes, until none is pending."""

    @property
    def capacity(self) -> int:
        """How many evaluations can run concurrently."""
        return 1

    def status(self) -> ExecutorStatus | None:
        """Workers up, evaluations running and queued now (``None``: not tracked).

        Called by the study after each stored result to feed the progress display; keep
        it cheap (no round trip to a cluster).
        """
        return None

    def shutdown(self) -> None:
        """Stop workers and release resources. Default: no-op."""

    def keep_alive(self) -> contextlib.AbstractContextManager[None]:
        """Keep what :meth:`start` brings up the slow way (a local Ray instance, a local Dask
        cluster, worker processes) running after :meth:`shutdown` while the ``with`` block
        lasts, for the next executor configured like this one to start on: a caller that
        runs several studies in a row with one executor setting (Nested MAP runs one study
        per pair) pays the start-up once. What each study set up on it (its evaluator and
        model on every worker) is still dropped at its shutdown; the block's end stops what
        was kept. Blocks may nest and overlap (the last to end stops it). Default: nothing
        to keep (:func:`contextlib.nullcontext`).

        ::

            with DaskExecutor(workers=4).keep_alive():
                for config in configs:      # one local cluster for all these studies
                    MergeStudy(..., executor={"name": "dask", "workers": 4}).run()
        """
        return contextlib.nullcontext()
