"""front.png faults found by an audit: names matplotlib would read as mathtext, and a drawing
failure that took the results down with it."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from report_studies import conflicting

from mapframe import MergeStudy
from mapframe.errors import MapframeWarning

pytest.importorskip("matplotlib")


def _result(names: list[str]):  # type: ignore[no-untyped-def]
    return MergeStudy(objective=conflicting(len(names)), task_names=names, budget=10,
                      seed=0, verify=2, sampler="lhs", study_name="s $x^$").run()


@pytest.mark.parametrize("n_tasks", [2, 3])
def test_f5_dollar_in_a_task_name_is_drawn_as_written(tmp_path, n_tasks):
    """F5: 'revenue $\\b$' made matplotlib parse mathtext: ParseFatalException in save."""
    import matplotlib.pyplot as plt

    import mapframe.plotting as plotting

    names = ["revenue $\\b$", "cost $", "a $x$ b"][:n_tasks]
    result = _result(names)
    seen: dict = {}
    real_save = plotting._save

    def keep(plt_, fig, path, dpi, rect=None):  # type: ignore[no-untyped-def]
        seen["texts"] = [t.get_text() for t in fig.findobj(
            lambda o: hasattr(o, "get_text"))]
        return real_save(plt_, fig, path, dpi, rect)

    with warnings.catch_warnings():
        warnings.simplefilter("error", MapframeWarning)
        plotting._save = keep
        try:
            paths = result.save(tmp_path, plot=True)
        finally:
            plotting._save = real_save
    assert Path(paths["front_png"]).stat().st_size > 0
    assert any(names[0] in t for t in seen["texts"])
    assert plt.get_fignums() == []


def test_f5_a_drawing_failure_is_one_warning_and_the_results_are_saved(tmp_path, monkeypatch):
    """F5: an exception while drawing front.png escaped StudyResult.save (and `mapframe
    run`, which then wrote no report.html / config.yaml)."""
    import matplotlib.pyplot as plt

    import mapframe.plotting as plotting

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise ValueError("cannot draw this\nsecond line")

    monkeypatch.setattr(plotting, "_save", broken)
    result = _result(["a", "b"])
    with pytest.warns(MapframeWarning) as caught:
        paths = result.save(tmp_path, plot=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, MapframeWarning)]
    assert len(messages) == 1 and "\n" not in messages[0]
    assert "front plot" in messages[0] and "cannot draw this" in messages[0]
    assert caught[0].filename.endswith("results.py")
    assert "front_png" not in paths
    assert json.loads((tmp_path / "summary.json").read_text())["n_search_evaluations"] > 0
    assert np.isfinite(result.front.predicted).all()
    assert plt.get_fignums() == []
