"""The numbers a report shows, as plain functions on arrays: search progress (hypervolume of
the measured points after each evaluation), the trade-off summary of a front, and what a
results folder says about the task vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mapframe.hypervolume import (
    MAX_TABLE_CELLS,
    FrontTable,
    _popcount_rows,
    hypervolume_improvement,
)
from mapframe.metrics import flat_range, select_by_preference

__all__ = ["hypervolume_trace", "search_progress", "task_vector_findings", "tradeoff_summary"]

#: Reference point margin below the worst measured value (share of each task's range).
REF_MARGIN = 0.1
#: Correlation along the front below which two tasks are said to conflict (above: agree).
CONFLICT = -0.5
AGREE = 0.5


def _signs(directions: Sequence[str]) -> np.ndarray:
    return np.array([1.0 if d == "max" else -1.0 for d in directions])


def hypervolume_trace(metrics: np.ndarray, directions: Sequence[str],
                      method: str = "auto") -> np.ndarray:
    """Hypervolume of the first ``k`` rows of ``metrics (M, T)``, for ``k = 1..M``.

    Each task is turned into "larger is better" and scaled to ``[0, 1]`` over all ``M``
    rows, with the reference point :data:`REF_MARGIN` below 0. Non-finite rows add nothing;
    the trace never decreases and its last value is the hypervolume of all the rows (an
    estimate of it for the Monte-Carlo trace).
    ``method``: ``"exact"`` (each row adds its
    :func:`~mapframe.hypervolume.hypervolume_improvement` over the non-dominated rows before
    it), ``"monte-carlo"`` (see :func:`search_progress`) or ``"auto"``: exact while that is
    cheap, else Monte-Carlo.
    """
    return search_progress(metrics, directions, method)[0]


def search_progress(metrics: np.ndarray, directions: Sequence[str],
                    method: str = "auto") -> tuple[np.ndarray, str]:
    """:func:`hypervolume_trace` and how it was computed: ``"exact"`` or ``"monte-carlo"``.

    ``"auto"`` computes the exact trace while its improvement tables stay small (at most
    :data:`EXACT_TRACE_CELLS` grid cells over all the rows, none beyond
    :data:`~mapframe.hypervolume.MAX_TABLE_CELLS`: one or two tasks, or three or four with
    a few hundred evaluations) and switches to the Monte-Carlo trace beyond (many tasks or
    evaluations, where each exact step would cost seconds). The Monte-Carlo trace draws
    :data:`TRACE_POINTS` fixed uniform points (seed 0) in the box between the reference
    point and the best values once, and marks the points each row dominates, in order: the
    value after row ``k`` is the share of points the first ``k`` rows dominate times the
    box's volume (non-decreasing; the last value estimates the hypervolume of all the rows,
    with a standard error of ``volume · sqrt(p (1 − p) / TRACE_POINTS)`` for a dominated
    share ``p``). Its cost is ``M × TRACE_POINTS × T`` comparisons, packed in bits.
    """
    if method not in ("auto", "exact", "monte-carlo"):
        raise ValueError(f"method must be 'auto', 'exact' or 'monte-carlo', got {method!r}")
    F = np.asarray(metrics, dtype=float)
    out = np.zeros(len(F))
    finite = np.all(np.isfinite(F), axis=1) if F.size else np.zeros(len(F), bool)
    if not finite.any():
        return out, "exact"
    G = F * _signs(directions)
    lo, hi = G[finite].min(axis=0), G[finite].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    U = (G - lo) / span
    ref = np.full(F.shape[1], -REF_MARGIN)
    if method != "monte-carlo":
        budget = None if method == "exact" else EXACT_TRACE_CELLS
        exact = _trace_exact(U, finite, ref, budget)
        if exact is not None:
            return exact, "exact"
    return _trace_monte_carlo(U, finite, ref), "monte-carlo"


#: Work (grid cells of the exact improvement tables, summed over the rows) beyond which
#: :func:`search_progress` gives up the exact trace for the Monte-Carlo one (about 0.5 s).
EXACT_TRACE_CELLS = 10_000_000
#: Fixed uniform points of the Monte-Carlo trace.
TRACE_POINTS = 1 << 15
#: Rows compared with the points at once in the Monte-Carlo trace.
_TRACE_CHUNK = 256


def _trace_exact(U: np.ndarray, finite: np.ndarray, ref: np.ndarray,
                 budget: int | None) -> np.ndarray | None:
    """The exact trace, or ``None`` as soon as its tables are seen to pass ``budget`` cells
    (the cells so far plus the last table's for each row left, at the share of rows that
    joined the front so far) or one table :data:`~mapframe.hypervolume.MAX_TABLE_CELLS`
    (where the improvement would be sampled)."""
    M, T = U.shape
    out = np.zeros(M)
    front = np.zeros((0, T))
    total = 0.0
    spent = added = seen = 0
    left = int(finite.sum())
    for i in range(M):
        y = U[i]
        seen, left = seen + finite[i], left - finite[i]
        # a row some earlier one weakly dominates adds nothing and leaves the front as it is
        if finite[i] and not np.any(np.all(front >= y, axis=1)):
            added += 1
            if budget is not None:
                cells = front.shape[0] + 1 if T <= 2 else FrontTable.cells(front, ref)
                spent += cells
                # the rows left, as many of them added as so far, cost at least as much
                ahead = spent + cells * left * added / seen
                if ahead > budget or (T > 2 and cells > MAX_TABLE_CELLS):
                    return None
            total += float(hypervolume_improvement(y[None], front, ref)[0])
            front = np.concatenate([front[~np.all(front <= y, axis=1)], y[None]])
        out[i] = total
    return out


def _trace_monte_carlo(U: np.ndarray, finite: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """The Monte-Carlo trace (see :func:`search_progress`).

    Comparisons are made on ranks: ``W[p, t] <= U[i, t]`` exactly when point ``p``'s rank
    among the points on task ``t`` is below the number of points at most ``U[i, t]``
    (16-bit integers instead of floats). Each chunk of rows gives one bit row per row of
    the points it dominates; a running OR over the rows (and the rows before the chunk)
    and a popcount give the dominated count after every row.
    """
    M, T = U.shape
    P = TRACE_POINTS
    upper = np.maximum(U[finite].max(axis=0), ref + 1e-12)
    W = ref + np.random.default_rng(0).random((P, T)) * (upper - ref)
    order = np.argsort(W, axis=0, kind="stable")
    itype = np.uint16 if P < 1 << 16 else np.uint32
    rank = np.empty((T, P), dtype=itype)
    below = np.zeros((M, T), dtype=itype)
    for t in range(T):
        rank[t, order[:, t]] = np.arange(P, dtype=itype)
        below[finite, t] = np.searchsorted(W[order[:, t], t], U[finite, t], side="right")
    covered = np.zeros((P + 63) // 64, dtype=np.uint64)
    counts = np.zeros(M, dtype=np.int64)
    hit = np.empty((_TRACE_CHUNK, P), dtype=bool)
    step = np.empty((_TRACE_CHUNK, P), dtype=bool)
    for i in range(0, M, _TRACE_CHUNK):
        k = below[i : i + _TRACE_CHUNK]
        n = len(k)
        D, S = hit[:n], step[:n]
        np.less(rank[0][None, :], k[:, 0, None], out=D)
        for t in range(1, T):  # one task at a time: no (rows, points, T) array
            np.less(rank[t][None, :], k[:, t, None], out=S)
            D &= S
        packed = np.packbits(D, axis=1)
        packed = np.pad(packed, ((0, 0), (0, (-packed.shape[1]) % 8)))
        words = np.bitwise_or.accumulate(packed.view(np.uint64), axis=0) | covered
        counts[i : i + n] = _popcount_rows(words)
        covered = words[-1]
    return counts * (float(np.prod(upper - ref)) / P)


def _correlation(x: np.ndarray, y: np.ndarray) -> float | None:
    if len(x) < 3 or np.ptp(x) <= 0 or np.ptp(y) <= 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def _fmt_coefficients(names: Sequence[str], c: np.ndarray) -> str:
    return "(" + ", ".join(f"{n}={v:.3g}" for n, v in zip(names, c)) + ")"


def tradeoff_summary(best_known: np.ndarray, coefficients: np.ndarray,
                     task_names: Sequence[str], coefficient_names: Sequence[str],
                     directions: Sequence[str]) -> dict[str, Any]:
    """Which tasks the front trades against each other.

    Returns ``ranges`` (per task: ``min``, ``max`` and ``span`` of its best-known metric over
    the front), ``correlations`` (per pair of tasks, both turned "larger is better", their
    Pearson correlation along the front: negative = the tasks conflict, ``None`` when a task
    does not vary), ``sentences`` (the same in words) and ``degenerate`` (a sentence when one
    point is best for every preference: every one-task preference selects it, so every
    preference does; else ``None``).
    """
    F = np.asarray(best_known, dtype=float)
    C = np.asarray(coefficients, dtype=float)
    T = len(task_names)
    out: dict[str, Any] = {"ranges": {}, "correlations": [], "sentences": [],
                           "degenerate": None}
    if len(F) == 0:
        out["sentences"].append("the front is empty")
        return out
    for j, name in enumerate(task_names):
        lo, hi = float(F[:, j].min()), float(F[:, j].max())
        out["ranges"][name] = {"min": lo, "max": hi, "span": hi - lo}
    G = F * _signs(directions)
    conflicts, agreements = [], []
    for a in range(T):
        for b in range(a + 1, T):
            r = _correlation(G[:, a], G[:, b])
            out["correlations"].append({"tasks": [task_names[a], task_names[b]], "r": r})
            if r is not None and r <= CONFLICT:
                conflicts.append(f"{task_names[a]} vs {task_names[b]} (r = {r:.2f})")
            elif r is not None and r >= AGREE:
                agreements.append(f"{task_names[a]} and {task_names[b]} (r = {r:.2f})")
    flat = [n for n in task_names if flat_range(np.array(out["ranges"][n]["min"]),
                                                 np.array(out["ranges"][n]["max"]))]
    if conflicts:
        out["sentences"].append("tasks that conflict along the front (improving one costs "
                                "the other): " + "; ".join(conflicts))
    if agreements:
        out["sentences"].append("tasks that improve together along the front: "
                                + "; ".join(agreements))
    if flat:
        out["sentences"].append("no trade-off for " + ", ".join(flat) + ": the same value "
                                "at every point of the front")
    winners = {select_by_preference(F, np.eye(T)[j], list(directions)) for j in range(T)}
    if len(winners) == 1:
        k = winners.pop()
        out["degenerate"] = ("one merge serves every preference: c = "
                             + _fmt_coefficients(coefficient_names, C[k])
                             + f" (front point {k} is best on every task)")
    return out


def _digest(stat: Any) -> str | None:
    if not isinstance(stat, dict):
        return None
    for key in ("sha256", "digest"):
        if stat.get(key):
            return f"{key}:{stat[key]}"
    return None


def task_vector_findings(summary: dict[str, Any], task_names: Sequence[str]
                         ) -> dict[str, Any]:
    """Zero and duplicated task vectors, from what the results folder recorded.

    Reads ``summary["settings"]["merge"]``: checkpoint digests (``checkpoints.fingerprint:
    hash``; a model folder's file digest) find a fine-tune identical to the pretrained model
    (a zero task vector) or to another fine-tune (a duplicate); in-memory task vectors record
    their squared norms (a zero norm is a zero vector). Returns ``zero`` (task names),
    ``duplicates`` (pairs) and ``note`` (what could not be checked, and what would be needed).
    """
    merge = (summary.get("settings") or {}).get("merge")
    out: dict[str, Any] = {"zero": [], "duplicates": [], "note": None}
    if not merge:
        out["note"] = ("no task vectors: this study used a black-box objective, so there is "
                       "no task vector to check")
        return out
    memory = merge.get("in_memory") or {}
    norms = memory.get("task_sq_norms")
    if norms:
        names = list(memory.get("tasks") or task_names)
        out["zero"] = [n for n, v in zip(names, norms) if v == 0]
        return out
    finetuned = merge.get("finetuned") or {}
    digests = {name: _digest(stat) for name, stat in finetuned.items()}
    base = _digest(merge.get("pretrained"))
    paths = {name: (stat or {}).get("path") for name, stat in finetuned.items()}
    base_path = (merge.get("pretrained") or {}).get("path")
    names = list(finetuned)
    out["zero"] = [n for n in names if (base and digests[n] == base)
                   or (base_path and paths[n] == base_path)]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if (digests[a] and digests[a] == digests[b]) or (paths[a] and paths[a] == paths[b]):
                out["duplicates"].append([a, b])
    if not all(digests.values()):
        out["note"] = (
            "checked by checkpoint path only: the folder records each checkpoint's size and "
            "modification time, not its content. Set checkpoints.fingerprint: hash to record "
            "file digests (finds a fine-tune identical to the pretrained model or to another "
            "one); catching a zero or duplicated task vector inside different files needs the "
            "study to record each task vector's norm and their pairwise cosine similarity")
    return out
