"""Issue 20, item 2: the front handed to the user is never worse than the measurements.

The handed-over front combines the solved (predicted) front with every measured point: a
measurement that dominates a front point replaces it, measured points enter where nothing
beats them, selection ranks on best-known metrics (and a study that verifies hands over a
measured point), and each point says whether it is predicted, verified or measured.
"""

from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.metrics import (
    dominance_matrix,
    hypervolume,
    pareto_mask,
    preference_scores,
    reference_point,
)
from mapframe.results import Front


def quad(C: np.ndarray) -> np.ndarray:
    """Two concave quadratics with optima at (0.8, 0.2) and (0.2, 0.8): exact for the surrogate."""
    C = np.atleast_2d(C)
    return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(1), 1 - ((C - [0.2, 0.8]) ** 2).sum(1)])


def spike(C: np.ndarray) -> np.ndarray:
    """``quad`` plus a narrow bump at c=(0.5, 0.5), a point of the 3x3 grid design: the
    measurement there (0.92, 0.92) beats what the smooth surrogate predicts nearby."""
    C = np.atleast_2d(C)
    bump = 0.1 * np.exp(-((C - 0.5) ** 2).sum(1) / 1e-4)
    return quad(C) + bump[:, None]


def corner_dip(C: np.ndarray) -> np.ndarray:
    """Both tasks improve with both coefficients, except in a narrow dip at the corner
    c=(1, 1) that the search does not sample: the quadratic surrogate over-predicts it."""
    C = np.atleast_2d(C)
    dip = 0.3 * np.exp(-((1 - C) ** 2).sum(1) / 0.02)
    a = 0.5 + 0.3 * C[:, 0] + 0.1 * C[:, 1] - dip
    b = 0.5 + 0.1 * C[:, 0] + 0.3 * C[:, 1] - dip
    return np.column_stack([a, b])


def losses(C: np.ndarray) -> np.ndarray:
    return 2.0 - spike(C)


def three(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    opts = np.array([[0.8, 0.2], [0.2, 0.8], [0.8, 0.8]])
    return np.column_stack([1 - ((C - o) ** 2).sum(1) for o in opts])


def _run(objective, tasks=("a", "b"), **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # poor surrogate fits are part of these cases
        return MergeStudy(objective=objective, task_names=list(tasks), **kwargs).run()


def _measured(res) -> np.ndarray:
    """Real metrics of every successful evaluation (search and verification)."""
    return np.array([e.metrics for e in res.history if e.ok], dtype=float)


# -- (a) a measured point that dominates a predicted one replaces it -----------------------
def test_with_measured_replaces_what_a_measurement_beats():
    front = Front(np.array([[0.0], [0.5], [1.0]]), np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]),
                  np.full((3, 2), np.nan), ["a", "b"], ["max", "max"])
    C = np.array([[0.4], [0.9], [0.6]])
    R = np.array([[0.6, 0.6],     # beats the prediction (0.5, 0.5): replaces it
                  [0.1, 0.2],     # beaten by the predictions: does not enter
                  [0.6, 0.6]])    # the same metrics as the first measurement: enters once
    out = front.with_measured(C, R - 0.05, R)
    assert out.source == ["predicted", "measured", "predicted"]
    np.testing.assert_array_equal(out.coefficients[:, 0], [0.0, 0.4, 1.0])
    np.testing.assert_array_equal(out.best_known[1], [0.6, 0.6])
    np.testing.assert_allclose(out.predicted[1], [0.55, 0.55])  # the surrogate's, kept
    assert out.measured.tolist() == [False, True, False] and not out.verified.any()


def test_with_measured_drops_a_verified_point_a_measurement_beats_and_minds_directions():
    # losses (lower is better): the verified point measured (0.6, 0.6), a search point (0.5, 0.5)
    front = Front(np.array([[0.0], [0.5]]), np.array([[0.2, 0.9], [0.4, 0.4]]),
                  np.array([[np.nan, np.nan], [0.6, 0.6]]), ["a", "b"], ["min", "min"])
    assert front.source == ["predicted", "verified"]
    out = front.with_measured(np.array([[0.5], [0.3]]), np.array([[0.4, 0.4], [0.45, 0.45]]),
                              np.array([[0.6, 0.6], [0.5, 0.5]]))
    assert out.source == ["predicted", "measured"]
    np.testing.assert_array_equal(out.best_known, [[0.2, 0.9], [0.5, 0.5]])


