"""Merge strategies, checkpoint loading and task vectors."""

from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors, load_state_dict, save_state_dict
from mapframe.merging.interpolation import (
    ModelSoup,
    PreferenceTaskArithmetic,
    ScalarTaskArithmetic,
    Slerp,
)
from mapframe.merging.merger import Merger
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.merging.ties_dare import DareTaskArithmetic, DareTies, TiesMerging

__all__ = [
    "DareTaskArithmetic",
    "DareTies",
    "MergeStrategy",
    "Merger",
    "ModelSoup",
    "PreferenceTaskArithmetic",
    "ScalarTaskArithmetic",
    "Slerp",
    "TaskArithmetic",
    "TaskVectors",
    "TiesMerging",
    "load_state_dict",
    "save_state_dict",
]
