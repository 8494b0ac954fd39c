"""mapframe: Pareto fronts of model merges (MAP, arXiv 2406.07529) as a pluggable framework.

Embed it in three lines::

    from mapframe import MergeStudy
    result = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0).run()
    result.front.coefficients, result.front.predicted
"""

from mapframe._version import __version__
from mapframe.errors import (
    BudgetError,
    CheckpointError,
    ComponentError,
    ConfigError,
    EvaluationError,
    MapframeError,
    MapframeWarning,
    MetricError,
    PluginLoadError,
    StoreError,
    UnknownComponentError,
)
from mapframe.nested import NestedMergeStudy, NestedResult
from mapframe.problem import SearchSpace, Task
from mapframe.results import Front, StudyResult
from mapframe.study import MergeStudy, ProgressEvent

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ComponentError",
    "ConfigError",
    "EvaluationError",
    "Front",
    "MapframeError",
    "MapframeWarning",
    "MergeStudy",
    "MetricError",
    "NestedMergeStudy",
    "NestedResult",
    "PluginLoadError",
    "ProgressEvent",
    "SearchSpace",
    "StoreError",
    "StudyResult",
    "Task",
    "UnknownComponentError",
    "__version__",
]
