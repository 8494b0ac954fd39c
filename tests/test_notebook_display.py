"""What a notebook shows for mapframe's objects (a notebook audit): short reprs holding the
key facts, an HTML table of the front (names escaped), the front as a pandas table with the
study's coefficient names, and the front plot as a Figure that shows itself inline without
touching pyplot or the backend."""

from __future__ import annotations

import dataclasses
import pickle
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mapframe import MergeStudy, NestedResult, StudyResult, load_results
from mapframe.errors import MapframeError
from mapframe.problem import Task
from mapframe.results import Front

TASKS = ["acc", "<b>x</b>"]


def _objective(C: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(1),
                            1 - ((C - [0.2, 0.8]) ** 2).sum(1)])


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nb") / "evals.sqlite"


@pytest.fixture(scope="module")
def study(store: Path) -> MergeStudy:
    return MergeStudy(objective=_objective, task_names=TASKS, budget=12, seed=0,
                      sampler="sobol", verify=2, preference=[0.5, 0.5], storage=store,
                      study_name="nb-study")


@pytest.fixture(scope="module")
def result(study: MergeStudy) -> StudyResult:
    res = study.run()
    assert len(res.front) > 20  # a front long enough to need the "more rows" line
    return res


@pytest.fixture(scope="module")
def folder(result: StudyResult, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nb") / "results"
    result.save(out, plot=False)
    return out


def _front(k: int, n: int = 2, tasks: tuple[str, ...] = ("a", "b")) -> Front:
    rng = np.random.default_rng(0)
    real = np.full((k, len(tasks)), np.nan)
    real[:3] = 0.5
    return Front(rng.random((k, n)), rng.random((k, len(tasks))), real, list(tasks),
                 ["max"] * len(tasks))


# -- reprs ----------------------------------------------------------------------------------
def test_study_repr_names_its_parts(study: MergeStudy, store: Path) -> None:
    text = repr(study)
    assert "0x" not in text and len(text) < 400
    for fact in ("'nb-study'", "acc (max)", "budget 12", "sampler sobol", "surrogate auto",
                 "front solver auto", str(store)):
        assert fact in text, (fact, text)
    memory = MergeStudy(objective=_objective, task_names=["a", "b"], budget=5)
    assert "store in memory" in repr(memory)


def test_result_and_front_reprs_are_short_and_hold_the_key_facts(
        result: StudyResult) -> None:
    text = repr(result)
    counts = result.front.counts()
    assert len(text) < 400 and "\n" not in text, text
    for fact in ("'nb-study'", "acc (max)", f"front {len(result.front)} points",
                 f"{counts['verified']} verified", f"{counts['measured']} measured",
                 f"{result.n_evaluated} new evaluations", f"{result.n_reused} reused",
                 f"selected {result.selected}"):
        assert fact in text, (fact, text)
    front = repr(result.front)
    assert len(front) < 400 and f"{len(result.front)} points × 2 coefficients" in front
    assert "acc (max)" in front and "array(" not in front


def test_a_hundred_point_front_of_many_tasks_stays_short() -> None:
    tasks = tuple(f"a_rather_long_task_name_number_{i}" for i in range(16))
    front = _front(100, n=16, tasks=tasks)
    text = repr(front)
    assert len(text) < 400 and "100 points × 16 coefficients" in text and "10 more" in text
    assert "97 predicted, 3 verified" in text


def test_warnings_are_counted(result: StudyResult) -> None:
    warned = dataclasses.replace(result, warnings=["one", "two"])
    assert repr(warned).endswith("; 2 warnings>")


def test_dataclass_behaviour_is_kept(result: StudyResult) -> None:
    assert dataclasses.is_dataclass(result) and dataclasses.is_dataclass(result.front)
    assert StudyResult.__eq__ is not object.__eq__  # the generated == is still there
    small = _front(3)
    same = Front(small.coefficients.copy(), small.predicted.copy(), small.real.copy(),
                 ["a", "b"], ["max", "max"])
    assert [f.name for f in dataclasses.fields(same)] == [f.name for f in
                                                          dataclasses.fields(small)]


def test_saved_results_repr_says_where_they_were_read(folder: Path, store: Path,
                                                      result: StudyResult) -> None:
    for path, where in ((folder, f"from folder {folder}"), (store, f"from store {store}")):
        saved = load_results(path)
        text = repr(saved)
        assert len(text) < 400 + len(str(path)) and text.endswith(where + ">"), text
        assert f"front {len(result.front)} points" in text and "'nb-study'" in text


def test_nested_result_repr() -> None:
    res = NestedResult("nest", [Task("a"), Task("b")], [0.5, 0.5], [[], []], [[], []], {},
                       "root", np.array([0.81234, 0.5]), None, {}, {}, {}, "in_order")
    text = repr(res)
    assert text == ("<NestedResult 'nest': tasks a (max), b (max); 2 rounds, 0 merges; "
                    "final score 0.6562 (metrics 0.8123, 0.5)>")


# -- HTML -----------------------------------------------------------------------------------
def test_html_table_escapes_task_names_and_shows_ten_rows(result: StudyResult) -> None:
    page = result._repr_html_()
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert page.count("<tr>") == 1 + 10 + 1  # the header, ten points, "more rows"
    assert f"… {len(result.front) - 10} more rows" in page
    assert "c_acc" in page  # the study's coefficient names
    assert result.front._repr_html_().count("<tr>") == 12


def test_html_rounds_to_four_digits_and_leaves_unmeasured_blank() -> None:
    front = Front(np.array([[0.123456, 0.5]]), np.array([[0.987654321, 2.0]]),
                  np.array([[np.nan, np.nan]]), ["a", "b"], ["max", "min"])
    page = front._repr_html_()
    assert "<td>0.1235</td>" in page and "<td>0.9877</td>" in page
    assert "<td></td><td></td></tr>" in page and "more row" not in page
    assert "predicted b (min)" in page


def test_saved_results_html(folder: Path) -> None:
    page = load_results(folder)._repr_html_()
    assert page.startswith('<div class="mapframe">') and "&lt;b&gt;" in page
    assert "<b>x</b>" not in page and "from folder" in page


# -- pandas ---------------------------------------------------------------------------------
def test_to_pandas_without_pandas_says_how_to_install_it(
        result: StudyResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas raises ImportError
    with pytest.raises(MapframeError, match=r"needs the package 'pandas'.*pip install pandas$"):
        result.front_table()
    with pytest.raises(MapframeError, match="pip install pandas"):
        result.front.to_pandas()


def test_to_pandas_columns_use_the_studys_coefficient_names(result: StudyResult,
                                                            folder: Path) -> None:
    pytest.importorskip("pandas")
    table = result.front_table()
    assert list(table.columns[:3]) == ["source", "c_acc", "c_<b>x</b>"]
    assert len(table) == len(result.front) and table.index.name == "index"
    assert np.allclose(table["c_acc"].to_numpy(), result.front.coefficients[:, 0])
    assert table["real_acc"].isna().sum() == (~result.front.measured).sum()
    assert list(load_results(folder).front_table().columns) == list(table.columns)
    assert list(result.front.to_pandas().columns[1:3]) == ["c_c0", "c_c1"]


# -- the figure -----------------------------------------------------------------------------
def test_plot_returns_a_figure_leaving_backend_and_pyplot_alone(result: StudyResult) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from mapframe.plotting import front_figure

    backend = matplotlib.rcParams._get_backend_or_none()
    pyplot = sys.modules.get("matplotlib.pyplot")
    figures = pyplot.get_fignums() if pyplot is not None else None
    fig = result.plot()
    assert isinstance(fig, Figure) and isinstance(front_figure(result), Figure)
    assert matplotlib.rcParams._get_backend_or_none() == backend
    assert ("matplotlib.pyplot" in sys.modules) == (pyplot is not None)
    if pyplot is not None:
        assert pyplot.get_fignums() == figures
    png = fig._repr_png_()  # what a notebook calls to show it inline
    assert png.startswith(b"\x89PNG")
    texts = [t.get_text() for t in fig.findobj(lambda o: hasattr(o, "get_text"))]
    assert any("<b>x</b>" in t for t in texts)
    assert any("nb-study: amortised Pareto front" in t for t in texts)
    again = pickle.loads(pickle.dumps(fig))
    assert type(again) is type(fig)


def test_saved_results_plot_draws_the_search_evaluations(folder: Path, store: Path,
                                                         result: StudyResult) -> None:
    pytest.importorskip("matplotlib")
    n = len(result.history.select("search"))
    for path in (folder, store):
        saved = load_results(path)
        Y = saved._search_metrics()
        assert Y is not None and Y.shape == (n, 2)
        fig = saved.plot()
        assert fig.get_axes()
    (folder / "evaluations.csv").rename(folder / "moved.csv")
    try:
        saved = load_results(folder)
        assert saved._search_metrics() is None
        texts = [t.get_text() for t in saved.plot().findobj(
            lambda o: hasattr(o, "get_text"))]
        assert any("search evaluations not read" in t for t in texts)
    finally:
        (folder / "moved.csv").rename(folder / "evaluations.csv")


def test_plot_front_saves_front_figures_drawing_once(result: StudyResult, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("matplotlib")
    import mapframe.plotting as plotting

    calls: list[Any] = []
    real = plotting._draw_front

    def counted(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(plotting, "_draw_front", counted)
    paths = result.save(tmp_path / "out")
    assert paths["front_png"].stat().st_size > 0 and len(calls) == 1


def test_front_figure_without_matplotlib_says_how_to_install_it(
        result: StudyResult, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MapframeError, match=r"pip install 'mapframe\[plot\]'"):
        result.plot()
