"""Tests for the quadratic surrogates: features, exact recovery, LOO, warping, errors."""

from __future__ import annotations

import copy
import itertools
import math

import numpy as np
import pytest
from scipy.special import expit

from mapframe.errors import BudgetError, ConfigError, MapframeError, MetricError
from mapframe.history import History
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.space_filling import SobolSampler
from mapframe.surrogates.base import Surrogate
from mapframe.surrogates.quadratic import (
    AutoSurrogate,
    QuadraticSurrogate,
    SigmoidQuadraticSurrogate,
    SoftplusQuadraticSurrogate,
    check_identifiable,
    design_rank,
    n_quadratic_params,
    quadratic_features,
)

UNBOUNDED = Task("unbounded")
ACCURACY = Task("acc", lower=0.0, upper=1.0)
LOSS = Task("loss", direction="min", lower=0.0)
LOGLIK = Task("loglik", upper=0.0)


def sobol(n: int, n_dims: int, bounds: tuple[float, float] = (0.0, 1.0),
          seed: int = 0) -> np.ndarray:
    space = SearchSpace.box(n_dims, bounds)
    return SobolSampler().propose(n, space, History(n_dims, n_dims), np.random.default_rng(seed))


def random_quadratic(n_dims: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float]:
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(n_dims, n_dims))
    return (M + M.T) / 2, rng.normal(size=n_dims), float(rng.normal())


def q_of(X: np.ndarray, A: np.ndarray, b: np.ndarray, e: float) -> np.ndarray:
    return np.einsum("ij,jk,ik->i", X, A, X) + X @ b + e


def softplus(q: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, q)


# --------------------------------------------------------------------------- features
def test_feature_order() -> None:
    F = quadratic_features(np.array([[2.0, 3.0, 5.0]]))
    np.testing.assert_array_equal(F, [[4, 9, 25, 6, 10, 15, 2, 3, 5, 1]])
    assert quadratic_features(np.array([2.0, 3.0])).shape == (1, 6)


@pytest.mark.parametrize(("n_dims", "p"), [(1, 3), (2, 6), (3, 10), (4, 15), (8, 45)])
def test_parameter_count(n_dims: int, p: int) -> None:
    assert n_quadratic_params(n_dims) == p
    assert quadratic_features(np.zeros((2, n_dims))).shape == (2, p)
    for model in (QuadraticSurrogate(), SigmoidQuadraticSurrogate(), AutoSurrogate()):
        assert model.n_params(n_dims) == p


def test_features_reproduce_the_quadratic() -> None:
    A, b, e = random_quadratic(4)
    X = sobol(20, 4)
    j, m = np.triu_indices(4, k=1)
    beta = np.concatenate([np.diag(A), 2 * A[j, m], b, [e]])
    np.testing.assert_allclose(quadratic_features(X) @ beta, q_of(X, A, b, e), atol=1e-12)


# --------------------------------------------------------------------------- OLS
@pytest.mark.parametrize("bounds", [(0.0, 1.0), (-1.0, 2.5)])
def test_ols_recovers_a_quadratic_exactly(bounds: tuple[float, float]) -> None:
    A, b, e = random_quadratic(3, seed=1)
    X = sobol(25, 3, bounds)
    model = QuadraticSurrogate().fit(X, q_of(X, A, b, e), UNBOUNDED)
    np.testing.assert_allclose(model.A, A, atol=1e-8)
    np.testing.assert_allclose(model.b, b, atol=1e-8)
    assert model.e == pytest.approx(e, abs=1e-8)
    coef = model.coef_
    np.testing.assert_allclose(coef["A"], A, atol=1e-8)
    Xnew = sobol(50, 3, bounds, seed=9)
    np.testing.assert_allclose(model.predict(Xnew), q_of(Xnew, A, b, e), atol=1e-8)
    d = model.diagnostics()
    assert d["r2"] == pytest.approx(1.0, abs=1e-12)
    assert d["rmse"] < 1e-9
    assert d["model"] == "quadratic"
    assert d["n_samples"] == 25 and d["n_params"] == 10
    assert d["loo_method"] == "exact"


