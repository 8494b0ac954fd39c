"""A report page in a real browser, for the browser tests (the ``driver`` fixture, headless
Chromium driven by selenium, is in conftest.py). Importing this skips the importing module,
with the reason, where plotly or selenium is missing."""

from __future__ import annotations

from typing import Any

import pytest

pytest.importorskip("plotly")
pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium.webdriver.support.ui import WebDriverWait


def open_page(driver: Any, url: str, renders: int = 1, timeout: float = 30) -> None:
    """Load ``url`` and wait until the page has drawn ``renders`` times."""
    # leave the previous page first (a dashboard page keeps polling its server, which a
    # finished test has closed), then drop its messages
    driver.get("about:blank")
    driver.get_log("browser")
    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: (d.execute_script("return window.mapframeRendered || 0") or 0) >= renders)


def severe_errors(driver: Any) -> list[dict]:
    """The browser's SEVERE log messages since the page was opened."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
