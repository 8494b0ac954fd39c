"""Bayesian MAP's adaptive bin sampler (Algorithm 3 of arXiv 2406.07529), ``name = "bins"``.

The coefficient box is cut into bins in hyperspherical coordinates about its lower corner;
each round, every bin is scored by how wrong the study's surrogate is there (leave-one-out
error plus bootstrap spread, an upper confidence bound) and the next few points are drawn
from bins picked with softmax probabilities of that score. See :class:`BinSampler`.

The module-level helpers (:func:`to_hyperspherical`, :func:`from_hyperspherical`,
:func:`radius_edges`, :func:`bin_index`, :func:`n_bins`, :func:`auto_angle_bins`) are the
binning itself, usable on their own.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import ClassVar, Literal

import numpy as np

from mapframe.errors import ConfigError, MapframeError
from mapframe.history import History, coefficient_key
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import CheckedSampler
from mapframe.samplers.space_filling import fresh_sobol
from mapframe.settings import int_setting, number_setting
from mapframe.surrogates.base import Surrogate

__all__ = [
    "BinSampler",
    "BinScores",
    "auto_angle_bins",
    "bin_index",
    "from_hyperspherical",
    "n_bins",
    "radius_edges",
    "to_hyperspherical",
]

#: How the sampler's setting errors name it.
_WHO = "bins sampler"

#: The pool of candidate points never exceeds this many points (it matters only for N >= 6).
MAX_POOL = 32768
#: At most this many pool points in all are used as bootstrap probes.
MAX_PROBES = 4096
#: Root-mean normalised LOO residuals below this count as "the surrogate is exact here".
_RESIDUAL_FLOOR = 1e-6
#: Points of the deterministic Sobol' sample the equal-volume radius edges are computed on.
_EDGE_SAMPLE = 2**14

Mode = Literal["ucb", "explore"]


# --------------------------------------------------------------------------- binning helpers
def to_hyperspherical(U: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Radius and angles of each row of ``U`` (``(M, N)``, or one point as a 1-D array).

    ``r = ||u||`` and, for ``k = 1 … N−1``, ``φ_k = atan2(||(u_{k+1}, …, u_N)||, u_k)``, so
    that ``u_1 = r cos φ_1``, ``u_2 = r sin φ_1 cos φ_2``, …, ``u_N = r sin φ_1 ⋯ sin φ_{N−1}``.
    For ``u >= 0`` (the unit cube) every angle lies in ``[0, π/2]``: ``(1, 0) -> φ = 0`` and
    ``(0, 1) -> φ = π/2``. Returns ``r`` with shape ``(M,)`` and the angles ``(M, N−1)``
    (no columns for ``N = 1``). At the origin the angles are 0.
    """
    U = np.asarray(U, dtype=float)
    if U.ndim == 1:
        U = U[None, :]
    if U.ndim != 2 or U.shape[1] < 1:
        raise ConfigError(f"points must be an (M, N) array, got shape {U.shape}")
    # tail[:, k] = ||U[:, k:]||
    tail = np.sqrt(np.cumsum((U * U)[:, ::-1], axis=1)[:, ::-1])
    r = tail[:, 0].copy()
    angles = np.arctan2(tail[:, 1:], U[:, :-1])
    return r, angles


