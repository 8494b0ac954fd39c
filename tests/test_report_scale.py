"""The report's search-progress curve at scale: many tasks and evaluations.

The exact trace adds each evaluation's hypervolume improvement over the front before it; from
about four tasks with a few hundred evaluations every step was a Monte-Carlo estimate over a
growing front (minutes for 500 evaluations of 16 tasks, hours for 10 000). The report now
switches to one Monte-Carlo pass over fixed points for such studies, and keeps the exact
trace for small ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from report_studies import conflicting

import mapframe.hypervolume as hvmod
import mapframe.report.analysis as analysis
from mapframe.report import assemble, locate
from mapframe.report.analysis import REF_MARGIN, hypervolume_trace

pytest.importorskip("plotly")

T_TASKS = 12
N_EVALS = 1200
#: Expensive improvement calls the report may make on the way to the Monte-Carlo trace (the
#: exact trace gives up after a few rows at 12 tasks); the old report made one per row.
MAX_EXPENSIVE_CALLS = 50


@pytest.fixture(scope="module")
def big_store(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A 12-task study with 1 200 evaluations (a few of them failed) in an SQLite store and
    no results yet, as a running study leaves it; returns its folder and the metrics."""
    from mapframe import MergeStudy
    from mapframe.history import Evaluation
    from mapframe.storage import SQLiteStore

    folder = tmp_path_factory.mktemp("scale")
    f = conflicting(T_TASKS)
    names = [f"task{j}" for j in range(T_TASKS)]
    study = MergeStudy(objective=f, task_names=names, budget=N_EVALS, seed=0,
                       sampler="sobol", storage=folder / "evaluations.sqlite",
                       study_name="scale")
    C = np.random.default_rng(0).random((N_EVALS, T_TASKS))
    Y = f(C)
    Y[[7, 500]] = np.nan  # invalid evaluations add nothing
    store = SQLiteStore(folder / "evaluations.sqlite")
    store.open(study.study_name, study.fingerprint())
    try:
        for c, y in zip(C, Y):
            ok = bool(np.all(np.isfinite(y)))
            store.add(Evaluation(c, y, status="ok" if ok else "invalid"))
    finally:
        store.close()
    return folder, Y


def _normalised(Y: np.ndarray) -> np.ndarray:
    ok = np.all(np.isfinite(Y), axis=1)
    lo, hi = Y[ok].min(axis=0), Y[ok].max(axis=0)
    return (Y[ok] - lo) / np.where(hi > lo, hi - lo, 1.0)


def _sampled_hypervolume(U: np.ndarray, n_points: int, seed: int) -> tuple[float, float]:
    """Hypervolume of the rows of ``U`` (maximised, reference ``-REF_MARGIN``) on
    ``n_points`` uniform points of the box, and its standard error."""
    ref = np.full(U.shape[1], -REF_MARGIN)
    upper = U.max(axis=0)
    W = ref + np.random.default_rng(seed).random((n_points, U.shape[1])) * (upper - ref)
    covered = np.zeros(n_points, dtype=bool)
    for i in range(0, len(U), 128):
        inside = np.ones((min(128, len(U) - i), n_points), dtype=bool)
        for t in range(U.shape[1]):
            inside &= W[None, :, t] <= U[i : i + 128, t, None]
        covered |= inside.any(axis=0)
    volume = float(np.prod(upper - ref))
    p = covered.mean()
    return volume * p, volume * np.sqrt(p * (1 - p) / n_points)


def test_report_of_many_tasks_and_evaluations_samples_the_trace_once(big_store, monkeypatch):
    folder, Y = big_store
    calls = {"n": 0}

    def counted(fn):
        def wrapper(*a, **kw):
            calls["n"] += 1
            # fail at once instead of running for minutes: the old report made one
            # (Monte-Carlo) improvement call per evaluation
            assert calls["n"] <= MAX_EXPENSIVE_CALLS, "one hypervolume call per evaluation"
            return fn(*a, **kw)
        return wrapper

    monkeypatch.setattr(analysis, "hypervolume_improvement",
                        counted(analysis.hypervolume_improvement))
    monkeypatch.setattr(hvmod, "_hvi_monte_carlo", counted(hvmod._hvi_monte_carlo))
    data = assemble(locate(folder))
    ev = data.evaluations
    hv = np.array(ev["hypervolume"])
    assert len(hv) == N_EVALS and ev["hypervolume_method"] == "monte-carlo"
    assert calls["n"] <= MAX_EXPENSIVE_CALLS
    assert np.all(np.diff(hv) >= 0) and hv[-1] > hv[N_EVALS // 10] > 0
    assert hv[7] == hv[6] and hv[500] == hv[499]  # the invalid rows add nothing
    # the last value is the sampled hypervolume of every measured point: the same points
    # give the same number, other points agree within the sampling error
    U = _normalised(Y)
    same, _ = _sampled_hypervolume(U, analysis.TRACE_POINTS, seed=0)
    assert hv[-1] == pytest.approx(same, rel=1e-9)
    other, se = _sampled_hypervolume(U, analysis.TRACE_POINTS, seed=1)
    assert abs(hv[-1] - other) <= 5 * np.sqrt(2) * se
    # the figure says the curve is sampled
    from mapframe.report.figures import build_figures

    caption = next(f.caption for f in build_figures(data) if f.id == "progress")
    assert f"Estimated on {analysis.TRACE_POINTS:,} fixed random points" in caption


def test_small_studies_keep_the_exact_trace():
    # three tasks and 60 evaluations: exact, the same numbers as the exact computation
    rng = np.random.default_rng(3)
    F = conflicting(3)(rng.random((60, 3)))
    F[10] = np.nan
    hv, method = analysis.search_progress(F, ["max", "min", "max"])
    assert method == "exact"
    assert np.array_equal(hv, hypervolume_trace(F, ["max", "min", "max"], method="exact"))
    assert np.all(np.diff(hv) >= 0) and hv[10] == hv[9]
    # the last value is the hypervolume of all the rows (pymoo, via mapframe.metrics)
    from mapframe.metrics import hypervolume

    U = _normalised(F * [1, -1, 1])
    assert hv[-1] == pytest.approx(hypervolume(U, [-REF_MARGIN] * 3, ["max"] * 3), rel=1e-9)
    # the Monte-Carlo trace estimates the same curve
    mc = hypervolume_trace(F, ["max", "min", "max"], method="monte-carlo")
    assert np.all(np.diff(mc) >= 0)
    volume = float(np.prod(U.max(axis=0) + REF_MARGIN))
    assert np.max(np.abs(mc - hv)) <= 5 * volume * 0.5 / np.sqrt(analysis.TRACE_POINTS)


def test_two_tasks_stay_exact_for_thousands_of_evaluations():
    F = conflicting(2)(np.random.default_rng(4).random((3000, 2)))
    hv, method = analysis.search_progress(F, ["max", "max"])
    assert method == "exact" and np.all(np.diff(hv) >= 0)
    from mapframe.metrics import hypervolume

    U = _normalised(F)
    assert hv[-1] == pytest.approx(hypervolume(U, [-REF_MARGIN] * 2, ["max", "max"]), rel=1e-9)


def test_method_is_checked():
    with pytest.raises(ValueError, match="method must be"):
        analysis.search_progress(np.ones((2, 2)), ["max", "max"], method="fast")
