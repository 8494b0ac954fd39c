"""Quality measures for Pareto fronts: pure functions on metric arrays.

Every function takes metric arrays ``F`` of shape ``(K, T)`` (K points, T objectives) in their
natural units, plus ``directions``: one ``"max"`` or ``"min"`` per column (a single string
applies to every column; ``None`` means all ``"max"``). Internally everything is converted to
the minimisation form (columns to maximise are negated, see :func:`to_minimization`), so that
"better" always means "smaller" there.

Definitions (fixed, so that numbers are comparable across studies):

* **Dominance**: ``p`` dominates ``q`` when ``p`` is at least as good as ``q`` in every
  objective and strictly better in at least one.
* **Hypervolume**: volume dominated by the front and bounded by a reference point, computed
  with pymoo's :class:`~pymoo.indicators.hv.HV` on the minimisation form.
* **GD / IGD**: mean Euclidean distance from each point of one front to the nearest point of
  the other.
* **Win rate** of ``P`` over ``Q``: among all pairs ``(p, q)`` in which one side dominates the
  other, the share in which ``p`` dominates ``q`` (0.5 when no pair is decided).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mapframe.errors import ConfigError, float_array

__all__ = [
    "dominance_matrix",
    "dominated_by_any",
    "flat_range",
    "generational_distance",
    "hypervolume",
    "hypervolume_fraction",
    "inverted_generational_distance",
    "normalize",
    "pareto_front",
    "pareto_mask",
    "preference_scores",
    "r2_score",
    "reference_point",
    "select_by_preference",
    "to_minimization",
    "win_rate",
]

Directions = Sequence[str] | str | None

# Rows compared at once in the pairwise dominance checks; bounds the temporary boolean
# matrices to ``_CHUNK x K`` entries.
_CHUNK = 512
# Cells of the blocks :func:`_dominates` compares at once (a few hundred KB: cache-sized).
_DOMINANCE_CELLS = 1 << 17
#: Above this many pairs, :func:`dominated_by_any` first keeps only ``A``'s non-dominated rows.
_REDUCE_PAIRS = 1 << 16


# --------------------------------------------------------------------------- validation


def _as_matrix(F: object, name: str, n_cols: int | None = None) -> np.ndarray:
    """``F`` as a finite float array of shape (K, T); an empty input becomes (0, n_cols)."""
    arr = float_array(F, f"{name} must be a numeric array of shape (K, T)")
    if arr.size == 0 and n_cols is not None:
        return np.empty((0, n_cols))
    if arr.ndim != 2:
        raise ConfigError(
            f"{name} must be a 2-D array of shape (K, T) (one row per point), got shape "
            f"{arr.shape}; reshape a single point with F.reshape(1, -1)"
        )
    if n_cols is not None and arr.shape[1] != n_cols:
        raise ConfigError(f"{name} has {arr.shape[1]} objectives (columns), expected {n_cols}")
    if not np.all(np.isfinite(arr)):
        raise ConfigError(
            f"{name} contains NaN or infinite values; drop or repair those rows first"
        )
    return arr


def _as_vector(v: object, name: str, length: int) -> np.ndarray:
    """``v`` as a finite float vector of the given length."""
    arr = float_array(v, f"{name} must be a numeric vector of length {length}")
    if arr.ndim == 0:
        arr = np.full(length, float(arr))
    if arr.ndim != 1 or arr.size != length:
        raise ConfigError(
            f"{name} must have one value per objective ({length}), got shape {arr.shape}"
        )
    if not np.all(np.isfinite(arr)):
        raise ConfigError(f"{name} must be finite, got {arr.tolist()}")
    return arr


def _signs(directions: Directions, n_cols: int) -> np.ndarray:
    """+1 for columns to maximise, -1 for columns to minimise."""
    if directions is None:
        return np.ones(n_cols)
    dirs = [directions] * n_cols if isinstance(directions, str) else list(directions)
    if len(dirs) != n_cols:
        raise ConfigError(
            f"directions has {len(dirs)} entries for {n_cols} objectives; give one 'max' or "
            "'min' per column"
        )
    bad = [d for d in dirs if d not in ("max", "min")]
    if bad:
        raise ConfigError(f"directions must be 'max' or 'min', got {bad[0]!r}")
    return np.array([1.0 if d == "max" else -1.0 for d in dirs])


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


# --------------------------------------------------------------------------- dominance


def to_minimization(F: np.ndarray, directions: Directions = None) -> np.ndarray:
    """Return a copy of ``F`` (K, T) with the columns to maximise negated.

    In the result every objective is to be minimised; columns whose direction is ``"min"``
    are unchanged.
    """
    arr = _as_matrix(F, "F")
    return arr * -_signs(directions, arr.shape[1])


def _weakly_dominates(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``out[i, j]``: ``A[i] <= B[j]`` in every column (minimisation form)."""
    out = np.ones((A.shape[0], B.shape[0]), dtype=bool)
    for t in range(A.shape[1]):
        out &= A[:, t, None] <= B[None, :, t]
    return out


