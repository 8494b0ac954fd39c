"""The hypervolume table interpolates in cache-sized blocks of rows; the values are exactly
those of its definition over all rows at once (the ``gp`` sampler's q-EHVI and every greedy
hypervolume pick read them, so a round-off difference could change a pick).

The definition below is ``FrontTable.__call__`` as it was before the change: the 2^T corner
weights of every row built by concatenation, the corner values gathered, summed per row.
Compared bit for bit (``np.array_equal``).
"""

from __future__ import annotations

import numpy as np
import pytest

from mapframe import hypervolume as hv
from mapframe.hypervolume import FrontTable
from mapframe.metrics import pareto_mask


def _definition(table: FrontTable, Z: np.ndarray) -> np.ndarray:
    shape = Z.shape[:-1]
    Z = Z.reshape(-1, Z.shape[-1])
    base = np.zeros(Z.shape[0], dtype=np.int64)
    weights = np.ones((Z.shape[0], 1))
    offsets = np.zeros(1, dtype=np.int64)
    for t, nodes in enumerate(table.nodes):
        z = np.clip(Z[:, t], nodes[0], nodes[-1])
        j = np.clip(np.searchsorted(nodes, z, side="right") - 1, 0, len(nodes) - 2)
        frac = ((z - nodes[j]) / (nodes[j + 1] - nodes[j]))[:, None]
        base += j * table._strides[t]
        weights = np.concatenate([weights * (1.0 - frac), weights * frac], axis=1)
        offsets = np.concatenate([offsets, offsets + table._strides[t]])
    values = table._flat[base[:, None] + offsets[None, :]]
    return np.einsum("ij,ij->i", weights, values).reshape(shape)


def _table(T: int, n: int, seed: int) -> tuple[FrontTable, np.random.Generator]:
    rng = np.random.default_rng(seed)
    pts = rng.random((n, T))
    pts /= np.linalg.norm(pts, axis=1, keepdims=True)
    front = pts[pareto_mask(pts)]
    ref = np.full(T, -0.1)
    return FrontTable(front, ref, np.full(T, 1.3)), rng


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("shape", [(1,), (7,), (3, 11), (64, 300)])
def test_table_equals_its_definition_bit_for_bit(T, shape):
    table, rng = _table(T, 25, T)
    Z = rng.random((*shape, T)) * 1.6 - 0.2  # below the reference, inside, above upper
    Z.reshape(-1, T)[::5, 0] = table.nodes[0][1]  # on a node
    got = table(Z)
    assert got.shape == shape
    assert np.array_equal(got, _definition(table, Z))


@pytest.mark.parametrize("corners", [1, 16, 1000, 1 << 40])
def test_table_blocks_do_not_change_values(monkeypatch, corners):
    """A row per block, a few rows, or all rows at once: the same numbers."""
    table, rng = _table(4, 30, 7)
    Z = rng.random((5000, 4)) * 1.2
    want = _definition(table, Z)
    monkeypatch.setattr(hv, "_TABLE_CORNERS", corners)
    assert np.array_equal(table(Z), want)


def test_hypervolume_improvement_unchanged_by_the_block_size(monkeypatch):
    """The public entry the samplers and the verification pick use, at 3 objectives."""
    rng = np.random.default_rng(8)
    front = rng.random((12, 3))
    Y = rng.random((3000, 3)) * 1.1
    ref = np.full(3, -0.1)
    monkeypatch.setattr(hv, "_TABLE_CORNERS", 1 << 40)
    whole = hv.hypervolume_improvement(Y, front, ref)
    monkeypatch.setattr(hv, "_TABLE_CORNERS", 64)
    assert np.array_equal(hv.hypervolume_improvement(Y, front, ref), whole)
