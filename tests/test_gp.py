"""The Gaussian-process surrogate (``gp``) and the q-EHVI sampler (``gp``)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import qmc

from mapframe.errors import BudgetError, ConfigError
from mapframe.history import Evaluation, History
from mapframe.metrics import hypervolume
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.gp import (
    GPSampler,
    _batch_hvi,
    _FrontTable,
    _hvi_mc,
    hypervolume_improvement,
)
from mapframe.surrogates.gp import GPSurrogate, _kernel, _trend_kernel, fit_gp
from mapframe.testing import AdaptiveSamplerContract, SurrogateContract


class TestGPSampler(AdaptiveSamplerContract):
    def make_sampler(self):
        return GPSampler()


class TestGPSamplerLatinHypercubeStart(AdaptiveSamplerContract):
    def make_sampler(self):
        return GPSampler(design="lhs")


class TestGPSurrogate(SurrogateContract):
    def make_surrogate(self):
        return GPSurrogate()


# --------------------------------------------------------------------------- the GP
def _smooth(X: np.ndarray) -> np.ndarray:
    return np.sin(3.0 * X[:, 0]) + 0.5 * np.cos(2.0 * X[:, 1]) + X[:, 0] * X[:, 1]


def test_fit_accuracy_on_known_function():
    X = qmc.Sobol(2, seed=0).random(32)
    s = GPSurrogate().fit(X, _smooth(X), Task("t"))
    Xt = np.random.default_rng(1).random((200, 2))
    yt = _smooth(Xt)
    rmse = np.sqrt(np.mean((s.predict(Xt) - yt) ** 2))
    assert rmse < 0.02 * np.ptp(yt)
    diag = s.diagnostics()
    assert diag["loo_method"] == "closed_form" and diag["loo_r2"] > 0.95
    assert len(diag["lengthscales"]) == 2
    assert all(isinstance(diag[k], float) for k in ("outputscale", "noise", "loo_rmse"))


def test_predict_std_small_at_data_large_away():
    X = np.linspace(0.0, 0.5, 8)[:, None]
    s = GPSurrogate().fit(X, np.sin(6.0 * X[:, 0]), Task("t"))
    at_data = s.predict_std(X)
    away = s.predict_std(np.array([[1.0], [1.5]]))
    assert at_data.shape == (8,) and np.all(at_data >= 0)
    assert at_data.max() < 0.05 * away.min()
    assert away[1] > away[0]


def test_fit_is_deterministic():
    X = np.random.default_rng(0).random((12, 3))
    y = X.sum(axis=1) ** 2
    a, b = fit_gp(X, y), fit_gp(X, y)
    np.testing.assert_array_equal(a.lengthscale, b.lengthscale)
    np.testing.assert_array_equal(a.mean(X[:4] + 0.01), b.mean(X[:4] + 0.01))


def test_closed_form_loo_matches_refits():
    rng = np.random.default_rng(3)
    X = rng.random((15, 2))
    y = _smooth(X) + 0.01 * rng.standard_normal(15)
    gp = fit_gp(X, y, noise_floor=1e-4)
    loo_mean, loo_var = gp.loo()
    for i in range(15):
        keep = np.arange(15) != i
        held = gp.with_data(X[keep], y[keep])
        m, v = held.mean_var(X[i : i + 1])
        assert loo_mean[i] == pytest.approx(m[0], abs=1e-6)
        # the LOO variance is that of a new observation: latent variance plus noise
        assert loo_var[i] == pytest.approx(v[0] + gp.noise * gp.y_scale**2, rel=1e-6)


def test_posterior_is_consistent():
    X = np.random.default_rng(5).random((10, 2))
    gp = fit_gp(X, _smooth(X))
    Xn = np.random.default_rng(6).random((7, 2))
    mean, cov = gp.posterior(Xn)
    np.testing.assert_allclose(mean, gp.mean(Xn), atol=1e-12)
    np.testing.assert_allclose(np.diag(cov), gp.var(Xn), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(cov[:, 2], gp.cov(Xn, Xn[2:3])[:, 0], atol=1e-12)
    assert np.linalg.eigvalsh(cov).min() > -1e-9


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
def test_numpy_kernel_matches_gpytorch(nu):
    import gpytorch
    import torch

    rng = np.random.default_rng(0)
    A, B = rng.random((6, 3)), rng.random((4, 3))
    ls = np.array([0.3, 0.7, 1.9])
    k = gpytorch.kernels.MaternKernel(nu=nu, ard_num_dims=3).double()
    k.lengthscale = torch.tensor(ls[None, :])
    with torch.no_grad():
        want = k(torch.tensor(A), torch.tensor(B)).to_dense().numpy()
    np.testing.assert_allclose(_kernel(A, B, ls, 2.0, nu), 2.0 * want, rtol=1e-6, atol=1e-9)


def test_trend_kernel_matches_gpytorch():
    import gpytorch
    import torch

    rng = np.random.default_rng(1)
    A, B = rng.random((6, 3)), rng.random((4, 3))
    k = gpytorch.kernels.PolynomialKernel(power=2).double()
    k.offset = torch.tensor([[0.7]], dtype=torch.float64)
    with torch.no_grad():
        want = k(torch.tensor(A - 0.5), torch.tensor(B - 0.5)).to_dense().numpy()
    np.testing.assert_allclose(_trend_kernel(A, B, 3.0, 0.7), 3.0 * want, rtol=1e-9)


def _bowl(X: np.ndarray) -> np.ndarray:
    return 1.0 - ((X - 0.3) ** 2).sum(axis=1)


def test_quadratic_trend_fits_a_quadratic_better():
    rng = np.random.default_rng(0)
    X = rng.random((25, 4))
    y = _bowl(X) + 0.01 * rng.standard_normal(25)
    box = (np.zeros(4), np.ones(4))
    plain, trend = fit_gp(X, y, bounds=box), fit_gp(X, y, bounds=box, trend="quadratic")
    assert "trend_scale" not in plain.hyperparameters()
    assert trend.hyperparameters()["trend_scale"] > 0.0
    Xt = rng.random((500, 4))

    def rmse(gp):
        return float(np.sqrt(np.mean((gp.mean(Xt) - _bowl(Xt)) ** 2)))

    assert rmse(trend) < 0.75 * rmse(plain)
    # the trend is part of every posterior quantity: variances, covariances, refits
    mean, cov = trend.posterior(Xt[:6])
    np.testing.assert_allclose(np.diag(cov), trend.var(Xt[:6]), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(mean, trend.mean_var(Xt[:6])[0], atol=1e-12)
    again = trend.with_data(X, y)
    np.testing.assert_allclose(again.mean(Xt[:6]), mean, atol=1e-10)
    far = trend.var(np.full((1, 4), 3.0))[0]
    assert far > trend.var(X[:1])[0]
    with pytest.raises(ConfigError, match="trend must be one of none, quadratic"):
        fit_gp(X, y, trend="cubic")


def test_surrogate_errors():
    s = GPSurrogate()
    assert s.n_params(3) == 4
    with pytest.raises(BudgetError, match="at least 4"):
        s.fit(np.random.default_rng(0).random((3, 3)), np.zeros(3), Task("t"))
    with pytest.raises(ConfigError):
        GPSurrogate(nu=2.0)
    with pytest.raises(ConfigError):
        GPSurrogate(noise_floor=0.0)
    with pytest.raises(ConfigError):
        GPSurrogate(restarts=0)
    with pytest.raises(ConfigError, match="warp must be one of auto, none"):
        GPSurrogate(warp="logit")
    assert GPSurrogate().describe() == {
        "name": "gp", "nu": 2.5, "noise_floor": 1e-6, "restarts": 2, "warp": "none"}


def test_missing_gpytorch_message(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpytorch", None)
    hint = r"needs gpytorch: pip install 'mapframe\[gp\]'"
    with pytest.raises(ConfigError, match="the gp surrogate " + hint):
        GPSurrogate()
    with pytest.raises(ConfigError, match="the gp sampler " + hint):
        GPSampler()
    with pytest.raises(ConfigError, match="needs gpytorch"):
        fit_gp(np.random.default_rng(0).random((4, 2)), np.arange(4.0))


def test_import_mapframe_does_not_import_torch():
    code = ("import sys, mapframe, mapframe.samplers, mapframe.surrogates\n"
            "from mapframe.plugin import get_registry\n"
            "get_registry().get('sampler', 'gp'); get_registry().get('surrogate', 'gp')\n"
            "assert 'gpytorch' not in sys.modules and 'torch' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- hypervolume
@pytest.mark.parametrize("T", [1, 2, 3, 4])
def test_hvi_is_exact(T):
    rng = np.random.default_rng(T)
    ref = np.full(T, -0.1)
    for _ in range(6):
        front = rng.random((int(rng.integers(0, 7)), T))
        Y = rng.random((8, T)) * 1.2 - 0.1
        base = hypervolume(front, ref) if len(front) else 0.0
        want = [hypervolume(np.vstack([front, y]), ref) - base for y in Y]
        np.testing.assert_allclose(hypervolume_improvement(Y, front, ref), want, atol=1e-12)


@pytest.mark.parametrize("T", [2, 3])
def test_hvi_with_pending_points_is_exact(T):
    rng = np.random.default_rng(10 + T)
    ref = np.full(T, -0.1)
    for q in range(4):
        P = rng.random((4, T))
        Q = rng.random((1, q, T)) * 1.1
        Y = rng.random((1, 12, T)) * 1.2
        upper = np.max(np.concatenate([Y[0], P, Q[0]]), axis=0)
        table = _FrontTable(P, ref, upper) if T >= 3 else None
        FQ = np.vstack([P, Q[0]])
        base = hypervolume(FQ, ref)
        want = np.array([hypervolume(np.vstack([FQ, y]), ref) - base for y in Y[0]])
        np.testing.assert_allclose(_batch_hvi(Y, P, Q, ref, table)[0], want, atol=1e-12)
        if T == 3:  # the Monte-Carlo fallback converges to the same numbers
            W = rng.random((1, 100_000, T))
            np.testing.assert_allclose(_hvi_mc(Y, P, Q, ref, W)[0], want, atol=0.01)


# --------------------------------------------------------------------------- the sampler
def _toy(C: np.ndarray) -> np.ndarray:
    """Two tasks with optima at (0.2, 0.3) and (0.8, 0.7): the front is the segment."""
    a, b = np.array([0.2, 0.3]), np.array([0.8, 0.7])
    return np.column_stack([1 - ((C - a) ** 2).sum(1), 1 - ((C - b) ** 2).sum(1)])


def _history(X: np.ndarray, Y: np.ndarray) -> History:
    return History(X.shape[1], Y.shape[1], [Evaluation(x, y) for x, y in zip(X, Y)])


def _ready(tasks, n_dims: int = 2, **kwargs) -> GPSampler:
    s = GPSampler(**kwargs)
    s.setup(SamplerContext(space=SearchSpace.box(n_dims), tasks=tuple(tasks),
                           surrogate=GPSurrogate()))
    return s


def test_ehvi_beats_random_proposals():
    space = SearchSpace.box(2)
    gains_ehvi, gains_random = [], []
    for seed in range(4):
        X0 = qmc.Sobol(2, seed=seed).random(8)
        Y0 = _toy(X0)
        ref = Y0.min(axis=0) - 0.1 * np.ptp(Y0, axis=0)
        hv0 = hypervolume(Y0, ref)
        X = GPSampler().propose(3, space, _history(X0, Y0), np.random.default_rng(seed))
        gains_ehvi.append(hypervolume(np.vstack([Y0, _toy(X)]), ref) - hv0)
        rnd = np.random.default_rng(100 + seed)
        gains_random.append(np.mean([
            hypervolume(np.vstack([Y0, _toy(rnd.random((3, 2)))]), ref) - hv0
            for _ in range(20)]))
        assert gains_ehvi[-1] > 0
    assert np.mean(gains_ehvi) > 2.0 * np.mean(gains_random)


def test_min_directions_mirror_max():
    X0 = np.random.default_rng(1).random((9, 2))
    Y0 = _toy(X0)
    Y3 = np.column_stack([Y0, Y0[:, 0] * Y0[:, 1]])
    space = SearchSpace.box(2)
    for Y in (Y0, Y3):
        T = Y.shape[1]
        up = _ready([Task(f"t{j}") for j in range(T)]).propose(
            3, space, _history(X0, Y), np.random.default_rng(4))
        down = _ready([Task(f"t{j}", "min") for j in range(T)]).propose(
            3, space, _history(X0, -Y), np.random.default_rng(4))
        np.testing.assert_allclose(up, down, atol=1e-9)


@pytest.mark.parametrize(("T", "n_dims", "batch"), [(1, 1, 3), (3, 2, 3), (3, 2, 6), (4, 3, 2)])
def test_proposals_for_several_tasks(T, n_dims, batch):
    rng = np.random.default_rng(T)
    X = rng.random((12, n_dims))
    Y = np.column_stack([-((X - c) ** 2).sum(axis=1) for c in np.linspace(0.1, 0.9, T)])
    space = SearchSpace.box(n_dims)
    s = _ready([Task(f"t{j}") for j in range(T)], n_dims, batch=batch, n_samples=32)
    history = _history(X, Y)
    out = s.propose(batch, space, history, np.random.default_rng(0))
    assert out.shape == (batch, n_dims) and np.all(space.contains(out))
    assert len({tuple(x) for x in out}) == batch
    assert not {tuple(x) for x in out} & {tuple(x) for x in X}
    again = s.propose(batch, space, history, np.random.default_rng(0))
    np.testing.assert_array_equal(out, again)


def test_rounds_and_initial_design():
    s = _ready([Task("a"), Task("b")], 3)  # gp surrogate: n_params(3) = 4
    empty = History(3, 2)
    assert s.initial_size(s.context_for(SearchSpace.box(3), empty)) == 4
    assert s.batch_size(30, empty) == 4
    space = SearchSpace.box(3)
    X = s.propose(4, space, empty, np.random.default_rng(7))
    np.testing.assert_array_equal(X, s.propose(4, space, empty, np.random.default_rng(7)))
    np.testing.assert_array_equal(X[:2], s.propose(2, space, empty, np.random.default_rng(7)))
    # a failed initial point is replaced by a new space-filling one, never re-proposed
    evs = [Evaluation(x, _toy(x[None, :2])[0]) for x in X[:3]]
    evs.append(Evaluation(X[3], None, "failed", "boom"))
    history = History(3, 2, evs)
    assert s.batch_size(30, history) == 1
    again = s.propose(1, space, history, np.random.default_rng(8))
    assert not any(np.array_equal(again[0], x) for x in X)
    full = _history(X, _toy(X[:, :2]))
    assert s.batch_size(30, full) == 3 and s.batch_size(30, full, capacity=5) == 5
    assert s.batch_size(2, full) == 2
    assert GPSampler(initial=6).batch_size(30, full) == 2
    # batch: "auto", as the front and botorch samplers take it, is 3 at every budget
    auto = GPSampler(initial=4, batch="auto")
    assert auto.describe()["batch"] == "auto"
    assert auto.batch_size(30, full) == 3 and auto.batch_size(30, full, capacity=5) == 5
    assert auto.batch_size(2, full) == 2


def test_sampler_settings():
    assert GPSampler().describe() == {
        "name": "gp", "initial": "auto", "batch": 3, "n_samples": 128,
        "n_candidates": "auto", "nu": 2.5, "restarts": 2, "noise_floor": 1e-6,
        "design": "sobol"}
    for bad in ({"batch": 0}, {"initial": 1}, {"initial": "all"}, {"n_samples": 0},
                {"n_candidates": "many"}, {"nu": 3}, {"restarts": 9}, {"batch": True},
                {"design": "halton"}):
        with pytest.raises(ConfigError):
            GPSampler(**bad)


def test_study_end_to_end():
    from mapframe.study import MergeStudy

    result = MergeStudy(_toy, ["a", "b"], sampler="gp", surrogate="gp", budget=14,
                        front_solver="grid", seed=0).run()
    assert len(result.history) == 14
    assert [r["proposed"] for r in result.rounds] == [3, 3, 3, 3, 2]
    assert result.front.predicted_std is not None
    assert result.diagnostics["a"]["loo_method"] == "closed_form"
    front_x = result.front.coefficients
    # the true front is the segment from (0.2, 0.3) to (0.8, 0.7)
    assert np.all(np.abs(_toy(front_x) - result.front.predicted) < 0.05)