def _dominates(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """``out[i, j]``: ``A[i]`` Pareto-dominates ``B[j]`` (minimisation form).

    Worked out a block of ``A``'s rows at a time into the result (no full-size temporaries:
    two whole ``len(A) x len(B)`` masks and a third for their conjunction made 10 000 x
    10 000 rows of 16 objectives cost 300 MB and 6.6 s, cache misses mostly; 100 MB, the
    result, and under a second now)."""
    n, m = A.shape[0], B.shape[0]
    if n == 0 or m == 0 or A.shape[1] == 0:
        return np.zeros((n, m), dtype=bool)
    out = np.empty((n, m), dtype=bool)
    Bt = np.ascontiguousarray(B.T)
    rows = max(1, _DOMINANCE_CELLS // m)
    le = np.empty((min(rows, n), m), dtype=bool)
    lt = np.empty_like(le)
    step = np.empty_like(le)
    for s in range(0, n, rows):
        a = A[s : s + rows]
        k = len(a)
        L, S, W = le[:k], lt[:k], step[:k]
        np.less_equal(a[:, 0, None], Bt[0][None, :], out=L)
        np.less(a[:, 0, None], Bt[0][None, :], out=S)
        for t in range(1, A.shape[1]):
            np.less_equal(a[:, t, None], Bt[t][None, :], out=W)
            L &= W
            np.less(a[:, t, None], Bt[t][None, :], out=W)
            S |= W
        np.logical_and(L, S, out=out[s : s + k])
    return out


def dominance_matrix(
    A: np.ndarray, B: np.ndarray, directions: Directions = None
) -> np.ndarray:
    """Boolean matrix ``D`` (len(A), len(B)) with ``D[i, j]`` true when ``A[i]`` dominates ``B[j]``.

    Dominance: at least as good in every objective and strictly better in at least one.
    """
    a = _as_matrix(A, "A")
    b = _as_matrix(B, "B", a.shape[1])
    s = _signs(directions, a.shape[1])
    return _dominates(-a * s, -b * s)


def dominated_by_any(
    A: np.ndarray, B: np.ndarray, directions: Directions = None, block: int = 2048
) -> np.ndarray:
    """Boolean vector (len(B)): whether some row of ``A`` dominates ``B[j]``, i.e.
    ``dominance_matrix(A, B, directions).any(axis=0)`` worked out ``block`` columns at a
    time, so it never holds the whole ``len(A) x len(B)`` matrix."""
    a = _as_matrix(A, "A")
    b = _as_matrix(B, "B", a.shape[1])
    s = _signs(directions, a.shape[1])
    ga, gb = -a * s, -b * s
    if len(ga) * len(gb) > _REDUCE_PAIRS and ga.shape[1] > 0 and len(ga) > 0:
        ga = _dominators(ga)
    out = np.zeros(len(b), dtype=bool)
    for start in range(0, len(b), max(1, int(block))):
        out[start:start + block] = _dominates(ga, gb[start:start + block]).any(axis=0)
    return out


def _dominators(G: np.ndarray) -> np.ndarray:
    """The rows of ``G`` (minimisation form) that can matter to "is ``b`` dominated by some
    row": its non-dominated rows. Dominance is transitive, so a row that another one
    dominates dominates nothing that one does not (``G`` is finite: :func:`_as_matrix`).
    10 000 measured points of 16 tasks had 23 such rows: the study's combine phase compared
    10 000 x 10 000 pairs (9.3 s) where 23 x 10 000 do."""
    return G[_nondominated_2d(G) if G.shape[1] == 2 else _nondominated_general(G)]


def _nondominated_2d(G: np.ndarray) -> np.ndarray:
    """Sort-based non-dominated filter for two minimised objectives, first duplicate kept."""
    order = np.lexsort((np.arange(len(G)), G[:, 1], G[:, 0]))
    g1 = G[order, 1]
    best_before = np.minimum.accumulate(np.concatenate(([np.inf], g1[:-1])))
    mask = np.zeros(len(G), dtype=bool)
    mask[order[g1 < best_before]] = True
    return mask


def _nondominated_general(G: np.ndarray) -> np.ndarray:
    """Non-dominated filter for any number of minimised objectives, first duplicate kept."""
    # Duplicates first: keep the first occurrence of each distinct row (+ 0.0 turns -0.0
    # into 0.0 so that the two compare as duplicates).
    uniq, first = np.unique(G + 0.0, axis=0, return_index=True)
    # In (sum, lexicographic) order a dominator always comes before the points it dominates:
    # rounding keeps sums monotone, and equal sums fall back to the lexicographic order.
    order = np.lexsort((*uniq.T[::-1], uniq.sum(axis=1)))
    rows = uniq[order]
    front = np.empty((0, G.shape[1]))
    keep_sorted = np.zeros(len(rows), dtype=bool)
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        dominated = _weakly_dominates(front, chunk).any(axis=0)
        # Rows are distinct, so weak dominance by an earlier row of the chunk is dominance.
        inner = np.triu(_weakly_dominates(chunk, chunk), k=1).any(axis=0)
        ok = ~(dominated | inner)
        keep_sorted[start : start + len(chunk)] = ok
        if ok.any():
            front = np.concatenate([front, chunk[ok]])
    mask = np.zeros(len(G), dtype=bool)
    mask[first[order[keep_sorted]]] = True
    return mask


def pareto_mask(F: np.ndarray, directions: Directions = None) -> np.ndarray:
    """Boolean mask (K,) of the non-dominated rows of ``F`` (K, T).

    A row is kept when no other row dominates it. Of several identical rows only the first
    is kept, so the selected points are distinct. Two objectives use an O(K log K) sweep; more
    objectives compare blocks of rows against the front found so far.
    """
    arr = _as_matrix(F, "F")
    if arr.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    G = arr * -_signs(directions, arr.shape[1])
    if G.shape[1] == 2:
        return _nondominated_2d(G)
    return _nondominated_general(G)


def pareto_front(F: np.ndarray, directions: Directions = None) -> np.ndarray:
    """Indices of the non-dominated rows of ``F`` in increasing order (see :func:`pareto_mask`)."""
    return np.flatnonzero(pareto_mask(F, directions))


# --------------------------------------------------------------------------- hypervolume


def hypervolume(
    F: np.ndarray, ref_point: Sequence[float] | np.ndarray, directions: Directions = None
) -> float:
    """Hypervolume of the points ``F`` (K, T) with respect to ``ref_point`` (T,).

    ``ref_point`` is given in natural units and must be worse than the front in every
    objective (below it for ``"max"``, above it for ``"min"``); :func:`reference_point`
    builds one shared by several fronts. Points that are not strictly better than the
    reference point in every objective contribute nothing; an empty ``F`` has hypervolume 0.
    """
    ref = float_array(ref_point, "ref_point must be a numeric vector with one value per "
                      "objective")
    if ref.ndim != 1 or ref.size == 0:
        raise ConfigError(
            f"ref_point must be a vector with one value per objective, got shape {ref.shape}"
        )
    n_obj = ref.size
    ref = _as_vector(ref, "ref_point", n_obj)
    arr = float_array(F, "F must be a numeric array of shape (K, T)")
    arr = _as_matrix(arr, "F", None if arr.size else n_obj)
    if arr.shape[1] != n_obj:
        raise ConfigError(
            f"ref_point has {n_obj} values but F has {arr.shape[1]} objectives; give one "
            "reference value per objective"
        )
    s = _signs(directions, n_obj)
    pts, r = -arr * s, -ref * s
    pts = pts[np.all(pts < r, axis=1)]
    if pts.shape[0] == 0:
        return 0.0
    if n_obj == 1:
        return float(r[0] - pts[:, 0].min())
    from pymoo.indicators.hv import HV

    return float(HV(ref_point=r)(pts))


def reference_point(
    *fronts: np.ndarray, directions: Directions = None, margin: float = 0.1
) -> np.ndarray:
    """One reference point, in natural units, shared by all ``fronts`` (each (K_i, T)).

    Per objective: the worst value over all given points, pushed further towards "worse" by
    ``margin`` times the objective's range (best minus worst over all points). When every
    point has the same value the range is taken as ``max(1, |worst|)`` instead, so that the
    reference point is still strictly worse than every point for any ``margin > 0``. With the
    margin, the extreme points of each front contribute to the hypervolume.
    """
    if not fronts:
        raise ConfigError("reference_point needs at least one array of points")
    if (isinstance(margin, bool) or not isinstance(margin, (int, float, np.number))
            or not np.isfinite(margin) or margin < 0):
        raise ConfigError(f"margin must be a finite number >= 0, got {margin!r}")
    first = _as_matrix(fronts[0], "fronts[0]")
    n_obj = first.shape[1]
    arrays = [first] + [_as_matrix(f, f"fronts[{i}]", n_obj) for i, f in enumerate(fronts[1:], 1)]
    stacked = np.concatenate(arrays)
    if stacked.shape[0] == 0:
        raise ConfigError("reference_point needs at least one point; all arrays are empty")
    s = _signs(directions, n_obj)
    G = -stacked * s
    worst, best = G.max(axis=0), G.min(axis=0)
    span = worst - best
    span = np.where(span > 0, span, np.maximum(1.0, np.abs(worst)))
    return -(worst + margin * span) * s


def hypervolume_fraction(
    F: np.ndarray,
    F_true: np.ndarray,
    ref_point: Sequence[float] | np.ndarray,
    directions: Directions = None,
) -> float:
    """``hypervolume(F) / hypervolume(F_true)`` with one shared reference point.

    1.0 means ``F`` covers as much as the true front. Raises :class:`ConfigError` when the
    true front has zero hypervolume (its reference point is not worse than any of its points).
    """
    hv_true = hypervolume(F_true, ref_point, directions)
    if hv_true <= 0:
        raise ConfigError(
            "the true front has zero hypervolume with this ref_point; use a reference point "
            "worse than every true-front point (see mapframe.metrics.reference_point)"
        )
    return hypervolume(F, ref_point, directions) / hv_true


# --------------------------------------------------------------------------- distances


def _distance_inputs(
    F: np.ndarray, F_ref: np.ndarray, directions: Directions, normalize: bool
) -> tuple[np.ndarray, np.ndarray]:
    a = _as_matrix(F, "F")
    b = _as_matrix(F_ref, "F_ref", a.shape[1])
    _signs(directions, a.shape[1])  # validates; distances do not depend on directions
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ConfigError("F and F_ref must each contain at least one point")
    if normalize:
        ideal, nadir = b.min(axis=0), b.max(axis=0)
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        a, b = (a - ideal) / span, (b - ideal) / span
    return a, b


def _mean_nearest_distance(src: np.ndarray, dst: np.ndarray) -> float:
    """Mean over the rows of ``src`` of the Euclidean distance to the nearest row of ``dst``."""
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(dst).query(src, k=1)
    return float(np.mean(dist))


def generational_distance(
    F: np.ndarray, F_ref: np.ndarray, directions: Directions = None, normalize: bool = False
) -> float:
    """GD: mean Euclidean distance from each point of ``F`` to the nearest point of ``F_ref``.

    ``F_ref`` is usually the true front. With ``normalize=True`` both arrays are first scaled
    per objective by the ideal and nadir of ``F_ref`` (its per-column min and max; a constant
    column is left unscaled), so that objectives with large ranges do not dominate the
    distance. Lower is better; 0 means every point of ``F`` lies on ``F_ref``.
    """
    a, b = _distance_inputs(F, F_ref, directions, normalize)
    return _mean_nearest_distance(a, b)


def inverted_generational_distance(
    F: np.ndarray, F_ref: np.ndarray, directions: Directions = None, normalize: bool = False
) -> float:
    """IGD: mean Euclidean distance from each point of ``F_ref`` to the nearest point of ``F``.

    Unlike GD, IGD also penalises parts of ``F_ref`` that ``F`` does not cover.
    ``normalize`` works as in :func:`generational_distance` (scaling by ``F_ref``).
    """
    a, b = _distance_inputs(F, F_ref, directions, normalize)
    return _mean_nearest_distance(b, a)


# --------------------------------------------------------------------------- win rate


def win_rate(
    P: np.ndarray,
    Q: np.ndarray,
    directions: Directions = None,
    n_samples: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> float:
    """Win rate of front ``P`` over front ``Q`` (both (K, T)), in [0, 1].

    Definition (fixed): draw ``n_samples`` points from each front (without replacement when
    the front has at least that many points, with replacement otherwise; ``None`` uses every
    point of both fronts), compare every pair ``(p, q)``, and return

        #pairs where p dominates q / #pairs where p dominates q or q dominates p.

    When no pair is decided either way the fronts are equally good, and the result is 0.5;
    this also makes 0.5 the value for identical fronts, i.e. "as good as the reference". A
    front that dominates every point of the other scores 1.0.
    """
    p = _as_matrix(P, "P")
    q = _as_matrix(Q, "Q", p.shape[1])
    if p.shape[0] == 0 or q.shape[0] == 0:
        raise ConfigError("win_rate needs at least one point in each front")
    s = _signs(directions, p.shape[1])
    if n_samples is not None:
        if (isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer))
                or n_samples < 1):
            raise ConfigError(
                f"n_samples must be a positive integer or None, got {n_samples!r}")
        gen = _rng(rng)
        n = int(n_samples)
        p = p[gen.choice(len(p), size=n, replace=n > len(p))]
        q = q[gen.choice(len(q), size=n, replace=n > len(q))]
    gp, gq = -p * s, -q * s
    wins = int(_dominates(gp, gq).sum())
    losses = int(_dominates(gq, gp).sum())
    if wins + losses == 0:
        return 0.5
    return wins / (wins + losses)


# --------------------------------------------------------------------------- preferences


def normalize(
    F: np.ndarray, lower: Sequence[float] | np.ndarray, upper: Sequence[float] | np.ndarray
) -> np.ndarray:
    """Map each column of ``F`` (K, T) linearly so that ``lower`` -> 0 and ``upper`` -> 1.

    Values outside ``[lower, upper]`` are not clipped. Columns with ``lower == upper`` map to
    0. Raises :class:`ConfigError` when ``lower > upper`` anywhere.
    """
    arr = _as_matrix(F, "F")
    n_obj = arr.shape[1]
    lo = _as_vector(lower, "lower", n_obj)
    hi = _as_vector(upper, "upper", n_obj)
    if np.any(lo > hi):
        raise ConfigError(
            f"normalisation bounds need lower <= upper per objective, got lower={lo.tolist()} "
            f"upper={hi.tolist()}"
        )
    span = hi - lo
    return np.where(span > 0, (arr - lo) / np.where(span > 0, span, 1.0), 0.0)


def _preference_weights(preference: Sequence[float] | np.ndarray, n_obj: int) -> np.ndarray:
    w = float_array(
        preference, f"preference must be {n_obj} non-negative numbers, got {preference!r}"
    )
    if w.ndim != 1 or w.size != n_obj:
        raise ConfigError(
            f"preference must have one weight per objective ({n_obj}), got shape {w.shape}; "
            "give e.g. [1] * n_tasks for equal weights"
        )
    if not np.all(np.isfinite(w)):
        raise ConfigError(f"preference weights must be finite numbers, got {w.tolist()}")
    if np.any(w < 0):
        raise ConfigError(
            f"preference weights must be non-negative, got {w.tolist()}; use 0 for objectives "
            "you do not care about"
        )
    if w.max(initial=0.0) > 0:
        w = w / w.max()  # first, so that the sum of huge weights (1e308) cannot overflow
    total = w.sum()
    if total <= 0:
        raise ConfigError(
            "preference weights are all zero; give at least one positive weight"
        )
    return w / total


def preference_scores(
    F: np.ndarray,
    preference: Sequence[float] | np.ndarray,
    directions: Directions = None,
    lower: Sequence[float] | np.ndarray | None = None,
    upper: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Preference-weighted normalised score of each row of ``F`` (K, T); higher is better.

    Each objective is mapped linearly to [0, 1] with 1 = best, using the per-objective range
    ``lower``/``upper`` in natural units (for ``"max"``: ``lower`` -> 0, ``upper`` -> 1; for
    ``"min"``: ``upper`` -> 0, ``lower`` -> 1). Without bounds the per-column min and max of
    ``F`` are used. A column whose range is zero (or round-off: :func:`flat_range`) scores 1
    for every point (all are best). The
    scores are then averaged with ``preference`` normalised to sum to 1; values of ``F``
    outside the range give scores outside [0, 1].
    """
    arr = _as_matrix(F, "F")
    n_obj = arr.shape[1]
    w = _preference_weights(preference, n_obj)
    s = _signs(directions, n_obj)
    if arr.shape[0] == 0:
        return np.zeros(0)
    lo = arr.min(axis=0) if lower is None else _as_vector(lower, "lower", n_obj)
    hi = arr.max(axis=0) if upper is None else _as_vector(upper, "upper", n_obj)
    unit = normalize(arr, lo, hi)
    unit = np.where(s > 0, unit, 1.0 - unit)
    unit[:, flat_range(lo, hi)] = 1.0
    return unit @ w


#: A range narrower than this, relative to its values' size, is no range: round-off.
FLAT_RANGE_TOLERANCE = 1e-9


def flat_range(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Per objective, whether ``[lower, upper]`` is no range at all: narrower than
    :data:`FLAT_RANGE_TOLERANCE` times ``max(|lower|, |upper|)`` (an empty range is flat).
    A task that never varies shows a spread of round-off (1e-15) over a front; scaled to
    [0, 1] it would decide a preference selection by noise. The tolerance is relative to
    the values alone: with a floor of 1 (until 2026-12-06), a task whose metric lives on a
    small scale (1e-10) counted as flat, and a preference for it chose its worst point."""
    lo, hi = np.asarray(lower, dtype=float), np.asarray(upper, dtype=float)
    size = np.maximum(np.abs(lo), np.abs(hi))
    return np.asarray(hi - lo <= FLAT_RANGE_TOLERANCE * size)


def select_by_preference(
    F: np.ndarray,
    preference: Sequence[float] | np.ndarray,
    directions: Directions = None,
    lower: Sequence[float] | np.ndarray | None = None,
    upper: Sequence[float] | np.ndarray | None = None,
    among: Sequence[bool] | np.ndarray | None = None,
) -> int:
    """Index of the row of ``F`` with the highest :func:`preference_scores` (first on ties).

    ``lower``/``upper`` default to the per-column min and max of ``F`` (all rows). ``among``,
    a boolean mask (K,), restricts the choice to its rows (the scores are unchanged: the
    range is still that of all rows); it must select at least one row.
    """
    scores = preference_scores(F, preference, directions, lower, upper)
    if scores.size == 0:
        raise ConfigError("cannot select from an empty front; F has no rows")
    if among is not None:
        mask = np.asarray(among, dtype=bool).reshape(-1)
        if mask.shape != scores.shape or not mask.any():
            raise ConfigError(f"among must be a boolean mask of the {scores.size} rows with at "
                              f"least one true value, got shape {mask.shape}")
        scores = np.where(mask, scores, -np.inf)
    return int(np.argmax(scores))


# --------------------------------------------------------------------------- fit quality

def spread_subset(F: np.ndarray, k: int, directions: Directions = None) -> np.ndarray:
    """Indices of ``k`` rows of ``F`` spread over the front (sorted ascending).

    Starts from each objective's best row, then adds the row farthest (Euclidean, objectives
    scaled to [0, 1] over ``F``) from those already chosen, until ``k`` are chosen. Used to
    thin a dense front and to pick the front points to verify. All rows when ``k >= len(F)``.
    """
    arr = _as_matrix(F, "F")
    n = arr.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ConfigError(f"k must be a non-negative integer, got {k!r}")
    if k >= n:
        return np.arange(n)
    if k == 0:
        return np.arange(0)
    G = to_minimization(arr, directions)
    span = np.ptp(G, axis=0)
    Z = (G - G.min(axis=0)) / np.where(span > 0, span, 1.0)
    chosen: list[int] = []
    for j in range(Z.shape[1]):
        i = int(np.argmin(Z[:, j]))
        if i not in chosen and len(chosen) < k:
            chosen.append(i)
    dist = np.min(np.linalg.norm(Z[:, None, :] - Z[chosen][None, :, :], axis=2), axis=1)
    while len(chosen) < k:
        i = int(np.argmax(dist))
        chosen.append(i)
        dist = np.minimum(dist, np.linalg.norm(Z - Z[i], axis=1))
    return np.array(sorted(chosen))



def r2_score(y: np.ndarray, yhat: np.ndarray) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` of predictions ``yhat`` for ``y``.

    Both are 1-D arrays of the same length (an (n, 1) column is accepted); score several
    tasks one column at a time. When ``y`` is constant (``SS_tot == 0``) the ratio is
    undefined: the result is 1.0 for a perfect prediction and 0.0 otherwise (as
    scikit-learn does).
    """
    a = float_array(y, "r2_score needs y as a numeric 1-D array")
    b = float_array(yhat, "r2_score needs yhat as a numeric 1-D array")
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if b.ndim == 2 and b.shape[1] == 1:
        b = b[:, 0]
    if a.ndim != 1 or a.shape != b.shape:
        raise ConfigError(
            f"r2_score needs y and yhat as 1-D arrays of equal length, got shapes "
            f"{np.shape(y)} and {np.shape(yhat)}"
        )
    if a.size == 0:
        raise ConfigError("r2_score needs at least one value")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ConfigError("r2_score got NaN or infinite values")
    ss_res = float(np.sum((a - b) ** 2))
    ss_tot = float(np.sum((a - a.mean()) ** 2))
    if ss_tot == 0:
        return 1.0 if ss_res == 0 else 0.0
    return 1.0 - ss_res / ss_tot
