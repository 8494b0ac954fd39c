"""The :class:`Surrogate` component: a cheap model of one task's metric over coefficients."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, TypedDict, cast

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError, MetricError
from mapframe.problem import Task

__all__ = [
    "DEFAULT_SURROGATE",
    "Surrogate",
    "SurrogateDiagnostics",
    "as_design",
    "check_fit_data",
    "default_surrogate",
    "expected_errors",
    "task_prefix",
]

#: The registry name of the surrogate used when none is given (``"auto"``: the
#: :class:`~mapframe.surrogates.quadratic.AutoSurrogate`).
DEFAULT_SURROGATE = "auto"


class SurrogateDiagnostics(TypedDict, total=False):
    """What :meth:`Surrogate.diagnostics` reports: fit quality, on the metric's own scale.

    Every key is optional (an unfitted surrogate reports ``{}``); at runtime it is a plain
    ``dict``, so it is read by key and written to JSON as before, and a surrogate may add
    keys of its own. The keys the built-in surrogates report:

    ``model``
        The registry name of the fitted model (for ``auto``, the one it chose).
    ``r2``, ``rmse``
        R² and root-mean-square error on the fitted points (``r2`` NaN when all targets are
        equal). Every surrogate should report ``r2``: the study warns on a poor fit.
    ``loo_r2``, ``loo_rmse``
        The same from leave-one-out residuals (NaN when a point cannot be predicted
        without itself); stopping rules read ``loo_rmse``.
    ``loo_method``
        How the leave-one-out residuals were obtained (``"exact"``, ``"linearized"``,
        ``"refit"``, ``"closed_form"``, ...).
    ``n_samples``, ``n_params``
        Points fitted, and free parameters of the model.
    ``converged``, ``nfev``
        Whether the nonlinear least-squares fit converged, and its residual evaluations
        (the warped quadratics).
    ``bound``
        Which declared metric bound a softplus quadratic is anchored on (``"lower"`` or
        ``"upper"``).
    ``lengthscales``, ``outputscale``, ``noise``, ``constant``, ``nu``, ``log_likelihood``
        The Gaussian process's hyper-parameters (lengthscales per input on the unit cube;
        outputscale and noise on standardised outputs) and maximised log likelihood per
        point.
    ``warp``
        The link the Gaussian process was fitted through (``"logit"``, ``"softplus (lower
        bound)"``, ``"softplus (upper bound)"`` or ``"identity"``).
    """

    model: str
    r2: float
    rmse: float
    loo_r2: float
    loo_rmse: float
    loo_method: str
    n_samples: int
    n_params: int
    converged: bool
    nfev: int
    bound: str
    warp: str
    lengthscales: list[float]
    outputscale: float
    noise: float
    constant: float
    nu: float
    log_likelihood: float


def expected_errors(diagnostics: Mapping[str, Mapping[str, Any]],
                    task_names: Sequence[str]) -> np.ndarray:
    """Per task, the error its surrogate promises: ``loo_rmse``, else (absent, or not a
    finite number, as where a point's leverage is 1) the in-sample ``rmse``; NaN where a
    task's diagnostics report neither."""

    def number(value: Any) -> float:
        try:
            return float(value) if value is not None else np.nan
        except (TypeError, ValueError):
            return np.nan

    out = []
    for name in task_names:
        diag = diagnostics.get(name, {})
        loo = number(diag.get("loo_rmse"))
        out.append(loo if np.isfinite(loo) else number(diag.get("rmse")))
    return np.array(out, dtype=float)


def default_surrogate() -> Surrogate:
    """A fresh, unfitted surrogate registered as :data:`DEFAULT_SURROGATE`.

    Looked up in the component registry, so that components which need a surrogate and were
    given none (a sampler used without a study) never name a concrete class.
    """
    from mapframe.plugin.manager import get_registry

    return cast(Surrogate, get_registry().create("surrogate", DEFAULT_SURROGATE))


def task_prefix(task: Task | None) -> str:
    """``"task 'name': "``, the prefix of fit error messages (empty without a task)."""
    return f"task {task.name!r}: " if task is not None else ""


def as_design(X: np.ndarray) -> np.ndarray:
    """``X`` as a finite float ``(K, N)`` array, or :class:`ConfigError`."""
    try:
        X = np.asarray(X, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError("coefficients must be a numeric (K, N) array") from None
    if X.ndim != 2 or X.shape[1] < 1:
        raise ConfigError(f"coefficients must be a (K, N) array, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ConfigError("coefficients contain NaN or infinite values")
    return X


def check_fit_data(
    X: np.ndarray, y: np.ndarray, task: Task | None
) -> tuple[np.ndarray, np.ndarray]:
    """The checks every :meth:`Surrogate.fit` owes its caller: ``X`` a finite ``(K, N)``
    array, ``y`` ``K`` finite values (``(K, 1)`` accepted) inside ``task``'s declared range.

    Raises :class:`ConfigError` for malformed input and :class:`MetricError` for NaN or
    out-of-range metric values. Returns ``(X, y)`` as float arrays, ``y`` of shape ``(K,)``.
    """
    if task is not None and not isinstance(task, Task):
        raise ConfigError(f"task must be a mapframe Task, got {type(task).__name__}")
    where = task_prefix(task)
    X = as_design(X)
    try:
        y = np.asarray(y, dtype=float)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}metric values must be numbers") from None
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ConfigError(
            f"{where}expected {X.shape[0]} metric values (shape ({X.shape[0]},)) for "
            f"{X.shape[0]} points, got shape {y.shape}"
        )
    if not np.all(np.isfinite(y)):
        raise MetricError(f"{where}metric values contain NaN or infinite values")
    if task is not None and (np.any(y < task.lower) or np.any(y > task.upper)):
        raise MetricError(
            f"{where}metric values range over [{y.min():g}, {y.max():g}], outside the "
            f"declared range [{task.lower:g}, {task.upper:g}]"
        )
    return X, y


class Surrogate(Component):
    """Predicts one task's metric from a coefficient vector.

    Call order: the study keeps one *prototype* surrogate and, for each task, fits a fresh
    copy (``copy.deepcopy``) on that task's evaluations::

        n = surrogate.n_params(N)            # checked against the budget before any evaluation
        s = copy.deepcopy(surrogate)
        s.fit(X, y, task)                    # X: (K, N) coefficients, y: (K,) metric values
        s.predict(Xnew)                      # (M,) predictions, called many times by solvers
        s.diagnostics()                      # {"r2": ..., "loo_r2": ..., ...}

    The study fits once, after sampling; a fitted copy is never refitted in place (fit a
    fresh copy on more data instead), so adaptive samplers can keep their own fitted copies.
    ``predict`` must be vectorised over rows and cheap: front solvers call it on whole
    populations. ``task`` carries the metric's direction and known range, which warped
    surrogates use.
    """

    kind: ClassVar[str] = "surrogate"
    #: Whether a fit to exactly ``n_params(N)`` points reproduces them, noise included: true
    #: for a model with that many free parameters (the quadratics), false for one whose
    #: ``n_params`` is only the fewest points it accepts (the GP, which models noise). Where
    #: it is true, the study warns when the search ends with exactly that many evaluations
    #: (:func:`mapframe.study_checks.interpolation_check`).
    interpolates_at_n_params: ClassVar[bool] = True

    @abstractmethod
    def n_params(self, n_dims: int) -> int:
        """Number of free parameters for ``n_dims`` coefficients (the minimum sample size)."""

    @abstractmethod
    def fit(self, X: np.ndarray, y: np.ndarray, task: Task) -> Surrogate:
        """Fit to ``K`` points; return ``self``."""

    @abstractmethod
    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predict the metric at each row of ``X``; returns shape ``(M,)``."""

    def predict_std(self, X: np.ndarray) -> np.ndarray | None:
        """The predictive standard deviation at each row of ``X`` (shape ``(M,)``), or
        ``None`` when the surrogate has no notion of its own uncertainty (the default).

        Where it is given, the study reports it for every front point
        (:attr:`~mapframe.results.Front.predicted_std`).
        """
        return None

    def check_design(self, X: np.ndarray) -> None:
        """Raise :class:`~mapframe.errors.BudgetError` if a fit on the design ``X`` (all the
        points a non-adaptive sampler will evaluate) cannot identify the model.

        The study calls this *before* evaluating a fixed design, so that a useless design
        (say, only 0/1 coordinates for a quadratic) costs no evaluations. Default: no check.
        """

    def diagnostics(self) -> SurrogateDiagnostics:
        """Fit quality after :meth:`fit` (at least ``r2``; ``loo_r2`` where available); see
        :class:`SurrogateDiagnostics` for the keys. Default: ``{}``."""
        return {}
