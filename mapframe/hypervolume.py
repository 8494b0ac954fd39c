"""Hypervolume improvement in the *maximisation* form, and the greedy subset it ranks.

All functions here take objectives where larger is better in every column and an explicit
reference point. They serve the adaptive samplers (which point adds most to a front) and the
study's verification (which predicted front points to measure):

- :func:`hypervolume_improvement`: the improvement of many single points over one front;
  exact for one objective (a difference), two (a staircase sweep) and three or more while
  the front's grid table fits (:class:`FrontTable`: the non-dominated volume on the grid
  spanned by the front's coordinates, interpolated multilinearly, which is exact because
  that volume is multilinear inside every grid cell); beyond that size (about five or more
  objectives with dozens of front points) a Monte-Carlo estimate over fixed uniform points,
  the same points for every candidate, drawn from a fixed seed;
- :func:`greedy_hypervolume_subset`: ``k`` rows chosen one at a time, each the row that
  adds most hypervolume to a given front plus the rows already chosen.

numpy only; nothing here imports torch.
"""

from __future__ import annotations

import math

import numpy as np

from mapframe.errors import ConfigError
from mapframe.metrics import Directions, pareto_mask, to_minimization

__all__ = ["FrontTable", "greedy_hypervolume_subset", "hypervolume_improvement",
           "sampled_hypervolume_subset"]

#: Largest grid (cells) of the exact non-dominated-volume table for three or more objectives.
MAX_TABLE_CELLS = 1 << 22
#: Candidates handled at once in the vectorised improvement computations.
_CHUNK = 256
#: Corner weights (rows × 2^T) a :class:`FrontTable` interpolates at once.
_TABLE_CORNERS = 1 << 16
#: Uniform points of the Monte-Carlo estimate (beyond the exact table's size).
_MC_POINTS = 1 << 15
#: Reference point margin of :func:`greedy_hypervolume_subset` (share of the range).
_REF_MARGIN = 0.1


