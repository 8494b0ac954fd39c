"""The search-reference benchmark (benchmarks/bench_search_reference.py): its own pieces.

What is checked: random-search blocks are disjoint and sized as stated, a thinned search's
score never falls when the front may hold more points and equals the whole Pareto set's once
``k`` covers it, "random search reaches it at M" brackets the target between the ladder's M
that stays below it and the first that reaches it (``<= min`` / ``> max`` at the ends), and
the report states those numbers.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_search_reference as sr
from mapframe.metrics import hypervolume, pareto_mask


def test_blocks_are_disjoint_and_capped():
    parts = sr.blocks(30, size=100, most=5)
    assert [len(p) for p in parts] == [30, 30, 30]
    assert len(np.unique(np.concatenate(parts))) == 90
    assert len(sr.blocks(100, size=100)) == 1
    assert len(sr.blocks(10, size=1000, most=5)) == 5


def test_thinned_scores_grow_with_k_and_reach_the_whole_pareto_set():
    rng = np.random.default_rng(0)
    F_val = rng.uniform(size=(200, 3))
    F_test = F_val + rng.normal(scale=0.05, size=F_val.shape)
    ref = np.full(3, -0.2)
    whole = hypervolume(F_test[pareto_mask(F_val)], ref)
    n_front = int(pareto_mask(F_val).sum())
    ks = [1, 3, 10, n_front, n_front + 5]
    scores = sr.thinned_scores(F_val, F_test, ks, lambda F: hypervolume(F, ref) / whole)
    values = [scores[k] for k in ks]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    assert values[0] < values[-1]
    assert abs(scores[n_front] - 1.0) < 1e-12 and abs(scores[n_front + 5] - 1.0) < 1e-12


def _data() -> dict:
    curve = {"10": {"5": 0.2, "7": 0.3}, "100": {"5": 0.5, "7": 0.6},
             "1000": {"5": 0.7, "7": 0.8}}
    rows = [{"method": "mapframe Bayesian MAP (front) (proposal quality)", "budget": 10,
             "seed": s, "hv_fraction": hv, "proposed": k}
            for s, hv, k in [(0, 0.52, 5), (1, 0.58, 7)]]
    return {"ladder": [10, 100, 1000], "pool": 1000, "blocks": 5, "within": 0.01,
            "peers_computed": {"command": "python benchmarks/run.py peers", "seconds": 1.0},
            "n": {"3": {"rows": rows, "curve": curve, "surrogate_error": {
                "val_test_rms": [0.02, 0.01], "gp_rmse": {"30": [0.05, 0.04]},
                "gp_front": {"30": {"5": 0.6, "7": 0.64}}, "repeats": 3}}}}


def test_needed_is_the_smallest_m_reaching_the_target():
    data = _data()
    assert sr.at_budget(data, "3", 100, [5, 7]) == 0.55
    assert sr.needed(data, "3", 0.55, [5, 7]) == "10-100"
    assert sr.needed(data, "3", 0.56, [5, 7]) == "100-1000"
    assert sr.needed(data, "3", 0.2, [5]) == "<= 10"
    assert sr.needed(data, "3", 0.9, [5, 7]) == "> 1000"


def test_report_states_the_comparison():
    text = sr.report(_data())
    row = next(line for line in text.splitlines() if line.startswith("| Bayesian MAP"))
    # mode | B | k | mapframe | random M = B | reaches it at M | dense
    assert [c.strip() for c in row.strip("|").split("|")] == [
        "Bayesian MAP (front)", "10", "6", "0.550", "0.250", "10-100", "0.750"]
    assert "at M = 100-1000" in text  # 0.75 - 0.01 first reached at M = 1000
    assert "M = 30: 0.050, 0.040" in text and "per task over the pool: 0.020, 0.010" in text
    # the GPs' exact front from 30 evaluations: mean over k = 5, 7 of 0.6, 0.64 against the
    # dense reference's 0.75
    assert "M = 30: 0.620 (-0.130)" in text and "mean over 3 disjoint blocks" in text


def test_surrogate_error_falls_with_more_evaluations(monkeypatch):
    pytest.importorskip("gpytorch")
    rng = np.random.default_rng(1)
    C = rng.uniform(size=(400, 2))
    F_val = np.column_stack([np.sin(3 * C[:, 0]) + C[:, 1], C[:, 0] * C[:, 1]])
    F_test = F_val + 0.01
    monkeypatch.setattr(sr, "pool", lambda n: (C, F_val, F_test))
    err = sr.surrogate_error(2, sizes=[8, 100], held_out=100)
    np.testing.assert_allclose(err["val_test_rms"], [0.01, 0.01])
    few, many = np.array(err["gp_rmse"]["8"]), np.array(err["gp_rmse"]["100"])
    assert np.all(many < few) and np.all(many < 0.01)
    assert "gp_front" not in err


def test_surrogate_front_approaches_the_dense_reference(monkeypatch):
    """The GPs' exact front on the pool: from 100 evaluations of a smooth problem it is as
    good as the pool's own Pareto set thinned alike (within 0.01), from 6 it is worse; each
    block's score is a thinned front of pool points, so never above the whole pool's."""
    pytest.importorskip("gpytorch")
    rng = np.random.default_rng(2)
    C = rng.uniform(size=(600, 2))
    F_val = np.column_stack([np.sin(5 * C[:, 0]) * np.cos(3 * C[:, 1]) + C[:, 0],
                             np.cos(4 * C[:, 0] * C[:, 1]) + C[:, 1] ** 2])
    F_test = F_val.copy()
    monkeypatch.setattr(sr, "pool", lambda n: (C, F_val, F_test))
    ref = np.full(2, -2.0)
    whole = hypervolume(F_test[pareto_mask(F_val)], ref)

    def frac(F):
        return float(hypervolume(F, ref) / whole)

    dense = sr.thinned_scores(F_val, F_test, [5, 20], frac)
    err = sr.surrogate_error(2, sizes=[6, 100], held_out=100, ks=[5, 20], repeats=2,
                             hv_fraction=frac)
    assert err["repeats"] == 2 and set(err["gp_front"]) == {"6", "100"}
    for k in (5, 20):
        many = err["gp_front"]["100"][str(k)]
        assert dense[k] - 0.01 <= many <= 1 + 1e-12
        assert err["gp_front"]["6"][str(k)] < many - 0.01
    assert sr.surrogate_front(err, 100, [5, 20]) == pytest.approx(
        np.mean([err["gp_front"]["100"]["5"], err["gp_front"]["100"]["20"]]))


def test_missing_peers_results_name_the_command(monkeypatch, tmp_path):
    from benchmarks import bench_peers

    monkeypatch.delenv("MAPFRAME_BENCH_RESULTS", raising=False)
    monkeypatch.setattr(bench_peers, "RESULTS_JSON", tmp_path / "peers.json")
    with pytest.raises(SystemExit, match=r"run `python benchmarks/run.py peers` first"):
        sr.run()


def test_peers_results_come_from_the_folder_run_py_names(monkeypatch, tmp_path):
    """`run.py --results DIR` makes the benchmarks that build on the peers run read DIR's
    peers.json, not the committed one; a missing one names the same flag."""
    import json

    from benchmarks import bench_peers

    monkeypatch.setattr(bench_peers, "RESULTS_JSON", tmp_path / "committed.json")
    folder = tmp_path / "mine"
    folder.mkdir()
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(folder))
    with pytest.raises(SystemExit, match=rf"run `python benchmarks/run.py peers --results "
                                         rf"{folder}` first"):
        bench_peers.recorded_results("test")
    (folder / "peers.json").write_text(json.dumps({"rows": [], "mark": "mine"}))
    (tmp_path / "committed.json").write_text(json.dumps({"rows": [], "mark": "committed"}))
    assert bench_peers.recorded_results("test")["mark"] == "mine"
    monkeypatch.delenv("MAPFRAME_BENCH_RESULTS")
    assert bench_peers.recorded_results("test")["mark"] == "committed"


def test_surrogate_error_takes_a_joint_fit(monkeypatch):
    """``fit_tasks`` (one model of all tasks) gives exactly what the per-task ``fit`` gives
    when it wraps the same per-task fits."""
    rng = np.random.default_rng(3)
    C = rng.uniform(size=(300, 2))
    F_val = np.column_stack([np.sin(3 * C[:, 0]) + C[:, 1], C[:, 0] * C[:, 1] - C[:, 1] ** 2])
    monkeypatch.setattr(sr, "pool", lambda n: (C, F_val, F_val.copy()))

    def fit(X, y):
        coef, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(len(X))]), y, rcond=None)
        return lambda Z: np.column_stack([Z, np.ones(len(Z))]) @ coef

    def fit_tasks(X, Y):
        means = [fit(X, Y[:, j]) for j in range(Y.shape[1])]
        return lambda Z: np.column_stack([m(Z) for m in means])

    def frac(F):
        return float(F.max(axis=0).sum())

    kw = dict(sizes=[10, 40], held_out=100, ks=[5], repeats=2, hv_fraction=frac)
    one = sr.surrogate_error(2, fit=fit, **kw)
    joint = sr.surrogate_error(2, fit_tasks=fit_tasks, **kw)
    assert one["gp_rmse"] == joint["gp_rmse"] and one["gp_front"] == joint["gp_front"]
    assert one["gp_rmse"]["10"] != one["gp_rmse"]["40"]
