"""The head-to-head benchmark's harness: the black box, the peers, the scoring and the report.

The peers run on a cheap synthetic two-task objective here (the benchmark itself runs them on
the digits example); what is checked is what makes the comparison fair: every evaluation goes
through the black box and is counted, no method exceeds its budget, batches stop at every
budget checkpoint, runs are reproducible per seed, and the scores mean what the docs say.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import bench_peers
from benchmarks.peers import (
    PEER_SETTINGS,
    PEERS,
    BlackBox,
    BudgetExceeded,
    botorch_search,
    grid_points,
)
from mapframe.metrics import pareto_mask
from mapframe.problem import Task

#: BoTorch's loop with a cheaper acquisition optimisation: the harness, not the optimiser's
#: quality, is under test here.
FAST_BOTORCH = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 16}


def peer(name: str):  # type: ignore[no-untyped-def]
    if "BoTorch" in name:
        pytest.importorskip("botorch")
        log = "Log" in name
        return lambda bb, cps, seed, t: botorch_search(bb, cps, seed, log=log, **FAST_BOTORCH)
    if "Optuna" in name:
        pytest.importorskip("optuna")
    return PEERS[name]


def toy(C: np.ndarray) -> np.ndarray:
    """Two conflicting 'accuracies' in [0, 1] of two coefficients (a smooth trade-off)."""
    C = np.atleast_2d(C)
    a = 1.0 - 0.5 * (C[:, 0] - 1.0) ** 2 - 0.3 * C[:, 1] ** 2
    b = 1.0 - 0.5 * (C[:, 1] - 1.0) ** 2 - 0.3 * C[:, 0] ** 2
    return np.clip(np.column_stack([a, b]), 0.0, 1.0)


class ToyProblem:
    """Stands in for DigitsProblem: the same function on both splits, plus call counts."""

    def __init__(self) -> None:
        self.tasks = ["a", "b"]
        self.val = type("Val", (), {"tasks": [Task("a", "max", 0.0, 1.0),
                                               Task("b", "max", 0.0, 1.0)]})()
        self.calls = 0

    def evaluate(self, C: np.ndarray, split: str = "test") -> np.ndarray:
        self.calls += 1
        return toy(C)


# --------------------------------------------------------------------------- black box


def test_black_box_counts_and_refuses_past_the_budget() -> None:
    bb = BlackBox(toy, 2, budget=5)
    bb.start()
    F = bb(np.array([[0.2, 0.3], [1.5, -0.2]]))
    assert F.shape == (2, 2) and bb.count == 2 and bb.calls == [2]
    # Out-of-box coefficients are clipped before evaluation, and recorded clipped.
    assert np.allclose(bb.X[1], [1.0, 0.0]) and np.allclose(F[1], toy([[1.0, 0.0]])[0])
    bb(np.zeros((3, 2)))
    assert bb.count == 5
    with pytest.raises(BudgetExceeded, match="exceed the budget 5"):
        bb(np.zeros((1, 2)))
    assert bb.count == 5  # a refused call evaluates nothing
    with pytest.raises(ValueError, match="expected 2 coefficients"):
        BlackBox(toy, 2, budget=5)(np.zeros((1, 3)))


def test_black_box_overhead_accounting() -> None:
    bb = BlackBox(toy, 2, budget=4)
    bb.start()
    for _ in range(4):
        bb(np.full((1, 2), 0.5))
    X, F = bb.arrays(3)
    assert X.shape == (3, 2) and F.shape == (3, 2)
    # Overhead is wall time minus evaluation time up to that evaluation: never negative, and
    # the evaluation time before each evaluation never decreases.
    assert all(bb.overhead_at(b) >= 0 for b in range(1, 5))
    assert np.all(np.diff(bb.eval_before) >= 0) and bb.eval_before[-1] == bb.eval_s


def test_black_box_overhead_cap_stops_a_method() -> None:
    bb = BlackBox(toy, 2, budget=10, overhead_cap=-1.0)
    bb.start()
    with pytest.raises(TimeoutError, match="passed the cap"):
        bb(np.zeros((1, 2)))
    assert bb.count == 0


# --------------------------------------------------------------------------- grid and split


@pytest.mark.parametrize(("budget", "n", "size"), [(10, 2, 9), (50, 2, 49), (10, 3, 8),
                                                   (30, 3, 27), (10, 4, 1), (50, 4, 16),
                                                   (100, 4, 81)])
def test_grid_points_is_the_largest_full_grid(budget: int, n: int, size: int) -> None:
    G = grid_points(budget, n)
    assert G.shape == (size, n) and len(np.unique(G, axis=0)) == size
    assert G.min() >= 0.0 and G.max() <= 1.0
    if size > 1:  # the corners (pretrained model and each fine-tuned one) are included
        assert any(np.allclose(g, np.eye(n)[0]) for g in G)
    else:
        assert np.allclose(G, 0.5)


@pytest.mark.parametrize("n", [2, 3, 4])
@pytest.mark.parametrize("budget", [10, 20, 30, 50, 100])
def test_map_split_charges_the_whole_budget(budget: int, n: int) -> None:
    search, k, surrogate = bench_peers.map_split(budget, n)
    assert search + k == budget and k >= 1
    n_quad = (n + 1) * (n + 2) // 2
    assert surrogate == ("auto" if search >= 2 * n_quad else "gp")
    assert search >= n + 1  # the GP surrogate's minimum


# --------------------------------------------------------------------------- peers


@pytest.mark.parametrize("name", list(PEERS))
def test_every_peer_stays_in_budget_and_stops_at_checkpoints(name: str) -> None:
    run_peer = peer(name)
    checkpoints = [5, 8]
    runs = []
    for _ in range(2):
        bb = BlackBox(toy, 2, budget=max(checkpoints))
        run_peer(bb, checkpoints, 3, 2)
        assert bb.count == 8
        # No batch straddles a checkpoint: the running total hits every checkpoint.
        assert set(checkpoints) <= set(np.cumsum(bb.calls).tolist())
        X, F = bb.arrays()
        assert np.all((X >= 0) & (X <= 1)) and np.allclose(F, toy(X))
        runs.append(X)
    assert np.allclose(runs[0], runs[1]), "the same seed must give the same run"
    assert name in PEER_SETTINGS


def test_the_botorch_wrapper_optimises() -> None:
    """The wrapped loop really uses its observations: it beats random search on the toy."""
    problem = ToyProblem()
    grid = grid_points(2601, 2)
    scorer = bench_peers.Scorer(problem, toy(grid)[pareto_mask(toy(grid))])  # type: ignore[arg-type]
    scores = {}
    for name in ("random search", "BoTorch qLogNEHVI"):
        hv = []
        for seed in (0, 1):
            bb = BlackBox(toy, 2, budget=14)
            peer(name)(bb, [14], seed, 2)
            hv.append(scorer.proposed(*bb.arrays())["hv_fraction"])
        scores[name] = np.mean(hv)
    assert scores["BoTorch qLogNEHVI"] > scores["random search"]


# --------------------------------------------------------------------------- scoring


def test_scorer_hv_fraction_and_igd() -> None:
    problem = ToyProblem()
    grid = grid_points(441, 2)
    F = toy(grid)
    truth = F[pareto_mask(F)]
    scorer = bench_peers.Scorer(problem, truth)  # type: ignore[arg-type]
    full = scorer(grid[pareto_mask(F)])
    assert full["hv_fraction"] == pytest.approx(1.0) and full["igd"] == pytest.approx(0.0)
    part = scorer(grid[pareto_mask(F)][::5])
    assert 0.0 < part["hv_fraction"] < 1.0 and part["igd"] > 0.0
    # The proposed set of evaluated points is their non-dominated subset.
    X = np.array([[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    got = scorer.proposed(X, toy(X))
    assert got["proposed"] == int(pareto_mask(toy(X)).sum())


def test_ground_truth_is_computed_once_and_cached(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_peers, "CACHE", tmp_path)
    problem = ToyProblem()
    problem.task_vectors = type("TV", (), {"fingerprint": lambda self: {"x": 1}})()  # type: ignore[attr-defined]
    first = bench_peers.ground_truth(problem, "sample", 500)  # type: ignore[arg-type]
    calls = problem.calls
    again = bench_peers.ground_truth(problem, "sample", 500)  # type: ignore[arg-type]
    assert problem.calls == calls and np.array_equal(first, again)
    assert np.all(pareto_mask(first)) and len(list(tmp_path.glob("truth-*.npz"))) == 1


def test_map_job_charges_verification_and_proposes_verified_points(
        monkeypatch: pytest.MonkeyPatch) -> None:
    problem = ToyProblem()
    grid = grid_points(2601, 2)
    F = toy(grid)
    monkeypatch.setitem(bench_peers._STATE, 2,
                        (problem, bench_peers.Scorer(problem, F[pareto_mask(F)])))  # type: ignore[arg-type]
    (row,) = bench_peers._map_job({"n": 2, "budget": 20, "seed": 0, "proposal": False,
                                   "mode": "mapframe Plain MAP"})
    search, k, _ = bench_peers.map_split(20, 2)
    assert row["evaluations"] <= 20 and row["search"] == search and row["verified"] == k
    assert row["proposed"] >= row["peer_rule"]["proposed"]
    assert 0.5 < row["hv_fraction"] <= 1.0 + 1e-9
    (prop,) = bench_peers._map_job({"n": 2, "budget": 20, "seed": 0, "proposal": True,
                                    "mode": "mapframe Plain MAP"})
    assert prop["method"].endswith("(proposal quality)") and prop["verified"] == 0


# --------------------------------------------------------------------------- report


def test_report_table_marks_budgets_not_reached(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = []
    for seed in (0, 1):
        rows += [
            {"method": "mapframe Plain MAP", "n": 2, "budget": 10, "seed": seed,
             "hv_fraction": 0.9, "igd": 0.05, "overhead_s": 0.1},
            {"method": "mapframe Plain MAP (proposal quality)", "n": 2, "budget": 10,
             "seed": seed, "hv_fraction": 0.97, "igd": 0.02, "overhead_s": 0.1},
            {"method": "BoTorch qNEHVI", "n": 2, "budget": 10, "seed": seed,
             "hv_fraction": 0.8, "igd": 0.1, "overhead_s": 5.0},
            {"method": "BoTorch qNEHVI", "n": 2, "budget": 20, "seed": seed,
             "skipped": "own overhead passed the cap"},
        ]
    data = {"seeds": [0, 1], "verify_share": 0.3, "peer_settings": PEER_SETTINGS,
            "settings": {"2": {"tasks": ["a", "b"], "truth": ["grid", 3], "budgets": [10, 20],
                               "truth_front_size": 3, "reference_point": [0, 0]}},
            "rows": rows}
    text = bench_peers.report(data)
    bench_peers.plot(data, tmp_path)
    assert "| mapframe Plain MAP | 0.900 ± 0.000 / 0.050 / 0.1 | – |" in text
    assert "| BoTorch qNEHVI | 0.800 ± 0.000 / 0.100 / 5.0 | not reached |" in text
    assert "*mapframe Plain MAP (proposal quality)*" in text
    assert "B = 10: +0.100" in text
    assert (tmp_path / "peers-n2.png").stat().st_size > 0
