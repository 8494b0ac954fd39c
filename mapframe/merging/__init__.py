"""Merge strategies, checkpoint loading and task vectors."""

from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors, load_state_dict, save_state_dict
from mapframe.merging.geometric import KarcherMean, ModelStock, MultiSlerp
from mapframe.merging.interpolation import (
    ModelSoup,
    PreferenceTaskArithmetic,
    ScalarTaskArithmetic,
    Slerp,
)
from mapframe.merging.merger import Merger
from mapframe.merging.sparsified import Breadcrumbs, Della
from mapframe.merging.spectral import (
    IsotropicCommonTaskMerge,
    IsotropicMerge,
    TaskSingularVectorsMerge,
)
from mapframe.merging.task_arithmetic import TaskArithmetic
from mapframe.merging.ties_dare import DareTaskArithmetic, DareTies, TiesMerging

__all__ = [
    "Breadcrumbs",
    "DareTaskArithmetic",
    "DareTies",
    "Della",
    "IsotropicCommonTaskMerge",
    "IsotropicMerge",
    "KarcherMean",
    "MergeStrategy",
    "Merger",
    "ModelSoup",
    "ModelStock",
    "MultiSlerp",
    "PreferenceTaskArithmetic",
    "ScalarTaskArithmetic",
    "Slerp",
    "TaskArithmetic",
    "TaskSingularVectorsMerge",
    "TaskVectors",
    "TiesMerging",
    "load_state_dict",
    "save_state_dict",
]
