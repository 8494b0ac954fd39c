"""A save cut short (a kill while the results folder is written) leaves a folder that
load_results refuses as unfinished, never one run's front beside another run's summary."""

from __future__ import annotations

import pytest

import mapframe
import mapframe.results as results_module
from mapframe import MergeStudy
from mapframe.errors import ConfigError
from tests.objectives import two_quadratics


class _Killed(BaseException):
    """Stands in for a kill -9 landing in the middle of StudyResult.save."""


def save_cut_short(result, folder, killed_at: str, monkeypatch) -> None:
    """``result.save(folder)`` killed as it writes ``killed_at`` (no plot)."""
    real = results_module.write_atomically

    def dying(path, text):
        if path.name == killed_at:
            raise _Killed()
        return real(path, text)

    monkeypatch.setattr(results_module, "write_atomically", dying)
    with pytest.raises(_Killed):
        result.save(folder, plot=False)
    monkeypatch.undo()


def _run(budget: int):
    return MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=budget, seed=0,
                      sampler="sobol", surrogate="quadratic").run()


@pytest.mark.parametrize("killed_at", ["front.json", "evaluations.csv", "summary.json"])
def test_a_save_cut_short_is_refused_as_unfinished(tmp_path, monkeypatch, killed_at):
    out = tmp_path / "out"
    _run(6).save(out, plot=False)
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 6
    second = _run(10)
    save_cut_short(second, out, killed_at, monkeypatch)
    with pytest.raises(ConfigError, match=r"unfinished.*before writing summary\.json.*run the "
                                          r"study again") as info:
        mapframe.load_results(out)
    assert "\n" not in str(info.value)
    # the next save finishes the folder
    second.save(out, plot=False)
    assert mapframe.load_results(out).summary["n_search_evaluations"] == 10


def test_an_empty_folder_is_still_not_a_results_folder(tmp_path):
    with pytest.raises(ConfigError, match="not a mapframe results folder"):
        mapframe.load_results(tmp_path)