def from_hyperspherical(r: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """The inverse of :func:`to_hyperspherical`: points ``(M, N)`` from ``r`` ``(M,)`` and
    ``angles`` ``(M, N−1)``."""
    r = np.atleast_1d(np.asarray(r, dtype=float))
    angles = np.asarray(angles, dtype=float)
    if angles.ndim == 1:
        angles = angles[None, :]
    if angles.shape[0] != r.shape[0]:
        raise ConfigError(f"{r.shape[0]} radii for {angles.shape[0]} rows of angles")
    n = angles.shape[1] + 1
    U = np.empty((r.shape[0], n))
    s = r.copy()
    for k in range(n - 1):
        U[:, k] = s * np.cos(angles[:, k])
        s = s * np.sin(angles[:, k])
    U[:, n - 1] = s
    return U


def auto_angle_bins(n_dims: int) -> int:
    """Angle intervals per angle for ``angle_bins="auto"``: 8 for N=2, 4 for N=3, 3 beyond.

    (N=1 has no angles; 1 is returned.) These keep the bin count at 16, 32 and 54 for N=2, 3
    and 4 with two radius bins: enough resolution, few enough bins to hold evaluated points.
    """
    return {1: 1, 2: 8, 3: 4}.get(int(n_dims), 3)


@lru_cache(maxsize=64)
def _radius_edges(n_dims: int, radius_bins: int) -> tuple[float, ...]:
    top = math.sqrt(n_dims)
    if radius_bins == 1:
        return (0.0, top)
    if n_dims == 1:
        return tuple(float(v) for v in np.linspace(0.0, 1.0, radius_bins + 1))
    # Quantiles of ||u|| over a deterministic low-discrepancy sample of the cube (the volume
    # of the cube inside a ball has no simple closed form for N >= 3).
    from scipy.stats import qmc  # scipy.stats costs ~1 s to import: only when needed

    engine = qmc.Sobol(d=n_dims, scramble=False)
    r = np.linalg.norm(engine.random(_EDGE_SAMPLE), axis=1)
    inner = np.quantile(r, np.arange(1, radius_bins) / radius_bins)
    return (0.0, *(float(v) for v in inner), top)


def radius_edges(n_dims: int, radius_bins: int) -> np.ndarray:
    """The ``radius_bins + 1`` edges of the radius intervals over ``[0, sqrt(N)]``.

    Equal *volume*: each shell ``edges[i] <= ||u|| < edges[i+1]`` holds the same share of the
    unit cube (computed once per ``(N, radius_bins)`` from a fixed, unscrambled Sobol' sample,
    so the edges never depend on a seed). For N=2 and two bins the inner edge is about 0.80
    (a quarter disc of area 1/2).
    """
    n_dims, radius_bins = int(n_dims), int(radius_bins)
    if n_dims < 1 or radius_bins < 1:
        raise ConfigError(
            f"need n_dims >= 1 and radius_bins >= 1, got {n_dims} and {radius_bins}"
        )
    return np.array(_radius_edges(n_dims, radius_bins))


def n_bins(n_dims: int, angle_bins: int, radius_bins: int) -> int:
    """The number of bins: ``radius_bins · angle_bins ** (N − 1)``."""
    return int(radius_bins) * int(angle_bins) ** (int(n_dims) - 1)


def bin_index(U: np.ndarray, angle_bins: int, radius_bins: int) -> np.ndarray:
    """The bin of each row of ``U`` (points of the unit cube ``[0, 1]^N``), as flat indices in
    ``range(n_bins(N, angle_bins, radius_bins))``.

    The radius interval is the slowest index and the angles ``φ_1, …, φ_{N−1}`` follow:
    ``((i_r · A + i_1) · A + i_2) · A + …``. Each angle is cut into ``angle_bins`` equal
    intervals of ``[0, π/2]``, the radius by :func:`radius_edges`; values on the last edge
    go into the last interval.
    """
    U = np.asarray(U, dtype=float)
    if U.ndim == 1:
        U = U[None, :]
    r, angles = to_hyperspherical(U)
    a = int(angle_bins)
    edges = radius_edges(U.shape[1], radius_bins)
    flat = np.clip(np.searchsorted(edges, r, side="right") - 1, 0, int(radius_bins) - 1)
    for k in range(angles.shape[1]):
        cell = np.clip(np.floor(angles[:, k] * (2.0 * a / math.pi)), 0, a - 1)
        flat = flat * a + cell.astype(np.int64)
    return flat.astype(np.int64)


# --------------------------------------------------------------------------- scores
@dataclass(frozen=True)
class BinScores:
    """One round's bin scores (what :meth:`BinSampler.acquisition` returns).

    Arrays have one entry per bin (:func:`bin_index` order). ``mode`` is ``"ucb"`` when the
    score is ``error + lam · spread`` and ``"explore"`` when the data could not estimate it
    and the score is ``1 / (1 + counts)``; ``reason`` says why. ``error``/``spread`` are NaN in
    explore mode and for unreachable bins (no pool point: the bin misses the box), which also
    get probability 0.
    """

    mode: Mode
    scores: np.ndarray
    error: np.ndarray
    spread: np.ndarray
    counts: np.ndarray
    reachable: np.ndarray
    probabilities: np.ndarray
    reason: str = ""


@dataclass
class _Round:
    scores: BinScores
    pool: np.ndarray  # (M, N) unit-cube candidates
    pool_bin: np.ndarray  # (M,) their bins


# --------------------------------------------------------------------------- the sampler
class BinSampler(CheckedSampler):
    """Bayesian MAP's adaptive sampler (``name = "bins"``): evaluate next where the
    surrogate is most wrong, bin by bin (Algorithm 3 of the MAP paper).

    Call order (driven by :class:`~mapframe.study.MergeStudy`, see
    :class:`~mapframe.samplers.base.Sampler`)::

        setup(context)                  # keeps the surrogate prototype and the tasks
        repeat: batch_size(remaining, history, capacity) -> n
                propose(n, space, history, rng)          # rng = default_rng([seed, round])

    Step by step:

    1. **Initial design.** While fewer than ``initial`` successful evaluations exist,
       ``propose`` returns the first ``n`` points of a scrambled Sobol' sequence drawn from
       ``rng`` (skipping points already in the history), and ``batch_size`` asks for the
       missing ones (at least ``capacity``). ``initial="auto"`` is ``P + 1`` with ``P`` the
       surrogate's ``n_params(N)``: the smallest design on which leave-one-out residuals
       exist. Round 0 of a study always uses the same ``rng``, so a resumed study proposes
       the same design again and reuses it from the store.
    2. **Bins.** Coefficients are mapped to the unit cube ``u = (c − lower)/(upper − lower)``
       and to hyperspherical coordinates about the box's lower corner (:func:`to_hyperspherical`:
       radius ``r = ||u||``, angles ``φ_1 … φ_{N−1}`` in ``[0, π/2]``). Each angle is cut into
       ``angle_bins`` equal intervals and ``r`` into ``radius_bins`` intervals of ``[0, √N]``
       of *equal cube volume* (:func:`radius_edges`). Equal volume rather than equal width:
       the cube is thin near both ends of ``[0, √N]``, and equal widths would leave a small
       inner shell (for N=4, 31% of the box) against a large outer one; equal-volume shells
       hold the same share of the box and of the candidate pool, so the radius levels (near
       the pretrained model vs. strongly scaled task vectors) weigh the same when scores
       tie, e.g. in the exploring fallback (step 6). Angle cells still differ in size (near
       the axes, at large radius, they are slivers). For N=1 there are no angles and only
       ``r`` is binned.
    3. **Pool.** Each round draws ``pool_per_bin · n_bins`` uniform points of the cube from
       ``rng`` (at most :data:`MAX_POOL`) and bins them. A bin without pool points misses
       the box (e.g. large radius at an angle close to an axis), or holds a negligible
       sliver of it, and is not chosen this round.
    4. **Error term** ``E_b``. The data are ``history.canonical()`` (sorted, so the result
       does not depend on the order in which evaluations finished); every successful search
       evaluation is used. For each task ``j`` a ``copy.deepcopy`` of the study's surrogate
       is fitted on ``(X, Y[:, j])``, and the leave-one-out residual of every point is
       computed by refitting without it (exact for any surrogate; ``K`` fits per task).
       Residuals are divided by the task's metric spread (the std of ``Y[:, j]``; 1 when
       that is ~0), squared and summed over tasks. ``E_b`` is the root mean of that over the
       evaluated points in bin ``b``; a bin without evaluated points gets the root mean over
       all points (the prior). The paper scores bins by the *mean squared* residual; its
       root is used here so that ``E_b`` is in the same (normalised metric) units as the
       spread term and ``lam`` is a plain exchange rate between the two.
    5. **Spread term** ``S_b``. The surrogate's uncertainty by a *wild bootstrap*:
       ``n_bootstrap`` refits on ``y* = ŷ + r ⊙ v`` (``ŷ``: the full fit at the data, ``r``:
       the LOO residuals, ``v``: Rademacher signs from ``rng``; clipped to the task's metric
       range so warped surrogates accept them). The design stays the same, so a fit that is
       identifiable on the data is identifiable on every replicate; a pairs bootstrap
       (resampling rows) would not be: with ``K`` close to the number of parameters the
       resampled designs are mostly rank-deficient. The replicates predict at up to
       ``probes_per_bin`` pool points of every bin; their std, normalised per task like the
       residuals, averaged over tasks and probe points, is ``S_b``.
    6. **Score** ``U_b = E_b + lam · S_b``. When the data cannot estimate it (``K <= P``, so
       no LOO residual exists, every fit fails, or every normalised residual is ~0, i.e.
       the surrogate is exact on the data), the sampler explores instead:
       ``U_b = 1 / (1 + n_b)`` with ``n_b`` the evaluated points (failed ones included) in
       bin ``b``, which favours empty bins. (With ``initial < P + 1`` the rounds after the
       initial design explore this way until ``K > P``.)
    7. **Draw.** Bins are picked with probabilities ``softmax(U / (temperature · max U))``
       over the reachable bins (the temperature is relative to the best score, hence
       scale-free): without replacement while unpicked bins remain, with replacement after
       that. Each pick takes one random pool point of its bin (uniform inside the bin and
       the box), never one already evaluated or already proposed.

    The sampler keeps no state between rounds: a proposal is a function of ``(history,
    rng)`` and the settings (see :meth:`acquisition` for the scores of one round).

    Parameters: ``batch`` (points per adaptive round, at least the executor's capacity),
    ``initial`` (size of the initial Sobol' design or ``"auto"``), ``angle_bins`` (intervals
    per angle or ``"auto"``: 8 for N=2, 4 for N=3, 3 beyond), ``radius_bins`` (equal-volume
    radius intervals), ``lam`` (weight of the spread term), ``temperature`` (softmax
    temperature relative to the best score), ``n_bootstrap`` (bootstrap refits per task; 0
    turns the spread term off), ``pool_per_bin`` (candidate points per bin and round),
    ``probes_per_bin`` (pool points per bin where the spread is measured).
    """

    name: ClassVar[str] = "bins"
    adaptive: ClassVar[bool] = True

    def __init__(
        self,
        batch: int = 3,
        initial: int | Literal["auto"] = "auto",
        angle_bins: int | Literal["auto"] = "auto",
        radius_bins: int = 2,
        lam: float = 1.0,
        temperature: float = 0.5,
        n_bootstrap: int = 20,
        pool_per_bin: int = 64,
        probes_per_bin: int = 16,
    ) -> None:
        self.batch = int_setting(batch, "batch", 1, who=_WHO)
        self.initial: int | str = int_setting(initial, "initial", 1, who=_WHO, auto=True)
        self.angle_bins: int | str = int_setting(angle_bins, "angle_bins", 1, who=_WHO, auto=True)
        self.radius_bins = int_setting(radius_bins, "radius_bins", 1, who=_WHO)
        self.lam = number_setting(lam, "lam", 0.0, who=_WHO)
        self.temperature = number_setting(temperature, "temperature", 0.0, who=_WHO, open_low=True)
        if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or (
            n_bootstrap < 0 or n_bootstrap == 1
        ):
            raise ConfigError(
                "bins sampler: n_bootstrap must be 0 (no spread term) or an integer >= 2, "
                f"got {n_bootstrap!r}"
            )
        self.n_bootstrap = int(n_bootstrap)
        self.pool_per_bin = int_setting(pool_per_bin, "pool_per_bin", 1, who=_WHO)
        self.probes_per_bin = int_setting(probes_per_bin, "probes_per_bin", 1, who=_WHO)

    # ---- settings resolved for a problem

    def resolved_angle_bins(self, n_dims: int) -> int:
        """``angle_bins`` for ``n_dims`` coefficients (``"auto"`` resolved)."""
        if self.angle_bins == "auto":
            return auto_angle_bins(n_dims)
        return int(self.angle_bins)

    def n_bins(self, n_dims: int) -> int:
        """The number of bins for ``n_dims`` coefficients."""
        return n_bins(n_dims, self.resolved_angle_bins(n_dims), self.radius_bins)

    def _surrogate(self, space: SearchSpace, history: History) -> tuple[Surrogate, list[Task]]:
        ctx = self.context_for(space, history)
        proto = ctx.surrogate
        if proto is None:
            from mapframe.surrogates.base import default_surrogate

            proto = default_surrogate()
        return proto, list(ctx.tasks)

    def resolved_initial(self, space: SearchSpace, history: History) -> int:
        """``initial`` with ``"auto"`` resolved: the surrogate's ``n_params(N) + 1``."""
        if self.initial != "auto":
            return int(self.initial)
        proto, _ = self._surrogate(space, history)
        return int(proto.n_params(space.n_dims)) + 1

    # ---- the Sampler interface
    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        """The missing points of the initial design (at least ``capacity``) while it is
        incomplete, then ``max(batch, capacity)``; never more than ``remaining``."""
        space = self._context.space if self._context is not None else None
        if space is None or space.n_dims != history.n_dims:
            space = SearchSpace.box(history.n_dims)
        need = self.resolved_initial(space, history) - history.X.shape[0]
        n = max(need, capacity) if need > 0 else max(self.batch, capacity)
        return max(1, min(int(n), int(remaining)))

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """The first ``n`` points of the initial Sobol' design while it is incomplete, else
        ``n`` points drawn from bins by their scores (see the class docstring)."""
        if history.X.shape[0] < self.resolved_initial(space, history):
            return self._initial_design(n, space, history, rng)
        rnd = self._round(space, history, rng)
        return self._draw(n, rnd, space, history, rng)

    def acquisition(
        self, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> BinScores:
        """The bin scores and probabilities :meth:`propose` would use with this ``rng`` once
        the initial design is complete (this method scores the bins whatever the history)."""
        return self._round(space, history, rng).scores

    def draw_pool(self, n_dims: int, rng: np.random.Generator) -> np.ndarray:
        """This round's candidate points: ``pool_per_bin · n_bins`` uniform points of the unit
        cube (at most :data:`MAX_POOL`), drawn from ``rng``."""
        size = min(self.pool_per_bin * self.n_bins(n_dims), MAX_POOL)
        return rng.random((size, n_dims))

    # ---- steps
    def _initial_design(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        return fresh_sobol(n, space, history, rng)

    def _round(self, space: SearchSpace, history: History, rng: np.random.Generator) -> _Round:
        d = space.n_dims
        a = self.resolved_angle_bins(d)
        nb = n_bins(d, a, self.radius_bins)
        width = space.upper - space.lower

        def unit(C: np.ndarray) -> np.ndarray:
            return np.clip((np.asarray(C, float).reshape(-1, d) - space.lower) / width, 0, 1)

        pool = self.draw_pool(d, rng)
        pool_bin = bin_index(pool, a, self.radius_bins)
        reachable = np.bincount(pool_bin, minlength=nb) > 0
        searched = [e.coefficients for e in history if e.phase == "search"]
        counts = np.bincount(
            bin_index(unit(np.array(searched)), a, self.radius_bins), minlength=nb
        ) if searched else np.zeros(nb, dtype=np.int64)

        X, Y = history.canonical()
        proto, tasks = self._surrogate(space, history)
        k, p = X.shape[0], int(proto.n_params(d))
        # Rademacher signs for every task, drawn whatever the fits do (stable rng use).
        signs = rng.integers(0, 2, size=(len(tasks), self.n_bootstrap, k)) * 2.0 - 1.0

        def explore(reason: str) -> _Round:
            score = 1.0 / (1.0 + counts.astype(float))
            nan = np.full(nb, np.nan)
            scores = BinScores("explore", np.where(reachable, score, np.nan), nan, nan.copy(),
                               counts, reachable, self._softmax(score, reachable), reason)
            return _Round(scores, pool, pool_bin)

        if k <= p:
            return explore(
                f"{k} evaluations cannot give leave-one-out residuals of a {p}-parameter "
                "surrogate"
            )

        # probe points: the first probes_per_bin pool points of every bin
        per_bin = max(1, min(self.probes_per_bin, MAX_PROBES // max(1, int(reachable.sum()))))
        order = np.argsort(pool_bin, kind="stable")
        starts = np.searchsorted(pool_bin[order], np.arange(nb))
        rank = np.empty(pool_bin.size, dtype=np.int64)
        rank[order] = np.arange(pool_bin.size) - starts[pool_bin[order]]
        probe = rank < per_bin
        probes_x = space.scale(pool[probe])
        probes_bin = pool_bin[probe]

        sq = np.zeros(k)  # summed normalised squared LOO residuals per point
        have = np.zeros(k, dtype=bool)
        spread_sum = np.zeros(probes_x.shape[0])
        n_spread = 0
        for j, task in enumerate(tasks):
            y = Y[:, j]
            fitted = self._fit_task(proto, X, y, task)
            if fitted is None:
                continue
            y_hat = fitted.predict(X)
            loo = self._loo(proto, X, y, task)
            resid = y - loo
            ok = np.isfinite(resid)
            if not ok.any():
                continue
            scale = float(np.std(y))
            if not scale > 1e-9 * max(1.0, float(np.max(np.abs(y)))):
                scale = 1.0
            sq[ok] += (resid[ok] / scale) ** 2
            have |= ok
            if self.n_bootstrap:
                r0 = np.where(ok, resid, 0.0)
                preds = []
                for b in range(self.n_bootstrap):
                    y_star = np.clip(y_hat + r0 * signs[j, b], task.lower, task.upper)
                    rep = self._fit_task(proto, X, y_star, task)
                    if rep is not None:
                        preds.append(np.asarray(rep.predict(probes_x), dtype=float))
                if len(preds) >= 2:
                    spread_sum += np.std(np.array(preds), axis=0, ddof=1) / scale
                    n_spread += 1

        if not have.any():
            return explore("no leave-one-out residual could be computed (every fit failed)")
        prior = math.sqrt(float(sq[have].mean()))
        if not prior > _RESIDUAL_FLOOR:
            return explore("the surrogate fits the data exactly (leave-one-out residuals ~0)")
        point_bin = bin_index(unit(X[have]), a, self.radius_bins)
        n_in = np.bincount(point_bin, minlength=nb)
        sum_in = np.bincount(point_bin, weights=sq[have], minlength=nb)
        error = np.full(nb, prior)
        error[n_in > 0] = np.sqrt(sum_in[n_in > 0] / n_in[n_in > 0])
        spread = np.zeros(nb)
        if n_spread:
            per_probe = spread_sum / n_spread
            m = np.bincount(probes_bin, minlength=nb)
            s = np.bincount(probes_bin, weights=per_probe, minlength=nb)
            spread[m > 0] = s[m > 0] / m[m > 0]
        score = error + self.lam * spread
        error[~reachable] = np.nan
        spread[~reachable] = np.nan
        scores = BinScores("ucb", np.where(reachable, score, np.nan), error, spread, counts,
                           reachable, self._softmax(score, reachable))
        return _Round(scores, pool, pool_bin)

    @staticmethod
    def _fit_task(proto: Surrogate, X: np.ndarray, y: np.ndarray, task: Task) -> Surrogate | None:
        """A fitted copy of ``proto``, or ``None`` when the data cannot be fitted."""
        model = copy.deepcopy(proto)
        try:
            model.fit(X, y, task)
        except (MapframeError, np.linalg.LinAlgError):
            return None
        return model

    def _loo(self, proto: Surrogate, X: np.ndarray, y: np.ndarray, task: Task) -> np.ndarray:
        """Leave-one-out predictions at every point by refitting without it (NaN where the
        remaining points cannot be fitted)."""
        k = X.shape[0]
        out = np.full(k, np.nan)
        keep = np.ones(k, dtype=bool)
        for i in range(k):
            keep[i] = False
            model = self._fit_task(proto, X[keep], y[keep], task)
            keep[i] = True
            if model is not None:
                out[i] = float(np.asarray(model.predict(X[i : i + 1]), dtype=float)[0])
        return out

    def _softmax(self, score: np.ndarray, reachable: np.ndarray) -> np.ndarray:
        probs = np.zeros(score.shape)
        s = score[reachable]
        if s.size == 0:
            return probs
        top = float(s.max())
        if not (math.isfinite(top) and top > 0):
            probs[reachable] = 1.0 / s.size
            return probs
        z = s / (self.temperature * top)
        w = np.exp(z - z.max())
        probs[reachable] = w / w.sum()
        return probs

    def _draw(
        self,
        n: int,
        rnd: _Round,
        space: SearchSpace,
        history: History,
        rng: np.random.Generator,
    ) -> np.ndarray:
        probs = rnd.scores.probabilities
        nb = probs.size
        # pool points of every bin, in pool order; `used` marks taken ones
        order = np.argsort(rnd.pool_bin, kind="stable")
        starts = np.searchsorted(rnd.pool_bin[order], np.arange(nb + 1))
        members = [order[starts[b] : starts[b + 1]] for b in range(nb)]
        free = np.array([m.size for m in members])
        used = np.zeros(rnd.pool_bin.size, dtype=bool)
        picked = np.zeros(nb, dtype=bool)
        taken: set[str] = set()
        out: list[np.ndarray] = []
        while len(out) < n:
            avail = (probs > 0) & (free > 0)
            if not avail.any():
                break
            fresh = avail & ~picked
            mask = fresh if fresh.any() else avail
            p = probs * mask
            b = int(rng.choice(nb, p=p / p.sum()))
            choices = members[b][~used[members[b]]]
            i = int(choices[rng.integers(choices.size)])
            used[i] = True
            free[b] -= 1
            x = np.clip(space.scale(rnd.pool[i]), space.lower, space.upper)
            key = coefficient_key(x)
            if key in history or key in taken:
                continue  # already evaluated or proposed: draw again
            picked[b] = True
            taken.add(key)
            out.append(x)
        return np.array(out, dtype=float).reshape(len(out), space.n_dims)
