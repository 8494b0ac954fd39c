"""Report page faults found by an audit, checked in a real browser (headless Chromium driven
by selenium, as tests/test_report_browser.py). Skipped, with the reason, where missing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from report_studies import conflicting, make_results

from mapframe import MergeStudy
from mapframe.report import write_report
from mapframe.results_folder import load_results

pytest.importorskip("plotly")
selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install "
                               "-e '.[test]')")
from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def driver():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip("headless Chromium is not installed: apt-get install chromium "
                    "chromium-driver")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1600",
                "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    opts.binary_location = CHROMIUM
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(CHROMEDRIVER))
    yield d
    d.quit()


def _open(driver, url: str, timeout: float = 30) -> None:
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: (d.execute_script("return window.mapframeRendered || 0") or 0) >= 1)


def _errors(driver) -> list[dict]:
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


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
    _open(driver, (folder / "report.html").as_uri())
    assert _errors(driver) == []
    assert "evaluations stored" in driver.find_element(By.ID, "overview").text
    labels = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#sliders label")]
    assert labels == ["acc <!-- v2 (max)", "</script>loss (max)"]
