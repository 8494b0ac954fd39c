"""The report's plotly figures, built from :class:`~mapframe.report.data.ReportData`.

Each builder returns a :class:`Figure`: the plotly figure plus, where the page's preference
control highlights the selected point, which trace it updates and how (``highlight``).
Importing this module needs plotly (``pip install 'mapframe[report]'``).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

import plotly.graph_objects as go

from mapframe.plotting import SPLOM_SEARCH_POINTS, thin
from mapframe.report.analysis import TRACE_POINTS
from mapframe.report.data import ReportData

__all__ = ["Figure", "build_figures"]

PREDICTED = "#1f77b4"
VERIFIED = "#ff7f0e"
MEASURED = "#2ca02c"
SEARCH = "#a0a0a0"
HIGHLIGHT = "#d62728"
FONT = {"family": "system-ui, -apple-system, Segoe UI, sans-serif", "size": 12}


@dataclass
class Figure:
    """A figure for the page: its ``id`` (the div), the plotly ``figure`` and how the
    selected point is highlighted (``None``: not at all)."""

    id: str
    title: str
    figure: go.Figure
    highlight: dict[str, Any] | None = None
    caption: str = ""
    height: int = 460
    extra: dict[str, Any] = field(default_factory=dict)


def _h(text: object) -> str:
    """``text`` as plotly shows it: plotly reads titles, labels and hover text as HTML, so a
    task named ``<i>acc</i>`` is escaped to show as written (quotes need no escape there)."""
    return html.escape(str(text), quote=False)


def _fmt(v: float | None) -> str:
    return "–" if v is None else f"{v:.4g}"


def _pairs(names: list[str], values: list[float | None] | None) -> str:
    if values is None or all(v is None for v in values):
        return "not measured"
    return ", ".join(f"{_h(n)}={_fmt(v)}" for n, v in zip(names, values))


def front_hover(data: ReportData, k: int) -> str:
    """The hover text of front point ``k``: coefficients, predicted, measured (and std)."""
    f = data.front
    assert f is not None
    lines = [f"<b>front point {k}</b> ({_h(f['source'][k])})",
             "coefficients: " + _pairs(data.coefficient_names, f["coefficients"][k]),
             "predicted: " + _pairs(data.task_names, f["predicted"][k]),
             "measured: " + _pairs(data.task_names, f["real"][k])]
    if f["std"] is not None:
        lines.append("predictive std: " + _pairs(data.task_names, f["std"][k]))
    return "<br>".join(lines)


def evaluation_hover(data: ReportData, i: int) -> str:
    """The hover text of evaluation ``i``: coefficients and measured metrics."""
    ev = data.evaluations
    return "<br>".join([
        f"<b>evaluation {i + 1}</b> ({_h(ev['phase'][i])}, {_h(ev['status'][i])})",
        "coefficients: " + _pairs(data.coefficient_names, ev["coefficients"][i]),
        "predicted: not recorded for evaluations",
        "measured: " + _pairs(data.task_names, ev["metrics"][i])])


def _ok_evaluations(data: ReportData, phase: str) -> list[int]:
    ev = data.evaluations
    return [i for i, (p, s, m) in enumerate(zip(ev["phase"], ev["status"], ev["metrics"]))
            if (p == "search") == (phase == "search") and s == "ok"
            and all(v is not None for v in m)]


def _layout(fig: go.Figure, **kw: Any) -> go.Figure:
    fig.update_layout(template="plotly_white", font=FONT, hoverlabel={"align": "left"},
                      margin={"l": 60, "r": 20, "t": 30, "b": 50},
                      legend={"orientation": "h", "yanchor": "top", "y": -0.15,
                              "xanchor": "left", "x": 0}, **kw)
    return fig


def _front_2d(data: ReportData) -> Figure:
    f = data.front
    T = len(data.task_names)
    # One task: the metric against the first coefficient; two: the tasks against each other.
    if T == 1:
        axes = [("coef", 0), ("task", 0)]
        labels = [_h(data.coefficient_names[0]), _h(data.task_names[0])]
    else:
        axes = [("task", 0), ("task", 1)]
        labels = [_h(n) for n in data.task_names[:2]]

    def xy(coefs: list[Any], metrics: list[Any], rows: list[int]) -> tuple[list[Any], ...]:
        out = []
        for kind, j in axes:
            src = coefs if kind == "coef" else metrics
            out.append([src[i][j] for i in rows])
        return tuple(out)

    fig = go.Figure()
    ev = data.evaluations
    for phase, name, symbol in (("search", "search evaluations (measured)", "circle"),
                                ("verify", "verification evaluations (measured)", "diamond")):
        rows = _ok_evaluations(data, phase)
        if rows:
            x, y = xy(ev["coefficients"], ev["metrics"], rows)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="markers", name=name,
                marker={"color": SEARCH if phase == "search" else "rgba(0,0,0,0)",
                        "symbol": symbol, "size": 7,
                        "line": {"color": VERIFIED if phase == "verify" else SEARCH,
                                 "width": 1.5}},
                text=[evaluation_hover(data, i) for i in rows],
                hovertemplate="%{text}<extra></extra>"))
    if f is not None:
        src = f["source"]
        rows = list(range(len(src)))
        pred = [k for k in rows if src[k] == "predicted"]
        ver = [k for k in rows if src[k] == "verified"]
        meas = [k for k in rows if src[k] == "measured"]
        x, y = xy(f["coefficients"], f["best_known"], rows)
        if T == 2:
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name="front (best known)",
                                     line={"color": PREDICTED, "width": 1}, opacity=0.4,
                                     hoverinfo="skip"))
        if pred:
            x, y = xy(f["coefficients"], f["predicted"], pred)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="markers", name="front: predicted",
                marker={"color": PREDICTED, "size": 7},
                text=[front_hover(data, k) for k in pred],
                hovertemplate="%{text}<extra></extra>"))
        if ver:
            px, py = xy(f["coefficients"], f["predicted"], ver)
            rx, ry = xy(f["coefficients"], f["real"], ver)
            lx: list[Any] = []
            ly: list[Any] = []
            for a, b, c, d in zip(px, py, rx, ry):
                lx += [a, c, None]
                ly += [b, d, None]
            fig.add_trace(go.Scatter(x=lx, y=ly, mode="lines", name="prediction → measurement",
                                     line={"color": VERIFIED, "width": 1.5, "dash": "dot"},
                                     hoverinfo="skip"))
            fig.add_trace(go.Scatter(
                x=px, y=py, mode="markers", name="front: verified, as predicted",
                marker={"color": "white", "size": 8, "line": {"color": PREDICTED, "width": 2}},
                text=[front_hover(data, k) for k in ver],
                hovertemplate="%{text}<extra></extra>"))
            fig.add_trace(go.Scatter(
                x=rx, y=ry, mode="markers", name="front: verified, as measured",
                marker={"color": VERIFIED, "size": 9},
                text=[front_hover(data, k) for k in ver],
                hovertemplate="%{text}<extra></extra>"))
        if meas:
            x, y = xy(f["coefficients"], f["real"], meas)
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="markers", name="front: measured point",
                marker={"color": MEASURED, "size": 9, "symbol": "square"},
                text=[front_hover(data, k) for k in meas],
                hovertemplate="%{text}<extra></extra>"))
    highlight = None
    if f is not None:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", name="selected for the preference",
            marker={"color": HIGHLIGHT, "symbol": "star", "size": 18,
                    "line": {"color": "black", "width": 1}},
            text=[""], hovertemplate="%{text}<extra></extra>"))
        highlight = {"trace": len(fig.data) - 1, "kind": "scatter", "axes": axes}
    _layout(fig, xaxis_title=labels[0], yaxis_title=labels[1])
    return Figure("front", "The front", fig, highlight,
                  "Hover a point for its coefficients and metrics. Verified points are drawn "
                  "twice, as predicted (hollow) and as measured (orange), joined by a dotted "
                  "line; the star is the point the preference below selects (at its "
                  "best-known metrics).", height=520)


def _splom(data: ReportData) -> Figure:
    f = data.front
    names = data.task_names
    ev = data.evaluations
    fig = go.Figure()

    def dims(metrics: list[Any], rows: list[int]) -> list[dict[str, Any]]:
        return [{"label": _h(n), "values": [metrics[i][j] for i in rows]}
                for j, n in enumerate(names)]

    common = {"showupperhalf": False, "diagonal": {"visible": False}}
    rows = _ok_evaluations(data, "search")
    n_search = len(rows)
    rows = thin(rows, SPLOM_SEARCH_POINTS)
    if rows:
        fig.add_trace(go.Splom(dimensions=dims(ev["metrics"], rows),
                               name="search evaluations (measured)",
                               marker={"color": SEARCH, "size": 4},
                               text=[evaluation_hover(data, i) for i in rows],
                               hovertemplate="%{text}<extra></extra>", **common))
    highlight = None
    if f is not None:
        for src, name, color, size in (("predicted", "front: predicted", PREDICTED, 5),
                                       ("verified", "front: verified (measured)", VERIFIED, 8),
                                       ("measured", "front: measured point", MEASURED, 8)):
            ks = [k for k, s in enumerate(f["source"]) if s == src]
            if ks:
                fig.add_trace(go.Splom(dimensions=dims(f["best_known"], ks), name=name,
                                       marker={"color": color, "size": size},
                                       text=[front_hover(data, k) for k in ks],
                                       hovertemplate="%{text}<extra></extra>", **common))
        fig.add_trace(go.Splom(dimensions=[{"label": _h(n), "values": [None]} for n in names],
                               name="selected for the preference",
                               marker={"color": HIGHLIGHT, "symbol": "star", "size": 14,
                                       "line": {"color": "black", "width": 1}},
                               text=[""], hovertemplate="%{text}<extra></extra>", **common))
        highlight = {"trace": len(fig.data) - 1, "kind": "splom",
                     "labels": [_h(n) for n in names]}
    T = len(names)
    _layout(fig, dragmode="select", hovermode="closest")
    fig.update_layout(margin={"l": 70, "r": 20, "t": 20, "b": 60})
    for i in range(1, T + 1):
        fig.update_layout({f"xaxis{i if i > 1 else ''}": {"title": {"font": {"size": 10}}},
                           f"yaxis{i if i > 1 else ''}": {"title": {"font": {"size": 10}}}})
    caption = ("Each panel is one pair of tasks (best-known metrics: measured where "
               "measured, else predicted). Points are not joined: a front of more than two "
               "tasks has no order. Hover a point for its coefficients and metrics.")
    if len(rows) < n_search:
        caption += (f" Grey: {len(rows):,} of the {n_search:,} search evaluations, evenly "
                    "spaced in the order they were made (all of them only make the panels "
                    "slow to build and draw); every front point is shown.")
    return Figure("front", "The front: every pair of tasks", fig, highlight, caption,
                  height=max(480, 150 * (T - 1) + 100))


def _parcoords(data: ReportData) -> Figure:
    f = data.front
    assert f is not None
    best = f["best_known"]
    dims = []
    for j, n in enumerate(data.task_names):
        dims.append({"label": f"{_h(n)} ({data.directions[j]})",
                     "values": [row[j] for row in best]})
    for j, n in enumerate(data.coefficient_names):
        dims.append({"label": f"coef {_h(n)}",
                     "values": [row[j] for row in f["coefficients"]]})
    fig = go.Figure(go.Parcoords(
        dimensions=dims, labelangle=-20 if len(dims) > 8 else 0, labelside="top",
        line={"color": [0] * len(best), "colorscale": [[0, "rgba(31,119,180,0.35)"],
                                                       [1, HIGHLIGHT]],
              "cmin": 0, "cmax": 1}))
    _layout(fig)
    fig.update_layout(margin={"l": 60, "r": 80, "t": 90 if len(dims) > 8 else 60, "b": 30})
    return Figure("parcoords", "The front: parallel coordinates", fig,
                  {"trace": 0, "kind": "parcoords", "labels": [d["label"] for d in dims]},
                  "One line per front point: its best-known metric on each task, then its "
                  "coefficients. Drag along an axis to filter; the red line is the selected "
                  "point.", height=440)


def _progress(data: ReportData) -> Figure:
    ev = data.evaluations
    hv = ev["hypervolume"]
    n = len(hv)
    colors = [SEARCH if p == "search" else VERIFIED for p in ev["phase"]]
    fig = go.Figure(go.Scatter(
        x=list(range(1, n + 1)), y=hv, mode="lines+markers", name="hypervolume",
        line={"color": SEARCH, "shape": "hv"}, marker={"size": 6, "color": colors},
        text=[f"{p}, {s}" for p, s in zip(ev["phase"], ev["status"])],
        hovertemplate="evaluation %{x} (%{text})<br>hypervolume %{y:.4f}<extra></extra>"))
    _layout(fig, xaxis_title="evaluations stored (grey: search, orange: verification)",
            yaxis_title="hypervolume (normalised)", showlegend=False)
    caption = ("Hypervolume of the measured points after each evaluation (each task scaled "
               "to [0, 1] over all measured points, reference point 0.1 below the worst). ")
    if ev.get("hypervolume_method") == "monte-carlo":
        caption += (f"Estimated on {TRACE_POINTS:,} fixed random points of the box between "
                    "the reference point and the best values (too many tasks or evaluations "
                    "for the exact volume): each evaluation adds the points it is the first "
                    "to dominate; the values carry a sampling error of a few percent. ")
    caption += "A curve that has flattened says more evaluations add little."
    return Figure("progress", "Search progress", fig, None, caption, height=340)


def build_figures(data: ReportData) -> list[Figure]:
    """The figures of the report: the front (a scatter for up to two tasks; parallel
    coordinates and a scatter matrix beyond) and the search progress."""
    figures = []
    if len(data.task_names) <= 2:
        figures.append(_front_2d(data))
    else:
        if data.front is not None:
            figures.append(_parcoords(data))
        figures.append(_splom(data))
    figures.append(_progress(data))
    return figures