def test_a_prediction_hides_a_measurement_only_beyond_the_margin():
    # The prediction (0.70, 0.70) beats the measurement (0.68, 0.69) by 0.02 / 0.01: without
    # a margin the measurement is hidden; with the surrogates' error of 0.015 per task the
    # prediction no longer beats it on every task, so both are handed over.
    front = Front(np.array([[0.5]]), np.array([[0.70, 0.70]]), np.full((1, 2), np.nan),
                  ["a", "b"], ["max", "max"])
    C, R = np.array([[0.4]]), np.array([[0.68, 0.69]])
    assert front.with_measured(C, R, R).source == ["predicted"]
    out = front.with_measured(C, R, R, margin=[0.015, 0.015])
    assert sorted(out.source) == ["measured", "predicted"]
    # A margin never lets a dominated measurement in when a *measurement* beats it.
    C2, R2 = np.array([[0.4], [0.45]]), np.array([[0.68, 0.69], [0.69, 0.695]])
    out = front.with_measured(C2, R2, R2, margin=[0.015, 0.015])
    assert out.source.count("measured") == 1
    np.testing.assert_array_equal(out.best_known[out.measured][0], [0.69, 0.695])
    # Minimised tasks: the margin is given up in the worse (higher) direction.
    low = Front(np.array([[0.5]]), np.array([[0.30, 0.30]]), np.full((1, 2), np.nan),
                ["a", "b"], ["min", "min"])
    R3 = np.array([[0.32, 0.31]])
    assert low.with_measured(C, R3, R3).source == ["predicted"]
    assert low.with_measured(C, R3, R3, margin=[0.015, 0.015]).source.count("measured") == 1


def test_a_measurement_that_beats_predictions_replaces_them_in_a_study():
    res = _run(spike, sampler="grid", budget=9, seed=0)
    f = res.front
    center = np.flatnonzero(np.all(f.coefficients == 0.5, axis=1))
    assert center.size == 1 and f.source[center[0]] == "measured"
    np.testing.assert_allclose(f.real[center[0]], [0.92, 0.92])
    # The solver's front had points this measurement dominates; none is left.
    X_all = np.array([e.coefficients for e in res.history])
    solved = res.predict(np.linspace([0.2, 0.8], [0.8, 0.2], 50))
    assert dominance_matrix(f.real[center], solved).any()
    predicted_only = f.sources == "predicted"
    assert not dominance_matrix(f.real[center], f.predicted[predicted_only]).any()
    assert pareto_mask(f.best_known).all() and len(X_all) == 9


# -- (b) selection prefers a measured point over a prediction a measurement beats ----------
def test_selection_hands_over_the_measurement_that_beats_the_verified_pick():
    res = _run(corner_dip, budget=16, seed=0, verify=1, preference=[0.5, 0.5],
               sampler="sobol")  # the scenario is built on this Sobol' design
    f = res.front
    pick = res.history.select("verify")
    assert len(pick) == 1
    # The prediction picked the corner, which the verification measured in the dip ...
    np.testing.assert_allclose(pick[0].coefficients, [1.0, 1.0])
    assert dominance_matrix(_measured(res), pick[0].metrics[None]).any()
    # ... so the corner left the front and a measured point is handed over instead.
    assert not np.any(np.all(f.coefficients == 1.0, axis=1))
    sel = res.selected
    assert sel is not None and f.source[sel] == "measured"
    assert not dominance_matrix(_measured(res), f.real[[sel]]).any()
    lo, hi = f.best_known.min(axis=0), f.best_known.max(axis=0)
    s_sel, s_pick = preference_scores(np.vstack([f.real[sel], pick[0].metrics]),
                                      [0.5, 0.5], None, lo, hi)
    assert s_sel > s_pick


