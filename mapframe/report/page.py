"""The report page: one self-contained HTML file (plotly.js inline, the data as embedded JSON,
a small script for the preference control and, on the dashboard, live refresh).

:func:`bundle` turns :class:`~mapframe.report.data.ReportData` into what the page's script
renders (figures as plotly JSON, tables as HTML fragments, the selection data);
:func:`render_page` writes the page around one bundle. Needs plotly.
"""

from __future__ import annotations

import dataclasses
import html
import json
import math
import re
from functools import lru_cache
from typing import Any

from mapframe.report.data import ReportData
from mapframe.report.figures import build_figures, front_hover

__all__ = ["bundle", "bundle_json", "render_page"]


def _clean(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, (int, float)) else html.escape(str(v))


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _overview(data: ReportData) -> str:
    ev = data.evaluations
    n = len(ev["phase"])
    n_search = sum(p == "search" for p in ev["phase"])
    n_bad = sum(s != "ok" for s in ev["status"])
    parts = [f'<span id="n-evaluations">{n}</span> evaluations stored ({n_search} search, '
             f"{n - n_search} verification, {n_bad} failed or invalid)"]
    if data.front is not None:
        src = data.front["source"]
        counts = ", ".join(f"{src.count(s)} {s}" for s in ("predicted", "verified", "measured")
                           if src.count(s))
        parts.append(f'front: <span id="front-size">{len(src)}</span> points ({counts})')
    where = data.directory or data.store or ""
    out = f"<p>{'; '.join(parts)}.</p><p class='muted'>{html.escape(where)}</p>"
    out += "".join(f'<p class="note">{html.escape(n)}</p>' for n in data.notes)
    return out


def _diagnostics(data: ReportData) -> str:
    if not any(d["r2"] is not None for d in data.diagnostics):
        return "<p class='muted'>Known once the study has finished (summary.json).</p>"
    rows = [[html.escape(d["task"]), _num(d["model"]), _num(d["r2"], 3), _num(d["loo_r2"], 3),
             _num(d["verified_mean_abs_error"]), _num(d["verified_max_abs_error"])]
            for d in data.diagnostics]
    n_front = max((d.get("n_verified_front", 0) for d in data.diagnostics), default=0)
    n_done = sum(p == "verify" for p in data.evaluations["phase"])
    return _table(["task", "surrogate", "R²", "leave-one-out R²",
                   "mean |pred − real|, verified front points",
                   "max |pred − real|, verified front points"], rows, "numbers") + (
        "<p class='muted'>R² on the fitted evaluations, leave-one-out R² (how well each point "
        "is predicted without it), and the error of the predictions at the "
        f"<span id='n-verified-front'>{n_front}</span> front points marked verified (of "
        f"{n_done} verification evaluations: a verified point that a measured point beats "
        "leaves the front and is not counted here). A verified error far above what the "
        "leave-one-out R² suggests means the front is less trustworthy than the fit "
        "looks.</p>")


def _tradeoffs(data: ReportData) -> str:
    t = data.tradeoffs
    out = ""
    if t is None:
        out += "<p class='muted'>Known once the study has finished.</p>"
    else:
        if t["degenerate"]:
            out += f'<p class="degenerate" id="degenerate">{html.escape(t["degenerate"])}</p>'
        out += "".join(f"<p>{html.escape(s)}.</p>" for s in t["sentences"])
        rows = [[html.escape(n), _num(r["min"]), _num(r["max"]), _num(r["span"])]
                for n, r in t["ranges"].items()]
        out += _table(["task", "min", "max", "range"], rows,
                      "numbers")
        if t["correlations"]:
            rows = [[html.escape(" vs ".join(c["tasks"])), _num(c["r"], 2),
                     "conflict" if c["r"] is not None and c["r"] <= -0.5 else
                     "agree" if c["r"] is not None and c["r"] >= 0.5 else
                     "no trade-off" if c["r"] is None else "weak"] for c in t["correlations"]]
            out += _table(["tasks", "correlation along the front", "reading"], rows, "numbers")
    tv = data.task_vectors
    if tv["zero"]:
        out += ("<p class='warn'>zero task vector (the fine-tune equals the pretrained model): "
                f"{html.escape(', '.join(tv['zero']))}; the front shows a trade-off for it that "
                "does not exist.</p>")
    if tv["duplicates"]:
        pairs = "; ".join(" = ".join(p) for p in tv["duplicates"])
        out += f"<p class='warn'>duplicated task vectors: {html.escape(pairs)}.</p>"
    if not tv["zero"] and not tv["duplicates"] and tv["note"] is None:
        out += "<p>No zero or duplicated task vector.</p>"
    if tv["note"]:
        out += f"<p class='muted'>Task vectors: {html.escape(tv['note'])}.</p>"
    return out


