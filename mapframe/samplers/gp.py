"""Bayesian sampling with Gaussian processes (``"gp"``): multi-objective expected
hypervolume improvement, greedy and batched (Monte-Carlo qEHVI).

:class:`GPSampler` documents the algorithm. The single-point improvement and its exact table
live in :mod:`mapframe.hypervolume` (re-exported here: :func:`hypervolume_improvement`); the
sampler's batched form adds, per posterior sample, the sampled values of the points already
chosen in the batch: exact for one and two objectives; for three or more exact by
inclusion–exclusion over those points while at most ``_MAX_EXACT_PENDING`` are chosen and the
table has at most ``_MAX_TABLE_CELLS`` nodes, else by Monte-Carlo integration over fixed
uniform points (common to all candidates).
"""

from __future__ import annotations

import itertools
import math
from typing import ClassVar, Literal

import numpy as np

from mapframe.history import History
from mapframe.hypervolume import MAX_TABLE_CELLS as _MAX_TABLE_CELLS
from mapframe.hypervolume import FrontTable as _FrontTable
from mapframe.hypervolume import _hvi_1d, _hvi_2d, hypervolume_improvement
from mapframe.metrics import pareto_mask
from mapframe.problem import SearchSpace
from mapframe.samplers.base import CheckedSampler, SamplerContext
from mapframe.samplers.space_filling import check_design, fresh_design, sobol_unit
from mapframe.settings import int_setting
from mapframe.surrogates.gp import (
    FittedGP,
    _require_gpytorch,
    check_noise_floor,
    check_nu,
    check_restarts,
    fit_gp,
)
from mapframe.surrogates.quadratic import _one_blas_thread

__all__ = ["GPSampler", "greedy_qehvi", "hypervolume_improvement", "scaled_front"]

#: How the sampler's setting errors name it.
_WHO = "gp sampler"
#: The points per adaptive round that ``batch: "auto"`` means.
AUTO_BATCH = 3

#: Most already-chosen points handled exactly (2^q inclusion–exclusion terms) for T >= 3.
_MAX_EXACT_PENDING = 3
#: Uniform points per posterior sample of the Monte-Carlo fallback for T >= 3.
_MC_POINTS = 256
#: Candidates handled at once in the vectorised improvement computations.
_CHUNK = 256
#: Candidates closer than this (max-norm, unit cube) to an evaluated point are dropped.
_SAME_POINT = 1e-9
#: Widths (unit cube) of the Gaussian perturbations around Pareto-optimal points, cycled.
_LOCAL_SIGMAS = (0.02, 0.05, 0.1, 0.2)
#: Reference point margin: observed worst minus this share of the observed range.
_REF_MARGIN = 0.1


# --------------------------------------------------------------------------- validation
def gp_fit_settings(nu: float, restarts: int, noise_floor: float) -> tuple[float, int, float]:
    """A GP-based sampler's checked fit settings ``(nu, restarts, noise_floor)``, as for
    :class:`~mapframe.surrogates.gp.GPSurrogate`; gpytorch must be installed."""
    out = (check_nu(nu), check_restarts(restarts), check_noise_floor(noise_floor))
    _require_gpytorch("sampler")
    return out


# --------------------------------------------------------------------------- hypervolume
def _dominated_by(P: np.ndarray, F: np.ndarray) -> np.ndarray:
    """``(len(P),)``: is each row of ``P`` weakly dominated by some row of ``F`` (maximising)?"""
    out = np.zeros(P.shape[0], dtype=bool)
    for f in F:
        below = P[:, 0] <= f[0]
        for t in range(1, P.shape[1]):
            below &= P[:, t] <= f[t]
        out |= below
    return out


def _hvi_pending_exact(
    Y: np.ndarray, Q: np.ndarray, table: _FrontTable
) -> np.ndarray:
    """``(S, M)`` improvements over ``front ∪ Q_s`` from the front's table, by
    inclusion–exclusion over the pending points ``Q (S, q, T)``::

        HVI(y | P ∪ Q) = Σ_{A ⊆ Q} (−1)^{|A|} G_P(min(y, min A))
    """
    q = Q.shape[1]
    out = table(Y)
    live = np.nonzero(out > 0)  # y dominated by the front: no improvement, whatever Q is
    if q == 0 or live[0].size == 0:
        return out
    Yl = Y[live]  # (n_live, T)
    for size in range(1, q + 1):
        sign = -1.0 if size % 2 else 1.0
        for subset in itertools.combinations(range(q), size):
            cap = Q[:, list(subset), :].min(axis=1)  # (S, T)
            out[live] += sign * table(np.minimum(Yl, cap[live[0]]))
    return np.maximum(out, 0.0)