def test_selection_ranks_on_best_known_metrics():
    # Without verification selection is over the whole front; a measured point beats the
    # predictions it replaced, so for a preference centred on it the measurement wins.
    res = _run(spike, sampler="grid", budget=9, seed=0, preference=[0.5, 0.5])
    f = res.front
    assert res.selected is not None and f.source[res.selected] == "measured"
    np.testing.assert_allclose(f.coefficients[res.selected], [0.5, 0.5])
    assert res.select([1.0, 0.0]) == int(np.argmax(f.best_known[:, 0]))


def test_a_zero_weight_still_hands_over_the_best_measured_point():
    """With a zero weight the best measured point ties with the points it dominates; the
    first of them was forced onto the front, dropped again (it is dominated), and an
    unverified prediction was handed over."""
    from typing import ClassVar

    from mapframe.surrogates.base import Surrogate

    def truth(C):
        C = np.atleast_2d(C)
        return np.column_stack([C[:, 0], 0.5 * C[:, 1]])

    class Optimistic(Surrogate):
        """Over-predicts a bump near c = (1, 0.75-0.9), as an over-confident fit would."""

        name: ClassVar[str] = "optimistic_test"

        def n_params(self, n_dims):
            return 3

        def fit(self, X, y, task):
            self.j = 0 if np.allclose(y, np.asarray(X)[:, 0]) else 1
            return self

        def predict(self, X):
            X = np.atleast_2d(X)
            c0, c1 = X[:, 0], X[:, 1]
            if self.j == 0:
                return c0 + 0.3 * np.clip(1 - 4 * (c1 - 0.75) ** 2, 0, None) * c0 ** 8
            w = c0 ** 8
            return w * (0.6 - 2 * (c1 - 0.9) ** 2) + (1 - w) * 0.5 * c1

        def diagnostics(self):
            return {"r2": 1.0, "rmse": 0.0, "loo_rmse": 0.0}

    for preference in ([1.0, 0.0], [1.0, 1e-6]):
        res = _run(truth, budget=9, sampler="grid", surrogate=Optimistic(), front_solver="grid",
                   verify=1, preference=preference, seed=0)
        f, k = res.front, res.selected
        assert k is not None and f.source[k] == "measured"
        np.testing.assert_allclose(f.real[k], [1.0, 0.5])  # the best measurement


def test_every_way_to_select_for_a_new_preference_agrees(tmp_path: Path):
    """StudyResult.select and export(preference=...) chose among all front points, the
    saved folder (load_results, `mapframe export --preference`, the report) among the
    measured ones when the study verified: two models for one preference."""
    import mapframe

    res = _run(quad, budget=12, seed=0, verify=2, preference=[0.5, 0.5], sampler="sobol")
    res.save(tmp_path / "out", plot=False)
    saved = mapframe.load_results(tmp_path / "out")
    for preference in ([0.9, 0.1], [0.2, 0.8], [1.0, 0.0], [0.5, 0.5]):
        index = res.select(preference)
        assert index == saved.select(preference)
        assert res.front.source[index] != "predicted"  # measured-only: the study verified
    assert res.select([0.5, 0.5]) == res.selected
    # Asked for explicitly, every point can still be chosen.
    everything = res.select([0.9, 0.1], measured_only=False)
    assert everything == res.front.select([0.9, 0.1], res.preference_bounds)


