"""Pareto polish: move a solver's candidate points onto the surrogates' Pareto front.

A genetic solver's final population lies *near* the Pareto front of the surrogate problem,
not on it: on exact quadratics NSGA-III's front points typically lose 1e-3 to 1e-2 on every
task against a point of the box that is better on all of them. The surrogates are smooth and
cheap, so every candidate ``x0`` is polished with a local solve of the scalarised problem

    maximise  phi(c) = softmin_mu(g(c)) + rho * sum_i g_i(c)     over the box,
    g_i(c)  = s_i * (m_i(c) - m_i(x0)) / r_i                     (normalised gain on task i)

where ``s_i`` is +1 for a maximised and -1 for a minimised task, ``r_i`` the task's range
over the candidates' non-dominated set and ``softmin_mu(g) = -mu log sum_i exp(-g_i / mu)`` a
smooth minimum (within ``mu log T`` of ``min_i g_i``). ``phi`` is strictly increasing in every
gain, so its maximiser is Pareto-optimal (locally, for surrogates that are not concave), and
because ``softmin`` is close to the minimum it is, up to ``mu log T``, the achievement
(augmented Chebyshev) point of ``x0``: the point of the front reached by improving every
task of ``x0`` by the same normalised amount. So ``max_c min_i g_i(c)`` is also the
**improvement check**: when the point found improves every task by more than ``tolerance``
(in units of ``r_i``), ``x0`` is dominated. :func:`polish_front` replaces ``x0`` by the point
found whenever that point dominates it (no task worse, one better by more than
``tolerance``); the other points are Pareto-optimal within the tolerance and stay.

All candidates are solved together, so that every step costs one ``predict`` call: a
projected Newton method on the box (Bertsekas, 1982), with gradients by central and
Hessians by forward finite differences of ``predict`` (stencils kept inside the box; where
``predict`` carries its exact derivatives, a
:class:`~mapframe.solvers._common.PredictWithDerivatives` such as a study's quadratic
surrogates hand the solver, those are taken at the stencils' centres instead, so a step costs
one ``predict`` row per point rather than ``1 + 2N + N(N-1)/2``), a
saddle-free regularisation of the Hessian for surrogates that are not concave, an Armijo
search along the projection arc evaluated for all step lengths at once, and a decreasing
``mu`` (continuation) down to ``tolerance / (4 log T)``. Points still moving after
``_MAX_ITER`` Newton steps of a stage (slow progress where many tasks nearly tie on a
surrogate that is not concave) restart from where they stopped, at most twice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from mapframe.errors import EvaluationError
from mapframe.metrics import pareto_mask
from mapframe.problem import SearchSpace
from mapframe.solvers._common import Derivatives, Predict, _finish, _predict_checked
from mapframe.solvers.base import SolverResult

__all__ = ["DEFAULT_TOLERANCE", "improve", "polish_front"]

#: Default ``tolerance`` of the polish: a returned point may be improvable on every task by
#: at most this fraction of the task's range over the front.
DEFAULT_TOLERANCE = 1e-6
# Finite-difference step in units of the box's width per coefficient.
_FD_STEP = 1e-4
# Weight of the sum of the gains (the "augmented" part of the Chebyshev scalarisation): keeps
# the points found properly Pareto-optimal where min_i g_i alone has flat directions.
_RHO = 1e-4
# Step lengths of the line search: 1, then 1/4, ..., 4**-14 in one predict call.
_STEPS = 4.0 ** -np.arange(15)
# Armijo constant of the line search.
_ARMIJO = 1e-4
# Newton steps per value of mu at most.
_MAX_ITER = 40
# A point's Newton iterations for one mu stop when the Newton decrement is below this share
# of mu (the objective is then within about that much of its maximum).
_DECREMENT = 1e-2
# Values of mu before the final one (tolerance / (4 log T)): each stage starts from the last.
_MUS = (1e-3, 1e-5)
# The finite-difference Hessians are recomputed every this many Newton steps (the gradients
# every step); in between the last ones are reused (exact for quadratic surrogates).
_HESS_EVERY = 3
# Restarts, from where they stopped, of the points still moving after _MAX_ITER Newton steps
# in some stage (slow progress where many tasks nearly tie on a surrogate that is not concave).
_RESTARTS = 2
# Rows per predict call at most (as for the grid solver): bounds a surrogate's memory.
_PREDICT_ROWS = 16384


def _task_scale(G: np.ndarray) -> np.ndarray:
    """Per-task normalisation: the range of each task over the non-dominated rows of ``G``
    (metrics in maximisation form)."""
    front = G[pareto_mask(G)] if len(G) > 1 else G
    span = np.ptp(front, axis=0)
    floor = 1e-9 * np.maximum(np.max(np.abs(G), axis=0), 1.0)
    # A task constant over the front still gets a scale: its range over all candidates, or a
    # tiny fraction of its magnitude.
    span = np.where(span > floor, span, np.maximum(np.ptp(G, axis=0), floor))
    return span


def _softmin(G: np.ndarray, mu: float) -> tuple[np.ndarray, np.ndarray]:
    """``-mu log sum exp(-G / mu)`` per row and its gradient (the softmax weights)."""
    low = G.min(axis=-1, keepdims=True)
    E = np.exp(-(G - low) / mu)
    total = E.sum(axis=-1, keepdims=True)
    return (low - mu * np.log(total))[..., 0], E / total


class _Scalarised:
    """The batch of scalarised problems in unit coordinates ``u = (c - lower) / width``."""

    def __init__(self, predict: Predict, space: SearchSpace, signs: np.ndarray,
                 base: np.ndarray, scale: np.ndarray, n_obj: int) -> None:
        self.predict = predict
        self.lower, self.width = space.lower, space.upper - space.lower
        self.signs, self.scale, self.n_obj = signs, scale, n_obj
        self.base = base  # (K, T) metrics of the starting points, maximisation form
        self.n_evaluations = 0
        # Exact derivatives of predict, where it carries them (PredictWithDerivatives).
        self.exact: Derivatives | None = getattr(predict, "derivatives", None)

    def _predict_gains(self, C: np.ndarray, base: np.ndarray) -> np.ndarray:
        """Normalised gains ``(M, T)`` at the box points ``C`` over the metrics ``base``."""
        F = np.concatenate([_predict_checked(self.predict, C[i : i + _PREDICT_ROWS], self.n_obj)
                            for i in range(0, len(C), _PREDICT_ROWS)])
        self.n_evaluations += len(C)
        return (F * self.signs - base) / self.scale

    def gains(self, U: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Normalised gains ``(K', S, T)`` at ``U`` ``(K', S, N)`` for the candidates ``idx``."""
        k, s, n = U.shape
        C = self.lower + U.reshape(-1, n) * self.width
        base = np.repeat(self.base[idx], s, axis=0)
        return self._predict_gains(C, base).reshape(k, s, -1)

    def derivatives(self, U: np.ndarray, idx: np.ndarray,
                    fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Jacobians ``(K', T, N)`` of the gains at ``U`` and, for the rows where ``fresh``,
        Hessians ``(F, T, N, N)``, by finite differences on stencils kept inside the unit
        box, all in one ``predict`` call (central differences for the gradient, forward
        differences for the mixed second derivatives)."""
        k, n = U.shape
        h = _FD_STEP
        centre = np.clip(U, h, 1.0 - h)
        if self.exact is not None:
            return self._exact_derivatives(centre, fresh)
        E = np.eye(n) * h
        iu, ju = np.triu_indices(n, 1)
        star = np.concatenate([centre[:, None, :], centre[:, None, :] + E,
                               centre[:, None, :] - E], axis=1)  # (k, 1 + 2n, n)
        pairs = centre[fresh][:, None, :] + E[iu] + E[ju]  # (F, n(n-1)/2, n)
        flat = np.concatenate([star.reshape(-1, n), pairs.reshape(-1, n)])
        base = np.concatenate([np.repeat(self.base[idx], 1 + 2 * n, axis=0),
                               np.repeat(self.base[idx[fresh]], iu.size, axis=0)])
        G = self._predict_gains(self.lower + flat * self.width, base)
        S = G[: star.shape[0] * star.shape[1]].reshape(k, 1 + 2 * n, -1)
        g0, gp, gm = S[:, 0], S[:, 1 : n + 1], S[:, n + 1 :]
        jac = np.swapaxes((gp - gm) / (2 * h), 1, 2)
        g0, gp, gm = g0[fresh], gp[fresh], gm[fresh]
        hess = np.zeros((len(g0), self.n_obj, n, n))
        diag = np.swapaxes((gp - 2 * g0[:, None, :] + gm) / h**2, 1, 2)
        hess[:, :, np.arange(n), np.arange(n)] = diag
        if iu.size:
            P = G[star.shape[0] * star.shape[1] :].reshape(len(g0), iu.size, self.n_obj)
            off = np.swapaxes((P - gp[:, iu] - gp[:, ju] + g0[:, None, :]) / h**2, 1, 2)
            hess[:, :, iu, ju] = off
            hess[:, :, ju, iu] = off
        return jac, hess

    def _exact_derivatives(self, centre: np.ndarray,
                           fresh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`derivatives` from ``predict``'s exact derivatives, at the same points as the
        stencils' centres (no ``predict`` call): for quadratic surrogates the finite
        differences are exact too, so both agree up to rounding."""
        assert self.exact is not None
        k, n = centre.shape
        C = self.lower + centre * self.width
        J, H = (np.asarray(a, dtype=float) for a in self.exact(C))
        if J.shape != (k, self.n_obj, n) or H.shape not in (
                (k, self.n_obj, n, n), (self.n_obj, n, n)):
            raise EvaluationError(
                f"predict.derivatives returned shapes {J.shape} and {H.shape} for {k} points, "
                f"{self.n_obj} tasks and {n} coefficients; they must be {(k, self.n_obj, n)} "
                f"and {(k, self.n_obj, n, n)} (or {(self.n_obj, n, n)})")
        if not (np.all(np.isfinite(J)) and np.all(np.isfinite(H))):
            raise EvaluationError("predict.derivatives returned NaN or infinite values")
        # Chain rule to the normalised gains in unit coordinates.
        factor = (self.signs / self.scale)[:, None]  # (T, 1)
        jac = J * factor * self.width
        H = H[fresh] if H.ndim == 4 else np.broadcast_to(H, (int(fresh.sum()), *H.shape))
        hess = H * factor[:, :, None] * np.outer(self.width, self.width)
        return jac, hess


def _phi(G: np.ndarray, mu: float) -> np.ndarray:
    value, _ = _softmin(G, mu)
    return value + _RHO * G.sum(axis=-1)


def _armijo(prob: _Scalarised, u: np.ndarray, g: np.ndarray, d: np.ndarray, grad: np.ndarray,
            base: np.ndarray, steps: np.ndarray, mu: float,
            idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The longest of ``steps`` along the projection arc ``P(u + a d)`` with an Armijo ascent
    of ``phi``: new points, their gains, and whether a step was found (else ``u``, ``g``)."""
    trial = np.clip(u[:, None, :] + steps[None, :, None] * d[:, None, :], 0.0, 1.0)
    gt = prob.gains(trial, idx)
    gain = _phi(gt, mu) - base[:, None]
    expected = np.einsum("kn,ksn->ks", grad, trial - u[:, None, :])
    ok = (gain >= _ARMIJO * expected) & (gain > 0)
    moved = ok.any(axis=1)
    first = np.argmax(ok, axis=1)
    rows = np.arange(len(u))
    u_new = np.where(moved[:, None], trial[rows, first], u)
    g_new = np.where(moved[:, None], gt[rows, first], g)
    return u_new, g_new, moved


def _newton_stage(prob: _Scalarised, U: np.ndarray, G: np.ndarray, mu: float,
                  idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Projected Newton ascent of ``phi`` for one ``mu``; returns the new ``U``, gains, and
    a mask of the points still moving after ``_MAX_ITER`` steps."""
    U, G = U.copy(), G.copy()
    active = np.arange(len(U))
    hess_all = np.zeros((len(U), G.shape[1], U.shape[1], U.shape[1]))
    age = np.full(len(U), _HESS_EVERY)  # Newton steps since each point's Hessians were computed
    for _ in range(_MAX_ITER):
        if active.size == 0:
            break
        u, g = U[active], G[active]
        fresh = age[active] >= _HESS_EVERY
        jac, hess_all[active[fresh]] = prob.derivatives(u, idx[active], fresh)
        age[active] = np.where(fresh, 1, age[active] + 1)
        hess = hess_all[active]
        _, w = _softmin(g, mu)
        wr = w + _RHO
        grad = np.einsum("kt,ktn->kn", wr, jac)
        wj = np.einsum("kt,ktn->kn", w, jac)
        # (batched matrix products: einsum's loops over these were most of a step's time)
        k, n = u.shape
        cov = np.swapaxes(jac * w[:, :, None], 1, 2) @ jac - wj[:, :, None] * wj[:, None, :]
        whess = (wr[:, None, :] @ hess.reshape(k, hess.shape[1], n * n)).reshape(k, n, n)
        M = cov / mu - whess  # minus the Hessian of phi
        # Projected Newton: coefficients on a bound whose gradient points out stay fixed.
        fixed = ((u <= 1e-12) & (grad < 0)) | ((u >= 1.0 - 1e-12) & (grad > 0))
        free = ~fixed
        Mf = M * (free[:, :, None] & free[:, None, :])
        Mf[fixed] = 0.0
        diag = np.arange(n)
        Mf[:, diag, diag] = np.where(fixed, 1.0, Mf[:, diag, diag])
        lam, V = np.linalg.eigh(Mf)
        top = np.max(np.abs(lam), axis=1, keepdims=True)
        lam = np.maximum(np.abs(lam), 1e-10 * top + 1e-300)
        gf = np.where(free, grad, 0.0)
        d = (V @ ((np.swapaxes(V, 1, 2) @ gf[:, :, None]) / lam[:, :, None]))[:, :, 0]
        d[fixed] = 0.0
        # Armijo search along the projection arc: the full step first, then every shorter
        # step length at once for the candidates where the full step failed.
        base = _phi(g, mu)
        u_new, g_new, moved = _armijo(prob, u, g, d, grad, base, _STEPS[:1], mu, idx[active])
        retry = np.flatnonzero(~moved)
        if retry.size:
            u2, g2, m2 = _armijo(prob, u[retry], g[retry], d[retry], grad[retry], base[retry],
                                 _STEPS[1:], mu, idx[active[retry]])
            u_new[retry], g_new[retry], moved[retry] = u2, g2, m2
        U[active[moved]] = u_new[moved]
        G[active[moved]] = g_new[moved]
        # Converged: no ascent step with fresh Hessians (with older ones, they are recomputed
        # first), or a step that changes phi or the point by a negligible amount.
        decrement = np.einsum("kn,kn->k", grad, d)
        age[active[~moved & ~fresh]] = _HESS_EVERY
        done = (~moved & fresh) | (decrement < _DECREMENT * mu) | (
            np.max(np.abs(u_new - u), axis=1) < 1e-13)
        active = active[~done]
    unconverged = np.zeros(len(U), dtype=bool)
    unconverged[active] = True
    return U, G, unconverged


def improve(
    predict: Predict,
    X: np.ndarray,
    space: SearchSpace,
    directions: Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
    scale: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, int]:
    """The improvement check and polish of the points ``X`` (K, N) on the surrogates.

    From each point ``x0``, maximises (locally) the smooth minimum of the normalised gains
    over the box, see the module docstring. Returns the points found ``(K, N)``, their gains
    ``(K, T)`` over ``x0`` in units of ``scale`` (default: each task's range over the
    non-dominated points of ``X``), and the number of ``predict`` rows used. A point whose
    minimum gain exceeds ``tolerance`` is dominated by the point found.
    """
    X = np.clip(np.asarray(X, dtype=float).reshape(-1, space.n_dims), space.lower, space.upper)
    n_obj = len(directions)
    signs = np.array([1.0 if d == "max" else -1.0 for d in directions])
    F0 = _predict_checked(predict, X, n_obj) * signs
    if scale is None:
        scale = _task_scale(F0)
    prob = _Scalarised(predict, space, signs, F0.copy(), np.asarray(scale, dtype=float),
                       n_obj)
    prob.n_evaluations = len(X)
    U = (X - space.lower) / (space.upper - space.lower)
    G = np.zeros((len(X), n_obj))
    mu_final = tolerance / (4.0 * max(math.log(n_obj), 1.0))
    mus = [m for m in _MUS if m > 3 * mu_final] + [mu_final]
    idx = np.arange(len(X))
    restarted = False
    for restart in range(_RESTARTS + 1):
        unconverged = np.zeros(len(idx), dtype=bool)
        u, g = U[idx], G[idx]
        for mu in mus:
            u, g, stuck = _newton_stage(prob, u, g, mu, idx)
            unconverged |= stuck
        U[idx], G[idx] = u, g
        idx = idx[unconverged]
        if idx.size == 0 or restart == _RESTARTS:
            break
        # Points still moving restart from where they are, with gains measured from there
        # (continuation from the largest mu again); their gains over x0 are recomputed below.
        prob.base[idx] = prob.base[idx] + g[unconverged] * prob.scale
        G[idx] = 0.0
        restarted = True
    X_new = np.clip(space.lower + U * (space.upper - space.lower), space.lower, space.upper)
    if restarted:
        G = (_predict_checked(predict, X_new, n_obj) * signs - F0) / prob.scale
        prob.n_evaluations += len(X)
    return X_new, G, prob.n_evaluations


def polish_front(
    predict: Predict,
    result: SolverResult,
    space: SearchSpace,
    directions: Sequence[str],
    tolerance: float = DEFAULT_TOLERANCE,
) -> SolverResult:
    """Polish a solver's result: replace every dominated point by the point the improvement
    check found, and keep the distinct non-dominated points (:func:`improve`).

    ``result.diagnostics`` reports ``tolerance``, ``n_candidates`` (points checked),
    ``dominated_share_before`` (share of them improvable by more than ``tolerance`` on every
    task), ``n_polished`` (points replaced), ``max_gain_before`` (largest minimum gain found,
    in units of each task's range) and ``polish_evaluations`` (``predict`` rows used).
    """
    X = result.X
    if len(X) == 0:
        return result
    X_new, G, n_eval = improve(predict, X, space, directions, tolerance)
    low, high = G.min(axis=1), G.max(axis=1)
    dominated = low > tolerance
    replaced = (low >= 0.0) & (high > tolerance)
    X_out = np.where(replaced[:, None], X_new, X)
    # Several candidates may reach the same point: keep one of each (up to 1e-9 of the box).
    width = space.upper - space.lower
    _, first = np.unique(np.round((X_out - space.lower) / width, 9), axis=0, return_index=True)
    X_out = X_out[np.sort(first)]
    finished = _finish(predict, X_out, space, directions, result.n_evaluations + n_eval)
    diagnostics: dict[str, Any] = {
        **result.diagnostics,
        "polished": True,
        "tolerance": float(tolerance),
        "n_candidates": len(X),
        "dominated_share_before": float(dominated.mean()),
        "n_polished": int(replaced.sum()),
        "max_gain_before": float(max(low.max(), 0.0)),
        "polish_evaluations": int(n_eval),
    }
    return replace(finished, diagnostics=diagnostics)