def bundle(data: ReportData, live: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the page's script renders: ``data`` (the report data, its ``evaluations``
    without their coefficients and metrics, which only the figures need), ``figures`` (id, title,
    caption, height, plotly JSON, highlight), ``panels`` (HTML fragments by element id),
    ``front_hover`` (each front point's hover text) and ``live`` (the dashboard's polling
    settings, ``None`` for a static file)."""
    figures = []
    for f in build_figures(data):
        figures.append({"id": f.id, "title": f.title, "caption": f.caption,
                        "height": f.height, "highlight": f.highlight,
                        "figure": json.loads(f.figure.to_json())})
    hover = ([front_hover(data, k) for k in range(len(data.front["source"]))]
             if data.front is not None else [])
    # The data's fields as they are (no dataclasses.asdict: its deep copy of every nested
    # list cost seconds at 10 000 evaluations), since _clean copies them anyway.
    fields = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)}
    # The figures above draw the evaluations; the page's script reads none of their raw
    # values, which evaluations.csv and the store hold: embedding them again made a report
    # of 10 000 evaluations of 16 tasks 14.0 MB instead of 7.8 MB.
    fields["evaluations"] = {k: v for k, v in data.evaluations.items()
                             if k not in ("coefficients", "metrics")}
    return _clean({"data": fields, "figures": figures,
                   "panels": {"overview": _overview(data), "diagnostics": _diagnostics(data),
                              "tradeoffs": _tradeoffs(data)},
                   "front_hover": hover, "live": live})


def bundle_json(b: dict[str, Any]) -> str:
    """The bundle as JSON that is safe inside a ``<script>`` element and still valid JSON:
    ``<``, ``>`` and ``&`` are written as the JSON escapes ``\\u003c``, ``\\u003e`` and
    ``\\u0026`` (no ``</script>`` or ``<!--`` can appear; ``JSON.parse`` reads them back)."""
    text = json.dumps(b, allow_nan=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def render_page(data: ReportData, live: dict[str, Any] | None = None) -> str:
    """The whole page for ``data``: self-contained, it opens offline."""
    b = bundle(data, live)
    title = f"mapframe report: {data.study or 'study'}"
    parts = {"TITLE": html.escape(title), "STYLE": _STYLE, "SCRIPT": _SCRIPT,
             "BUNDLE": bundle_json(b), "PLOTLYJS": _plotly_js()}
    # One pass over the template: a value that contains a placeholder (a study named
    # "x {{BUNDLE}}") is inserted as it is, never filled in again.
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _TEMPLATE)


#: The page template's placeholders, ``{{NAME}}``.
_PLACEHOLDER = re.compile(r"\{\{(TITLE|STYLE|SCRIPT|BUNDLE|PLOTLYJS)\}\}")


_STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#222;
background:#fafafa}
header{background:#24364b;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
header .live{font-size:12px;opacity:.8}
main{max-width:1200px;margin:0 auto;padding:12px 24px 40px}
section{background:#fff;border:1px solid #e3e3e3;border-radius:6px;margin:14px 0;
padding:10px 16px}
section h2{font-size:16px;margin:6px 0 8px}
.muted{color:#666;font-size:13px}.note{color:#8a5a00}.warn{color:#b00020}
.degenerate{font-weight:600;color:#b00020}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border-bottom:1px solid #eee;padding:3px 10px;text-align:left}
table.numbers td{font-variant-numeric:tabular-nums}
.slider{display:flex;align-items:center;gap:10px;margin:4px 0}
.slider label{min-width:140px}.slider input{width:260px}.slider output{min-width:48px}
code{background:#f1f1f1;padding:4px 6px;border-radius:4px;font-size:13px;
word-break:break-all}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}
@media(max-width:900px){.grid{grid-template-columns:1fr}}
"""

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{TITLE}}</title><style>{{STYLE}}</style>
<script id="plotly-js">{{PLOTLYJS}}</script>
</head><body>
<header><h1>{{TITLE}}</h1><span class="live" id="live-status"></span></header>
<main>
<section><h2>Overview</h2><div id="overview"></div></section>
<section id="preference-panel"><h2>Choose a model: preference</h2>
<p class="muted">One weight per task (how much of the task's range on the front you value;
normalised to sum 1). The point with the best weighted score, on best-known metrics, is
highlighted in the figures, as <code>mapframe export --preference</code> would select it.</p>
<div id="sliders"></div><div id="selected-info"></div>
<p id="export-line">Export it: <code id="export-cmd"></code></p></section>
<div id="figures"></div>
<div class="grid">
<section><h2>Surrogate diagnostics</h2><div id="diagnostics"></div></section>
<section><h2>Trade-off summary</h2><div id="tradeoffs"></div></section>
</div>
</main>
<script type="application/json" id="mapframe-bundle">{{BUNDLE}}</script>
<script>{{SCRIPT}}</script>
</body></html>
"""

# The page's own script: render the bundle, the preference control, live refresh.
_SCRIPT = r"""
(function () {
"use strict";
var B = JSON.parse(document.getElementById("mapframe-bundle").textContent);
var pref = null;
var CONFIG = {displaylogo: false, responsive: true};

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
  });
}
function fmt(v) { return v === null || v === undefined ? "\u2013" : Number(v).toPrecision(4); }

