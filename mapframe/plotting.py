"""Front plots: a 2-D scatter for two tasks, a pairwise scatter matrix for more."""

from __future__ import annotations

import functools
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec

import numpy as np

from mapframe.errors import MapframeWarning

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mapframe.nested import NestedResult
    from mapframe.problem import Task
    from mapframe.results import Front, StudyResult
    from mapframe.results_folder import SavedResults

__all__ = ["front_figure", "plot_front", "plot_merge_tree", "plot_nested_fronts"]

_P = ParamSpec("_P")

#: Search evaluations a scatter matrix shows at most, evenly spaced among them (front.png's
#: and the report's): at 16 tasks and 10 000 evaluations all of them drew the same grey cloud
#: in most of the time (and, in the report, most of the page's size).
SPLOM_SEARCH_POINTS = 2000


def thin(rows: list[int], most: int) -> list[int]:
    """At most ``most`` of ``rows``, evenly spaced, the first and the last included."""
    if len(rows) <= most:
        return rows
    if most <= 1:
        return rows[:most]
    picks = np.unique(np.round(np.linspace(0, len(rows) - 1, most)).astype(int))
    return [rows[i] for i in picks]


def _guarded(what: str) -> Callable[[Callable[_P, Path | None]], Callable[_P, Path | None]]:
    """Draw with every text shown as written (no mathtext, no TeX: a task named
    ``revenue $\\b$`` is a name, not a formula) and turn a drawing failure into a one-line
    :class:`MapframeWarning` naming ``what`` was not drawn (``None`` is returned): a plot is
    never worth the results it is saved with."""

    def wrap(fn: Callable[_P, Path | None]) -> Callable[_P, Path | None]:
        @functools.wraps(fn)
        def draw(*args: _P.args, **kwargs: _P.kwargs) -> Path | None:
            try:
                import matplotlib
            except ImportError:
                return fn(*args, **kwargs)  # it warns that matplotlib is not installed
            try:
                with matplotlib.rc_context(_plain_text(matplotlib)):
                    return fn(*args, **kwargs)
            except Exception as e:  # any drawing failure: warn, go on
                first = (str(e).strip().splitlines() or [""])[0]
                warnings.warn(f"{what} was not drawn ({type(e).__name__}: {first}); the "
                              "results are saved without it", MapframeWarning, stacklevel=2)
                return None

        return draw

    return wrap


def _plain_text(matplotlib: Any) -> dict[Any, Any]:
    """rcParams under which every text is drawn as written: no mathtext, no TeX (a text
    keeps the setting it was made under, so a figure drawn later shows it the same)."""
    return {k: False for k in ("text.usetex", "text.parse_math") if k in matplotlib.rcParams}


@_guarded("the front plot (front.png)")
def plot_front(result: StudyResult, path: str | os.PathLike[str], dpi: int = 120) -> Path | None:
    """Draw the evaluated points, the predicted front, verified and measured front points
    (at their real metrics) and the selection (at its best-known metrics): the figure of
    :func:`front_figure`, saved as a PNG.

    Returns the PNG path, or ``None`` (with a warning) when matplotlib is not installed.
    """
    plt = _pyplot()
    if plt is None:
        return None
    fig, rect = _draw_front(plt, _FrontData.of(result))
    return _save(plt, fig, path, dpi, rect=rect)


def front_figure(result: StudyResult | SavedResults) -> Figure:
    """The front plot of ``result`` (a :class:`~mapframe.results.StudyResult` or what
    :func:`mapframe.load_results` read) as a matplotlib ``Figure``: what ``front.png``
    shows (:func:`plot_front`), for a notebook to show inline or for ``fig.savefig``.

    The figure is not registered with pyplot and no backend is selected: it is shown by a
    notebook's display (it has ``_repr_png_``), not by ``plt.show()``, and needs no
    ``plt.close``. For saved results the grey search evaluations are read from the
    folder's ``evaluations.csv`` (or the store); where they cannot be, the figure shows
    the front and the selection only and its title says so. Needs matplotlib (a one-line
    :class:`~mapframe.errors.MapframeError` with the install command otherwise)."""
    from mapframe._imports import optional_import

    matplotlib = optional_import("matplotlib", "plot", "front_figure")
    with matplotlib.rc_context(_plain_text(matplotlib)):
        fig, rect = _draw_front(_Figures(), _FrontData.of(result))
        fig.tight_layout(rect=rect)
    return fig


