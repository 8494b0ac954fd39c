"""The hypervolume helpers at many objectives and on bad input: the exact table's size check
must not overflow (it chose the exact table for a 12-objective front and numpy refused the
array), and malformed inputs get a one-line ConfigError instead of a number or a raw numpy
error."""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import metrics
from mapframe.errors import ConfigError
from mapframe.hypervolume import (
    MAX_TABLE_CELLS,
    FrontTable,
    greedy_hypervolume_subset,
    hypervolume_improvement,
    sampled_hypervolume_subset,
)


def _front(n: int, T: int, seed: int = 0) -> np.ndarray:
    """``n`` mutually non-dominated points in ``T`` objectives (on a simplex)."""
    X = np.random.default_rng(seed).random((n, T))
    return X / X.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("n, T", [(80, 10), (40, 12)])
def test_the_table_size_of_a_many_objective_front_does_not_wrap_around(n, T):
    front = _front(n, T)
    ref = np.full(T, -0.1)
    cells = FrontTable.cells(front, ref)
    assert cells == (n + 2) ** T  # every coordinate distinct: n + 2 nodes per axis
    assert cells > MAX_TABLE_CELLS


def test_improvement_over_a_twelve_objective_front_takes_the_monte_carlo_path():
    front = _front(40, 12)
    Y = _front(5, 12, seed=1) * 1.5  # beyond the front in every objective's sum
    gain = hypervolume_improvement(Y, front, np.full(12, -0.1))
    assert gain.shape == (5,) and np.all(np.isfinite(gain)) and np.all(gain >= 0)
    assert np.any(gain > 0)


def test_greedy_subset_at_twelve_objectives_picks_k_rows():
    # what the study's verification runs on a 12-task front: it raised "array is too big"
    F = _front(40, 12)
    picked = greedy_hypervolume_subset(F, 2, measured=_front(40, 12, seed=2))
    assert len(picked) == 2 and len(set(picked.tolist())) == 2


def test_improvement_refuses_a_front_with_other_objectives():
    with pytest.raises(ConfigError, match="front has 3 objectives"):
        hypervolume_improvement(np.array([[0.9, 0.9]]), np.ones((2, 3)) * 0.5, np.zeros(2))


def test_improvement_refuses_nan():
    with pytest.raises(ConfigError, match="NaN"):
        hypervolume_improvement(np.array([[np.nan, 0.9]]), np.array([[0.5, 0.5]]), np.zeros(2))


def test_improvement_still_takes_one_front_point_as_a_vector():
    gain = hypervolume_improvement(np.array([[0.9, 0.9]]), np.array([0.5, 0.5]), np.zeros(2))
    assert gain[0] == pytest.approx(0.81 - 0.25)


def test_hypervolume_of_a_ragged_list_is_a_one_line_error():
    with pytest.raises(ConfigError, match="numeric array"):
        metrics.hypervolume([[1.0, 2.0], [3.0]], [0, 0])


@pytest.mark.parametrize("k", [2.5, "3", True])
def test_sampled_subset_refuses_a_k_that_is_not_an_integer(k):
    F = np.random.default_rng(0).random((6, 2))
    with pytest.raises(ConfigError, match="k must be"):
        sampled_hypervolume_subset(F, k)


def test_spread_subset_refuses_a_boolean_k():
    with pytest.raises(ConfigError, match="k must be"):
        metrics.spread_subset(np.random.default_rng(0).random((6, 2)), True)