@pytest.fixture(scope="module")
def digits_result(tmp_path_factory: pytest.TempPathFactory):
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    from mapframe.config import build_study
    from mapframe.examples import digits

    cache = tmp_path_factory.mktemp("digits-cache")
    out = tmp_path_factory.mktemp("digits-out")
    ck = digits.prepare_checkpoints(cache, ("rot90", "flip"))
    cfg = digits.digits_study_config(out, ("rot90", "flip"), checkpoints=ck,
                                     preference=[0.5, 0.5])
    study, _ = build_study(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return study.run()


def test_digits_example_hands_over_a_measured_point_not_the_overpredicted_corner(
        digits_result):
    # The user's case (`mapframe example --preference 0.5,0.5`): the prediction picks the
    # unsampled corner c=(1, 1) (predicted about 0.977/0.925); verified, it measures about
    # 0.900/0.855, which the search point c=(0.938, 0.873) (about 0.907/0.873) beats.
    res = digits_result
    f = res.front
    verified = {tuple(e.coefficients): e.metrics for e in res.history.select("verify")}
    corner = verified[(1.0, 1.0)]
    measured = _measured(res)
    assert dominance_matrix(measured, corner[None]).any()
    assert not np.any(np.all(f.coefficients == 1.0, axis=1))  # the corner left the front
    sel = res.selected
    assert sel is not None and f.source[sel] == "measured"
    assert not dominance_matrix(measured, f.real[[sel]]).any()
    lo, hi = f.best_known.min(axis=0), f.best_known.max(axis=0)
    s_sel, s_corner = preference_scores(np.vstack([f.real[sel], corner]), [0.5, 0.5],
                                        None, lo, hi)
    assert s_sel > s_corner


# -- (c) the handed-over front covers at least the measured points --------------------------
@pytest.mark.parametrize("objective, tasks, kwargs", [
    (quad, ("a", "b"), {"budget": 12, "verify": 2}),
    (spike, ("a", "b"), {"sampler": "grid", "budget": 9}),
    (corner_dip, ("a", "b"), {"budget": 16, "verify": 1, "preference": [0.5, 0.5]}),
    (losses, ("a", "b"), {"sampler": "grid", "budget": 9, "directions": "min"}),
    (three, ("a", "b", "c"), {"budget": 20, "verify": 3, "n_coefficients": 2}),
])
def test_front_hypervolume_is_at_least_that_of_the_measurements(objective, tasks, kwargs):
    res = _run(objective, tasks, seed=0, **kwargs)
    dirs = res.front.directions
    measured = _measured(res)
    ref = reference_point(res.front.best_known, measured, directions=dirs)
    hv_front = hypervolume(res.front.best_known, ref, dirs)
    assert hv_front >= hypervolume(measured, ref, dirs) - 1e-12
    # and no front point is beaten by a measurement
    assert not dominance_matrix(measured, res.front.best_known, dirs).any()


# -- (d) the sources are reported ------------------------------------------------------------
def test_sources_are_written_to_front_csv_json_and_summary(tmp_path: Path):
    res = _run(corner_dip, budget=16, seed=0, verify=3, preference=[0.5, 0.5])
    paths = res.save(tmp_path / "out", plot=True)
    rows = list(csv.DictReader(paths["front_csv"].open()))
    assert [r["source"] for r in rows] == res.front.source
    assert {r["source"] for r in rows} <= {"predicted", "verified", "measured"}
    for r in rows:
        assert (r["real_a"] != "") == (r["source"] != "predicted")
    points = json.loads(paths["front_json"].read_text())["points"]
    assert [p["source"] for p in points] == res.front.source
    summary = json.loads(paths["summary_json"].read_text())
    counts = summary["front_sources"]
    assert counts == {s: res.front.source.count(s) for s in ("predicted", "verified",
                                                             "measured")}
    assert sum(counts.values()) == summary["front_size"] == len(res.front)
    assert summary["selected"]["source"] == res.front.source[res.selected] == "measured"
    assert summary["verification"]["indices"] == np.flatnonzero(res.front.verified).tolist()


def test_cli_summary_counts_the_sources(tmp_path: Path):
    from mapframe.cli import _print_summary

    res = _run(corner_dip, budget=16, seed=0, verify=1, preference=[0.5, 0.5],
               sampler="sobol")  # the scenario is built on this Sobol' design
    import io

    buf = io.StringIO()
    _print_summary(res, {}, buf)
    text = buf.getvalue()
    c = res.front.counts()
    assert f"front: {len(res.front)} points (" in text
    assert f"{c['measured']} measured" in text
    assert "(measured point)" in text