@dataclass
class _FrontData:
    """What the front plot draws, from a study's result or from saved results."""

    study_name: str
    tasks: list[Task]
    front: Front
    selected: int | None
    #: ``(M, T)`` metrics of the successful search evaluations (``None``: not known).
    search: np.ndarray | None
    n_evaluations: int | None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @classmethod
    def of(cls, result: StudyResult | SavedResults) -> _FrontData:
        from mapframe.results import StudyResult

        if isinstance(result, StudyResult):
            evals = result.history.select("search")
            Y = np.array([e.metrics for e in evals], dtype=float).reshape(
                len(evals), len(result.tasks))
            return cls(result.study_name, result.tasks, result.front, result.selected, Y,
                       len(result.history))
        n = result.summary.get("n_search_evaluations")
        return cls(str(result.summary.get("study", "")), result.tasks, result.front,
                   result.selected, result._search_metrics(),
                   n if isinstance(n, int) else None)


def _draw_front(plt: _Figures, result: _FrontData) -> tuple[Any, tuple[float, float, float,
                                                                          float] | None]:
    """The front plot's figure (not laid out yet) and the rectangle its axes fill (``None``:
    the whole figure), which ``tight_layout`` needs."""
    names = result.task_names
    T = len(names)
    Y = result.search if result.search is not None else np.empty((0, T))
    n_search = len(Y)
    if 2 < T <= MATRIX_MAX_TASKS:  # a scatter matrix: the same cloud from an even sample
        Y = Y[thin(list(range(n_search)), SPLOM_SEARCH_POINTS)]
    solved = result.front.sources != "measured"  # the solver's points (predicted/verified)
    F = result.front.predicted[solved]
    S = None if result.front.predicted_std is None else result.front.predicted_std[solved]
    R = result.front.real
    ver = result.front.verified
    meas = result.front.sources == "measured"
    B = result.front.best_known
    sel = result.selected

    P = result.front.predicted

    def panel(ax, i: int, j: int, join: bool) -> None:
        if n_search:
            ax.scatter(Y[:, i], Y[:, j], s=14, c="0.65", label=(
                "evaluated (search)" if len(Y) == n_search
                else f"evaluated (search; {len(Y)} of {n_search} shown)"))
        if join:  # a 2-D front is a curve; in projections of more tasks it is a cloud
            order = np.argsort(F[:, i])
            ax.plot(F[order, i], F[order, j], "-", c="tab:blue", lw=1, alpha=0.6)
        ax.scatter(F[:, i], F[:, j], s=10, c="tab:blue", label="predicted front")
        if S is not None:
            ax.errorbar(F[:, i], F[:, j], xerr=S[:, i], yerr=S[:, j], fmt="none",
                        ecolor="tab:blue", alpha=0.25, lw=0.8, label="predictive ±1 std")
        if ver.any():
            for k in np.flatnonzero(ver):  # each verified prediction linked to its measurement
                ax.plot([P[k, i], R[k, i]], [P[k, j], R[k, j]], "-", c="tab:red", lw=0.8,
                        alpha=0.7, label="prediction → measurement")
            ax.scatter(R[ver, i], R[ver, j], s=40, marker="x", c="tab:red",
                       label="front, evaluated for real")
        if meas.any():
            ax.scatter(R[meas, i], R[meas, j], s=45, marker="D", facecolors="none",
                       edgecolors="tab:green", label="front, measured point")
        if sel is not None:
            where = "measured" if result.front.measured[sel] else "predicted"
            ax.scatter(B[sel, i], B[sel, j], s=160, marker="*", c="gold", edgecolors="k",
                       label=f"selected for preference ({where})", zorder=5)

    evaluated = ("search evaluations not read" if result.search is None
                 else f"{result.n_evaluations} evaluations")
    title = f"{result.study_name}: amortised Pareto front ({len(B)} points, {evaluated})"
    if T == 1:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ax.hist(Y[:, 0], bins=20, color="0.65")
        ax.axvline(B[0, 0], c="tab:blue", label="front optimum (best known)")
        ax.set_xlabel(names[0])
        ax.set_ylabel("evaluated points")
        ax.legend(fontsize=7)
        fig.suptitle(title, fontsize=9)
        return fig, None
    if T > MATRIX_MAX_TASKS:
        fig, ax = plt.subplots(figsize=(min(0.9 * T + 2.5, 20), 5.4))
        _parallel_coordinates(ax, result, Y, n_search)
        legend_ax = ax
    elif T == 2:
        fig, ax = plt.subplots(figsize=(5.5, 5.2))
        panel(ax, 0, 1, join=True)
        ax.set_xlabel(f"{names[0]} ({result.tasks[0].direction})")
        ax.set_ylabel(f"{names[1]} ({result.tasks[1].direction})")
        legend_ax = ax
    else:
        size = min(2.2 * T, 18)
        fig, axes = plt.subplots(T, T, figsize=(size, size + 0.9), squeeze=False)
        for i in range(T):
            for j in range(T):
                ax = axes[j][i]
                if i == j:
                    ax.hist(F[:, i], bins=15, color="tab:blue", alpha=0.7)
                    ax.set_title(f"{_short(names[i], 18)}: front points", fontsize=7)
                else:
                    panel(ax, i, j, join=False)
                if j == T - 1:
                    ax.set_xlabel(_short(names[i], 24), fontsize=8)
                if i == 0:
                    ax.set_ylabel(_short(names[j], 24) if j else "front points", fontsize=8)
                ax.tick_params(labelsize=6)
        legend_ax = axes[1][0]
    # One legend for the figure, below the data (never over it), each label once.
    handles, labels = legend_ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    fig.legend(list(unique.values()), list(unique.keys()), loc="lower center",
               ncol=min(3, len(unique)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    rows = -(-len(unique) // 3)
    bottom = (0.22 * rows + 0.12) / fig.get_figheight()  # inches of legend, as a fraction
    return fig, (0.0, bottom, 1.0, 0.97)


#: Tasks up to which front.png is a scatter matrix (T x T panels); beyond, one parallel-
#: coordinates panel: 16 tasks made 256 panels, 30 s of matplotlib layout and drawing
#: whatever the number of points, each panel about an inch wide.
MATRIX_MAX_TASKS = 6

#: Search evaluations drawn as grey lines in the parallel-coordinates view (evenly spaced).
PARALLEL_SEARCH_LINES = 300


def _parallel_coordinates(ax: Any, result: _FrontData, Y: np.ndarray,
                          n_search: int) -> None:
    """One vertical axis per task, each scaled to the front's range on it (up is better: a
    task to minimise is flipped), the raw best and worst front values written at its ends;
    every front point is a line through its best-known metrics (blue predicted, red
    verified, green measured), the selection a thick gold line, a thinned sample of the
    search evaluations grey lines behind them (cut off where they leave the front's range)."""
    front = result.front
    B = front.best_known
    sign = np.array([1.0 if t.direction == "max" else -1.0 for t in result.tasks])
    lo, hi = np.nanmin(B * sign, axis=0), np.nanmax(B * sign, axis=0)
    span = np.where(hi > lo, hi - lo, 1.0)
    x = np.arange(len(sign))

    def lines(M: np.ndarray, **style: Any) -> None:
        if len(M):
            drawn = ax.plot(x, ((M * sign - lo) / span).T, **style)
            for extra in drawn[1:]:
                extra.set_label("_nolegend_")

    shown = thin(list(range(len(Y))), PARALLEL_SEARCH_LINES)
    lines(Y[shown], c="0.75", lw=0.5, alpha=0.6,
          label="evaluated (search)" if len(shown) == n_search
          else f"evaluated (search; {len(shown)} of {n_search} shown)")
    ver, meas = front.verified, front.sources == "measured"
    lines(B[~(ver | meas)], c="tab:blue", lw=0.8, alpha=0.5, label="predicted front")
    lines(B[ver], c="tab:red", lw=1.0, alpha=0.8, label="front, evaluated for real")
    lines(B[meas], c="tab:green", lw=1.0, alpha=0.8, label="front, measured point")
    if result.selected is not None:
        where = "measured" if front.measured[result.selected] else "predicted"
        lines(B[[result.selected]], c="gold", lw=3.0, zorder=5,
              label=f"selected for preference ({where})")
    for i in range(len(sign)):
        ax.axvline(i, c="k", lw=0.6, zorder=0)
        best, worst = hi[i] * sign[i], lo[i] * sign[i]
        ax.text(i, 1.03, f"{best:.4g}", ha="center", va="bottom", fontsize=6)
        ax.text(i, -0.03, f"{worst:.4g}", ha="center", va="top", fontsize=6)
    ax.set_xticks(x, [f"{_short(t.name, 14)} ({t.direction})" for t in result.tasks],
                  rotation=45, ha="right", fontsize=7)
    ax.set_xlim(-0.3, len(sign) - 0.7)
    ax.set_ylim(-0.12, 1.12)
    ax.set_yticks([])
    ax.set_ylabel("each task scaled to the front's range; up is better", fontsize=8)


def _save(plt, fig, path: str | os.PathLike[str], dpi: int,  # type: ignore[no-untyped-def]
          rect: tuple[float, float, float, float] | None = None) -> Path:
    fig.tight_layout(rect=rect)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def _short(name: str, n: int = 34) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


class _Figures:
    """``pyplot.subplots`` without pyplot: each figure is a plain
    :class:`matplotlib.figure.Figure` on an Agg canvas of its own, so that drawing
    never selects a backend nor registers a figure with pyplot. (Until 2026-12-07 the plots
    called ``matplotlib.use("Agg")``: in a Jupyter notebook that switched the inline backend
    off, and the user's own ``plt.show()`` showed nothing for the rest of the session.)"""

    @staticmethod
    def subplots(*args: Any, figsize: tuple[float, float] | None = None,
                 **kwargs: Any) -> tuple[Any, Any]:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = _figure_class()(figsize=figsize)
        FigureCanvasAgg(fig)  # its canvas: text is measured and the file written by Agg
        return fig, fig.subplots(*args, **kwargs)

    @staticmethod
    def close(fig: Any) -> None:
        """Nothing to release: pyplot never held the figure."""


_INLINE_FIGURE: type[Figure] | None = None


def _figure_class() -> type[Figure]:
    """:class:`InlineFigure`, made on first use (matplotlib is optional)."""
    global _INLINE_FIGURE
    if _INLINE_FIGURE is None:
        from matplotlib.figure import Figure

        class InlineFigure(Figure):
            """A ``Figure`` that a notebook shows by itself: IPython shows a plain ``Figure``
            only once pyplot has set up its inline backend (before that, a figure made
            without pyplot displays as ``<Figure size ...>``), but it calls ``_repr_png_``
            on any object that has one."""

            def _repr_png_(self) -> bytes:
                buffer = io.BytesIO()
                self.savefig(buffer, format="png")
                return buffer.getvalue()

        InlineFigure.__module__, InlineFigure.__qualname__ = __name__, "InlineFigure"
        _INLINE_FIGURE = InlineFigure
    return _INLINE_FIGURE


def __getattr__(name: str) -> Any:
    if name == "InlineFigure":  # what a pickled figure names
        return _figure_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _pyplot() -> _Figures | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        warnings.warn("matplotlib is not installed, so no front plot was drawn; install it "
                      "with: pip install 'mapframe[plot]'", MapframeWarning, stacklevel=4)
        return None
    return _Figures()


@_guarded("the merge tree plot (tree.png)")
def plot_merge_tree(result: NestedResult, path: str | os.PathLike[str],
                    dpi: int = 120) -> Path | None:
    """Draw Nested MAP's merge tree: leaves (the fine-tuned models) at the bottom, one level
    per round, each merge labelled with the chosen coefficients and its real pair score."""
    plt = _pyplot()
    if plt is None:
        return None
    nodes = result.nodes
    pos: dict[str, tuple[float, float]] = {}
    leaves: list[str] = []

    def collect(name: str) -> None:
        node = nodes[name]
        if node.children:
            for c in node.children:
                collect(c)
        else:
            leaves.append(name)

    collect(result.root)
    for i, name in enumerate(leaves):
        pos[name] = (float(i), 0.0)

    def place(name: str) -> tuple[float, float]:
        node = nodes[name]
        if name in pos:
            return pos[name]
        xs = [place(c)[0] for c in node.children or ()]
        pos[name] = (float(np.mean(xs)), float(node.round))
        return pos[name]

    place(result.root)
    depth = max(y for _, y in pos.values())
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(leaves)), 1.6 + 1.3 * depth))
    records = {p.merged: p for p in result.pairs}
    for name, node in nodes.items():
        if name not in pos or not node.children:
            continue
        x, y = pos[name]
        for child, c in zip(node.children, node.coefficients or (0.0, 0.0)):
            cx, cy = pos[child]
            ax.plot([cx, cx, x], [cy, y, y], "-", c="0.55", lw=1.2, zorder=1)
            ax.annotate(f"{c:.2f}", ((cx + x) / 2, y), textcoords="offset points",
                        xytext=(0, 3), ha="center", fontsize=7, color="tab:blue")
        rec = records.get(name)
        label = f"round {node.round}"
        if rec is not None and rec.score("real") is not None:
            label += f"\nscore {rec.score('real'):.3f}"
        ax.scatter([x], [y], s=60, c="tab:blue", zorder=3)
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(0, 8), ha="center",
                    fontsize=7)
    for name in leaves:
        x, y = pos[name]
        ax.scatter([x], [y], s=60, c="tab:orange", zorder=3)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(0, -14), ha="center",
                    fontsize=8)
    ax.set_ylim(-0.7, depth + 0.8)
    ax.set_xlim(-0.7, len(leaves) - 0.3)
    ax.axis("off")
    pref = ", ".join(f"{w:.2f}" for w in result.preference)
    ax.set_title(f"{result.study_name}: nested merge tree (preference {pref}); blue numbers: "
                 "coefficient of each child", fontsize=8)
    return _save(plt, fig, path, dpi)


