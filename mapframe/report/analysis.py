"""The numbers a report shows, as plain functions on arrays: search progress (hypervolume of
the measured points after each evaluation), the trade-off summary of a front, and what a
results folder says about the task vectors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mapframe.hypervolume import hypervolume_improvement
from mapframe.metrics import flat_range, pareto_mask, select_by_preference

__all__ = ["hypervolume_trace", "task_vector_findings", "tradeoff_summary"]

#: Reference point margin below the worst measured value (share of each task's range).
REF_MARGIN = 0.1
#: Correlation along the front below which two tasks are said to conflict (above: agree).
CONFLICT = -0.5
AGREE = 0.5


def _signs(directions: Sequence[str]) -> np.ndarray:
    return np.array([1.0 if d == "max" else -1.0 for d in directions])


def hypervolume_trace(metrics: np.ndarray, directions: Sequence[str]) -> np.ndarray:
    """Hypervolume of the first ``k`` rows of ``metrics (M, T)``, for ``k = 1..M``.

    Each task is turned into "larger is better" and scaled to ``[0, 1]`` over all ``M``
    rows, with the reference point :data:`REF_MARGIN` below 0; the volume grows by each
    row's :func:`~mapframe.hypervolume.hypervolume_improvement` over the points before it.
    Non-finite rows add nothing. The last value is the hypervolume of all the rows.
    """
    F = np.asarray(metrics, dtype=float)
    out = np.zeros(len(F))
    finite = np.all(np.isfinite(F), axis=1) if F.size else np.zeros(len(F), bool)
    if not finite.any():
        return out
    G = F * _signs(directions)
    lo, hi = G[finite].min(axis=0), G[finite].max(axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    U = (G - lo) / span
    ref = np.full(F.shape[1], -REF_MARGIN)
    front = np.zeros((0, F.shape[1]))
    total = 0.0
    for i in range(len(U)):
        if finite[i]:
            total += float(hypervolume_improvement(U[i : i + 1], front, ref)[0])
            front = np.concatenate([front, U[i : i + 1]])
            front = front[pareto_mask(front, ["max"] * F.shape[1])]
        out[i] = total
    return out


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
