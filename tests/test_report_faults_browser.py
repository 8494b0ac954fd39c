"""Report page faults found by an audit, checked in a real browser (headless Chromium driven
by selenium, as tests/test_report_browser.py). Skipped, with the reason, where missing."""

from __future__ import annotations

from pathlib import Path

from browser_page import open_page, severe_errors
from report_studies import conflicting, make_results
from selenium.webdriver.common.by import By

from mapframe import MergeStudy
from mapframe.report import write_report
from mapframe.results_folder import load_results


def _named_results(folder: Path, names: list[str], study_name: str = "audit") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    study = MergeStudy(objective=conflicting(len(names)), task_names=names, budget=10, seed=0,
                       verify=2, sampler="lhs", storage=folder / "evaluations.sqlite",
                       study_name=study_name)
    study.run().save(folder, plot=False)
    write_report(folder)
    return folder


def test_f2_comment_opener_in_a_task_name_renders(driver, tmp_path):
    """F2: '<!--' in a task or study name was written as '<\\!--', invalid JSON: blank page."""
    folder = _named_results(tmp_path / "f2", ["acc <!-- v2", "</script>loss"],
                            study_name="s <!-- x")
    open_page(driver, (folder / "report.html").as_uri())
    assert severe_errors(driver) == []
    assert "evaluations stored" in driver.find_element(By.ID, "overview").text
    labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sliders label")]
    assert labels == ["acc <!-- v2 (max)", "</script>loss (max)"]


def _slide(driver, j: int, position: int) -> None:
    driver.execute_script("var e = document.getElementById(arguments[0]); e.value = "
                          "String(arguments[1]); e.dispatchEvent(new Event('input'));",
                          f"pref-{j}", position)


def _shown(driver, n: int) -> list[str]:
    return [driver.find_element(By.ID, f"pref-value-{j}").text for j in range(n)]


def _selected(driver) -> int:
    return int(driver.find_element(By.TAG_NAME, "body").get_attribute("data-selected"))


def test_f1_sliders_and_weights_share_one_scale(driver, tmp_path):
    """F1: on load the weights were the study's normalised preference ([0.75, 0.25]) while a
    moved slider set its weight to position / 100: both sliders at 100 showed 0.43 / 0.57."""
    folder = make_results(tmp_path / "f1", 2, preference=[3.0, 1.0])
    write_report(folder)
    saved = load_results(folder)
    open_page(driver, (folder / "report.html").as_uri())
    positions = [int(driver.find_element(By.ID, f"pref-{j}").get_attribute("value"))
                 for j in range(2)]
    assert positions == [100, 33]
    assert _shown(driver, 2) == ["0.75", "0.25"]
    assert _selected(driver) == saved.selected
    _slide(driver, 1, 100)
    assert _shown(driver, 2) == ["0.50", "0.50"]
    assert _selected(driver) == saved.select([1.0, 1.0])
    _slide(driver, 0, 20)
    assert _shown(driver, 2) == ["0.17", "0.83"]
    assert _selected(driver) == saved.select([0.2, 1.0])


def test_f1_equal_preference_then_one_slider_moved(driver, tmp_path):
    """F1: with preference [1, 1] (stored as [0.5, 0.5]) a slider moved to 20 meant 0.2
    against 0.5, not 0.2 against 1 as the positions say."""
    folder = make_results(tmp_path / "f1b", 2, preference=[1.0, 1.0])
    write_report(folder)
    saved = load_results(folder)
    open_page(driver, (folder / "report.html").as_uri())
    _slide(driver, 1, 20)
    assert _shown(driver, 2) == ["0.83", "0.17"]
    assert _selected(driver) == saved.select([1.0, 0.2])
    for p in ([1.0, 0.0], [0.0, 1.0]):
        _slide(driver, 0, int(100 * p[0]))
        _slide(driver, 1, int(100 * p[1]))
        assert _selected(driver) == saved.select(p)


def test_f4_checkpoint_study_without_config_shows_how_to_export(driver, tmp_path):
    """F4: the page called a task-arithmetic study saved with StudyResult.save a black-box
    study and printed a mapframe export command that fails ('has no config.yaml')."""
    from test_report_faults import checkpoint_results

    folder = checkpoint_results(tmp_path)
    write_report(folder)
    open_page(driver, (folder / "report.html").as_uri())
    assert severe_errors(driver) == []
    k = _selected(driver)
    info = driver.find_element(By.ID, "selected-info").text
    assert "black-box" not in info
    assert f"result.export(path, index={k})" in info
    assert not driver.find_element(By.ID, "export-line").is_displayed()
    assert driver.find_element(By.ID, "export-cmd").text == ""


NAMES = ["<i>acc</i>", "a&b <br>x", "<b>c</b>"]


def _hover_text(driver) -> str | None:
    return driver.execute_script("""
        var gd = document.getElementById('fig-front');
        var t = gd.data.findIndex(function (d) { return d.name === 'front: predicted'; });
        if (gd.data[t].type === 'splom') {
          var dims = gd.data[t].dimensions;
          Plotly.Fx.hover(gd, {xval: dims[0].values[0], yval: dims[1].values[0]}, 'xy2');
        } else {
          Plotly.Fx.hover(gd, [{curveNumber: t, pointNumber: 0}]);
        }
        var label = document.querySelector('#fig-front .hoverlayer .hovertext');
        return label ? label.textContent : null;""")


def test_f3_task_names_show_as_written_in_the_figures(driver, tmp_path):
    """F3: task names went into plotly titles, labels and hover text unescaped; plotly
    reads them as HTML, so '<i>acc</i>' showed as 'acc'."""
    two = _named_results(tmp_path / "two", NAMES[:2])
    open_page(driver, (two / "report.html").as_uri())
    assert severe_errors(driver) == []
    titles = driver.execute_script(
        "return ['xtitle', 'ytitle'].map(function (c) {"
        "  var t = document.querySelector('#fig-front .' + c); return t && t.textContent; });")
    assert titles == NAMES[:2]
    text = _hover_text(driver)
    assert text is not None and f"{NAMES[0]}=" in text and f"{NAMES[1]}=" in text
    assert driver.execute_script("return document.querySelectorAll('#fig-front a').length") == 0

    three = _named_results(tmp_path / "three", NAMES)
    open_page(driver, (three / "report.html").as_uri(), timeout=60)
    assert severe_errors(driver) == []
    axis_titles = driver.execute_script(
        "return Array.from(document.querySelectorAll('#fig-parcoords .axis-title'))"
        ".map(function (t) { return t.textContent; });")
    assert [f"{n} (max)" for n in NAMES] == axis_titles[:3]
    assert [f"coef {n}" for n in NAMES] == axis_titles[3:]
    splom = driver.execute_script(
        "return Array.from(document.querySelectorAll('#fig-front text[class*=\"title\"]'))"
        ".map(function (t) { return t.textContent; });")
    assert set(splom) == set(NAMES)
    text = _hover_text(driver)
    assert text is not None and f"{NAMES[2]}=" in text
    # the preference highlight keeps the labels as built
    _slide(driver, 0, 40)
    labels = driver.execute_script(
        "var gd = document.getElementById('fig-front');"
        "return gd.data[gd.data.length - 1].dimensions.map(function (d) { return d.label; });")
    assert labels == ["&lt;i&gt;acc&lt;/i&gt;", "a&amp;b &lt;br&gt;x", "&lt;b&gt;c&lt;/b&gt;"]
