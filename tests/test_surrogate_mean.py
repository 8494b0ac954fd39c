"""The ``gp_and_quadratic`` surrogate (mapframe/surrogates/mean.py): the mean of its members.

What is checked: its predictions are the mean of a ``gp`` surrogate's and an ``auto``
quadratic's fitted separately to the same points (the members are the library's own, tested
in tests/test_gp.py and tests/test_surrogates.py), on an accuracy-like task where the members
differ; it needs the quadratic's point count and says so in one line; its diagnostics are
those of the mean, with an upper bound of its leave-one-out RMSE that the exact value (the
members' held-out residuals averaged) respects; a study runs with it by name.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("gpytorch")

from mapframe.errors import BudgetError
from mapframe.problem import Task
from mapframe.surrogates import AutoSurrogate, GPQuadraticMeanSurrogate, GPSurrogate

TASK = Task("acc", "max", 0.0, 1.0)


def _accuracy(X: np.ndarray) -> np.ndarray:
    """An accuracy that a quadratic in the logit cannot follow exactly."""
    z = 3 * X[:, 0] - 2 * X[:, 1] ** 2 + np.sin(4 * X[:, 2])
    return 1 / (1 + np.exp(-z))


def _data(k: int = 25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(seed).uniform(size=(k, 3))
    return X, _accuracy(X)


def test_predictions_are_the_mean_of_the_two_members():
    X, y = _data()
    Xnew = np.random.default_rng(1).uniform(size=(50, 3))
    mean = GPQuadraticMeanSurrogate().fit(X, y, TASK)
    gp = GPSurrogate().fit(X, y, TASK).predict(Xnew)
    quadratic = AutoSurrogate().fit(X, y, TASK).predict(Xnew)
    assert np.max(np.abs(gp - quadratic)) > 0.01  # the members differ here
    np.testing.assert_allclose(mean.predict(Xnew), (gp + quadratic) / 2, rtol=0, atol=1e-12)
    assert mean.predict_std(Xnew) is None


def test_settings_round_trip_through_the_registry():
    from mapframe.errors import ConfigError
    from mapframe.plugin.manager import get_registry

    s = GPQuadraticMeanSurrogate(nu=1.5, ridge=1e-3)
    desc = s.describe()
    assert desc == {"name": "gp_and_quadratic", "nu": 1.5, "noise_floor": 1e-6, "restarts": 2,
                    "ridge": 1e-3}
    assert get_registry().create("surrogate", desc).describe() == desc
    with pytest.raises(ConfigError, match="nu"):
        GPQuadraticMeanSurrogate(nu=3.0)


def test_needs_the_quadratic_point_count():
    s = GPQuadraticMeanSurrogate()
    assert s.n_params(3) == 10 and s.n_params(1) == 3
    X, y = _data(k=9)
    with pytest.raises(BudgetError) as err:
        s.fit(X, y, TASK)
    assert "\n" not in str(err.value) and "raise budget to at least 10" in str(err.value)


def test_diagnostics_bound_the_leave_one_out_error():
    X, y = _data()
    s = GPQuadraticMeanSurrogate().fit(X, y, TASK)
    d = s.diagnostics()
    assert d["model"] == "gp_and_quadratic" and d["n_samples"] == 25 and d["n_params"] == 10
    members = d["members"]  # type: ignore[typeddict-item]
    assert set(members) == {"gp", "quadratic"}
    resid = y - s.predict(X)
    assert d["rmse"] == pytest.approx(math.sqrt(np.mean(resid**2)))
    # the exact leave-one-out residuals of the mean: refit both members without each point
    held = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        gp = GPSurrogate().fit(X[keep], y[keep], TASK)
        q = AutoSurrogate().fit(X[keep], y[keep], TASK)
        held.append(y[i] - 0.5 * (gp.predict(X[i:i + 1])[0] + q.predict(X[i:i + 1])[0]))
    exact = math.sqrt(np.mean(np.square(held)))
    assert d["loo_method"] == "bound"
    assert d["loo_rmse"] == pytest.approx(np.mean([members["gp"]["loo_rmse"],
                                                   members["quadratic"]["loo_rmse"]]))
    # the members' own LOO values are closed-form / linearized, not refits: allow 20 %
    assert exact <= 1.2 * d["loo_rmse"]
    # loo_r2 (read by the CLI summary and the report) is the R² that the RMSE bound gives
    exact_r2 = 1.0 - np.sum(np.square(held)) / np.sum((y - y.mean()) ** 2)
    assert d["loo_r2"] == pytest.approx(1.0 - d["loo_rmse"] ** 2 * len(y)
                                        / np.sum((y - y.mean()) ** 2))
    assert d["loo_r2"] <= exact_r2 + 0.2 * (1.0 - exact_r2)


def test_a_study_runs_with_it_by_name():
    from mapframe.study import MergeStudy

    def objective(X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(X)
        return np.column_stack([1 / (1 + np.exp(-(4 * X[:, 0] - 2 * X[:, 1]))),
                                1 / (1 + np.exp(-(4 * X[:, 1] - 2 * X[:, 0])))])

    result = MergeStudy(objective, ["a", "b"], surrogate="gp_and_quadratic", budget=12,
                        sampler="sobol", front_solver="grid", seed=0,
                        metric_ranges=[(0.0, 1.0)] * 2).run()
    assert result.diagnostics["a"]["model"] == "gp_and_quadratic"
    X = result.front.coefficients
    assert np.max(np.abs(objective(X) - result.front.predicted)) < 0.1
