"""mapframe: Pareto fronts of model merges (MAP, arXiv 2406.07529) as a pluggable framework.

Embed it in three lines::

    from mapframe import MergeStudy
    result = MergeStudy(objective=f, task_names=["a", "b"], budget=20, seed=0).run()
    result.front.coefficients, result.front.predicted
"""

from mapframe import errors
from mapframe._version import __version__
from mapframe.errors import *  # noqa: F403 (the exceptions: errors.__all__)
from mapframe.history import Evaluation, FailureReason
from mapframe.nested import NestedMergeStudy, NestedResult
from mapframe.problem import SearchSpace, Task
from mapframe.results import Front, StudyResult
from mapframe.results_folder import SavedResults, load_results
from mapframe.spec import StudySpec
from mapframe.study import MergeStudy, ProgressEvent

__all__ = [
    "Evaluation",
    "FailureReason",
    "Front",
    "MergeStudy",
    "NestedMergeStudy",
    "NestedResult",
    "ProgressEvent",
    "SavedResults",
    "SearchSpace",
    "StudyResult",
    "StudySpec",
    "Task",
    "__version__",
    "load_results",
]
__all__ += errors.__all__  # every exception, listed once in mapframe.errors
