"""Executors: the seam through which every evaluation runs (in-process by default)."""

from mapframe.executors.base import Executor, ExecutorStatus, Job, JobResult, MergeSpec
from mapframe.executors.inprocess import InProcessExecutor
from mapframe.executors.pool import ProcessExecutor
from mapframe.executors.worker import WorkerRuntime, WorkerSetupError

__all__ = [
    "Executor",
    "ExecutorStatus",
    "InProcessExecutor",
    "Job",
    "JobResult",
    "MergeSpec",
    "ProcessExecutor",
    "WorkerRuntime",
    "WorkerSetupError",
]
