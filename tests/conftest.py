"""Shared fixtures."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from mapframe.plugin import reset_plugins

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def fresh_plugins():
    """Rebuild the registry before and after a test that changes installed plugins."""
    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def fake_dist(tmp_path, monkeypatch, fresh_plugins):
    """Install a fake distribution (dist-info + modules) on sys.path for the test.

    Call it with the package name, an entry-point mapping {name: "module"} and a mapping of
    module file names to source code.
    """

    def make(package: str, entry_points: dict[str, str], modules: dict[str, str]) -> Path:
        root = tmp_path / f"site-{package}"
        info = root / f"{package.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {package}\nVersion: 1.2.3\n"
        )
        eps = "[mapframe]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items())
        (info / "entry_points.txt").write_text(eps)
        for name, src in modules.items():
            (root / name).write_text(textwrap.dedent(src))
        monkeypatch.syspath_prepend(str(root))
        for mod in [m.removesuffix(".py") for m in modules]:
            sys.modules.pop(mod, None)
        reset_plugins()
        return root

    return make


@pytest.fixture(scope="module")
def driver() -> Any:
    """A headless Chromium (Debian's ``chromium`` and ``chromium-driver``) for the module's
    browser tests; skipped, with the reason, where it is missing."""
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    if not (Path(chromium).is_file() and Path(chromedriver).is_file()):
        pytest.skip("headless Chromium is not installed: apt-get install chromium "
                    "chromium-driver")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1300,1600",
                "--enable-unsafe-swiftshader"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(options=opts, service=Service(chromedriver))
    yield d
    d.quit()
