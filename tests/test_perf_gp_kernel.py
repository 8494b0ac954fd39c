"""The GP kernel's faster path (in-place Matérn, cache-sized blocks) gives exactly the values
of its definition, so every GP prediction, and with it every proposal and front, is unchanged.

The definition below is the kernel as it was written before the change: all differences at
once, then ``outputscale · (1 + s + s²/3) · exp(−s)`` as one expression. The comparison is
bit for bit (``np.array_equal``), not to a tolerance: a round-off difference in a posterior
mean could move the Pareto polish or a greedy pick and change a study's points.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mapframe.surrogates import gp as gp_module
from mapframe.surrogates.gp import FittedGP, _kernel


def _definition(A: np.ndarray, B: np.ndarray, lengthscale: np.ndarray, outputscale: float,
                nu: float) -> np.ndarray:
    A = A / lengthscale
    B = B / lengthscale
    diff = A[:, None, :] - B[None, :, :]
    r = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))
    if nu == 0.5:
        m = np.exp(-r)
    elif nu == 1.5:
        s = math.sqrt(3.0) * r
        m = (1.0 + s) * np.exp(-s)
    else:
        s = math.sqrt(5.0) * r
        m = (1.0 + s + s * s / 3.0) * np.exp(-s)
    return outputscale * m


@pytest.mark.parametrize("nu", [0.5, 1.5, 2.5])
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 1, 3), (1, 9, 4), (30, 200, 4),
                                   (45, 1300, 8), (90, 5400, 8), (12, 3000, 12)])
def test_kernel_equals_its_definition_bit_for_bit(nu, shape):
    k, m, d = shape
    rng = np.random.default_rng(k * 1000 + m + d)
    A = rng.random((k, d))
    B = rng.random((m, d)) * 1.3 - 0.1
    B[: min(k, m)] = A[: min(k, m)]  # equal points: distance exactly zero
    lengthscale = rng.random(d) * 2.0 + 0.025
    got = _kernel(A, B, lengthscale, 1.7, nu)
    assert got.shape == (k, m)
    assert np.array_equal(got, _definition(A, B, lengthscale, 1.7, nu))


@pytest.mark.parametrize("chunk", [1, 64, 1 << 12, 1 << 30])
def test_kernel_blocks_do_not_change_values(monkeypatch, chunk):
    """One row of A per block, a few, or all at once: the same numbers."""
    rng = np.random.default_rng(3)
    A, B = rng.random((23, 5)), rng.random((700, 5))
    lengthscale = np.array([0.2, 0.5, 1.0, 3.0, 0.05])
    want = _definition(A, B, lengthscale, 0.8, 2.5)
    monkeypatch.setattr(gp_module, "_CHUNK_ELEMS", chunk)
    assert np.array_equal(_kernel(A, B, lengthscale, 0.8, 2.5), want)


def test_posterior_mean_unchanged_by_the_block_size(monkeypatch):
    """What the solvers call: a fitted GP's mean and variance at many points."""
    rng = np.random.default_rng(4)
    X = rng.random((40, 6))
    y = np.sin(3 * X).sum(axis=1)
    gp = FittedGP(X, y, lower=np.zeros(6), width=np.ones(6), y_mean=float(y.mean()),
                  y_scale=float(y.std()), constant=0.1, outputscale=1.3,
                  lengthscale=rng.random(6) + 0.1, noise=1e-4, nu=2.5)
    C = rng.random((6000, 6))
    monkeypatch.setattr(gp_module, "_CHUNK_ELEMS", 1 << 40)  # one block: the old layout
    whole = gp.mean_var(C)
    monkeypatch.setattr(gp_module, "_CHUNK_ELEMS", 1 << 15)
    blocks = gp.mean_var(C)
    assert np.array_equal(whole[0], blocks[0]) and np.array_equal(whole[1], blocks[1])


def test_matern_works_in_place():
    r = np.linspace(0.0, 4.0, 11)
    out = gp_module._matern(r, 2.5)
    assert out is r  # no temporaries of the kernel's size
