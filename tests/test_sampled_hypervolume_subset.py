"""``sampled_hypervolume_subset``: greedy hypervolume gain counted on fixed sample points.

Checked against the exact greedy (``greedy_hypervolume_subset``), with exact hypervolumes
(``mapframe.metrics.hypervolume``) at the reference point both use: the subsets it picks
cover at least 99 % of the volume the exact greedy's do and more than random subsets; the
result is deterministic, honours directions, returns exactly ``min(k, len(F))`` distinct
rows, and spreads the rest once nothing adds volume.
"""

from __future__ import annotations

import numpy as np
import pytest

from mapframe.hypervolume import greedy_hypervolume_subset, sampled_hypervolume_subset
from mapframe.metrics import hypervolume


def _sphere(n: int, T: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    Z = np.abs(rng.normal(size=(n, T)))
    return Z / np.linalg.norm(Z, axis=1, keepdims=True)  # mutually non-dominated rows


def _volume(F: np.ndarray, rows: np.ndarray) -> float:
    """Exact hypervolume of ``F[rows]`` at the greedy rules' reference point (a tenth of
    each task's range below its worst value)."""
    ref = F.min(axis=0) - 0.1 * np.ptp(F, axis=0)
    return hypervolume(F[rows], ref, ["max"] * F.shape[1])


@pytest.mark.parametrize("T", [2, 3, 4])
def test_close_to_the_exact_greedy_and_far_above_random(T: int) -> None:
    F = _sphere(400, T)
    k = 25
    sampled = sampled_hypervolume_subset(F, k)
    exact = greedy_hypervolume_subset(F, k)
    rng = np.random.default_rng(1)
    random = [_volume(F, rng.choice(len(F), k, replace=False)) for _ in range(20)]
    assert len(set(sampled.tolist())) == k
    assert _volume(F, sampled) >= 0.99 * _volume(F, exact)
    assert _volume(F, sampled) > max(random)


def test_deterministic_sorted_and_directions_are_honoured() -> None:
    F = _sphere(300, 3, seed=2)
    a = sampled_hypervolume_subset(F, 15)
    np.testing.assert_array_equal(a, sampled_hypervolume_subset(F, 15))
    assert np.all(np.diff(a) > 0)
    # the same problem with the second task negated and minimised picks the same rows
    G = F * np.array([1.0, -1.0, 1.0])
    np.testing.assert_array_equal(a, sampled_hypervolume_subset(G, 15, ["max", "min", "max"]))


def test_k_larger_than_the_rows_and_dominated_rows_fill_by_spread() -> None:
    F = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [0.2, 0.2], [0.1, 0.1]])
    out = sampled_hypervolume_subset(F, 10)
    np.testing.assert_array_equal(out, np.arange(5))
    # three rows add volume; the fourth pick is a dominated row, chosen by spread
    four = sampled_hypervolume_subset(F, 4)
    assert {0, 1, 2} <= set(four.tolist()) and len(four) == 4
    assert sampled_hypervolume_subset(F, 0).size == 0


def test_many_objectives_stay_fast_enough_to_run() -> None:
    F = _sphere(2000, 8, seed=3)
    out = sampled_hypervolume_subset(F, 100)
    assert len(set(out.tolist())) == 100
    rng = np.random.default_rng(4)
    assert _volume(F, out) > max(_volume(F, rng.choice(2000, 100, replace=False))
                                 for _ in range(5))