def test_closed_form_loo_matches_brute_force() -> None:
    rng = np.random.default_rng(4)
    A, b, e = random_quadratic(3, seed=2)
    X = sobol(24, 3)
    y = q_of(X, A, b, e) + 0.3 * rng.normal(size=24)
    d = QuadraticSurrogate().fit(X, y).diagnostics()
    loo_pred = np.array([
        QuadraticSurrogate().fit(np.delete(X, i, 0), np.delete(y, i)).predict(X[i])[0]
        for i in range(len(y))
    ])
    press = float(np.sum((y - loo_pred) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    assert d["loo_r2"] == pytest.approx(1 - press / ss_tot, abs=1e-8)
    assert d["loo_rmse"] == pytest.approx(math.sqrt(press / 24), abs=1e-8)
    assert d["loo_r2"] < d["r2"] < 1


def test_loo_is_nan_when_a_point_cannot_be_left_out() -> None:
    X = sobol(6, 2)  # exactly P points: every leverage is 1
    y = np.arange(6.0)
    d = QuadraticSurrogate().fit(X, y).diagnostics()
    assert math.isnan(d["loo_r2"]) and math.isnan(d["loo_rmse"])
    assert d["r2"] == pytest.approx(1.0)


def test_ridge_shrinks_but_keeps_the_fit() -> None:
    A, b, e = random_quadratic(2, seed=3)
    X = sobol(30, 2)
    y = q_of(X, A, b, e)
    tiny = QuadraticSurrogate(ridge=1e-12).fit(X, y)
    np.testing.assert_allclose(tiny.A, A, atol=1e-6)
    strong = QuadraticSurrogate(ridge=10.0).fit(X, y)
    assert strong.diagnostics()["r2"] < 1
    assert np.linalg.norm(strong.A) < np.linalg.norm(A)
    # the intercept is not penalised: a constant is fitted exactly whatever the ridge
    const = QuadraticSurrogate(ridge=10.0).fit(X, np.full(30, 3.0))
    np.testing.assert_allclose(const.predict(X), 3.0, atol=1e-12)


def test_ridge_loo_matches_brute_force_in_scaled_coordinates() -> None:
    # With a ridge, e_i / (1 - h_ii) is still the exact LOO residual of the same penalised
    # problem; check it against refits on the same scaled features.
    rng = np.random.default_rng(5)
    X = sobol(20, 2)
    y = rng.normal(size=20)
    model = QuadraticSurrogate(ridge=0.5).fit(X, y)
    Z = (X - X.min(0) - (X.max(0) - X.min(0)) / 2) / ((X.max(0) - X.min(0)) / 2)
    F = quadratic_features(Z)
    D = np.eye(6)
    D[-1, -1] = 0.0
    resid = []
    for i in range(20):
        keep = np.arange(20) != i
        beta = np.linalg.solve(F[keep].T @ F[keep] + 0.5 * D, F[keep].T @ y[keep])
        resid.append(y[i] - F[i] @ beta)
    press = float(np.sum(np.square(resid)))
    expected = 1 - press / float(np.sum((y - y.mean()) ** 2))
    assert model.diagnostics()["loo_r2"] == pytest.approx(expected, abs=1e-8)


# --------------------------------------------------------------------------- warped models
def test_sigmoid_recovers_a_sigmoid_of_a_quadratic() -> None:
    A, b, e = random_quadratic(2, seed=6)
    task = Task("score", lower=0.2, upper=0.9)
    X = sobol(30, 2, (-1.0, 1.0))
    y = 0.2 + 0.7 * expit(q_of(X, A, b, e))
    model = SigmoidQuadraticSurrogate().fit(X, y, task)
    np.testing.assert_allclose(model.A, A, atol=1e-5)
    np.testing.assert_allclose(model.b, b, atol=1e-5)
    assert model.e == pytest.approx(e, abs=1e-5)
    Xnew = sobol(400, 2, (-3.0, 3.0), seed=2)  # far outside the data too
    pred = model.predict(Xnew)
    assert np.all((pred >= 0.2) & (pred <= 0.9))
    d = model.diagnostics()
    assert d["r2"] == pytest.approx(1.0, abs=1e-9)
    assert d["model"] == "sigmoid_quadratic" and d["converged"] is True
    assert d["loo_method"] == "linearized"


def test_sigmoid_handles_accuracies_of_exactly_zero_and_one() -> None:
    rng = np.random.default_rng(7)
    X = sobol(40, 2)
    q = 12 * (X[:, 0] + X[:, 1] - 1) + 4 * (X[:, 0] - 0.5) ** 2
    y = expit(q) + 0.02 * rng.normal(size=40)
    y = np.clip(np.where(y > 0.97, 1.0, np.where(y < 0.03, 0.0, y)), 0.0, 1.0)
    assert (y == 0).any() and (y == 1).any()
    model = SigmoidQuadraticSurrogate().fit(X, y, ACCURACY)
    pred = model.predict(sobol(200, 2, seed=3))
    assert np.all(np.isfinite(pred)) and np.all((pred >= 0) & (pred <= 1))
    assert np.all(np.isfinite(model.A))
    assert model.diagnostics()["r2"] > 0.9


def test_sigmoid_on_constant_perfect_accuracy() -> None:
    X = sobol(12, 2)
    model = SigmoidQuadraticSurrogate().fit(X, np.ones(12), ACCURACY)
    pred = model.predict(X)
    assert np.all(np.isfinite(pred)) and np.all(pred > 0.99)
    assert math.isnan(model.diagnostics()["r2"])  # undefined for constant targets


def test_sigmoid_linearized_loo_is_close_to_refit_loo() -> None:
    rng = np.random.default_rng(9)
    X = sobol(40, 2)
    A, b, e = random_quadratic(2, seed=10)
    y = np.clip(expit(q_of(X, A, b, e)) + 0.03 * rng.normal(size=40), 0, 1)
    fast = SigmoidQuadraticSurrogate().fit(X, y, ACCURACY).diagnostics()
    exact = SigmoidQuadraticSurrogate(loo="refit").fit(X, y, ACCURACY).diagnostics()
    assert exact["loo_method"] == "refit"
    assert fast["r2"] == pytest.approx(exact["r2"], abs=1e-10)
    assert fast["loo_r2"] == pytest.approx(exact["loo_r2"], abs=0.02)
    assert exact["loo_r2"] < exact["r2"]


def test_softplus_recovers_a_loss() -> None:
    A, b, e = random_quadratic(3, seed=11)
    X = sobol(30, 3)
    y = 0.5 + softplus(q_of(X, A, b, e))
    task = Task("loss", direction="min", lower=0.5)
    model = SoftplusQuadraticSurrogate().fit(X, y, task)
    np.testing.assert_allclose(model.A, A, atol=1e-5)
    np.testing.assert_allclose(model.b, b, atol=1e-5)
    assert model.e == pytest.approx(e, abs=1e-5)
    assert np.all(model.predict(sobol(100, 3, (-4, 4))) >= 0.5)
    d = model.diagnostics()
    assert d["model"] == "softplus_quadratic" and d["bound"] == "lower"


def test_softplus_with_losses_at_the_bound() -> None:
    X = sobol(20, 2)
    y = np.maximum(0.0, 1.0 - 3 * X[:, 0])  # exactly 0 on part of the box
    model = SoftplusQuadraticSurrogate().fit(X, y, LOSS)
    pred = model.predict(X)
    assert np.all(np.isfinite(pred)) and np.all(pred >= 0)
    assert model.diagnostics()["r2"] > 0.9


def test_mirrored_softplus_for_metrics_bounded_above() -> None:
    A, b, e = random_quadratic(2, seed=12)
    X = sobol(20, 2)
    y = -softplus(q_of(X, A, b, e))
    model = SoftplusQuadraticSurrogate().fit(X, y, LOGLIK)
    np.testing.assert_allclose(model.A, A, atol=1e-5)
    assert np.all(model.predict(sobol(50, 2, (-3, 3))) <= 0)
    assert model.diagnostics()["bound"] == "upper"


def test_warped_models_need_bounds() -> None:
    X = sobol(12, 2)
    y = X.sum(1)
    with pytest.raises(ConfigError, match="finite lower and upper"):
        SigmoidQuadraticSurrogate().fit(X, y, LOSS)
    with pytest.raises(ConfigError):
        SigmoidQuadraticSurrogate().fit(X, y)
    with pytest.raises(ConfigError, match="finite metric bound"):
        SoftplusQuadraticSurrogate().fit(X, y, UNBOUNDED)
    with pytest.raises(ConfigError, match="finite upper"):
        SoftplusQuadraticSurrogate(bound="upper").fit(X, y, LOSS)


def test_bad_settings_are_rejected() -> None:
    with pytest.raises(ConfigError):
        QuadraticSurrogate(ridge=-1.0)
    with pytest.raises(ConfigError):
        SigmoidQuadraticSurrogate(eps=0.0)
    with pytest.raises(ConfigError):
        SigmoidQuadraticSurrogate(loo="bootstrap")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        AutoSurrogate(max_nfev=0)
    with pytest.raises(ConfigError):
        SoftplusQuadraticSurrogate(bound="both")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- auto
@pytest.mark.parametrize(
    ("task", "model", "bound"),
    [
        (ACCURACY, "sigmoid_quadratic", None),
        (LOSS, "softplus_quadratic", "lower"),
        (LOGLIK, "softplus_quadratic", "upper"),
        (UNBOUNDED, "quadratic", None),
        (None, "quadratic", None),
    ],
)
def test_auto_picks_the_model_from_the_task_range(
    task: Task | None, model: str, bound: str | None
) -> None:
    X = sobol(20, 2)
    y = {"acc": 0.5 + 0.3 * np.sin(X.sum(1)), "loss": 1 + X[:, 0] ** 2,
         "loglik": -1 - X[:, 1] ** 2}.get(task.name if task else "", X.sum(1))
    auto = AutoSurrogate().fit(X, y, task)
    d = auto.diagnostics()
    assert d["model"] == model == auto.model.name
    assert d.get("bound") == bound
    np.testing.assert_allclose(auto.predict(X), auto.model.predict(X))
    assert auto.A.shape == (2, 2) and auto.b.shape == (2,) and isinstance(auto.e, float)
    assert set(auto.coef_) == {"A", "b", "e"}


def test_auto_before_fit() -> None:
    auto = AutoSurrogate()
    assert auto.diagnostics() == {}
    with pytest.raises(MapframeError, match="not fitted"):
        auto.predict(np.zeros((1, 2)))


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize("model", [QuadraticSurrogate(), SigmoidQuadraticSurrogate(),
                                   SoftplusQuadraticSurrogate(), AutoSurrogate()],
                         ids=["ols", "sigmoid", "softplus", "auto"])
def test_too_few_points(model: Surrogate) -> None:
    X = sobol(9, 3)
    with pytest.raises(BudgetError, match=r"9 evaluations cannot fit the 10-parameter .* at "
                                          r"least 10 \(the paper uses about 20\)"):
        model.fit(X, np.full(9, 0.5), ACCURACY)


CORNERS = np.array(list(itertools.product([0.0, 1.0], repeat=3)) * 2)


@pytest.mark.parametrize("model", [QuadraticSurrogate(), SigmoidQuadraticSurrogate()],
                         ids=["ols", "sigmoid"])
def test_zero_one_design_is_not_identifiable(model: Surrogate) -> None:
    y = 0.5 + 0.1 * CORNERS.sum(1)
    with pytest.raises(BudgetError, match=r"does not identify the quadratic \(rank 7 < 10\)"):
        model.fit(CORNERS, y, ACCURACY)


def test_check_identifiable_and_design_rank() -> None:
    assert design_rank(CORNERS) == 7
    with pytest.raises(BudgetError, match="sobol/lhs"):
        check_identifiable(CORNERS)
    with pytest.raises(BudgetError, match="cannot fit"):
        check_identifiable(sobol(5, 3))
    with pytest.raises(ConfigError):
        check_identifiable(sobol(20, 3), n_dims=2)
    check_identifiable(sobol(20, 3), n_dims=3)
    assert design_rank(sobol(20, 3)) == 10
    constant_column = sobol(20, 3)
    constant_column[:, 1] = 0.25
    assert design_rank(constant_column) < 10


def test_bad_values() -> None:
    X = sobol(12, 2)
    y = X.sum(1) / 2
    with pytest.raises(MetricError, match="NaN"):
        QuadraticSurrogate().fit(X, np.where(np.arange(12) == 3, np.nan, y))
    with pytest.raises(MetricError):
        SigmoidQuadraticSurrogate().fit(X, np.where(np.arange(12) == 3, np.inf, y), ACCURACY)
    with pytest.raises(MetricError, match="outside the declared range"):
        SigmoidQuadraticSurrogate().fit(X, y + 0.5, ACCURACY)
    X_bad = X.copy()
    X_bad[0, 0] = np.nan
    with pytest.raises(ConfigError):
        QuadraticSurrogate().fit(X_bad, y)


def test_wrong_shapes() -> None:
    X = sobol(12, 2)
    y = X.sum(1)
    with pytest.raises(ConfigError):
        QuadraticSurrogate().fit(X, y[:-1])
    with pytest.raises(ConfigError):
        QuadraticSurrogate().fit(X[:, 0], y)
    with pytest.raises(ConfigError):
        QuadraticSurrogate().fit(X[None], y)
    with pytest.raises(ConfigError):
        QuadraticSurrogate().fit(X, np.stack([y, y], 1))
    with pytest.raises(ConfigError, match="Task"):
        QuadraticSurrogate().fit(X, y, "acc")  # type: ignore[arg-type]
    model = QuadraticSurrogate().fit(X, y[:, None])  # a (K, 1) column is accepted
    with pytest.raises(ConfigError, match="2 coefficients"):
        model.predict(np.zeros((3, 3)))
    assert model.predict(X[0]).shape == (1,)
    assert model.predict(np.zeros((0, 2))).shape == (0,)


def test_predict_before_fit() -> None:
    with pytest.raises(MapframeError, match="not fitted"):
        QuadraticSurrogate().predict(np.zeros((1, 2)))
    with pytest.raises(MapframeError, match="not fitted"):
        _ = SigmoidQuadraticSurrogate().A


def test_failed_refit_leaves_the_model_unfitted() -> None:
    X = sobol(12, 2)
    model = QuadraticSurrogate().fit(X, X.sum(1))
    with pytest.raises(BudgetError):
        model.fit(X[:3], X[:3].sum(1))
    with pytest.raises(MapframeError, match="not fitted"):
        model.predict(X)


# --------------------------------------------------------------------------- component contract
@pytest.mark.parametrize(
    ("model", "name"),
    [(QuadraticSurrogate(), "quadratic"), (SigmoidQuadraticSurrogate(), "sigmoid_quadratic"),
     (SoftplusQuadraticSurrogate(), "softplus_quadratic"), (AutoSurrogate(), "auto")],
)
def test_prototype_copies_fit_independently(model: Surrogate, name: str) -> None:
    assert model.name == name and model.kind == "surrogate"
    X = sobol(20, 2)
    a = copy.deepcopy(model).fit(X, 0.2 + 0.5 * X[:, 0] ** 2, ACCURACY)
    b = copy.deepcopy(model).fit(X, 0.3 + 0.4 * X[:, 1] ** 2, ACCURACY)
    assert not np.allclose(a.predict(X), b.predict(X))
    desc = model.describe()
    assert desc["name"] == name and "ridge" in desc
    assert all(isinstance(v, (str, int, float, type(None))) for v in desc.values())


def test_expected_errors_fall_back_to_rmse_where_the_loo_error_is_not_a_number():
    """A leave-one-out error of NaN (a point with leverage 1) made the promised error NaN,
    so the handed-over front's margin dropped to 0, not to the in-sample rmse."""
    from mapframe.surrogates.base import expected_errors

    diag = {"a": {"loo_rmse": float("nan"), "rmse": 0.02}, "b": {"loo_rmse": 0.05, "rmse": 0.01},
            "c": {"rmse": 0.03}, "d": {}, "e": {"loo_rmse": "n/a"}}
    got = expected_errors(diag, ["a", "b", "c", "d", "e"])
    np.testing.assert_allclose(got[:3], [0.02, 0.05, 0.03])
    assert np.isnan(got[3]) and np.isnan(got[4])