def _hvi_mc(
    Y: np.ndarray, P: np.ndarray, Q: np.ndarray, ref: np.ndarray, W: np.ndarray
) -> np.ndarray:
    """``(S, M)`` Monte-Carlo improvements over ``P ∪ Q_s``.

    ``W (S, m, T)`` holds fixed uniform points of the unit cube, mapped into the box
    ``[ref, upper]`` (``upper``: the largest value of every objective among ``Y``, ``P`` and
    ``Q``). The improvement of ``y`` in sample ``s`` is the box volume times the share of
    ``W[s]`` that ``y`` dominates and ``P ∪ Q_s`` does not: the same points for every
    candidate (common random numbers), so candidates are compared without extra noise.
    """
    S, M, T = Y.shape
    upper = np.max(np.concatenate([Y.reshape(-1, T), P, Q.reshape(-1, T), ref[None] + 1e-12]),
                   axis=0)
    pts = ref + W * (upper - ref)  # (S, m, T)
    vol = float(np.prod(upper - ref)) / W.shape[1]
    free = ~_dominated_by(pts.reshape(-1, T), P).reshape(S, -1)
    out = np.zeros((S, M))
    for s in range(S):
        Ws = pts[s][free[s] & ~_dominated_by(pts[s], Q[s])]
        if Ws.shape[0] == 0:
            continue
        live = np.flatnonzero(~_dominated_by(Y[s], np.concatenate([P, Q[s]])))
        for i in range(0, live.size, _CHUNK):
            rows = live[i : i + _CHUNK]
            inside = np.ones((rows.size, Ws.shape[0]), dtype=bool)
            for t in range(T):
                inside &= Ws[None, :, t] <= Y[s, rows, t, None]
            out[s, rows] = vol * inside.sum(axis=1)
    return out


def _batch_hvi(
    Y: np.ndarray,
    P: np.ndarray,
    Q: np.ndarray,
    ref: np.ndarray,
    table: _FrontTable | None = None,
    W: np.ndarray | None = None,
) -> np.ndarray:
    """``(S, M)`` improvements of ``Y (S, M, T)`` over ``P (p, T) ∪ Q_s`` (``Q (S, q, T)``).

    Exact for T <= 2; for T >= 3 exact through ``table`` (the front ``P``'s
    :class:`_FrontTable`) when given and ``q`` is small, else Monte Carlo over ``W``.
    """
    S, _, T = Y.shape
    if T <= 2:
        F = np.concatenate([np.broadcast_to(P, (S, *P.shape)), Q], axis=1)
        return _hvi_1d(Y, F, ref) if T == 1 else _hvi_2d(Y, F, ref)
    if table is not None and Q.shape[1] <= _MAX_EXACT_PENDING:
        return _hvi_pending_exact(Y, Q, table)
    if W is None:
        raise ValueError("the Monte-Carlo improvement needs uniform points W")
    return _hvi_mc(Y, P, Q, ref, W)


