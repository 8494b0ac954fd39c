"""Tests for the space-filling samplers: inside the box, reproducible, well spread."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import qmc

from mapframe.errors import ConfigError
from mapframe.history import Evaluation, History
from mapframe.problem import SearchSpace
from mapframe.samplers.base import Sampler
from mapframe.samplers.space_filling import (
    GridSampler,
    LatinHypercubeSampler,
    RandomSampler,
    SobolSampler,
    check_design,
    fresh_design,
    sobol_unit,
)
from mapframe.surrogates.quadratic import check_identifiable, n_quadratic_params

SAMPLERS = [
    RandomSampler(),
    SobolSampler(),
    LatinHypercubeSampler(),
    LatinHypercubeSampler(optimization="random-cd"),
    GridSampler(),
]
IDS = ["random", "sobol", "lhs", "lhs-cd", "grid"]

BOX = SearchSpace(np.array([-1.0, 0.5, 2.0]), np.array([0.0, 1.5, 5.0]))


def propose(sampler: Sampler, n: int, space: SearchSpace = BOX, seed: int = 0) -> np.ndarray:
    history = History(space.n_dims, space.n_dims)
    return sampler.propose(n, space, history, np.random.default_rng(seed))


def to_unit(X: np.ndarray, space: SearchSpace) -> np.ndarray:
    return (X - space.lower) / (space.upper - space.lower)


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
@pytest.mark.parametrize("n", [1, 7, 30])
def test_points_inside_non_unit_box(sampler: Sampler, n: int) -> None:
    X = propose(sampler, n)
    assert X.shape == (n, 3)
    assert X.dtype == float
    assert np.all(BOX.contains(X, atol=0.0))


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_reproducible_with_the_same_seed(sampler: Sampler) -> None:
    np.random.seed(1)
    a = propose(sampler, 20, seed=123)
    np.random.seed(2)  # global state must not matter
    b = propose(sampler, 20, seed=123)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", SAMPLERS[:4], ids=IDS[:4])
def test_different_seeds_give_different_designs(sampler: Sampler) -> None:
    assert not np.allclose(propose(sampler, 20, seed=1), propose(sampler, 20, seed=2))


def test_grid_does_not_depend_on_the_seed() -> None:
    np.testing.assert_array_equal(propose(GridSampler(), 20, seed=1),
                                  propose(GridSampler(), 20, seed=2))


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_zero_points(sampler: Sampler) -> None:
    assert propose(sampler, 0).shape == (0, 3)


@pytest.mark.parametrize("bad", [-1, 2.5, "3", True])
def test_bad_n_is_rejected(bad: object) -> None:
    with pytest.raises(ConfigError):
        propose(SobolSampler(), bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("sampler", SAMPLERS, ids=IDS)
def test_sampler_contract(sampler: Sampler) -> None:
    assert isinstance(sampler, Sampler)
    assert sampler.kind == "sampler"
    assert sampler.adaptive is False
    assert sampler.batch_size(17, History(3, 3)) == 17
    assert sampler.describe()["name"] == sampler.name


def test_names() -> None:
    assert [RandomSampler.name, SobolSampler.name, LatinHypercubeSampler.name,
            GridSampler.name] == ["random", "sobol", "lhs", "grid"]


@pytest.mark.parametrize("sampler", [RandomSampler(), SobolSampler()], ids=["random", "sobol"])
def test_prefix_property(sampler: Sampler) -> None:
    short = propose(sampler, 10, seed=7)
    long = propose(sampler, 37, seed=7)
    np.testing.assert_array_equal(short, long[:10])


@pytest.mark.parametrize("optimization", [None, "random-cd"])
@pytest.mark.parametrize("n", [5, 30])
def test_lhs_stratification(optimization: str | None, n: int) -> None:
    X = propose(LatinHypercubeSampler(optimization=optimization), n, seed=3)  # type: ignore[arg-type]
    strata = np.floor(to_unit(X, BOX) * n).astype(int)
    for j in range(BOX.n_dims):
        assert sorted(strata[:, j]) == list(range(n))


def test_lhs_rejects_unknown_optimization() -> None:
    with pytest.raises(ConfigError):
        LatinHypercubeSampler(optimization="lloyd")  # type: ignore[arg-type]


def test_sobol_without_scrambling_is_deterministic() -> None:
    a = propose(SobolSampler(scramble=False), 8, seed=1)
    b = propose(SobolSampler(scramble=False), 8, seed=2)
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize(("n_dims", "n", "k"), [(2, 9, 3), (2, 16, 4), (3, 27, 3), (1, 5, 5)])
def test_full_grid(n_dims: int, n: int, k: int) -> None:
    space = SearchSpace.box(n_dims, (0.0, 2.0))
    X = propose(GridSampler(), n, space)
    assert GridSampler().levels(n, n_dims) == k
    assert len(np.unique(X, axis=0)) == n
    for j in range(n_dims):
        np.testing.assert_allclose(np.unique(X[:, j]), np.linspace(0.0, 2.0, k))
    # lexicographic order, first coordinate slowest
    assert np.all(np.diff(X[:, 0]) >= 0)


def test_grid_never_has_fewer_than_three_levels() -> None:
    assert GridSampler().levels(4, 2) == 3  # 2 ** 2 would be enough points but not identifiable
    assert GridSampler().levels(8, 3) == 3
    with pytest.raises(ConfigError, match="at least 3"):
        GridSampler(points_per_dim=2)
    with pytest.raises(ConfigError):
        GridSampler(points_per_dim=3.5)  # type: ignore[arg-type]


def test_grid_points_per_dim_is_raised_when_too_small() -> None:
    sampler = GridSampler(points_per_dim=3)
    assert sampler.levels(20, 2) == 5
    X = propose(sampler, 20, SearchSpace.box(2))
    assert X.shape == (20, 2)
    assert set(np.round(X.ravel() * 4, 12)) <= {0.0, 1.0, 2.0, 3.0, 4.0}


def test_grid_subset_is_spread_and_distinct() -> None:
    space = SearchSpace.box(2)
    X = propose(GridSampler(points_per_dim=5), 12, space)
    levels = np.round(X * 4, 12)
    assert np.all(levels == np.round(levels))
    assert len(np.unique(X, axis=0)) == 12
    for j in range(2):
        counts = np.bincount(levels[:, j].astype(int), minlength=5)
        assert counts.min() >= 1 and counts.max() - counts.min() <= 2


@pytest.mark.parametrize(("n_dims", "n"), [(2, 6), (3, 10), (3, 20), (4, 30), (8, 90), (8, 250)])
def test_grid_designs_identify_the_quadratic(n_dims: int, n: int) -> None:
    assert n >= n_quadratic_params(n_dims)
    X = propose(GridSampler(), n, SearchSpace.box(n_dims))
    assert X.shape == (n, n_dims)
    assert len(np.unique(X, axis=0)) == n
    for j in range(n_dims):
        assert len(np.unique(X[:, j])) >= 3
    check_identifiable(X, n_dims)


@pytest.mark.parametrize("sampler", SAMPLERS[:4], ids=IDS[:4])
@pytest.mark.parametrize("n_dims", [2, 3, 8])
def test_space_filling_designs_identify_the_quadratic(sampler: Sampler, n_dims: int) -> None:
    space = SearchSpace.box(n_dims)
    check_identifiable(propose(sampler, 2 * n_quadratic_params(n_dims), space), n_dims)


# --------------------------------------------------------------------------- initial designs
def _search_history(X: np.ndarray, n_tasks: int = 2) -> History:
    return History(X.shape[1], n_tasks, [Evaluation(x, np.zeros(n_tasks)) for x in X])


@pytest.mark.parametrize("n_dims, size", [(3, 5), (4, 10), (8, 18)])
def test_lhs_initial_design_is_a_seeded_latin_hypercube(n_dims: int, size: int) -> None:
    space = SearchSpace.box(n_dims)
    X = fresh_design("lhs", size, size, space, History(n_dims, 2, []),
                     np.random.default_rng([5, 0]))
    strata = np.floor(X * size).astype(int)
    for j in range(n_dims):
        assert sorted(strata[:, j]) == list(range(size))
    again = fresh_design("lhs", size, size, space, History(n_dims, 2, []),
                         np.random.default_rng([5, 0]))
    np.testing.assert_array_equal(X, again)
    other = fresh_design("lhs", size, size, space, History(n_dims, 2, []),
                         np.random.default_rng([6, 0]))
    assert not np.allclose(X, other)


def test_lhs_initial_design_has_lower_discrepancy_than_a_plain_latin_hypercube() -> None:
    # random-cd permutes the strata to lower the centered discrepancy: on average over
    # seeds clearly below scipy's unoptimised Latin hypercube of the same size.
    space = SearchSpace.box(4)
    cd = [qmc.discrepancy(fresh_design("lhs", 10, 10, space, History(4, 2, []),
                                       np.random.default_rng(s))) for s in range(20)]
    plain = [qmc.discrepancy(qmc.LatinHypercube(d=4, seed=s).random(10)) for s in range(20)]
    assert np.mean(cd) < 0.8 * np.mean(plain)


def test_lhs_initial_design_resumes_with_the_points_not_yet_evaluated() -> None:
    space = SearchSpace.box(3, (-1.0, 2.0))
    design = fresh_design("lhs", 8, 8, space, History(3, 2, []), np.random.default_rng(1))
    assert np.all(design >= -1.0) and np.all(design <= 2.0)
    rest = fresh_design("lhs", 5, 8, space, _search_history(design[[0, 4, 6]]),
                        np.random.default_rng(1))
    np.testing.assert_array_equal(rest, design[[1, 2, 3, 5, 7]])


def test_lhs_initial_design_tops_up_with_sobol_points_when_short() -> None:
    # Evaluations the design does not hold (a failed one replaced, a point of another run)
    # leave it short: fresh Sobol' points fill the batch, none already evaluated.
    space = SearchSpace.box(2)
    design = fresh_design("lhs", 5, 5, space, History(2, 2, []), np.random.default_rng(2))
    done = np.vstack([design[:4], [[0.5, 0.5]]])
    X = fresh_design("lhs", 3, 5, space, _search_history(done), np.random.default_rng(2))
    assert X.shape == (3, 2)
    np.testing.assert_array_equal(X[0], design[4])
    assert min(np.abs(X[1:, None, :] - done[None]).max(axis=2).min(axis=1)) > 0


def test_sobol_initial_design_is_the_sequence_without_evaluated_points() -> None:
    space = SearchSpace.box(3)
    full = sobol_unit(6, 3, np.random.default_rng(3))
    X = fresh_design("sobol", 4, 6, space, _search_history(full[:2]), np.random.default_rng(3))
    np.testing.assert_array_equal(X, full[2:6])


@pytest.mark.parametrize("bad", ["latin", None, 3])
def test_bad_initial_design_is_a_one_line_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="design must be one of sobol, lhs") as info:
        check_design(bad, "front sampler")
    assert "\n" not in str(info.value)


def test_auto_with_adaptive_settings_falls_back_to_sobol_without_them():
    """sampler: {name: auto, batch: 2} at a budget too small for an adaptive round failed
    with "sampler 'sobol' does not take parameter(s) batch", a sampler the user never
    named."""
    from mapframe.samplers.choice import AutoSampler, resolve_auto_sampler

    assert resolve_auto_sampler({"name": "auto", "batch": 2, "scramble": False}, 2, 4) == {
        "name": "sobol", "scramble": False}
    assert AutoSampler(batch=2).chosen(2, 4).describe() == {"name": "sobol", "scramble": True}
    big = resolve_auto_sampler({"name": "auto", "batch": 2}, 2, 40)
    assert big["name"] in ("gp", "sobol")  # sobol without gpytorch
    assert big.get("batch") == (2 if big["name"] == "gp" else None)


@pytest.mark.parametrize("settings, match", [
    ({"bacth": 5}, "does not take parameter\\(s\\) bacth"),
    ({"batch": 0}, "batch"),
    ({"batch": "many"}, "batch"),
    ({"optimism": -1}, "optimism"),
    ({"pick": "best"}, "pick"),
])
def test_auto_checks_the_settings_it_leaves_out_when_it_falls_back_to_sobol(settings, match):
    """{name: auto, bacth: 5} ran at a budget where auto falls back to sobol (the typo was
    dropped with the adaptive settings) and failed only at budgets that pick gp/front."""
    from mapframe.errors import ConfigError
    from mapframe.samplers.choice import resolve_auto_sampler

    with pytest.raises(ConfigError, match=match) as info:
        resolve_auto_sampler({"name": "auto", **settings}, 2, 4)
    assert "\n" not in str(info.value)


def test_auto_keeps_settings_one_candidate_accepts():
    from mapframe.samplers.choice import resolve_auto_sampler

    # batch "auto" is the front sampler's (the gp sampler takes integers only)
    assert resolve_auto_sampler({"name": "auto", "batch": "auto", "optimism": 0.5}, 3, 4) == {
        "name": "sobol"}


@pytest.mark.parametrize("sampler", [
    {"name": "gp", "initial": 50}, {"name": "front", "initial": 12},
    {"name": "bins", "initial": 12},
])
def test_an_initial_design_taking_the_whole_budget_is_said(sampler):
    """{name: gp, initial: 50} with budget 12 ran the first 12 points of the design and
    never adapted, while the recorded settings still said initial 50."""
    from mapframe import MergeStudy
    from mapframe.errors import MapframeWarning

    def f(C):
        return np.column_stack([1 - ((C - 0.8) ** 2).sum(1), 1 - ((C - 0.2) ** 2).sum(1)])

    pytest.importorskip("gpytorch")
    with pytest.warns(MapframeWarning, match="takes the whole budget of 12 evaluations"):
        MergeStudy(objective=f, task_names=["a", "b"], budget=12, seed=0, sampler=sampler,
                   surrogate="quadratic").run()
