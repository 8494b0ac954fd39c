"""Pieces shared by the built-in solvers and the Pareto polish."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from mapframe.errors import EvaluationError
from mapframe.metrics import pareto_mask
from mapframe.problem import SearchSpace
from mapframe.solvers.base import SolverResult

Predict = Callable[[np.ndarray], np.ndarray]
#: Exact derivatives of a ``predict``: ``C`` ``(M, N)`` to the Jacobians ``(M, T, N)`` and the
#: Hessians ``(M, T, N, N)`` (or ``(T, N, N)``, the same at every point) of the predicted
#: metrics with respect to the coefficients.
Derivatives = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


class PredictWithDerivatives:
    """A ``predict`` that also carries its exact derivatives (``derivatives(C)``, see
    :data:`Derivatives`), which the Pareto polish then uses instead of finite differences
    of ``predict`` (:func:`mapframe.solvers.polish.improve`); called, it is ``predict``."""

    def __init__(self, predict: Predict, derivatives: Derivatives) -> None:
        self.predict = predict
        self.derivatives = derivatives

    def __call__(self, C: np.ndarray) -> np.ndarray:
        return self.predict(C)


def _predict_checked(predict: Predict, X: np.ndarray, n_obj: int) -> np.ndarray:
    """``predict(X)`` as a float (M, T) array; :class:`EvaluationError` when it is not usable."""
    try:
        out = np.asarray(predict(X), dtype=float)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(
            f"predict must return a numeric array of shape (M, T); converting its output "
            f"failed: {exc}"
        ) from exc
    expected = (X.shape[0], n_obj)
    if out.shape != expected:
        raise EvaluationError(
            f"predict returned shape {out.shape} for {X.shape[0]} points and {n_obj} tasks; "
            f"it must return one row per point and one column per task, shape {expected}"
        )
    bad = ~np.all(np.isfinite(out), axis=1)
    if bad.any():
        raise EvaluationError(
            f"predict returned NaN or infinite values for {int(bad.sum())} of "
            f"{X.shape[0]} points (first: c={X[bad][0].tolist()}); the surrogate must be "
            "finite on the whole search box"
        )
    return out


def _finish(
    predict: Predict,
    X: np.ndarray,
    space: SearchSpace,
    directions: Sequence[str],
    n_evaluations: int,
) -> SolverResult:
    """Clip candidates to the box, predict, keep the distinct non-dominated ones, sort."""
    X = np.clip(np.asarray(X, dtype=float).reshape(-1, space.n_dims), space.lower, space.upper)
    F = _predict_checked(predict, X, len(directions))
    keep = pareto_mask(F, directions)
    X, F = X[keep], F[keep]
    order = np.lexsort(F.T[::-1])
    return SolverResult(X=X[order], F=F[order], n_evaluations=n_evaluations + len(keep))
