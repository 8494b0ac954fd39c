"""front.png: readable at any number of tasks (no zig-zag lines over projections, the legend
outside the data, labelled histograms, predictions linked to their measurements)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy

pytest.importorskip("matplotlib")


def _study(n: int, verify: int = 3, **kw: Any) -> Any:
    targets = np.full((n, n), 0.1) + 0.8 * np.eye(n)

    def objective(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        return np.column_stack([1 - ((C - t) ** 2).sum(1) + 0.03 * np.sin(7 * C.sum(1))
                                for t in targets])

    return MergeStudy(objective=objective, task_names=[f"task_{i}" for i in range(n)],
                      budget=(n + 1) * (n + 2), verify=verify, preference=[1.0] * n,
                      seed=0, **kw).run()


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """The figure plot_front would save (kept open for inspection)."""
    import mapframe.plotting as plotting

    seen: dict[str, Any] = {}
    real_save = plotting._save

    def keep(plt: Any, fig: Any, path: Any, dpi: int, rect: Any = None) -> Any:
        seen["fig"] = fig
        fig.tight_layout(rect=rect)
        fig.canvas.draw()
        seen["renderer"] = fig.canvas.get_renderer()
        return real_save(plt, fig, path, dpi, rect)

    monkeypatch.setattr(plotting, "_save", keep)
    return seen


def _lines(ax: Any) -> list[Any]:
    return [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 0]


@pytest.mark.parametrize("n", [3, pytest.param(5, marks=pytest.mark.slow)])  # 5: ~35 s
def test_many_tasks_no_zigzag_legend_outside_labelled_histograms(
        n: int, tmp_path: Any, captured: dict[str, Any]) -> None:
    from mapframe.plotting import plot_front

    result = _study(n)
    assert plot_front(result, tmp_path / "front.png") is not None
    fig = captured["fig"]
    axes = fig.get_axes()
    assert len(axes) == n * n
    for ax in axes:
        # The only lines are prediction -> measurement links: two points each.
        assert all(len(ln.get_xdata()) == 2 for ln in _lines(ax)), "a polyline joins points"
        assert ax.get_legend() is None
    links = sum(len(_lines(ax)) for ax in axes)
    n_verified = int(result.front.verified.sum())
    assert n_verified > 0 and links == n_verified * n * (n - 1)
    # Histograms (the diagonal) say what they count.
    for i in range(n):
        assert "front points" in axes[i * n + i].get_title()
    assert axes[0].get_ylabel() == "front points"
    # One figure legend, below every axes: it covers no data.
    assert len(fig.legends) == 1
    renderer = captured["renderer"]
    legend_box = fig.legends[0].get_window_extent(renderer)
    lowest = min(ax.get_tightbbox(renderer).y0 for ax in axes)
    assert legend_box.y1 <= lowest + 1.0
    # The title sits above the top row.
    title_box = fig._suptitle.get_window_extent(renderer)
    highest = max(ax.get_tightbbox(renderer).y1 for ax in axes)
    assert title_box.y0 >= highest - 1.0


def test_two_tasks_star_at_measured_metrics_and_links(tmp_path: Any,
                                                        captured: dict[str, Any]) -> None:
    from mapframe.plotting import plot_front

    result = _study(2, verify=4)
    plot_front(result, tmp_path / "front.png")
    ax = captured["fig"].get_axes()[0]
    sel = result.selected
    assert sel is not None and result.front.measured[sel]
    labels = [c.get_label() for c in ax.collections]
    star = ax.collections[labels.index("selected for preference (measured)")]
    np.testing.assert_allclose(star.get_offsets()[0], result.front.real[sel])
    # Each verified prediction is linked to its measurement.
    P, R = result.front.predicted, result.front.real
    links = {(round(float(ln.get_xdata()[0]), 9), round(float(ln.get_ydata()[0]), 9)):
             (float(ln.get_xdata()[1]), float(ln.get_ydata()[1]))
             for ln in _lines(ax) if len(ln.get_xdata()) == 2}
    for k in np.flatnonzero(result.front.verified):
        end = links[(round(float(P[k, 0]), 9), round(float(P[k, 1]), 9))]
        np.testing.assert_allclose(end, R[k, :2])


def test_beyond_six_tasks_one_parallel_coordinates_panel(tmp_path: Any,
                                                         captured: dict[str, Any]) -> None:
    """At 16 tasks the scatter matrix was 256 panels and 30 s of matplotlib whatever the
    number of points; beyond 6 tasks front.png is one panel with an axis per task."""
    from mapframe.plotting import MATRIX_MAX_TASKS, plot_front

    n = MATRIX_MAX_TASKS + 2
    result = _study(n, verify=4, sampler="sobol", surrogate="quadratic", front_solver="nsga2")
    assert plot_front(result, tmp_path / "front.png") is not None
    fig = captured["fig"]
    (ax,) = fig.get_axes()
    assert [t.get_text() for t in ax.get_xticklabels()] == [
        f"task_{i} (max)" for i in range(n)]
    front = result.front
    lines = {}
    for ln in _lines(ax):
        lines.setdefault(ln.get_color(), []).append(np.asarray(ln.get_ydata(), dtype=float))
    # every front point is one line through its best-known metrics, scaled to the front
    drawn = sum(len(lines.get(c, [])) for c in ("tab:blue", "tab:red", "tab:green"))
    assert drawn == len(front)
    assert len(lines["tab:red"]) == int(front.verified.sum()) > 0
    B = front.best_known
    lo, hi = B.min(axis=0), B.max(axis=0)
    (gold,) = lines["gold"]
    np.testing.assert_allclose(gold, (B[result.selected] - lo) / (hi - lo))
    assert all(((y >= -1e-9) & (y <= 1 + 1e-9)).all() for c in ("tab:blue", "tab:red")
               for y in lines[c])
    assert len(fig.legends) == 1 and ax.get_legend() is None