@_guarded("the merge fronts plot (fronts.png)")
def plot_nested_fronts(result: NestedResult, path: str | os.PathLike[str],
                       dpi: int = 120) -> Path | None:
    """One panel per merge of the tournament: the pair's evaluated points, its predicted
    front over the two sides' preference-weighted metrics, and the chosen point (predicted
    and real)."""
    plt = _pyplot()
    if plt is None:
        return None
    pairs = result.pairs
    cols = min(4, len(pairs))
    rows = int(np.ceil(len(pairs) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(pairs):]:
        ax.axis("off")
    for ax, rec in zip(axes.flat, pairs):
        res = rec.result
        evals = res.history.select("search")
        Y = np.array([e.metrics for e in evals]).reshape(len(evals), 2)
        F = res.front.predicted
        order = np.argsort(F[:, 0])
        ax.scatter(Y[:, 0], Y[:, 1], s=10, c="0.65", label="evaluated")
        ax.plot(F[order, 0], F[order, 1], "-", c="tab:blue", lw=1.2, label="predicted front")
        ax.scatter(*rec.predicted, s=120, marker="*", c="gold", edgecolors="k", zorder=5,
                   label="chosen (predicted)")
        if rec.real is not None:
            ax.scatter(*rec.real, s=40, marker="x", c="tab:red", zorder=6,
                       label="chosen (real)")
        ax.set_title(f"round {rec.round}: {_short(rec.merged, 48)}", fontsize=7)
        ax.set_xlabel(f"{_short(rec.left)} (w {rec.weights[0]:.2f})", fontsize=7)
        ax.set_ylabel(f"{_short(rec.right)} (w {rec.weights[1]:.2f})", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6, loc="lower left")
    fig.suptitle(f"{result.study_name}: the front of every merge (axes: preference-weighted "
                 "metric of each side's tasks)", fontsize=9)
    return _save(plt, fig, path, dpi)
