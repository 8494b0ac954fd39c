"""Tests for Bayesian MAP's adaptive bin sampler (``bins``)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from scipy.stats import qmc

from mapframe.errors import ConfigError
from mapframe.history import Evaluation, History
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.bins import (
    BinSampler,
    auto_angle_bins,
    bin_index,
    from_hyperspherical,
    n_bins,
    radius_edges,
    to_hyperspherical,
)
from mapframe.surrogates.quadratic import AutoSurrogate, QuadraticSurrogate
from mapframe.testing import AdaptiveSamplerContract


class TestBinSampler(AdaptiveSamplerContract):
    def make_sampler(self) -> BinSampler:
        return BinSampler()


# --------------------------------------------------------------------------- helpers
def _history(U: np.ndarray, Y: np.ndarray) -> History:
    return History(U.shape[1], Y.shape[1], [Evaluation(U[i], Y[i]) for i in range(len(U))])


def _ready(n_dims: int, tasks: tuple[Task, ...], surrogate: Any = None,
           space: SearchSpace | None = None, **kwargs: Any) -> tuple[BinSampler, SearchSpace]:
    space = space or SearchSpace.box(n_dims)
    s = BinSampler(**kwargs)
    s.setup(SamplerContext(space=space, tasks=tasks, surrogate=surrogate or AutoSurrogate()))
    return s, space


def _smooth(U: np.ndarray) -> np.ndarray:
    """Two tasks in (0, 1) that a sigmoid quadratic fits well but not exactly."""
    z0 = 1.5 * U[:, 0] - U.sum(axis=1) ** 2 + 0.3 * np.sin(3 * U[:, -1])
    z1 = 1.5 * U[:, -1] - U.sum(axis=1) ** 2 + 0.3 * np.cos(3 * U[:, 0])
    return np.column_stack([1 / (1 + np.exp(-z0)), 1 / (1 + np.exp(-z1))])


ACC = (Task("a", "max", 0.0, 1.0), Task("b", "max", 0.0, 1.0))


# --------------------------------------------------------------------------- coordinates
def test_hyperspherical_known_values() -> None:
    r, ang = to_hyperspherical(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [3.0, 4.0]]))
    np.testing.assert_allclose(r, [1.0, 1.0, math.sqrt(2), 5.0])
    np.testing.assert_allclose(ang[:, 0], [0.0, math.pi / 2, math.pi / 4, math.atan2(4, 3)])
    r, ang = to_hyperspherical(np.array([0.0, 0.0, 1.0]))
    np.testing.assert_allclose(ang, [[math.pi / 2, math.pi / 2]])
    r, ang = to_hyperspherical(np.array([[0.3], [0.9]]))
    np.testing.assert_allclose(r, [0.3, 0.9])
    assert ang.shape == (2, 0)


@pytest.mark.parametrize("n_dims", [1, 2, 3, 5])
def test_hyperspherical_round_trip(n_dims: int) -> None:
    U = np.random.default_rng(n_dims).random((200, n_dims))
    r, ang = to_hyperspherical(U)
    assert np.all((ang >= 0) & (ang <= math.pi / 2))
    np.testing.assert_allclose(r, np.linalg.norm(U, axis=1))
    np.testing.assert_allclose(from_hyperspherical(r, ang), U, atol=1e-12)


@pytest.mark.parametrize("n_dims", [1, 2, 3, 4])
def test_radius_edges_split_the_cube_into_equal_volumes(n_dims: int) -> None:
    edges = radius_edges(n_dims, 3)
    assert edges[0] == 0.0 and edges[-1] == pytest.approx(math.sqrt(n_dims))
    assert np.all(np.diff(edges) > 0)
    r = np.linalg.norm(np.random.default_rng(0).random((40000, n_dims)), axis=1)
    share = np.histogram(r, bins=edges)[0] / r.size
    np.testing.assert_allclose(share, 1 / 3, atol=0.015)


@pytest.mark.parametrize("n_dims", [1, 2, 3, 4])
def test_bins_in_range_and_pool_covers_reachable_bins(n_dims: int) -> None:
    s = BinSampler()
    a = s.resolved_angle_bins(n_dims)
    assert a == auto_angle_bins(n_dims) == {1: 1, 2: 8, 3: 4, 4: 3}[n_dims]
    nb = s.n_bins(n_dims)
    assert nb == n_bins(n_dims, a, 2) == 2 * a ** (n_dims - 1)
    # the cube's corners and edges are binned too
    corners = np.array(np.meshgrid(*[[0.0, 1.0]] * n_dims)).reshape(n_dims, -1).T
    idx = bin_index(corners, a, 2)
    assert np.all((idx >= 0) & (idx < nb))
    # which bins the cube reaches, and how much of it each holds (a fine reference sample)
    dense = qmc.Sobol(n_dims, seed=1).random(2**17)
    volume = np.bincount(bin_index(dense, a, 2), minlength=nb) / dense.shape[0]
    assert (volume > 0).sum() >= nb // 2
    union = np.zeros(nb, dtype=bool)
    for seed in range(6):
        pool = s.draw_pool(n_dims, np.random.default_rng(seed))
        assert pool.shape[0] == 64 * nb and np.all((pool >= 0) & (pool <= 1))
        pb = bin_index(pool, a, 2)
        assert np.all((pb >= 0) & (pb < nb))
        hit = np.bincount(pb, minlength=nb) > 0
        assert np.all(hit[volume >= 0.01]), "a bin holding >= 1% of the box got no pool points"
        union |= hit
    assert np.all(union[volume >= 0.001])


# --------------------------------------------------------------------------- design and rounds
def test_initial_design_is_a_sobol_prefix_and_batch_sizes() -> None:
    s, space = _ready(2, ACC)
    empty = History(2, 2)
    assert s.resolved_initial(space, empty) == 7  # 6 quadratic parameters + 1
    assert s.batch_size(100, empty) == 7
    assert s.batch_size(100, empty, capacity=10) == 10
    assert s.batch_size(4, empty) == 4
    full = s.propose(7, space, empty, np.random.default_rng([3, 0]))
    part = s.propose(4, space, empty, np.random.default_rng([3, 0]))
    np.testing.assert_array_equal(full[:4], part)
    history = _history(full, _smooth(full))
    assert s.batch_size(100, history) == 3
    assert s.batch_size(100, history, capacity=5) == 5
    assert s.batch_size(2, history) == 2
    assert s.acquisition(space, history, np.random.default_rng(0)).mode == "ucb"


def test_initial_design_skips_failed_points() -> None:
    s, space = _ready(2, ACC, initial=5)
    X = s.propose(5, space, History(2, 2), np.random.default_rng(0))
    ok = [Evaluation(x, _smooth(x[None])[0]) for x in X[:4]]
    history = History(2, 2, [*ok, Evaluation(X[4], None, "failed", "boom")])
    assert s.batch_size(10, history) == 1
    more = s.propose(1, space, history, np.random.default_rng(1))
    assert more.shape == (1, 2) and not any(np.array_equal(more[0], x) for x in X)


def test_fallback_prefers_empty_bins() -> None:
    # K = n_params = 6: no leave-one-out residual exists, so the sampler explores
    s, space = _ready(2, ACC, initial=6)
    U = np.array([[0.5, 0.05], [0.6, 0.1], [0.55, 0.02], [0.05, 0.5], [0.1, 0.6], [0.02, 0.55]])
    history = _history(U, _smooth(U))
    scores = s.acquisition(space, history, np.random.default_rng(0))
    assert scores.mode == "explore" and "leave-one-out" in scores.reason
    occupied = scores.counts > 0
    assert occupied.sum() == 2 and scores.reachable.all()
    p = scores.probabilities
    assert p[~occupied].min() > 4 * p[occupied].max()
    # uniform sampling would put ~12.6% of the points into the two occupied bins
    volume = np.bincount(bin_index(np.random.default_rng(9).random((100000, 2)), 8, 2),
                         minlength=16)[occupied].sum() / 100000
    hits = 0
    for seed in range(40):
        X = s.propose(3, space, history, np.random.default_rng(seed))
        hits += int(occupied[bin_index(X, 8, 2)].sum())
    assert hits / 120 < volume / 2, (hits, volume)


def test_unfittable_data_falls_back_to_exploring() -> None:
    # every point on the diagonal: the quadratic in (c1, c2) is not identifiable
    s, space = _ready(2, ACC)
    t = np.linspace(0.05, 0.95, 12)
    U = np.column_stack([t, t])
    history = _history(U, _smooth(U))
    scores = s.acquisition(space, history, np.random.default_rng(0))
    assert scores.mode == "explore"
    X = s.propose(3, space, history, np.random.default_rng(0))
    assert X.shape == (3, 2) and np.all(space.contains(X))


def test_exact_surrogate_falls_back_to_exploring() -> None:
    s, space = _ready(2, (Task("a"), Task("b")), surrogate=QuadraticSurrogate())
    U = np.random.default_rng(0).random((15, 2))
    Y = np.column_stack([U @ [1.0, 2.0] - U[:, 0] ** 2, 1 + U[:, 0] * U[:, 1]])
    scores = s.acquisition(space, _history(U, Y), np.random.default_rng(0))
    assert scores.mode == "explore" and "exactly" in scores.reason


def test_samples_where_the_surrogate_is_wrong() -> None:
    """A sharp bump the quadratic cannot fit draws proposals to its angular sector."""
    center = np.array([0.85, 0.25])

    def f(U: np.ndarray) -> np.ndarray:
        smooth = 1.0 + U[:, 0] - 0.5 * U[:, 1] ** 2 + 0.3 * U[:, 0] * U[:, 1]
        bump = 2.0 * np.exp(-((U - center) ** 2).sum(axis=1) / (2 * 0.06**2))
        return np.column_stack([smooth + bump, 2.0 - smooth])

    U = np.vstack([qmc.Sobol(2, seed=0).random(32),
                   center + np.array([[0.03, 0.0], [-0.04, 0.02], [0.0, -0.05]])])
    history = _history(U, f(U))
    s, space = _ready(2, (Task("a"), Task("b")), surrogate=QuadraticSurrogate())
    target = bin_index(center, 8, 2)[0]
    # the bump's bin and its neighbour across the angle edge: sector φ < π/8, outer shell
    sector = [target - 1, target]
    volume = np.bincount(bin_index(np.random.default_rng(9).random((100000, 2)), 8, 2),
                         minlength=16)[sector].sum() / 100000
    scores = s.acquisition(space, history, np.random.default_rng(0))
    assert scores.mode == "ucb"
    assert int(np.nanargmax(scores.scores)) == target
    assert scores.probabilities[target] > 3 / scores.reachable.sum()
    hits, n_seeds = 0, 60
    for seed in range(n_seeds):
        X = s.propose(1, space, history, np.random.default_rng(seed))
        hits += int(np.isin(bin_index(X, 8, 2), sector).sum())
    # uniform sampling would hit the sector at its volume share (~8%)
    assert hits / n_seeds > 3 * volume, (hits, volume)


def test_never_proposes_evaluated_points() -> None:
    class Adversarial(BinSampler):
        """Its pool is mostly the evaluated points themselves."""

        evaluated: np.ndarray

        def draw_pool(self, n_dims: int, rng: np.random.Generator) -> np.ndarray:
            return np.vstack([self.evaluated, self.evaluated, rng.random((4, n_dims))])

    U = qmc.Sobol(2, seed=4).random(16)[:12]
    history = _history(U, _smooth(U))
    s = Adversarial()
    s.evaluated = U
    space = SearchSpace.box(2)
    s.setup(SamplerContext(space=space, tasks=ACC, surrogate=AutoSurrogate()))
    X = s.propose(4, space, history, np.random.default_rng(0))
    seen = {tuple(u) for u in U}
    assert len(X) >= 1 and not any(tuple(x) in seen for x in X)
    assert len({tuple(x) for x in X}) == len(X)
    # the ordinary pool: no evaluated point, no repeats, over many rounds
    s2, _ = _ready(2, ACC)
    for seed in range(5):
        X = s2.propose(10, space, history, np.random.default_rng(seed))
        assert X.shape == (10, 2)
        assert not any(tuple(x) in seen for x in X) and len({tuple(x) for x in X}) == 10


def test_reproducible_and_global_rng_free() -> None:
    U = np.random.default_rng(1).random((14, 2))
    history = _history(U, _smooth(U))
    s, space = _ready(2, ACC)
    np.random.seed(0)
    a = s.propose(3, space, history, np.random.default_rng(7))
    np.random.seed(1)
    b = s.propose(3, space, history, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, s.propose(3, space, history, np.random.default_rng(8)))


@pytest.mark.parametrize("n_dims", [1, 4])
def test_one_and_four_dimensions(n_dims: int) -> None:
    space = SearchSpace(np.full(n_dims, -0.2), np.full(n_dims, 1.3))
    s, _ = _ready(n_dims, ACC, space=space, n_bootstrap=8)
    k = s.resolved_initial(space, History(n_dims, 2)) + 3
    U = np.random.default_rng(2).random((k, n_dims))
    history = _history(space.scale(U), _smooth(U))
    scores = s.acquisition(space, history, np.random.default_rng(0))
    assert scores.mode == "ucb"
    assert scores.scores.shape == (s.n_bins(n_dims),)
    assert np.all(np.isfinite(scores.scores[scores.reachable]))
    assert scores.probabilities.sum() == pytest.approx(1.0)
    X = s.propose(5, space, history, np.random.default_rng(0))
    assert X.shape == (5, n_dims) and np.all(space.contains(X, atol=0.0))


# --------------------------------------------------------------------------- study and config
def test_study_end_to_end() -> None:
    from mapframe.study import MergeStudy

    def objective(C: np.ndarray) -> np.ndarray:
        return _smooth(np.atleast_2d(C))

    result = MergeStudy(objective, ["a", "b"], metric_ranges=[(0, 1), (0, 1)],
                        sampler="bins", budget=15, front_solver="grid").run()
    X = result.history.X
    assert len(result.history) == 15 and X.shape == (15, 2)
    assert len({tuple(x) for x in X}) == 15
    assert len(result.front) > 0

    class Recording(BinSampler):
        sizes: list[int] = []

        def propose(self, n: int, space: SearchSpace, history: History,
                    rng: np.random.Generator) -> np.ndarray:
            self.sizes.append(n)
            return super().propose(n, space, history, rng)

    sampler = Recording(batch=4)
    MergeStudy(objective, ["a", "b"], metric_ranges=[(0, 1), (0, 1)],
               sampler=sampler, budget=15, front_solver="grid").run()
    assert sampler.sizes == [7, 4, 4]  # the initial design, then rounds of `batch`


def test_created_from_config_and_described() -> None:
    s = get_registry().create("sampler", {"name": "bins", "batch": 2, "lam": 0.5})
    assert isinstance(s, BinSampler) and s.adaptive
    assert s.batch == 2 and s.lam == 0.5
    desc = s.describe()
    assert desc == {"name": "bins", "batch": 2, "initial": "auto", "angle_bins": "auto",
                    "radius_bins": 2, "lam": 0.5, "temperature": 0.5, "n_bootstrap": 20,
                    "pool_per_bin": 64, "probes_per_bin": 16}


@pytest.mark.parametrize("params, word", [
    ({"batch": 0}, "batch"),
    ({"batch": 1.5}, "batch"),
    ({"initial": "many"}, "initial"),
    ({"initial": 0}, "initial"),
    ({"angle_bins": 0}, "angle_bins"),
    ({"radius_bins": True}, "radius_bins"),
    ({"lam": -1.0}, "lam"),
    ({"lam": float("nan")}, "lam"),
    ({"temperature": 0}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"n_bootstrap": 1}, "n_bootstrap"),
    ({"pool_per_bin": 0}, "pool_per_bin"),
    ({"probes_per_bin": -2}, "probes_per_bin"),
])
def test_bad_parameters(params: dict[str, Any], word: str) -> None:
    with pytest.raises(ConfigError, match=word):
        BinSampler(**params)
    with pytest.raises(ConfigError, match=word):
        get_registry().create("sampler", {"name": "bins", **params})
