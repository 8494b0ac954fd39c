"""The exceptions mapframe raises.

Every error mapframe raises on purpose derives from :class:`MapframeError`. Its message is one
line that names the problem and the fix; the command line prints it without a traceback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "BudgetError",
    "CheckpointError",
    "ClusterLostError",
    "ComponentError",
    "ConfigError",
    "EvaluationError",
    "EvaluatorBugError",
    "MapframeError",
    "MapframeWarning",
    "MetricError",
    "PluginLoadError",
    "SetupMismatchError",
    "StoreError",
    "UnknownComponentError",
]


class MapframeError(Exception):
    """Root of all errors mapframe raises on purpose."""


class ConfigError(MapframeError, ValueError):
    """A configuration (YAML file or keyword arguments) is invalid."""


class ComponentError(MapframeError, TypeError):
    """A component is not of the expected kind or was registered twice."""


class UnknownComponentError(MapframeError, LookupError):
    """No component of the asked kind is registered under the asked name."""


class PluginLoadError(MapframeError, ImportError):
    """A plugin's entry point failed to load."""


class CheckpointError(MapframeError, ValueError):
    """Checkpoints are missing, unreadable, unsafe, or disagree in keys, shapes or dtypes."""


class BudgetError(MapframeError, ValueError):
    """The evaluation budget cannot identify the surrogate."""


class EvaluationError(MapframeError, RuntimeError):
    """An evaluator or objective failed or returned something unusable."""


class EvaluatorBugError(EvaluationError):
    """An evaluator broke its contract (wrong number or kind of metrics): a programming
    error that every point would hit, so it stops the study whatever ``on_error`` says."""


class MetricError(EvaluationError):
    """A metric is NaN, infinite, or outside its declared range."""


class ClusterLostError(MapframeError, RuntimeError):
    """The cluster running the evaluations stopped answering mid-study. What was stored is
    safe; the study resumes from the store once the cluster is back."""


class StoreError(MapframeError, RuntimeError):
    """The evaluation store cannot be opened or does not match the study."""


class SetupMismatchError(StoreError):
    """The store already holds a study of that name with another setup (fingerprint)."""


class MapframeWarning(UserWarning):
    """Warnings mapframe emits (weak designs, poor surrogate fits, ...)."""


def one_line(exc: BaseException) -> str:
    """``Type: message`` with only the message's first non-empty line (``Type`` alone when it
    has none): how mapframe quotes an exception it did not raise inside its own one-line
    messages (pluggy's, a plugin's or a library's messages often go on for lines). Not
    exported."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def float_array(value: object, message: str) -> np.ndarray:
    """``np.asarray(value, dtype=float)``; :class:`ConfigError` ``message`` when ``value`` is
    not numeric. The first step of mapframe's checks of array arguments (not exported)."""
    import numpy as np

    try:
        return np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(message) from None
