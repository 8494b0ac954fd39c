"""Checks on a finished study that deserve the user's attention: each returns a one-line
message (or ``None``) that :class:`~mapframe.study.MergeStudy` emits as a
:class:`~mapframe.errors.MapframeWarning` and records in the result's ``warnings``.

- :func:`verified_error_check`: verification found a surrogate far worse than its
  leave-one-out estimate promised (the front extrapolates beyond the evaluations);
- :func:`extrapolation_check`: the selected point was never measured and lies outside the
  region the search evaluated;
- :func:`tradeoff_check`: one merge is (nearly) best on every task, so the front offers no
  trade-off;
- :func:`interpolation_check`: a quadratic-family surrogate was fitted to exactly as many
  evaluations as it has parameters, so it interpolates them, noise included;
- :func:`unused_stored_check`: the store holds finished search evaluations of this study
  that this run did not propose (another seed, sampler or budget), so they went unused.

Zero and duplicate task vectors are found where the weights are, when they are loaded
(:meth:`mapframe.merging.TaskVectors.degeneracies`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mapframe.history import Evaluation, History
from mapframe.problem import Task
from mapframe.surrogates.base import expected_errors
from mapframe.surrogates.choice import INSTALL_GP_HINT

__all__ = ["VERIFIED_ERROR_FACTOR", "extrapolation_check", "interpolation_check",
           "tradeoff_check", "unused_stored_check", "verified_error_check"]

#: Verified RMS error above this multiple of the leave-one-out RMSE triggers a warning.
VERIFIED_ERROR_FACTOR = 3.0
#: A point outside the evaluated region by more than this share of the box width (L1
#: distance to the convex hull of the search points, per coordinate) is extrapolated.
EXTRAPOLATION_TOL = 0.05
#: A merge within this share of each task's evaluated range of the best on every task
#: makes the front degenerate.
TRADEOFF_TOL = 0.01


def _fmt(values: Sequence[float] | np.ndarray) -> str:
    return "(" + ", ".join(f"{float(v):.3g}" for v in np.asarray(values).reshape(-1)) + ")"


def verified_error_check(predicted: np.ndarray, real: np.ndarray,
                         diagnostics: Mapping[str, Mapping[str, Any]],
                         tasks: Sequence[Task],
                         factor: float = VERIFIED_ERROR_FACTOR,
                         adaptive: bool = False) -> str | None:
    """Tasks whose RMS error at the verified front points exceeds ``factor`` times the
    surrogate's leave-one-out RMSE (``loo_rmse``, else in-sample ``rmse``); needs two or
    more verified points. ``adaptive``: the study's sampler already searches adaptively
    (the advice then leaves out switching to one)."""
    mask = np.all(np.isfinite(real), axis=1)
    if mask.sum() < 2:
        return None
    err = predicted[mask] - real[mask]
    promised = expected_errors(diagnostics, [task.name for task in tasks])
    bad = []
    for j, task in enumerate(tasks):
        loo = promised[j]
        if not np.isfinite(loo):
            continue
        rmse = float(np.sqrt(np.mean(err[:, j] ** 2)))
        scale = max(1.0, float(np.abs(real[mask, j]).max()))
        if rmse > factor * max(float(loo), 1e-9 * scale) and rmse > 1e-6 * scale:
            bad.append(f"{task.name!r} off by {rmse:.3g} RMS vs leave-one-out {float(loo):.3g}")
    if not bad:
        return None
    return (f"verification at {int(mask.sum())} front points found the surrogates far worse "
            f"than their leave-one-out error promised ({'; '.join(bad)}): the predicted "
            "front extrapolates beyond what the evaluations support; trust the measured "
            "points" + (" or raise the budget" if adaptive else
                        ", raise the budget, or search adaptively (sampler: front)"))


def _hull_distance(X: np.ndarray, c: np.ndarray) -> float:
    """L1 distance from ``c`` to the convex hull of the rows of ``X`` (a linear program)."""
    from scipy.optimize import linprog

    M, N = X.shape
    # Variables: lambda (M) >= 0, slack+ (N), slack- (N) >= 0; X^T lambda + s+ - s- = c,
    # sum(lambda) = 1; minimise sum(s+ + s-).
    A_eq = np.zeros((N + 1, M + 2 * N))
    A_eq[:N, :M] = X.T
    A_eq[:N, M:M + N] = np.eye(N)
    A_eq[:N, M + N:] = -np.eye(N)
    A_eq[N, :M] = 1.0
    b_eq = np.append(c, 1.0)
    cost = np.concatenate([np.zeros(M), np.ones(2 * N)])
    res = linprog(cost, A_eq=A_eq, b_eq=b_eq, bounds=(0, None), method="highs")
    return float(res.fun) if res.status == 0 else float("inf")


def extrapolation_check(coefficients: np.ndarray, searched: np.ndarray, lower: np.ndarray,
                        upper: np.ndarray, names: Sequence[str], measured: bool,
                        tol: float = EXTRAPOLATION_TOL) -> str | None:
    """The selected point's distance outside the convex hull of the search points, when it
    was not measured and lies further out than ``tol`` of the box width per coordinate."""
    c = np.asarray(coefficients, dtype=float).reshape(-1)
    X = np.asarray(searched, dtype=float).reshape(-1, c.size)
    if measured or X.shape[0] <= c.size:
        return None
    width = float(np.mean(np.asarray(upper, float) - np.asarray(lower, float)))
    dist = _hull_distance(X, c)
    if dist <= tol * width * c.size:
        return None
    lo, hi = X.min(axis=0), X.max(axis=0)
    beyond = [f"{n} = {v:.3g} (evaluated {a:.3g} to {b:.3g})"
              for n, v, a, b in zip(names, c, lo, hi) if v < a - 1e-9 or v > b + 1e-9]
    where = f"; beyond the evaluated range: {', '.join(beyond)}" if beyond else ""
    return (f"the selected point c = {_fmt(c)} was never evaluated and lies outside the "
            f"region the search evaluated (L1 distance {dist:.3g} from the convex hull of "
            f"its {X.shape[0]} points{where}): its metrics are extrapolated by the "
            "surrogates; verify it (verify: 1 or more) before using it")


def tradeoff_check(best_known: np.ndarray, coefficients: np.ndarray, searched: np.ndarray,
                   tasks: Sequence[Task], tol: float = TRADEOFF_TOL) -> str | None:
    """A front point within ``tol`` of each task's evaluated range of the best front value
    on every task: one merge serves every preference."""
    F = np.asarray(best_known, dtype=float)
    if F.ndim != 2 or F.shape[1] < 2 or F.shape[0] == 0:
        return None
    signs = np.array([t.sign for t in tasks], dtype=float)
    G = F * signs  # larger is better on every column
    ideal = G.max(axis=0)
    Y = np.asarray(searched, dtype=float).reshape(-1, F.shape[1])
    span = np.ptp(Y, axis=0) if Y.shape[0] > 1 else np.ptp(F, axis=0)
    span = np.where(span > 0, span, np.maximum(np.abs(ideal), 1.0) * 1e-9)
    gap = ((ideal - G) / span).max(axis=1)
    k = int(np.argmin(gap))
    if gap[k] > tol:
        return None
    return (f"no trade-off between the tasks: one merge serves every preference, c = "
            f"{_fmt(coefficients[k])} with metrics {_fmt(F[k])}, within {tol:.0%} of each "
            "task's evaluated range of the best front value on every task")


def interpolation_check(n_points: int, n_params: int, surrogate: str,
                        interpolates: bool = True) -> str | None:
    """A surrogate that ``interpolates`` at its parameter count
    (:attr:`~mapframe.surrogates.base.Surrogate.interpolates_at_n_params`: the quadratics, not
    the ``gp``) fitted to exactly ``n_params`` evaluations: it reproduces them, noise
    included. On the peers benchmark's pilots such a quadratic at 3 tasks scored 0.46-0.93 of
    the true front's hypervolume where the gp scored 0.84-0.90 (docs/adaptive-sampling.md),
    which is why ``surrogate: auto`` takes the gp there when gpytorch is installed."""
    if not interpolates or n_points != n_params:
        return None
    way_out = INSTALL_GP_HINT if surrogate == "auto" else "use surrogate: gp"
    return (f"the {surrogate} surrogate has {n_params} parameters per task and was fitted to "
            f"exactly {n_points} evaluations: it interpolates them, noise included, so its "
            f"front may be far off; raise the budget (the paper uses about {2 * n_params}) or "
            f"{way_out}")


def unused_stored_check(stored: Sequence[Evaluation], used: History, study_name: str,
                        sampler: str, seed: int) -> str | None:
    """Finished search evaluations in the store (``stored``: all of study ``study_name``'s)
    that this run never proposed, so its fit did not see them: the study was run before
    with another seed, sampler or budget, or an adaptive sampler with another number of
    workers (a store reuses a point only when it is proposed again). Nothing is lost (they
    stay stored), but the user may have paid for them twice. A drawn seed (``seed=None``) is
    the stored study's, so the check applies to it too."""
    unused = [e for e in stored
              if e.ok and e.phase == "search" and used.get(e.key, "search") is None]
    if not unused:
        return None
    start = (" and the front sampler starts with a Latin hypercube (design 'sobol' before) "
             "and proposes rounds of 1 below a search budget of 3 (N + 1) (batch 3 before)"
             if sampler == "front" else "")
    return (f"{len(unused)} finished search evaluations stored for study {study_name!r} were "
            f"not proposed by this run (sampler {sampler!r}, seed {seed}), so they went "
            "unused: a study reuses stored points only with the seed, sampler and budget that "
            "proposed them, and an adaptive sampler's rounds only with the same number of "
            "workers (a round holds at least one point per worker) (the default sampler is "
            f"'auto' since 2026-12-06, 'sobol' before{start}: name the one they were made "
            "with), or give this run another study_name")
