"""Executors: the seam through which every evaluation runs (in-process by default)."""

from mapframe.executors.base import Executor, Job, JobResult, MergeSpec
from mapframe.executors.inprocess import InProcessExecutor

__all__ = ["Executor", "InProcessExecutor", "Job", "JobResult", "MergeSpec"]