def _hvi_1d(Y: np.ndarray, F: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(S, M)`` improvements of ``Y (S, M, 1)`` over per-sample fronts ``F (S, m, 1)``."""
    best = np.full(Y.shape[0], ref[0])
    if F.shape[1]:
        best = np.maximum(best, F[:, :, 0].max(axis=1))
    return np.maximum(Y[:, :, 0] - best[:, None], 0.0)


def _hvi_2d(Y: np.ndarray, F: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``(S, M)`` exact improvements of ``Y (S, M, 2)`` over per-sample fronts ``F (S, m, 2)``.

    The region the front dominates is ``{v <= h(u)}`` with ``h(u) = max{f₂ : f₁ >= u}`` (or the
    reference); sorting each front by ``f₁`` (descending) cuts ``u`` into segments on which
    ``h`` is a running maximum of ``f₂``, and the improvement of ``y`` is
    ``Σ_segments overlap(segment, [r₁, y₁]) · max(0, y₂ − h)``. Dominated front points are
    harmless (the running maximum absorbs them).
    """
    S, M = Y.shape[:2]
    a = np.maximum(F[:, :, 0], ref[0])
    b = np.maximum(F[:, :, 1], ref[1])
    order = np.argsort(-a, axis=1, kind="stable")
    a = np.take_along_axis(a, order, axis=1)
    h = np.maximum.accumulate(np.take_along_axis(b, order, axis=1), axis=1)
    inf = np.full((S, 1), np.inf)
    hi = np.concatenate([inf, a], axis=1)  # (S, m + 1) segment upper ends
    lo = np.concatenate([a, np.full((S, 1), ref[0])], axis=1)
    height = np.concatenate([np.full((S, 1), ref[1]), h], axis=1)
    out = np.empty((S, M))
    for i in range(0, M, _CHUNK):
        y1 = Y[:, i : i + _CHUNK, 0, None]
        y2 = Y[:, i : i + _CHUNK, 1, None]
        width = np.maximum(np.minimum(y1, hi[:, None, :]) - lo[:, None, :], 0.0)
        out[:, i : i + _CHUNK] = np.sum(
            width * np.maximum(y2 - height[:, None, :], 0.0), axis=2
        )
    return out


class FrontTable:
    """``G(z) = vol([ref, z] minus the region dominated by the front)``, exact, for T >= 1.

    The grid nodes on axis ``t`` are the reference, the front's coordinates and ``upper``.
    Every grid cell is either wholly dominated (its upper corner is dominated by a front
    point) or not; the prefix sums of the non-dominated cells' volumes give ``G`` at the
    nodes, and because the integrand is constant inside each cell ``G`` is multilinear there,
    so multilinear interpolation of the node values is exact. Queries above ``upper`` are
    clipped to it (choose ``upper`` above every query).
    """

    def __init__(self, front: np.ndarray, ref: np.ndarray, upper: np.ndarray) -> None:
        T = ref.size
        front = front[np.all(front > ref, axis=1)]
        self.ref = ref.astype(float)
        self.upper = np.maximum(upper, ref + 1e-12)
        self.nodes = [
            np.unique(np.concatenate([[ref[t]], np.minimum(front[:, t], self.upper[t]),
                                      [self.upper[t]]]))
            for t in range(T)
        ]
        shape = tuple(len(n) - 1 for n in self.nodes)
        dominated = np.zeros(shape, dtype=bool)
        if front.shape[0]:
            idx = tuple(np.searchsorted(self.nodes[t], front[:, t]) - 1 for t in range(T))
            dominated[idx] = True
            for t in range(T):  # a cell is dominated when a cell at/above it holds a point
                dominated = np.flip(np.logical_or.accumulate(np.flip(dominated, t), axis=t), t)
        vol = np.ones(shape)
        for t in range(T):
            w = np.diff(self.nodes[t])
            vol = vol * w.reshape([-1 if s == t else 1 for s in range(T)])
        G = np.pad(np.where(dominated, 0.0, vol), [(1, 0)] * T)
        for t in range(T):
            G = np.cumsum(G, axis=t)
        self.G = G
        self._flat = G.reshape(-1)
        self._strides = np.array([int(np.prod(G.shape[t + 1 :])) for t in range(T)])
        #: Flat offsets of a cell's 2^T corners from its lower corner (product order).
        offsets = np.zeros(1, dtype=np.int64)
        for t in range(T):
            offsets = np.concatenate([offsets, offsets + self._strides[t]])
        self._offsets = offsets

    @staticmethod
    def cells(front: np.ndarray, ref: np.ndarray) -> int:
        """The table's size for ``front``: its number of grid nodes (an upper bound)."""
        keep = front[np.all(front > ref, axis=1)]
        # Python integers: numpy's int64 product wraps around from about 10 objectives
        return math.prod(len(np.unique(keep[:, t])) + 2 for t in range(ref.size))

    def __call__(self, Z: np.ndarray) -> np.ndarray:
        """``G`` at each row of ``Z (..., T)``.

        Rows are interpolated in blocks of about :data:`_TABLE_CORNERS` corners, whose
        weights and values stay in cache (over all rows at once, those arrays were most of a
        ``gp`` sampler round's time); every row's arithmetic is the same as over all of them."""
        shape = Z.shape[:-1]
        Z = Z.reshape(-1, Z.shape[-1])
        out = np.empty(Z.shape[0])
        step = max(1, _TABLE_CORNERS // self._offsets.size)
        for i in range(0, Z.shape[0], step):
            out[i : i + step] = self._interpolate(Z[i : i + step])
        return out.reshape(shape)

    def _interpolate(self, Z: np.ndarray) -> np.ndarray:
        """``G`` at each row of ``Z (M, T)``: multilinear interpolation of the node values,
        the corners in ``itertools.product`` order (an earlier axis varies slower)."""
        base = np.zeros(Z.shape[0], dtype=np.int64)
        weights = np.ones((Z.shape[0], 1))
        for t, nodes in enumerate(self.nodes):
            z = np.clip(Z[:, t], nodes[0], nodes[-1])
            j = np.clip(np.searchsorted(nodes, z, side="right") - 1, 0, len(nodes) - 2)
            frac = ((z - nodes[j]) / (nodes[j + 1] - nodes[j]))[:, None]
            base += j * self._strides[t]
            weights = np.concatenate([weights * (1.0 - frac), weights * frac], axis=1)
        values = self._flat[base[:, None] + self._offsets[None, :]]
        return np.einsum("ij,ij->i", weights, values)


def _dominated_share(Y: np.ndarray, Wt: np.ndarray) -> np.ndarray:
    """``(M, P)`` booleans: does row ``m`` of ``Y`` weakly dominate point ``p``? The points
    come transposed, ``Wt`` ``(T, P)`` C-contiguous: each objective's comparison reads one
    contiguous row into one reused buffer (a strided column and a fresh temporary per
    objective made a 256 x 32 768 block of 16 objectives cost 0.7 s instead of 0.1 s)."""
    inside = np.empty((Y.shape[0], Wt.shape[1]), dtype=bool)
    if Y.shape[1] == 0:
        inside[:] = True
        return inside
    step = np.empty_like(inside)
    np.less_equal(Wt[0][None, :], Y[:, 0, None], out=inside)
    for t in range(1, Y.shape[1]):
        np.less_equal(Wt[t][None, :], Y[:, t, None], out=step)
        inside &= step
    return inside


class _SampledFront:
    """The Monte-Carlo improvement over ``front`` of the rows of ``Y``: fixed uniform points
    of the box ``[ref, upper]`` (``upper`` the best of ``Y``, ``front`` and the reference)
    and which of them ``front`` leaves free. :meth:`add` extends the front by a row of ``Y``
    (the box stays the same) by marking only that row's points, so that a greedy choice
    among ``Y`` does not compare the whole front with every point again at each pick."""

    def __init__(self, Y: np.ndarray, front: np.ndarray, ref: np.ndarray) -> None:
        T = ref.size
        upper = np.max(np.concatenate([Y, front, ref[None] + 1e-12]), axis=0)
        W = ref + np.random.default_rng(0).random((_MC_POINTS, T)) * (upper - ref)
        self.Wt = np.ascontiguousarray(W.T)
        self.free = np.ones(W.shape[0], dtype=bool)
        for i in range(0, front.shape[0], _CHUNK):
            self.free &= ~_dominated_share(front[i : i + _CHUNK], self.Wt).any(axis=0)
        self.vol = float(np.prod(upper - ref)) / _MC_POINTS

    def add(self, y: np.ndarray) -> None:
        """The front grows by ``y`` (a row of the ``Y`` this was built with)."""
        self.free &= ~_dominated_share(y[None], self.Wt)[0]

    def improvements(self, Y: np.ndarray) -> np.ndarray:
        W = np.ascontiguousarray(self.Wt[:, self.free])
        out = np.empty(Y.shape[0])
        for i in range(0, Y.shape[0], _CHUNK):
            out[i : i + _CHUNK] = self.vol * _dominated_share(Y[i : i + _CHUNK], W).sum(axis=1)
        return out


def _hvi_monte_carlo(Y: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Monte-Carlo improvements over fixed uniform points of the box ``[ref, upper]``."""
    return _SampledFront(Y, front, ref).improvements(Y)


def hypervolume_improvement(
    Y: np.ndarray, front: np.ndarray, ref: np.ndarray
) -> np.ndarray:
    """Hypervolume improvement of each row of ``Y (M, T)`` over ``front (K, T)``.

    All objectives are maximised; ``ref (T,)`` is the reference point (points not above it in
    every objective add nothing). ``HVI(y) = HV(front ∪ {y}) − HV(front)``. Exact for one
    and two objectives and while the front's :class:`FrontTable` has at most
    ``MAX_TABLE_CELLS`` nodes; a Monte-Carlo estimate (32768 fixed uniform points) beyond.
    """
    from mapframe.metrics import _as_matrix, _as_vector

    ref = np.asarray(ref, dtype=float).reshape(-1)
    T = ref.size
    ref = _as_vector(ref, "ref", T)
    Y = _as_matrix(np.atleast_2d(np.asarray(Y, dtype=float)), "Y", T)
    front = np.asarray(front, dtype=float)
    front = _as_matrix(front.reshape(1, T) if front.shape == (T,) else front, "front", T)
    front = front[np.all(front > ref, axis=1)]
    if T == 1:
        return _hvi_1d(Y[None], front[None], ref)[0]
    if T == 2:
        return _hvi_2d(Y[None], front[None], ref)[0]
    if FrontTable.cells(front, ref) > MAX_TABLE_CELLS:
        return _hvi_monte_carlo(Y, front, ref)
    upper = np.max(np.concatenate([Y, front, ref[None] + 1.0]), axis=0)
    return FrontTable(front, ref, upper)(Y)


def greedy_hypervolume_subset(
    F: np.ndarray, k: int, directions: Directions = None, measured: np.ndarray | None = None,
    ordered: bool = False,
) -> np.ndarray:
    """Indices (sorted; in the order picked with ``ordered``) of ``k`` rows of ``F`` chosen
    greedily by hypervolume gain.

    Each step takes the row that adds most hypervolume to the non-dominated set of
    ``measured`` (metrics already known, in ``F``'s units) plus the rows chosen so far.
    Objectives are scaled to [0, 1] over ``F`` and ``measured`` together, with the reference
    point a tenth of the range below the worst value. Once no row adds anything (the rest
    are dominated by what is measured or chosen), the remaining picks are the rows farthest
    from those chosen (:func:`~mapframe.metrics.spread_subset`'s rule), so exactly
    ``min(k, len(F))`` rows are returned.
    """
    from mapframe.metrics import _as_matrix, spread_subset

    _check_k(k)
    G = -to_minimization(_as_matrix(F, "F"), directions)
    n, T = G.shape
    k = min(int(k), n)
    if k <= 0:
        return np.arange(0)
    # ``measured`` must have F's columns: a transposed or wider array was reshaped to fit
    Gm = (np.empty((0, T)) if measured is None or np.size(measured) == 0 else
          -to_minimization(_as_matrix(measured, "measured", T), directions))
    both = np.vstack([G, Gm])
    lo = both.min(axis=0)
    span = np.ptp(both, axis=0)
    span = np.where(span > 0, span, 1.0)
    Z, Zm = (G - lo) / span, (Gm - lo) / span
    ref = np.full(T, -_REF_MARGIN)
    P = Zm[pareto_mask(Zm)] if Zm.shape[0] else Zm
    chosen: list[int] = []
    # Once the front is too large for the exact table (it only grows), the improvements
    # are sampled on the same points at every pick: the points the front leaves free are
    # found once and each pick marks only its own (hypervolume_improvement's numbers, from
    # 16 tasks and 10 000 measured points 19 passes over the whole front per verification).
    sampled: _SampledFront | None = None
    while len(chosen) < k:
        if sampled is None and T >= 3 and FrontTable.cells(P, ref) > MAX_TABLE_CELLS:
            sampled = _SampledFront(Z, P[np.all(ref < P, axis=1)], ref)
        if sampled is not None:
            gain = sampled.improvements(Z)
        else:
            gain = hypervolume_improvement(Z, P, ref)
        gain[chosen] = -np.inf
        i = int(np.argmax(gain))
        if not gain[i] > 1e-12:
            break
        chosen.append(i)
        P = np.vstack([P, Z[i]])
        if sampled is not None and np.all(Z[i] > ref):
            sampled.add(Z[i])
    if len(chosen) < k:  # nothing adds volume any more: spread the rest
        if not chosen:
            return spread_subset(F, k, directions)
        _fill_by_spread(Z, chosen, k)
    return np.array(chosen if ordered else sorted(chosen), dtype=int)


def _check_k(k: object) -> None:
    """Refuse a ``k`` that is not an integer (``True``, ``2.5``, ``"3"``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ConfigError(f"k must be an integer number of rows, got {k!r}")


def _fill_by_spread(Z: np.ndarray, chosen: list[int], k: int) -> None:
    """Append to ``chosen`` (not empty) the rows of ``Z`` farthest from those chosen, one at
    a time, until it holds ``k`` (:func:`~mapframe.metrics.spread_subset`'s rule)."""
    dist = np.min(np.linalg.norm(Z[:, None, :] - Z[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < k:
        dist[chosen] = -np.inf
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(Z - Z[i], axis=1))


#: Quasi-random points of :func:`sampled_hypervolume_subset`'s volume estimate.
SAMPLED_POINTS = 1 << 14
# Popcount of every byte (numpy < 2 has no bitwise_count).
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.int64)


def _popcount_rows(words: np.ndarray) -> np.ndarray:
    """Set bits per row of a ``uint64`` matrix."""
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(words).sum(axis=1, dtype=np.int64)
    return _POPCOUNT8[words.view(np.uint8)].sum(axis=1)


def sampled_hypervolume_subset(
    F: np.ndarray, k: int, directions: Directions = None, n_points: int = SAMPLED_POINTS,
) -> np.ndarray:
    """Indices (sorted) of ``k`` rows of ``F`` chosen greedily by hypervolume gain, measured
    on fixed sample points: fast for thousands of rows and any number of objectives.

    The rule of :func:`greedy_hypervolume_subset` (without ``measured``): objectives scaled
    to [0, 1] over ``F``, the reference point a tenth of the range below the worst value,
    each pick the row that adds most hypervolume to the rows picked so far. Here the volume
    is counted on ``n_points`` scrambled Sobol' points (seed 0) of the box between the
    reference point and the best values: every row's dominated sample points are one bit
    row, and a pick's gain is the number of its points no earlier pick covers (a bitwise
    AND and a popcount per row and pick), so a pick costs ``len(F) × n_points / 64`` word
    operations instead of an improvement table. Ties go to the lower index, so the result is
    a function of ``F``. Once no row adds a sample point, the rest are spread as by
    :func:`~mapframe.metrics.spread_subset`; exactly ``min(k, len(F))`` rows are returned.
    """
    from scipy.stats import qmc

    from mapframe.metrics import _as_matrix, spread_subset

    _check_k(k)
    G = -to_minimization(_as_matrix(F, "F"), directions)
    n, T = G.shape
    k = min(int(k), n)
    if k <= 0:
        return np.arange(0)
    lo = G.min(axis=0)
    span = np.ptp(G, axis=0)
    span = np.where(span > 0, span, 1.0)
    Z = (G - lo) / span + _REF_MARGIN  # the reference point is the origin
    m = max(1, int(np.ceil(np.log2(max(int(n_points), 2)))))
    W = qmc.Sobol(d=T, scramble=True, seed=0).random_base2(m) * Z.max(axis=0)
    rows = []
    for i in range(0, n, _CHUNK):
        covered = W[None, :, 0] <= Z[i : i + _CHUNK, 0, None]
        for t in range(1, T):  # one objective at a time: no (rows, points, T) array
            covered &= W[None, :, t] <= Z[i : i + _CHUNK, t, None]
        rows.append(np.packbits(covered, axis=1))
    packed = np.concatenate(rows)
    pad = (-packed.shape[1]) % 8
    words = np.pad(packed, ((0, 0), (0, pad))).view(np.uint64)
    free = np.full(words.shape[1], np.iinfo(np.uint64).max, dtype=np.uint64)
    chosen: list[int] = []
    while len(chosen) < k:
        gain = _popcount_rows(words & free)
        gain[chosen] = -1
        i = int(np.argmax(gain))
        if gain[i] <= 0:
            break
        chosen.append(i)
        free &= ~words[i]
    if len(chosen) < k:  # nothing adds a sample point any more: spread the rest
        if not chosen:
            return np.sort(spread_subset(F, k, directions))
        _fill_by_spread(Z, chosen, k)
    return np.array(sorted(chosen), dtype=int)