// The same arithmetic as mapframe.metrics.select_by_preference (Front.select): best-known
// metrics scaled to [0, 1] over the front (or the study's bounds), 1 = best, a task with no
// range scores 1; weights normalised to sum 1; the first best score among the allowed rows.
function selectIndex(sel, p) {
  var F = sel.best_known, T = p.length, K = F.length, total = 0, j, k;
  for (j = 0; j < T; j++) { total += p[j]; }
  if (!(total > 0) || K === 0) { return -1; }
  var w = p.map(function (x) { return x / total; });
  var lo = [], hi = [];
  for (j = 0; j < T; j++) {
    if (sel.bounds) { lo.push(sel.bounds[0][j]); hi.push(sel.bounds[1][j]); continue; }
    var a = Infinity, b = -Infinity;
    for (k = 0; k < K; k++) { a = Math.min(a, F[k][j]); b = Math.max(b, F[k][j]); }
    lo.push(a); hi.push(b);
  }
  var best = -1, bestScore = -Infinity;
  for (k = 0; k < K; k++) {
    if (sel.among && !sel.among[k]) { continue; }
    var s = 0;
    for (j = 0; j < T; j++) {
      var span = hi[j] - lo[j];
      var u = span > 0 ? (F[k][j] - lo[j]) / span : 0;
      if (sel.directions[j] !== "max") { u = 1 - u; }
      // no range, or round-off only (mapframe.metrics.flat_range): every point is best
      if (span <= sel.flat_tolerance * Math.max(Math.abs(hi[j]), Math.abs(lo[j]))) {
        u = 1;
      }
      s += u * w[j];
    }
    if (s > bestScore) { best = k; bestScore = s; }
  }
  return best;
}
window.mapframeSelect = function (p) { return selectIndex(B.data.selection, p); };

function buildSliders() {
  var d = B.data, box = document.getElementById("sliders");
  if (!d.selection) {
    document.getElementById("preference-panel").style.display = "none";
    return;
  }
  document.getElementById("preference-panel").style.display = "";
  if (pref === null || pref.length !== d.task_names.length) {
    // One scale for the weights and the sliders: a slider at position p (0-100) is weight
    // p / 100, and the study's preference is scaled so that its largest weight is 1 (the
    // slider at 100). Until a slider moves, the weights are the preference itself.
    var raw = (d.selection.preference || d.task_names.map(function () { return 1; }));
    var top = Math.max.apply(null, raw) || 1;
    pref = raw.map(function (x) { return x / top; });
    box.innerHTML = "";
    d.task_names.forEach(function (name, j) {
      var row = document.createElement("div");
      row.className = "slider";
      var label = document.createElement("label");
      label.textContent = name + " (" + d.directions[j] + ")";
      label.htmlFor = "pref-" + j;
      var input = document.createElement("input");
      input.type = "range"; input.min = "0"; input.max = "100"; input.step = "1";
      input.id = "pref-" + j;
      input.value = String(Math.round(100 * pref[j]));
      var out = document.createElement("output");
      out.id = "pref-value-" + j;
      input.addEventListener("input", function () {
        // every weight from its slider's position, so what is shown is what is selected
        pref = pref.map(function (x, i) {
          var s = document.getElementById("pref-" + i);
          return s ? Number(s.value) / 100 : x;
        });
        update();
      });
      row.appendChild(label); row.appendChild(input); row.appendChild(out);
      box.appendChild(row);
    });
  }
}

function highlight(k) {
  var d = B.data, F = d.front;
  B.figures.forEach(function (f) {
    var h = f.highlight, gd = document.getElementById("fig-" + f.id);
    if (!h || !gd || !gd.data) { return; }
    if (h.kind === "scatter") {
      var xy = h.axes.map(function (a) {
        if (k < 0) { return null; }
        return a[0] === "coef" ? F.coefficients[k][a[1]] : F.best_known[k][a[1]];
      });
      Plotly.restyle(gd, {x: [[xy[0]]], y: [[xy[1]]],
                          text: [[k < 0 ? "" : B.front_hover[k]]]}, [h.trace]);
    } else if (h.kind === "splom") {
      var dims = h.labels.map(function (label, j) {  // escaped for plotly, as built
        return {label: label, values: [k < 0 ? null : F.best_known[k][j]]};
      });
      Plotly.restyle(gd, {dimensions: [dims], text: [[k < 0 ? "" : B.front_hover[k]]]},
                     [h.trace]);
    } else if (h.kind === "parcoords") {
      // Lines are drawn in order: the selected one goes last, so it is on top.
      var order = F.source.map(function (s, i) { return i; }).filter(function (i) {
        return i !== k;
      });
      if (k >= 0) { order.push(k); }
      var T = d.task_names.length;
      var pdims = h.labels.map(function (label, j) {
        return {label: label, values: order.map(function (i) {
          return j < T ? F.best_known[i][j] : F.coefficients[i][j - T];
        })};
      });
      var colors = order.map(function (i) { return i === k ? 1 : 0; });
      Plotly.restyle(gd, {dimensions: [pdims], "line.color": [colors]}, [h.trace]);
    }
  });
}

