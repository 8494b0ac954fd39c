"""The report in a real browser: headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by selenium. Skipped, with the reason, where they are missing;
CI installs them (.ci/run)."""

from __future__ import annotations

import shlex
import time
from pathlib import Path

import numpy as np
import pytest
from browser_page import open_page, severe_errors
from report_studies import make_results, make_study
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from mapframe.report import locate, write_report
from mapframe.results_folder import load_results


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> Path:
    folder = make_results(tmp_path_factory.mktemp("two"), 2, preference=[0.5, 0.5])
    write_report(folder)
    return folder


@pytest.fixture(scope="module")
def three(tmp_path_factory) -> Path:
    folder = make_results(tmp_path_factory.mktemp("three"), 3,
                          directions=["max", "min", "max"])
    write_report(folder)
    return folder


@pytest.mark.parametrize("which, figures", [("two", ["front", "progress"]),
                                            ("three", ["parcoords", "front", "progress"])])
def test_figures_render_without_errors(driver, request, which, figures):
    folder = request.getfixturevalue(which)
    open_page(driver, (folder / "report.html").as_uri())
    traces = driver.execute_script(
        "return Array.from(document.querySelectorAll('.figure')).map("
        "function (d) { return [d.id, (d.data || []).length,"
        " d.querySelectorAll('.main-svg').length]; });")
    assert [t[0] for t in traces] == [f"fig-{f}" for f in figures]
    assert all(n > 0 and svg > 0 for _, n, svg in traces), traces
    assert severe_errors(driver) == []
    saved = load_results(folder)
    shown = driver.find_element(By.ID, "n-evaluations").text
    n = saved.summary["n_search_evaluations"] + saved.summary["verification"]["n_verified"]
    assert shown == str(n)


def test_hover_shows_coefficients(driver, two):
    open_page(driver, (two / "report.html").as_uri())
    saved = load_results(two)
    k = next(i for i, s in enumerate(saved.front.source) if s == "predicted")
    text = driver.execute_script("""
        var gd = document.getElementById('fig-front');
        var t = gd.data.findIndex(function (d) { return d.name === 'front: predicted'; });
        Plotly.Fx.hover(gd, [{curveNumber: t, pointNumber: 0}]);
        var label = document.querySelector('#fig-front .hoverlayer .hovertext');
        return label ? label.textContent : null;""")
    assert text is not None, "no hover label"
    c = saved.front.coefficients[k]
    assert f"front point {k} (predicted)" in text
    assert f"coefficients: alpha={c[0]:.4g}, beta={c[1]:.4g}" in text
    assert "predicted: alpha=" in text and "measured: not measured" in text


def test_hover_in_the_scatter_matrix(driver, three):
    open_page(driver, (three / "report.html").as_uri())
    text = driver.execute_script("""
        var gd = document.getElementById('fig-front');
        var t = gd.data.findIndex(function (d) { return d.name === 'front: predicted'; });
        // the lower half only (no diagonal): the top-left panel is x (alpha) by y2 (beta)
        var dims = gd.data[t].dimensions;
        Plotly.Fx.hover(gd, {xval: dims[0].values[0], yval: dims[1].values[0]}, 'xy2');
        var label = document.querySelector('#fig-front .hoverlayer .hovertext');
        return label ? label.textContent : null;""")
    assert text is not None and "coefficients: alpha=" in text


def test_page_selects_as_python_does(driver, two, three, tmp_path):
    # fixed preference bounds take the place of the front's range
    bounded = make_results(tmp_path, 2, preference_bounds=([0.0, 0.2], [1.0, 0.9]))
    assert load_results(bounded).summary["preference_bounds"]
    write_report(bounded)
    for folder in (two, three, bounded):
        open_page(driver, (folder / "report.html").as_uri())
        saved = load_results(folder)
        T = len(saved.tasks)
        rng = np.random.default_rng(0)
        prefs = [list(np.eye(T)[j]) for j in range(T)] + [[1.0] * T] + [
            list(rng.random(T)) for _ in range(8)]
        for p in prefs:
            assert driver.execute_script("return window.mapframeSelect(arguments[0])",
                                         p) == saved.select(p), p
        assert driver.execute_script("return window.mapframeSelect(arguments[0])",
                                     [0.0] * T) == -1


