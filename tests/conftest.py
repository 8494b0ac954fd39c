"""Shared fixtures."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

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
