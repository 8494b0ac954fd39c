"""What a 16-task study with 10 000 evaluations spent for nothing, and that the leaner code
gives the same numbers: the dominance matrix worked out in blocks, one quadratic design
(features and SVD) shared by the surrogates of every task, the greedy hypervolume subset's
sampled front kept from pick to pick, and a scatter matrix of a thinned search cloud."""

from __future__ import annotations

import numpy as np

import mapframe.metrics as metrics
from mapframe.metrics import dominance_matrix


def test_dominance_matrix_in_blocks_is_the_definition(monkeypatch):
    rng = np.random.default_rng(0)
    A = rng.integers(0, 3, size=(37, 3)).astype(float)  # many ties and equal rows
    B = np.vstack([A[:5], rng.integers(0, 3, size=(23, 3)).astype(float)])
    monkeypatch.setattr(metrics, "_DOMINANCE_CELLS", 50)  # two rows a block, 19 blocks
    D = dominance_matrix(A, B, ["max", "min", "max"])
    s = np.array([1.0, -1.0, 1.0])
    ge = np.all(A[:, None] * s >= B[None] * s, axis=2)
    gt = np.any(A[:, None] * s > B[None] * s, axis=2)
    assert np.array_equal(D, ge & gt)
    assert D.any() and not D.all() and not D[np.arange(5), np.arange(5)].any()
    assert dominance_matrix(np.empty((0, 3)), B).shape == (0, 28)