def test_slider_moves_the_highlight(driver, two):
    open_page(driver, (two / "report.html").as_uri())
    saved = load_results(two)
    assert driver.find_element(By.TAG_NAME, "body").get_attribute("data-selected") == str(
        saved.selected)

    def star() -> list:
        return driver.execute_script(
            "var gd = document.getElementById('fig-front');"
            "var h = gd.data[gd.data.length - 1]; return [h.x[0], h.y[0]];")

    before = star()
    results = {}
    for hi, lo, weights in ((0, 1, [1.0, 0.0]), (1, 0, [0.0, 1.0])):
        driver.find_element(By.ID, f"pref-{hi}").send_keys(Keys.END)
        driver.find_element(By.ID, f"pref-{lo}").send_keys(Keys.HOME)
        k = saved.select(weights)
        WebDriverWait(driver, 10).until(
            lambda d, k=k: d.find_element(By.TAG_NAME, "body").get_attribute(
                "data-selected") == str(k))
        assert driver.find_element(By.ID, "selected-index").text == str(k)
        # a black-box study: mapframe export refuses its folder, so the page shows no command
        assert not driver.find_element(By.ID, "export-line").is_displayed()
        assert "no merged model to export" in driver.find_element(By.ID, "export-note").text
        assert star() == pytest.approx(list(saved.front.best_known[k]))
        results[tuple(weights)] = k
    assert results[(1.0, 0.0)] != results[(0.0, 1.0)]
    assert star() != before


def test_the_export_command_fills_the_point_not_a_brace_in_the_folder(driver, tmp_path):
    """A results folder named like ``sweep-{N}`` got the point number in its name and the
    placeholder left in the command."""
    from test_report_faults import checkpoint_results

    folder = checkpoint_results(tmp_path / "sweep-{N}", with_config=True)
    write_report(folder)
    open_page(driver, (folder / "report.html").as_uri())
    k = int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-selected"))
    assert "{N}" in str(folder)
    assert driver.find_element(By.ID, "export-line").is_displayed()
    cmd = driver.find_element(By.ID, "export-cmd").text
    assert cmd == (f"mapframe export {shlex.quote(str(folder.absolute()))} --point {k} "
                   "-o merged.safetensors")


def test_page_works_offline(driver, two):
    driver.set_network_conditions(offline=True, latency=0, download_throughput=0,
                                  upload_throughput=0)
    try:
        open_page(driver, (two / "report.html").as_uri())
        assert severe_errors(driver) == []
        loaded = driver.execute_script(
            "return performance.getEntriesByType('resource').map(function (e) "
            "{ return e.name; });")
        assert [u for u in loaded if u.startswith("http")] == []
    finally:
        driver.delete_network_conditions()


def test_dashboard_refreshes_when_evaluations_are_stored(driver, tmp_path):
    from mapframe.history import Evaluation
    from mapframe.report.dashboard import Dashboard
    from mapframe.storage import SQLiteStore

    study = make_study(tmp_path, 2)
    study.run().save(tmp_path, plot=False)
    with Dashboard(locate(tmp_path), port=0, interval=0.3) as dash:
        dash.start()
        open_page(driver, dash.url)
        count = driver.find_element(By.ID, "n-evaluations").text
        # move the preference: a refresh must keep it
        driver.find_element(By.ID, "pref-1").send_keys(Keys.HOME)
        selected = driver.find_element(By.TAG_NAME, "body").get_attribute("data-selected")
        store = SQLiteStore(tmp_path / "evaluations.sqlite")
        store.open(study.study_name, study.fingerprint())
        for c in ([0.31, 0.42], [0.52, 0.61]):
            store.add(Evaluation(np.array(c), np.array(c)))
            time.sleep(0.05)
        store.close()
        WebDriverWait(driver, 15).until(lambda d: d.execute_script(
            "return document.getElementById('n-evaluations').textContent") == str(
                int(count) + 2))
        assert "last finished run" in driver.find_element(By.ID, "overview").text
        assert driver.find_element(By.TAG_NAME, "body").get_attribute(
            "data-selected") == selected
        assert driver.find_element(By.ID, "pref-1").get_attribute("value") == "0"
        assert severe_errors(driver) == []
        driver.get("about:blank")  # stop the page's polling before the server closes


@pytest.mark.slow
def test_eight_tasks_render_and_select(driver, tmp_path):
    """The largest front the docs show: 8 tasks (a 7 x 7 scatter matrix, 16 parallel axes)."""
    folder = make_results(tmp_path, 8)
    write_report(folder)
    open_page(driver, (folder / "report.html").as_uri())
    assert severe_errors(driver) == []
    n_axes = driver.execute_script(
        "return document.getElementById('fig-parcoords').data[0].dimensions.length")
    assert n_axes == 16
    saved = load_results(folder)
    rng = np.random.default_rng(1)
    for p in [list(np.eye(8)[j]) for j in range(8)] + [list(rng.random(8)) for _ in range(4)]:
        assert driver.execute_script("return window.mapframeSelect(arguments[0])",
                                     p) == saved.select(p), p
