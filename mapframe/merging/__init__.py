"""Merge strategies, checkpoint loading and task vectors."""

from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors, load_state_dict, save_state_dict
from mapframe.merging.merger import Merger
from mapframe.merging.task_arithmetic import TaskArithmetic

__all__ = [
    "MergeStrategy",
    "Merger",
    "TaskArithmetic",
    "TaskVectors",
    "load_state_dict",
    "save_state_dict",
]
