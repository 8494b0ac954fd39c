"""The report's data, numbers, HTML, CLI and dashboard server (no browser; see
test_report_browser.py for the page itself)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from report_studies import make_results

from mapframe.cli import main
from mapframe.errors import ConfigError
from mapframe.report import assemble, locate, write_report
from mapframe.report.analysis import hypervolume_trace, task_vector_findings, tradeoff_summary
from mapframe.results_folder import load_results

pytest.importorskip("plotly")

TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("two"), 2, preference=[0.5, 0.5])


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    return make_results(tmp_path_factory.mktemp("three"), 3,
                        directions=["max", "min", "max"])


def _bundle(html: str) -> dict:
    m = re.search(r'<script type="application/json" id="mapframe-bundle">(.*?)</script>',
                  html, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


# ----------------------------------------------------------------------------- numbers

def test_hypervolume_trace_by_hand():
    F = np.array([[0.0, 1.0], [np.nan, np.nan], [1.0, 0.0], [0.5, 0.5]])
    hv = hypervolume_trace(F, ["max", "max"])
    # scaled to [0, 1], reference -0.1: one box 0.1 x 1.1, then the union of two (0.21),
    # then (0.5, 0.5) adds its box 0.6 x 0.6 less what the two cover (0.06 + 0.06 - 0.01):
    # 0.25; the failed row adds nothing.
    assert hv == pytest.approx([0.11, 0.11, 0.21, 0.46])
    # a task to minimise is turned around: the same points, the metric negated
    F2 = F * [1, -1]
    assert hypervolume_trace(F2, ["max", "min"]) == pytest.approx(hv)


def test_tradeoff_summary_conflict_and_degenerate():
    F = np.array([[1.0, 0.0, 0.5], [0.5, 0.5, 0.5], [0.0, 1.0, 0.5]])
    C = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 1.0, 0.0]])
    t = tradeoff_summary(F, C, ["a", "b", "c"], ["a", "b", "c"], ["max"] * 3)
    assert t["ranges"]["a"] == {"min": 0.0, "max": 1.0, "span": 1.0}
    r = {tuple(c["tasks"]): c["r"] for c in t["correlations"]}
    assert r[("a", "b")] == pytest.approx(-1.0)
    assert r[("a", "c")] is None  # c does not vary
    text = " ".join(t["sentences"])
    assert "conflict" in text and "a vs b" in text and "no trade-off for c" in text
    assert t["degenerate"] is None
    # with b to minimise, a and b improve together: one point is best for every task
    t2 = tradeoff_summary(F, C, ["a", "b", "c"], ["x", "y", "z"], ["max", "min", "max"])
    assert t2["degenerate"].startswith("one merge serves every preference: c = (x=1, y=0, z=0)")
    assert "improve together" in " ".join(t2["sentences"])


def test_task_vector_findings():
    digest = {"pretrained": {"path": "/b", "sha256": "00"},
              "finetuned": {"a": {"path": "/a", "sha256": "11"},
                            "b": {"path": "/b2", "sha256": "11"},
                            "c": {"path": "/c", "sha256": "00"}}}
    found = task_vector_findings({"settings": {"merge": digest}}, ["a", "b", "c"])
    assert found["zero"] == ["c"] and found["duplicates"] == [["a", "b"]]
    assert found["note"] is None
    stat = {"pretrained": {"path": "/b", "size": 1}, "finetuned": {"a": {"path": "/a"},
                                                                   "b": {"path": "/x"}}}
    found = task_vector_findings({"settings": {"merge": stat}}, ["a", "b"])
    assert not found["zero"] and not found["duplicates"] and "fingerprint: hash" in found["note"]
    memory = {"in_memory": {"tasks": ["a", "b"], "task_sq_norms": [2.0, 0.0]}}
    assert task_vector_findings({"settings": {"merge": memory}}, ["a", "b"])["zero"] == ["b"]
    assert "black-box" in task_vector_findings({"settings": {"merge": None}}, ["a"])["note"]


# ----------------------------------------------------------------------------- data

def test_data_matches_the_results_folder(three):
    data = assemble(locate(three))
    saved = load_results(three)
    assert data.task_names == ["alpha", "beta", "gamma"]
    assert data.directions == ["max", "min", "max"]
    best = np.array(data.front["best_known"], dtype=float)
    assert np.allclose(best, saved.front.best_known)
    assert data.front["source"] == saved.front.source
    ev = data.evaluations
    n = saved.summary["n_search_evaluations"] + saved.summary["verification"]["n_verified"]
    assert len(ev["phase"]) == n and ev["phase"].count("verify") == 3
    hv = ev["hypervolume"]
    assert all(np.diff(hv) >= 0) and hv[-1] > hv[0]
    assert data.selection["among"] == [bool(v) for v in saved.front.measured]
    assert [d["task"] for d in data.diagnostics] == data.task_names
    assert all(d["r2"] is not None and d["verified_mean_abs_error"] is not None
               for d in data.diagnostics)
    assert data.tradeoffs["correlations"] and data.tradeoffs["degenerate"] is None
    # a black-box study: mapframe export refuses its folder, so no command is shown
    assert data.export["command"] is None and "black-box" in data.export["note"]


def test_export_command_for_a_checkpoint_study_with_its_config(tmp_path):
    from test_report_faults import checkpoint_results

    folder = checkpoint_results(tmp_path, with_config=True)
    data = assemble(locate(folder))
    assert data.export["has_model"] is True and data.export["note"] is None
    assert data.export["command"] == (f"mapframe export {folder.absolute()} --point {{N}} "
                                      "-o merged.safetensors")


def test_report_html_is_self_contained(two):
    path = write_report(two)
    assert path == two / "report.html"
    html = path.read_text()
    # plotly.js is inline (the library's own source mentions map-tile URLs it never loads
    # here); everything else in the page has no external reference at all
    lib = re.search(r'<script id="plotly-js">(.*?)</script>', html, re.S)
    assert lib and "Plotly" in lib.group(1) and len(lib.group(1)) > 1_000_000
    rest = html.replace(lib.group(1), "")
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "<link", "@import"):
        assert pattern not in rest, pattern
    assert "<script src" not in html
    b = _bundle(html)
    assert b["live"] is None
    assert [f["id"] for f in b["figures"]] == ["front", "progress"]
    saved = load_results(two)
    assert b["data"]["selection"]["selected"] == saved.selected
    names = [t["name"] for t in b["figures"][0]["figure"]["data"]]
    assert "front: predicted" in names and "prediction → measurement" in names
    assert names[-1] == "selected for the preference"
    # The evaluations' raw values are drawn by the figures, not embedded again (they are in
    # evaluations.csv): at 10 000 evaluations of 16 tasks that copy was 6.5 of 14 MB.
    ev = b["data"]["evaluations"]
    assert "coefficients" not in ev and "metrics" not in ev
    with (two / "evaluations.csv").open() as fh:
        rows = len(fh.readlines()) - 1
    assert len(ev["phase"]) == len(ev["status"]) == len(ev["hypervolume"]) == rows > 0


def test_report_of_many_tasks_has_parcoords_and_splom(three):
    b = _bundle(write_report(three).read_text())
    kinds = {f["id"]: [t["type"] for t in f["figure"]["data"]] for f in b["figures"]}
    assert kinds["parcoords"] == ["parcoords"]
    assert set(kinds["front"]) == {"splom"}
    # no connecting lines in the scatter matrix
    assert all(t.get("mode") in (None, "markers") for t in b["figures"][1]["figure"]["data"])
    labels = [d["label"] for d in b["figures"][0]["figure"]["data"][0]["dimensions"]]
    assert labels == ["alpha (max)", "beta (min)", "gamma (max)", "coef alpha", "coef beta",
                      "coef gamma"]


def test_degenerate_front_says_so(tmp_path):
    from mapframe import MergeStudy
    from mapframe.report.page import render_page

    def agree(C):  # both tasks best at (0.6, 0.6): no trade-off
        d = ((np.atleast_2d(C) - 0.6) ** 2).sum(axis=1)
        return np.column_stack([1 - d, 0.5 - 2 * d])

    study = MergeStudy(objective=agree, task_names=["a", "b"], budget=12, seed=0, verify=2,
                       preference=[1, 1], storage=tmp_path / "evaluations.sqlite")
    with pytest.warns(Warning):
        study.run().save(tmp_path, plot=False)
    data = assemble(locate(tmp_path))
    assert data.tradeoffs["degenerate"].startswith(
        "one merge serves every preference: c = (a=0.6, b=0.6)")
    html = _bundle(render_page(data))["panels"]["tradeoffs"]
    assert 'id="degenerate"' in html and "one merge serves every preference" in html


@pytest.mark.parametrize("name", ["evil {{BUNDLE}}", "evil {{PLOTLYJS}}", "x {{TITLE}}"])
def test_a_study_name_holding_a_placeholder_of_the_page_is_shown_as_written(tmp_path, name):
    """The template was filled placeholder by placeholder, so one inside the (first
    inserted) title was filled too: a 19 MB title, a data block that no longer parsed, or
    the data (with a task's name as live HTML) pasted into the heading."""
    from mapframe import MergeStudy
    from mapframe.report.page import render_page

    def two(C):
        C = np.atleast_2d(C)
        return np.column_stack([C[:, 0], 1 - C[:, 0] ** 2])

    MergeStudy(objective=two, task_names=["<b>a</b>", "b"], budget=8, seed=0,
               sampler="sobol", study_name=name,
               storage=tmp_path / "evaluations.sqlite").run().save(tmp_path, plot=False)
    page = render_page(assemble(locate(tmp_path)))
    assert _bundle(page)["data"]["study"] == name
    title = re.search(r"<title>(.*?)</title>", page, re.S)
    assert title is not None and title.group(1) == f"mapframe report: {name}"
    assert page.count('id="mapframe-bundle"') == 1 and "<b>a</b>" not in page.split(
        'id="mapframe-bundle"')[0]


def test_a_watched_study_keeps_its_own_results_as_its_folder_changes(tmp_path):
    """The source is fixed when the dashboard starts, the folder is not: a second study
    saving into it put its front beside the first study's evaluations; and a dashboard
    started on a running study's store never showed the front once the study finished."""
    from mapframe import MergeStudy

    def study(name, names, out, budget=10):
        def f(C):
            C = np.atleast_2d(C)
            return np.column_stack([C[:, 0], 1 - C[:, 0] ** 2 - 0.1 * C[:, 1]])

        return MergeStudy(objective=f, task_names=names, budget=budget, seed=0,
                          sampler="sobol", storage=out / "evaluations.sqlite", study_name=name)

    shared = tmp_path / "shared"
    a = study("A", ["a1", "a2"], shared).run()
    a.save(shared, plot=False)
    src = locate(shared)
    assert assemble(src).front is not None
    study("B", ["b1", "b2"], shared, budget=12).run().save(shared, plot=False)
    after = assemble(src)  # the dashboard's next poll
    assert after.study == "A" and after.task_names == ["a1", "a2"]
    assert len(after.evaluations["phase"]) == 10
    # not B's front: A's own, as A stored it in the store when it finished
    assert after.front is not None and np.allclose(after.front["coefficients"],
                                                   a.front.coefficients)
    assert any("stored in its store" in n for n in after.notes)

    running = tmp_path / "running"
    live = study("C", ["c1", "c2"], running)
    live.run()  # the store exists, the results are not written yet
    import sqlite3  # nor its end: the finished run's summary and front taken back out

    with sqlite3.connect(running / "evaluations.sqlite") as conn:
        conn.execute("DELETE FROM meta WHERE key IN ('summary', 'front')")
    src = locate(running / "evaluations.sqlite")
    before = (src.version(), assemble(src).front)
    assert before[1] is None
    live.run().save(running, plot=False)  # the study finishes and writes its results
    assert src.version() != before[0]  # the dashboard sees the change ...
    assert assemble(src).front is not None  # ... and shows the front


# ----------------------------------------------------------------------------- CLI

def _config(tmp_path: Path) -> Path:
    cfg = {"study": {"name": "quad", "budget": 12, "seed": 0, "verify": 3,
                     "preference": [0.5, 0.5], "output": "out"},
           "evaluator": {"name": "callable", "function": "objectives:two_quadratics",
                         "tasks": ["a", "b"]},
           "sampler": "lhs", "front_solver": {"name": "nsga2", "n_gen": 40}}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_run_writes_the_report(tmp_path, capsys, monkeypatch):
    cfg = _config(tmp_path)
    assert main(["run", str(cfg), "-q", "--no-plot"]) == 0
    report = tmp_path / "out" / "report.html"
    assert report.is_file()
    assert "report_html" in capsys.readouterr().out
    report.unlink()
    assert main(["run", str(cfg), "-q", "--no-plot", "--no-report"]) == 0
    assert not report.exists()
    import mapframe.report

    monkeypatch.setattr(mapframe.report, "plotly_available", lambda: False)
    assert main(["run", str(cfg), "-q", "--no-plot"]) == 0
    err = capsys.readouterr().err
    assert "report.html not written: it needs plotly" in err and not report.exists()
    monkeypatch.setitem(sys.modules, "plotly", None)  # not importable
    assert main(["report", str(tmp_path / "out"), "-o", str(tmp_path / "r.html")]) == 2
    assert "pip install 'mapframe[report]'" in capsys.readouterr().err


def test_report_command_and_bad_paths(two, tmp_path, capsys):
    assert main(["report", str(two)]) == 0
    assert "report written to" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    for path, message in ((tmp_path / "empty", "is not a mapframe results folder"),
                          (tmp_path / "notes.txt", "neither a results folder nor an SQLite"),
                          (tmp_path / "nope", "does not exist")):
        assert main(["report", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len([line for line in err.splitlines() if line.strip()]) == 1
    with pytest.raises(ConfigError, match="has no study 'other'"):
        locate(two / "evaluations.sqlite", study="other")


def test_a_study_named_through_a_shared_folder_gets_only_its_own_results(tmp_path):
    """Two studies saved into one folder (one store): naming the first through the folder
    used to pair its evaluations with the second's front and tasks, and a study the store
    lacks silently showed the folder's."""
    from mapframe import MergeStudy

    def quad(C):
        C = np.atleast_2d(C)
        return np.column_stack([1 - ((C - [.8, .2]) ** 2).sum(1),
                                1 - ((C - [.2, .8]) ** 2).sum(1)])

    out = tmp_path / "out"
    db = out / "evaluations.sqlite"
    MergeStudy(objective=quad, task_names=["acc_a", "acc_b"], budget=8, seed=0,
               sampler="sobol", storage=db, study_name="first").run().save(out, plot=False)
    MergeStudy(objective=lambda C: 100 + 50 * quad(C), task_names=["loss_x", "loss_y"],
               budget=10, seed=1, sampler="sobol", storage=db,
               study_name="second").run().save(out, plot=False)
    for given in (out, db):
        data = assemble(locate(given, study="first"))
        assert data.study == "first" and data.task_names == ["acc_a", "acc_b"]
        assert len(data.evaluations["phase"]) == 8
        # the first study's own front (stored in the store), never the folder's second
        assert data.front is not None and data.directory is None
    last = assemble(locate(out, study="second"))
    assert last.task_names == ["loss_x", "loss_y"] and last.front is not None
    with pytest.raises(ConfigError, match="has no study 'third'"):
        locate(out, study="third")


# ----------------------------------------------------------------------------- dashboard

def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, b""


def test_dashboard_serves_and_sees_new_evaluations(tmp_path):
    from report_studies import make_study

    from mapframe.history import Evaluation
    from mapframe.report.dashboard import Dashboard
    from mapframe.storage import SQLiteStore

    study = make_study(tmp_path, 2)
    study.run().save(tmp_path, plot=False)
    with Dashboard(locate(tmp_path / "evaluations.sqlite"), port=0, interval=0.2) as dash:
        dash.start()
        status, page = _get(dash.url)
        assert status == 200 and b'id="mapframe-bundle"' in page
        assert _bundle(page.decode())["live"] == {"interval_ms": 200}
        v1 = json.loads(_get(dash.url + "version")[1])["version"]
        d1 = json.loads(_get(dash.url + "data.json")[1])
        n1 = len(d1["data"]["evaluations"]["phase"])
        assert d1["data"]["directory"] == str(tmp_path.absolute())  # found beside the store
        store = SQLiteStore(tmp_path / "evaluations.sqlite")
        store.open(study.study_name, study.fingerprint())
        store.add(Evaluation(np.array([0.3, 0.3]), np.array([0.5, 0.5])))
        store.close()
        v2 = json.loads(_get(dash.url + "version")[1])["version"]
        assert v2 != v1
        d2 = json.loads(_get(dash.url + "data.json")[1])
        assert len(d2["data"]["evaluations"]["phase"]) == n1 + 1
        assert any("last finished run" in n for n in d2["data"]["notes"])
        assert _get(dash.url + "nothing")[0] == 404


def test_dashboard_of_a_running_study_without_results(tmp_path):
    from report_studies import make_study

    from mapframe.history import Evaluation
    from mapframe.report.page import render_page
    from mapframe.storage import SQLiteStore

    study = make_study(tmp_path / "run", 2)
    store = SQLiteStore(tmp_path / "run" / "evaluations.sqlite")
    store.open(study.study_name, study.fingerprint())
    for c in ([0.1, 0.9], [0.9, 0.1]):
        store.add(Evaluation(np.array(c), np.array(c)))
    store.close()
    src = locate(tmp_path / "run")  # a folder with a store and no results yet
    data = assemble(src)
    assert data.front is None and data.selection is None
    assert data.task_names == ["alpha", "beta"] and len(data.evaluations["phase"]) == 2
    assert "no front yet" in data.notes[0]
    b = _bundle(render_page(data))
    assert [f["id"] for f in b["figures"]] == ["front", "progress"]
    assert b["figures"][0]["highlight"] is None  # no front, nothing to select
    assert len(b["figures"][0]["figure"]["data"][0]["x"]) == 2
    with pytest.raises(ConfigError, match="store without a finished study"):
        write_report(tmp_path / "run" / "evaluations.sqlite")


def test_dashboard_command_stops_cleanly_on_ctrl_c(two):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get(
        "PYTHONPATH", "")])}
    # SIGINT back to its default in the child: a suite started as a background job (`cmd &`
    # in a non-interactive shell) inherits SIGINT ignored, and Python then never raises
    # KeyboardInterrupt; a user's terminal Ctrl-C has the default disposition.
    proc = subprocess.Popen([sys.executable, "-m", "mapframe.cli", "dashboard", str(two),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        url = re.search(r"(http://\S+)", line).group(1)
        deadline = time.monotonic() + 20
        while _get(url + "version")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "dashboard stopped" in out and "Traceback" not in err


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port must be in 0-65535"),
    (["--port", "-5"], "--port must be in 0-65535"),
    (["--interval", "inf"], "--interval must be a number of seconds in (0, 86400]"),
    (["--interval", "0"], "--interval must be a number of seconds"),
])
def test_dashboard_arguments_out_of_range_are_one_line_errors(two, capsys, args, message):
    """A port past 65535 or an infinite interval ended in a raw OverflowError."""
    assert main(["dashboard", str(two), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_dashboard_serves_on_an_ipv6_host(two):
    """An IPv6 host (::1) failed with "Address family not supported" and the advice to
    choose another port."""
    import socket

    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    from mapframe.report.dashboard import Dashboard

    with Dashboard(locate(two), host="::1", port=0, interval=0.5) as dash:
        dash.start()
        assert dash.url.startswith("http://[::1]:")
        status, page = _get(dash.url)
        assert status == 200 and b'id="mapframe-bundle"' in page


@pytest.mark.parametrize("target", ["folder", "missing/r.html", "afile.txt/r.html"])
def test_report_to_an_unusable_path_is_a_one_line_error(two, tmp_path, capsys, target):
    """A folder, a missing folder or a file standing for a folder ended in raw tracebacks."""
    (tmp_path / "folder").mkdir()
    (tmp_path / "afile.txt").write_text("x")
    assert main(["report", str(two), "-o", str(tmp_path / target)]) == 2
    err = capsys.readouterr().err
    assert "-o" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1

