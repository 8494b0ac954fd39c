"""What a 16-task study with 10 000 evaluations spent for nothing, and that the leaner code
gives the same numbers: the dominance matrix worked out in blocks, one quadratic design
(features and SVD) shared by the surrogates of every task, the greedy hypervolume subset's
sampled front kept from pick to pick, and a scatter matrix of a thinned search cloud."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import mapframe.hypervolume as hv
import mapframe.metrics as metrics
import mapframe.surrogates.quadratic as quadratic
from mapframe.metrics import dominance_matrix
from mapframe.problem import Task
from mapframe.surrogates.quadratic import QuadraticSurrogate


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


def _fits(X, Y, **kw):
    out = []
    for j in range(Y.shape[1]):
        s = copy.deepcopy(QuadraticSurrogate(**kw)).fit(X, Y[:, j], Task(name=f"t{j}"))
        out.append(s)
    return out


def test_the_surrogates_of_one_design_share_its_svd_and_fit_as_alone(monkeypatch):
    rng = np.random.default_rng(1)
    X = rng.random((40, 3))
    Y = np.column_stack([1 - ((X - t) ** 2).sum(axis=1) for t in np.eye(3)])
    Y += 0.01 * rng.standard_normal(Y.shape)
    calls = {"n": 0}
    real = quadratic._LeastSquares

    def counted(*a, **kw):
        calls["n"] += 1
        return real(*a, **kw)

    monkeypatch.setattr(quadratic, "_LeastSquares", counted)
    shared = _fits(X, Y)
    assert calls["n"] == 1  # one SVD for the three tasks
    # the same array changed in place is another design, and so is another ridge
    X2 = X.copy()
    X[0, 0] = 0.5
    moved = QuadraticSurrogate().fit(X, Y[:, 0])
    assert calls["n"] == 2 and not np.array_equal(moved.A, shared[0].A)
    _fits(X, Y[:, :1], ridge=0.1)
    assert calls["n"] == 3
    for j, s in enumerate(shared):  # each as fitted on a design of its own
        alone = QuadraticSurrogate().fit(X2.copy(), Y[:, j], Task(name=f"t{j}"))
        assert np.array_equal(s.A, alone.A) and np.array_equal(s.b, alone.b)
        assert s.e == alone.e and s.diagnostics() == alone.diagnostics()


def _greedy_by_calls(F, k, measured):
    """greedy_hypervolume_subset's rule with one hypervolume_improvement call per pick."""
    G = np.asarray(F, float)
    both = np.vstack([G, measured])
    lo, span = both.min(axis=0), np.ptp(both, axis=0)
    Z, Zm = (G - lo) / span, (measured - lo) / span
    ref = np.full(G.shape[1], -hv._REF_MARGIN)
    P = Zm[metrics.pareto_mask(Zm)]
    chosen: list[int] = []
    while len(chosen) < k:
        gain = hv.hypervolume_improvement(Z, P, ref)
        gain[chosen] = -np.inf
        i = int(np.argmax(gain))
        if not gain[i] > 1e-12:
            break
        chosen.append(i)
        P = np.vstack([P, Z[i]])
    return chosen


def test_greedy_subset_on_a_sampled_front_picks_as_one_call_per_pick(monkeypatch):
    # a front too large for the exact table from the start, and one that becomes too large
    rng = np.random.default_rng(2)
    F = rng.dirichlet(np.ones(4), 30)
    measured = rng.dirichlet(np.ones(4), 60) * 0.9
    for cells in (10, 3000):
        monkeypatch.setattr(hv, "MAX_TABLE_CELLS", cells)
        picked = hv.greedy_hypervolume_subset(F, 6, measured=measured, ordered=True)
        assert picked.tolist() == _greedy_by_calls(F, 6, measured)
        assert len(picked) == 6


def test_dominated_share_is_the_definition():
    rng = np.random.default_rng(3)
    Y, W = rng.random((7, 4)), rng.random((50, 4))
    inside = hv._dominated_share(Y, np.ascontiguousarray(W.T))
    assert np.array_equal(inside, np.all(W[None] <= Y[:, None], axis=2))


def test_scatter_matrix_shows_a_thinned_search_cloud(monkeypatch):
    pytest.importorskip("plotly")
    import mapframe.report.figures as figures
    from mapframe.report.data import ReportData

    n, names = 50, ["a", "b", "c"]
    rng = np.random.default_rng(4)
    metrics_rows = rng.random((n, 3)).tolist()
    data = ReportData(
        study="s", directory=None, store=None, task_names=names,
        directions=["max"] * 3, coefficient_names=names, front=None, selection=None,
        evaluations={"coefficients": rng.random((n, 3)).tolist(), "metrics": metrics_rows,
                     "phase": ["search"] * n, "status": ["ok"] * n,
                     "hypervolume": [0.0] * n, "hypervolume_method": "exact"},
        diagnostics=[], tradeoffs=None, task_vectors={"zero": [], "duplicates": [],
                                                     "note": None}, export={})
    whole = figures._splom(data)
    assert len(whole.figure.data[0].dimensions[0].values) == n
    assert "search evaluations, evenly" not in whole.caption
    monkeypatch.setattr(figures, "SPLOM_SEARCH_POINTS", 10)
    thin = figures._splom(data)
    values = thin.figure.data[0].dimensions[1].values
    rows = figures.thin(list(range(n)), 10)
    assert len(values) == 10 and rows[0] == 0 and rows[-1] == n - 1
    assert list(values) == [metrics_rows[i][1] for i in rows]
    assert "Grey: 10 of the 50 search evaluations" in thin.caption


def test_dominated_by_any_and_equal_rows_match_their_quadratic_definitions() -> None:
    """Front.with_measured's two tests of a measured point, done without the n x n (x T)
    arrays that took 1.9 GB at 16 tasks and 10 010 evaluations: the same answers."""
    from mapframe.metrics import dominance_matrix, dominated_by_any
    from mapframe.results import _equal_to_earlier

    rng = np.random.default_rng(3)
    for _ in range(40):
        T = int(rng.integers(2, 5))
        A = np.round(rng.random((int(rng.integers(1, 60)), T)) * 3) / 3
        B = np.round(rng.random((int(rng.integers(1, 60)), T)) * 3) / 3
        B[rng.random(B.shape) < 0.1] = -0.0
        dirs = list(rng.choice(["max", "min"], T))
        want = dominance_matrix(A, B, dirs).any(axis=0)
        assert np.array_equal(dominated_by_any(A, B, dirs, block=7), want)
        best = np.concatenate([A, B])
        best[rng.random(best.shape) < 0.02] = np.nan
        n_old = len(A)
        same = np.all(best[:, None, :] == best[None, n_old:, :], axis=2)
        same[n_old:] &= ~np.tri(len(B), dtype=bool)
        assert np.array_equal(_equal_to_earlier(best, n_old), same.any(axis=0))