def scaled_front(
    Y: np.ndarray, signs: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The measured metrics ``Y`` as maximised objectives scaled by their observed range
    (worst → 0, best → 1; ``signs``: +1 for a task maximised, -1 minimised): ``(lo, span,
    P, pareto)`` with ``(signs * Y - lo) / span`` the scaled values, ``P`` its Pareto front
    and ``pareto`` the mask of the rows on it (what :func:`greedy_qehvi` takes)."""
    G = Y * signs
    lo = G.min(axis=0)
    span = G.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    Z = (G - lo) / span
    pareto = pareto_mask(Z)
    return lo, span, Z[pareto], pareto


def greedy_qehvi(
    n: int,
    gps: list[FittedGP],
    Xc: np.ndarray,
    signs: np.ndarray,
    lo: np.ndarray,
    span: np.ndarray,
    P: np.ndarray,
    n_samples: int,
    rng: np.random.Generator,
) -> list[int]:
    """Indices of ``n`` of the candidates ``Xc`` chosen by greedy sequential q-EHVI.

    ``gps`` are the tasks' fitted GPs (metric units), ``signs`` ``+1`` for a task maximised
    and ``-1`` minimised; ``lo`` and ``span`` scale the maximised objectives to the unit
    range in which ``P`` (the observed Pareto front) lies; the reference point is a tenth of
    that range below the worst. ``n_samples`` joint posterior samples from standard normals
    drawn from ``rng`` (then, for 3+ objectives where needed, uniform points for the
    Monte-Carlo improvement), so the same ``rng`` gives the same picks.
    """
    T, M = len(gps), Xc.shape[0]
    ref = np.full(T, -_REF_MARGIN)
    mu = np.empty((T, M))
    var = np.empty((T, M))
    for j, gp in enumerate(gps):
        m, v = gp.mean_var(Xc)
        mu[j] = (signs[j] * m - lo[j]) / span[j]
        var[j] = v / span[j] ** 2
    S = int(n_samples)
    base = rng.standard_normal((T, M, S))
    table = W = None
    if T >= 3:
        upper = np.maximum(np.max(mu + 10.0 * np.sqrt(var), axis=1), P.max(axis=0))
        if _FrontTable.cells(P, ref) <= _MAX_TABLE_CELLS:
            table = _FrontTable(P, ref, upper)
        if table is None or n - 1 > _MAX_EXACT_PENDING:
            W = rng.random((S, _MC_POINTS, T))
    return _greedy(n, gps, Xc, span, mu, var, base, P, ref, table, W)


def _greedy(
    n: int,
    gps: list[FittedGP],
    Xc: np.ndarray,
    span: np.ndarray,
    mu: np.ndarray,
    var: np.ndarray,
    base: np.ndarray,
    P: np.ndarray,
    ref: np.ndarray,
    table: _FrontTable | None,
    W: np.ndarray | None,
) -> list[int]:
    """Greedy sequential q-EHVI over the candidates; returns the chosen indices.

    Per task, joint samples at the candidates are ``mu + L z_chosen + sqrt(d) z_own`` with
    ``L`` the columns of an incremental (pivoted) Cholesky factor of the posterior
    covariance over the chosen points and ``d`` the conditional variance left: exactly
    the joint posterior of (chosen points, each candidate).
    """
    T, M = mu.shape
    S = base.shape[2]
    L = np.zeros((T, M, 0))
    d = var.copy()
    chosen: list[int] = []
    Q = np.empty((S, 0, T))
    for _ in range(min(n, M)):
        zc = base[:, chosen, :]  # (T, q, S)
        samples = mu[:, :, None] + np.einsum("tmq,tqs->tms", L, zc)
        samples += np.sqrt(d)[:, :, None] * base
        Ysamp = np.transpose(samples, (2, 1, 0))  # (S, M, T)
        acq = _batch_hvi(Ysamp, P, Q, ref, table, W).mean(axis=0)
        acq[chosen] = -np.inf
        best = int(np.argmax(acq))
        if not acq[best] > 1e-12:  # nothing improves: explore where most is unknown
            spread = d.sum(axis=0)
            spread[chosen] = -np.inf
            best = int(np.argmax(spread))
        chosen.append(best)
        Q = np.concatenate([Q, Ysamp[:, best, None, :]], axis=1)
        cols = np.zeros((T, M, 1))
        for j, gp in enumerate(gps):
            if d[j, best] > 1e-12:
                c = gp.cov(Xc, Xc[best : best + 1])[:, 0] / span[j] ** 2
                c = (c - L[j] @ L[j, best]) / math.sqrt(d[j, best])
                cols[j, :, 0] = c
        L = np.concatenate([L, cols], axis=2)
        d = np.maximum(d - cols[:, :, 0] ** 2, 0.0)
        d[:, best] = 0.0
    return chosen


# --------------------------------------------------------------------------- sampler
class GPSampler(CheckedSampler):
    """Bayesian multi-objective sampling with one Gaussian process per task (``"gp"``).

    Call order (driven by :class:`~mapframe.study.MergeStudy`, see
    :class:`~mapframe.samplers.base.Sampler`)::

        sampler.setup(context)                         # tasks (directions), box, surrogate
        n = sampler.batch_size(remaining, history, capacity)
        X = sampler.propose(n, space, history, rng)    # one round; evaluate; repeat

    **Rounds.** First an initial space-filling design: the first points of one scrambled
    Sobol' sequence drawn from ``rng`` (``design: sobol``, the default; ``design: lhs``, one
    optimised Latin hypercube of that size as the ``front`` sampler's default, scored level
    or lower here on the peers benchmark's pilot seeds; docs/adaptive-sampling.md); the
    same ``rng`` gives the same design, so a resumed study re-proposes, and reuses, the same
    points. Its size is ``initial``; ``"auto"`` is
    the study surrogate's :meth:`~mapframe.surrogates.base.Surrogate.n_params` (at least
    ``N + 1``), so that the study can fit its surrogate whatever happens next. While fewer
    successful evaluations than that exist, :meth:`batch_size` asks for the missing ones
    (failed points are replaced by further Sobol' points). Afterwards every round proposes
    ``max(batch, capacity)`` points (never more than remain).

    **Acquisition** (each adaptive round, a function of ``history.canonical()`` and ``rng``):

    1. fit one exact GP per task (:func:`~mapframe.surrogates.gp.fit_gp`; Matérn ``nu``, ARD,
       inputs mapped to the unit cube of the search box, outputs standardised);
    2. turn every task into a maximisation (``direction``) and scale it by its observed
       range (observed worst → 0, best → 1); the reference point is ``-0.1`` in every
       objective (worst minus a tenth of the range); the observed Pareto front is ``P``;
    3. candidates: ``n_candidates`` scrambled Sobol' points in the box (``"auto"``:
       ``min(256·N, 1024)``, at least ``4n``) plus half as many Gaussian perturbations of
       the Pareto-optimal evaluated points (widths 0.02–0.2 of the box, clipped to it);
       repeats and candidates within 1e-9 (unit cube) of an evaluated point are dropped;
    4. ``n_samples`` joint posterior samples of every task at the candidates, from fixed
       standard normals drawn from ``rng``: the joint samples are built with a Cholesky
       factor of the posterior covariance computed incrementally in the order the batch is
       chosen (a pivoted Cholesky), so only the covariances with the chosen points are needed;
    5. greedy sequential q-EHVI: for each of the ``n`` points, choose the candidate with the
       largest mean (over samples) hypervolume improvement over ``P`` plus the sampled
       values of the points already chosen in that sample. Improvements are exact for one
       and two objectives; for three or more they come from an exact table of the front's
       non-dominated volume and inclusion–exclusion over the chosen points, and from
       Monte-Carlo integration (256 fixed uniform points per sample, drawn from ``rng``)
       once more than 3 points are chosen or the front's table would be too large (about
       five or more objectives). When no candidate improves in any sample, the candidate
       with the largest remaining posterior variance (summed over tasks) is chosen.

    Settings: ``initial`` (size of the space-filling design, ``"auto"`` or an integer >= 2),
    ``design`` (``"sobol"`` or ``"lhs"``), ``batch`` (points per adaptive round: an integer
    >= 1, or ``"auto"``, 3 at every budget: the ``front`` sampler's budget rule was not
    piloted for this one),
    ``n_samples`` (posterior samples), ``n_candidates`` (Sobol' candidates), ``nu``,
    ``restarts`` and ``noise_floor`` (the GP fits, as for
    :class:`~mapframe.surrogates.gp.GPSurrogate`).

    Everything random comes from ``rng`` (never numpy's or torch's global state), and the GP
    fits are deterministic, so the same ``(history, rng)`` gives the same proposal, whatever
    the order of the history. A round's own cost is a GP fit per task plus the acquisition:
    well under a second for N <= 4, T <= 4 and 60 evaluations on two CPU cores. Needs
    gpytorch (``pip install 'mapframe[gp]'``).
    """

    name: ClassVar[str] = "gp"
    adaptive: ClassVar[bool] = True

    def __init__(
        self,
        initial: int | Literal["auto"] = "auto",
        batch: int | Literal["auto"] = 3,
        n_samples: int = 128,
        n_candidates: int | Literal["auto"] = "auto",
        nu: float = 2.5,
        restarts: int = 2,
        noise_floor: float = 1e-6,
        design: Literal["sobol", "lhs"] = "sobol",
    ) -> None:
        self.initial = int_setting(initial, "initial", 2, who=_WHO, auto=True)
        self.design = check_design(design, _WHO)
        self.batch = int_setting(batch, "batch", 1, who=_WHO, auto=True)
        self.n_samples = int_setting(n_samples, "n_samples", 1, who=_WHO)
        self.n_candidates = int_setting(n_candidates, "n_candidates", 1, who=_WHO,
                                        auto=True)
        self.nu, self.restarts, self.noise_floor = gp_fit_settings(nu, restarts, noise_floor)

    # ---- rounds
    def initial_size(self, context: SamplerContext) -> int:
        """The size of the initial space-filling design for ``context``."""
        n_dims = context.space.n_dims
        if self.initial != "auto":
            return int(self.initial)
        need = context.surrogate.n_params(n_dims) if context.surrogate is not None else 0
        return max(int(need), n_dims + 1)

    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        """The rest of the initial design while it is incomplete, then ``max(batch,
        capacity)``; never more than ``remaining`` (and at least 1)."""
        space = self._context.space if self._context is not None else SearchSpace.box(
            history.n_dims)
        done = history.X.shape[0]
        initial = self.initial_size(self.context_for(space, history))
        n = initial - done if done < initial else max(self.round_size(), int(capacity))
        return max(1, min(n, int(remaining)))

    def round_size(self) -> int:
        """The points per adaptive round: ``batch``, ``"auto"`` being 3 (the default; unlike
        the ``front`` sampler's, no budget rule was piloted for this sampler)."""
        return AUTO_BATCH if self.batch == "auto" else int(self.batch)

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return ``n`` points: the initial design's, or the greedy q-EHVI batch."""
        context = self.context_for(space, history)
        X, Y = history.canonical()
        initial = self.initial_size(context)
        if X.shape[0] < max(2, initial):
            return fresh_design(self.design, n, initial, space, history, rng)
        with _one_blas_thread():
            return self._ehvi(n, space, context, X, Y, history, rng)

    # ---- acquisition
    def _ehvi(
        self,
        n: int,
        space: SearchSpace,
        context: SamplerContext,
        X: np.ndarray,
        Y: np.ndarray,
        history: History,
        rng: np.random.Generator,
    ) -> np.ndarray:
        N, T = space.n_dims, Y.shape[1]
        box = (space.lower, space.upper)
        gps = [
            fit_gp(X, Y[:, j], bounds=box, nu=self.nu, noise_floor=self.noise_floor,
                   restarts=self.restarts)
            for j in range(T)
        ]
        signs = np.array([t.sign for t in context.tasks])
        lo, span, P, pareto = scaled_front(Y, signs)
        unit_obs = (X - space.lower) / (space.upper - space.lower)
        evaluated = np.array([e.coefficients for e in history if e.phase == "search"])
        unit_cand = self._candidates(n, N, unit_obs[pareto], evaluated, space, rng)
        Xc = np.clip(space.scale(unit_cand), space.lower, space.upper)
        return Xc[greedy_qehvi(n, gps, Xc, signs, lo, span, P, self.n_samples, rng)]

    def _candidates(
        self,
        n: int,
        N: int,
        pareto_unit: np.ndarray,
        evaluated: np.ndarray,
        space: SearchSpace,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """Sobol' points plus perturbed Pareto-optimal points (unit cube), minus evaluated ones."""
        n_sobol = (min(256 * N, 1024) if self.n_candidates == "auto"
                   else int(self.n_candidates))
        n_sobol = max(n_sobol, 4 * n)
        glob = sobol_unit(n_sobol, N, rng)
        n_local = n_sobol // 2
        centres = pareto_unit[np.arange(n_local) % len(pareto_unit)]
        sigmas = np.array(_LOCAL_SIGMAS)[np.arange(n_local) % len(_LOCAL_SIGMAS)]
        local = np.clip(centres + sigmas[:, None] * rng.standard_normal((n_local, N)), 0, 1)
        cand = np.unique(np.concatenate([glob, local]), axis=0)  # sorted, without repeats
        if evaluated.size:
            ev = (evaluated - space.lower) / (space.upper - space.lower)
            near = np.zeros(cand.shape[0], dtype=bool)
            for i in range(0, ev.shape[0], 64):
                gap = np.abs(cand[:, None, :] - ev[None, i : i + 64, :]).max(axis=2)
                near |= (gap < _SAME_POINT).any(axis=1)
            cand = cand[~near]
        return cand
