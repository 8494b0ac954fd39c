"""Front plots: a 2-D scatter for two tasks, a pairwise scatter matrix for more."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mapframe.errors import MapframeWarning

if TYPE_CHECKING:
    from mapframe.results import StudyResult

__all__ = ["plot_front"]


def plot_front(result: StudyResult, path: str | os.PathLike[str], dpi: int = 120) -> Path | None:
    """Draw the evaluated points, the predicted front, verified points and the selection.

    Returns the PNG path, or ``None`` (with a warning) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn("matplotlib is not installed, so no front plot was drawn; install it "
                      "with: pip install 'mapframe[plot]'", MapframeWarning, stacklevel=2)
        return None

    names = result.task_names
    T = len(names)
    evals = result.history.select("search")
    Y = np.array([e.metrics for e in evals]).reshape(len(evals), T)
    F = result.front.predicted
    S = result.front.predicted_std
    R = result.front.real
    ver = result.front.verified
    sel = result.selected

    def panel(ax, i: int, j: int, legend: bool) -> None:
        ax.scatter(Y[:, i], Y[:, j], s=14, c="0.65", label="evaluated (search)")
        order = np.argsort(F[:, i])
        ax.plot(F[order, i], F[order, j], "-", c="tab:blue", lw=1, alpha=0.6)
        ax.scatter(F[:, i], F[:, j], s=10, c="tab:blue", label="predicted front")
        if S is not None:
            ax.errorbar(F[:, i], F[:, j], xerr=S[:, i], yerr=S[:, j], fmt="none",
                        ecolor="tab:blue", alpha=0.25, lw=0.8, label="predictive ±1 std")
        if ver.any():
            ax.scatter(R[ver, i], R[ver, j], s=40, marker="x", c="tab:red",
                       label="front, evaluated for real")
        if sel is not None:
            ax.scatter(F[sel, i], F[sel, j], s=160, marker="*", c="gold", edgecolors="k",
                       label="selected for preference", zorder=5)
        if legend:
            ax.legend(fontsize=7, loc="best")

    if T == 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(Y[:, 0], bins=20, color="0.65")
        ax.axvline(F[0, 0], c="tab:blue", label="predicted optimum")
        ax.set_xlabel(names[0])
        ax.legend(fontsize=7)
    elif T == 2:
        fig, ax = plt.subplots(figsize=(5.5, 4.5))
        panel(ax, 0, 1, legend=True)
        ax.set_xlabel(f"{names[0]} ({result.tasks[0].direction})")
        ax.set_ylabel(f"{names[1]} ({result.tasks[1].direction})")
    else:
        size = min(2.2 * T, 18)
        fig, axes = plt.subplots(T, T, figsize=(size, size), squeeze=False)
        for i in range(T):
            for j in range(T):
                ax = axes[j][i]
                if i == j:
                    ax.hist(F[:, i], bins=15, color="tab:blue", alpha=0.7)
                else:
                    panel(ax, i, j, legend=(i == 1 and j == 0))
                if j == T - 1:
                    ax.set_xlabel(names[i], fontsize=8)
                if i == 0:
                    ax.set_ylabel(names[j], fontsize=8)
                ax.tick_params(labelsize=6)
    fig.suptitle(f"{result.study_name}: amortised Pareto front ({len(F)} points, "
                 f"{len(result.history)} evaluations)", fontsize=9)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out