function update() {
  var d = B.data, info = document.getElementById("selected-info");
  var cmd = document.getElementById("export-cmd");
  if (!d.selection) { return; }
  var total = pref.reduce(function (a, b) { return a + b; }, 0);
  d.task_names.forEach(function (n, j) {
    var o = document.getElementById("pref-value-" + j);
    if (o) { o.textContent = total > 0 ? (pref[j] / total).toFixed(2) : "0"; }
  });
  var k = selectIndex(d.selection, pref);
  document.body.setAttribute("data-selected", String(k));
  if (k < 0) {
    info.innerHTML = "<p class='warn'>Give at least one task a positive weight.</p>";
    cmd.textContent = "";
    highlight(-1);
    return;
  }
  var F = d.front, rows = "";
  d.task_names.forEach(function (n, j) {
    rows += "<tr><td>" + esc(n) + "</td><td>" + fmt(F.predicted[k][j]) + "</td><td>" +
      fmt(F.real[k][j]) + "</td>" +
      (F.std ? "<td>" + fmt(F.std[k][j]) + "</td>" : "") + "</tr>";
  });
  var coefs = d.coefficient_names.map(function (n, j) {
    return esc(n) + "=" + fmt(F.coefficients[k][j]);
  }).join(", ");
  info.innerHTML = "<p>Selected: <b>front point <span id='selected-index'>" + k +
    "</span></b> (" + esc(F.source[k]) + "); coefficients " + coefs + "</p>" +
    "<table class='numbers'><thead><tr><th>task</th><th>predicted</th><th>measured</th>" +
    (F.std ? "<th>predictive std</th>" : "") + "</tr></thead><tbody>" + rows +
    "</tbody></table>" +
    (d.export.note ? "<p class='muted' id='export-note'>" +
     esc(d.export.note.split("{N}").join(String(k))) + "</p>" : "");
  // no command where mapframe export cannot work (no config.yaml): the note says how
  var template = d.export.command;
  document.getElementById("export-line").style.display = template ? "" : "none";
  if (!template) { cmd.textContent = ""; highlight(k); return; }
  // the point's {N} is the last one: a folder's name may hold "{N}" too
  var at = template.lastIndexOf("{N}");
  cmd.textContent = template.slice(0, at) + String(k) + template.slice(at + 3);
  highlight(k);
}

function render() {
  var box = document.getElementById("figures");
  Object.keys(B.panels).forEach(function (id) {
    document.getElementById(id).innerHTML = B.panels[id];
  });
  var ids = B.figures.map(function (f) { return f.id; }).join(",");
  if (box.getAttribute("data-ids") !== ids) {
    box.innerHTML = "";
    B.figures.forEach(function (f) {
      var s = document.createElement("section");
      s.innerHTML = "<h2></h2><p class='muted'></p>";
      s.querySelector("h2").textContent = f.title;
      s.querySelector("p").textContent = f.caption;
      var div = document.createElement("div");
      div.id = "fig-" + f.id; div.className = "figure";
      div.style.height = f.height + "px";
      s.appendChild(div); box.appendChild(s);
    });
    box.setAttribute("data-ids", ids);
  }
  buildSliders();
  return Promise.all(B.figures.map(function (f) {
    return Plotly.react("fig-" + f.id, f.figure.data, f.figure.layout, CONFIG);
  })).then(function () {
    update();
    window.mapframeRendered = (window.mapframeRendered || 0) + 1;
  });
}

function poll() {
  fetch("version", {cache: "no-store"}).then(function (r) { return r.json(); })
    .then(function (v) {
      if (v.version === B.data.version) { return null; }
      return fetch("data.json", {cache: "no-store"}).then(function (r) { return r.json(); })
        .then(function (nb) { B = nb; return render(); });
    })
    .then(function () {
      document.getElementById("live-status").textContent =
        "live: checked " + new Date().toLocaleTimeString();
    })
    .catch(function () {
      document.getElementById("live-status").textContent =
        "live: the dashboard is not answering (stopped?)";
    });
}

render();
if (B.live) { setInterval(poll, B.live.interval_ms); }
})();
"""
