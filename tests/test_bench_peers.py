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


#: Peer name -> botorch_search's acquisition.
ACQUISITION = {"BoTorch qNEHVI": "qNEHVI", "BoTorch qLogNEHVI": "qLogNEHVI",
               "BoTorch qNParEGO": "qLogNParEGO"}


def peer(name: str):  # type: ignore[no-untyped-def]
    if "BoTorch" in name:
        pytest.importorskip("botorch")
        acq = ACQUISITION[name]
        return lambda bb, cps, seed, t: botorch_search(bb, cps, seed, acq, **FAST_BOTORCH)
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
    assert surrogate == "auto"  # the library's default, resolved by the study
    assert search >= n + 1  # the GP surrogate's minimum
    n_quad = (n + 1) * (n + 2) // 2  # the rule until 2026-12-06, which the pilots keep
    assert bench_peers.peers_rule_before(search, n) == ("auto" if search >= 2 * n_quad
                                                        else "gp")


def test_peers_at_table_and_budgets() -> None:
    assert set(bench_peers.PEERS_AT) == set(bench_peers.BUDGETS) == set(bench_peers.TRUTH)
    for n, names in bench_peers.PEERS_AT.items():
        assert names and all(m in PEERS and m in PEER_SETTINGS for m in names)
        assert "BoTorch qNParEGO" in names  # at every N
        slow = {"BoTorch qNEHVI", "BoTorch qLogNEHVI"}
        assert (slow <= set(names)) if n <= 4 else not (slow & set(names))
        assert len(bench_peers.TASKS[:n]) == n
    assert len(set(bench_peers.TASKS)) == len(bench_peers.TASKS) >= max(bench_peers.BUDGETS)
    # The first four tasks are those of the original N <= 4 runs, in the same order.
    assert bench_peers.TASKS[:4] == ["rot90", "flip", "roll", "invert"]
    for n in (6, 8):  # budgets up to twice the quadratic surrogate's parameter count
        assert max(bench_peers.BUDGETS[n]) == (n + 1) * (n + 2)
        assert bench_peers.TRUTH[n][0] == "sample"


def test_plan_quick_and_the_n_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(bench_peers.N_ENV, raising=False)
    budgets, seeds = bench_peers.plan(quick=True)
    assert list(budgets) == [2, 3, 4] and seeds == bench_peers.SEEDS[:1]
    assert all(budgets[n] == bench_peers.BUDGETS[n][:2] for n in budgets)
    assert list(bench_peers.plan()[0]) == list(bench_peers.BUDGETS)
    monkeypatch.setenv(bench_peers.N_ENV, "8, 6")
    budgets, seeds = bench_peers.plan()
    assert budgets == {6: bench_peers.BUDGETS[6], 8: bench_peers.BUDGETS[8]}
    assert seeds == bench_peers.SEEDS
    todo = bench_peers.jobs()
    assert {j["n"] for j in todo} == {6, 8}
    peers_run = {(j["n"], j["method"]) for j in todo if j["kind"] == "peer"}
    assert peers_run == {(n, m) for n in (6, 8) for m in bench_peers.PEERS_AT[n]}
    maps = [j for j in todo if j["kind"] == "map"]
    assert {j["mode"] for j in maps} == set(bench_peers.MODES_MANY)  # charged rows only
    assert not any(j["proposal"] for j in maps)
    monkeypatch.setenv(bench_peers.N_ENV, "3")
    maps = [j for j in bench_peers.jobs() if j["kind"] == "map"]
    assert {j["mode"] for j in maps} == set(bench_peers.MAP_MODES)
    assert {j["proposal"] for j in maps} == {False, True}
    monkeypatch.setenv(bench_peers.N_ENV, "4,6")
    botorch = [j for j in bench_peers.jobs() if j.get("mode") == bench_peers.BOTORCH_MODE]
    assert {j["n"] for j in botorch} == {4}  # a mode of MODE_BUDGETS: only at its N
    assert sorted({j["budget"] for j in botorch}) == [10, 20, 30, 50]  # and up to its budget
    assert bench_peers.modes_at(4, 100) == [m for m in bench_peers.MAP_MODES
                                            if m != bench_peers.BOTORCH_MODE]
    monkeypatch.setenv(bench_peers.N_ENV, "5")
    with pytest.raises(ValueError, match="MAPFRAME_BENCH_PEERS_N"):
        bench_peers.plan()


def test_the_modes_variable_reruns_some_modes_and_keeps_the_other_rows(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from benchmarks import run as bench_run

    front = "mapframe Bayesian MAP (front)"
    monkeypatch.setenv(bench_peers.N_ENV, "3")
    monkeypatch.setenv(bench_peers.MODES_ENV, front)
    todo = bench_peers.jobs()
    assert todo and {(j["kind"], j["mode"], j["n"]) for j in todo} == {("map", front, 3)}
    monkeypatch.setenv(bench_peers.MODES_ENV, "Plain MAP")
    with pytest.raises(ValueError, match="MAPFRAME_BENCH_PEERS_MODES='Plain MAP'"):
        bench_peers.jobs()
    recorded = {"seeds": [0], "rows": [
        {"method": front, "n": 3, "budget": 10, "seed": 0, "hv_fraction": 0.1},
        {"method": front + " (proposal quality)", "n": 3, "budget": 10, "seed": 0},
        {"method": front, "n": 4, "budget": 10, "seed": 0},
        {"method": "mapframe Plain MAP", "n": 3, "budget": 10, "seed": 0},
        {"method": "random search", "n": 3, "budget": 10, "seed": 0}],
        "_meta": {"machine": "old", "seconds": 5.0, "command": "c"}}
    (tmp_path / "peers.json").write_text(json.dumps(recorded))
    monkeypatch.setenv("MAPFRAME_BENCH_RESULTS", str(tmp_path))
    new = [{"method": front, "n": 3, "budget": 10, "seed": 0, "hv_fraction": 0.2}]
    data = bench_peers.merged_with_recorded(new, [3], [front])
    kept = [(r["method"], r["n"]) for r in data["rows"]]
    assert kept == [(front, 4), ("mapframe Plain MAP", 3), ("random search", 3), (front, 3)]
    assert data["rows"][-1]["hv_fraction"] == 0.2
    meta = bench_run.merged_meta({"machine": "new", "seconds": 2.0, "command": "c"},
                                 data.pop("_rerun"), data.pop("_earlier_meta"))
    assert [p["machine"] for p in meta["parts"]] == ["new", "old"]
    assert meta["parts"][0]["modes"] == [front] and meta["parts"][0]["n"] == [3]
    assert meta["seconds"] == 2.0 and "rerun of " + front + " at N = 3" in meta["machine"]
    assert "7 s in all" in meta["machine"]
    assert meta["command"] == ('MAPFRAME_BENCH_PEERS_N=3 MAPFRAME_BENCH_PEERS_MODES='
                               '"mapframe Bayesian MAP (front)" c')


# --------------------------------------------------------------------------- peers


#: qNParEGO optimises one qLogNEI per batch point: over 20 s here, and qLogNEHVI about 50 s,
#: so both are marked slow (the cheaper test_qnparego_runs_a_tiny_budget and the qNEHVI case,
#: BoTorch's same loop, cover them in the fast suite).
_SLOW_PEERS = {"BoTorch qNParEGO", "BoTorch qLogNEHVI"}


@pytest.mark.parametrize("name", [pytest.param(m, marks=pytest.mark.slow)
                                  if m in _SLOW_PEERS else m for m in PEERS])
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


@pytest.mark.slow  # BoTorch's loop, 4 runs: about a minute
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


def test_qnparego_runs_a_tiny_budget() -> None:
    """One BoTorch qNParEGO round at N = 2: Sobol' start, then a batch of two, at the
    checkpoints."""
    run_peer = peer("BoTorch qNParEGO")
    bb = BlackBox(toy, 2, budget=7)
    run_peer(bb, [5, 7], 0, 2)
    assert bb.calls == [5, 2]
    X, F = bb.arrays()
    assert np.all((X >= 0) & (X <= 1)) and np.allclose(F, toy(X))


@pytest.mark.slow
def test_qnparego_with_tutorial_settings_respects_checkpoints() -> None:
    """The benchmark's own qNParEGO peer (full acquisition settings), a tiny budget at N = 2."""
    pytest.importorskip("botorch")
    bb = BlackBox(toy, 2, budget=11)
    PEERS["BoTorch qNParEGO"](bb, [7, 11], 0, 2)
    assert bb.count == 11 and bb.calls[0] == 6  # 2(N+1) Sobol' start points
    assert {7, 11} <= set(np.cumsum(bb.calls).tolist()) and max(bb.calls[1:]) <= 2


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


def test_mc_dominated_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    F, U = rng.uniform(0, 1, (40, 3)), rng.uniform(0, 1, (3000, 3))
    want = (U[:, None, :] <= F[None]).all(axis=2).any(axis=1)
    for block in (1 << 22, 500, 1):  # any block size gives the same mask
        assert np.array_equal(bench_peers.mc_dominated(F, U, block=block), want)
    assert not bench_peers.mc_dominated(np.empty((0, 3)), U).any()


def test_monte_carlo_hypervolume_matches_the_exact_one() -> None:
    from mapframe.metrics import hypervolume

    rng = np.random.default_rng(1)
    P = np.abs(rng.normal(size=(4000, 3)))
    P = P / np.linalg.norm(P, axis=1, keepdims=True)  # a concave 3-objective front
    truth = P[pareto_mask(P)][:300]
    problem = ToyProblem()
    exact = bench_peers.Scorer(problem, truth)  # type: ignore[arg-type]
    mc = bench_peers.Scorer(problem, truth, mc_points=200_000)  # type: ignore[arg-type]
    assert mc.describe()["hv"] == "monte-carlo" and exact.describe()["hv"] == "exact"
    assert mc.hv_truth == pytest.approx(exact.hv_truth, rel=0.01)
    for part in (truth[::3], truth[:20], truth[[0]]):
        want = hypervolume(part, exact.ref) / exact.hv_truth
        assert mc.hypervolume(part) / mc.hv_truth == pytest.approx(want, rel=0.02, abs=0.005)
    # Common random numbers: the same set gets the same estimate every time.
    assert mc.hypervolume(truth[::3]) == mc.hypervolume(truth[::3])


def _toy_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ToyProblem:
    monkeypatch.setattr(bench_peers, "CACHE", tmp_path)
    monkeypatch.delenv(bench_peers.NO_CACHE_ENV, raising=False)
    problem = ToyProblem()
    problem.task_vectors = type("TV", (), {"fingerprint": lambda self: {"x": 1}})()  # type: ignore[attr-defined]
    grid = grid_points(441, 2)
    F = toy(grid)
    monkeypatch.setitem(bench_peers._STATE, 2,
                        (problem, bench_peers.Scorer(problem, F[pareto_mask(F)])))  # type: ignore[arg-type]
    return problem


def test_peer_rows_are_cached_per_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    problem = _toy_setting(monkeypatch, tmp_path)
    job = {"kind": "grid", "n": 2, "budget": 9, "seeds": [0, 1]}
    assert bench_peers.cached_rows(job) is None
    first = bench_peers._run_job(job)
    calls = problem.calls
    assert calls > 0 and all(r["cached"] is False and r["computed"] for r in first)
    assert len(list((tmp_path / "peer-rows").glob("grid-n2-*.json"))) == 1
    assert "cached" not in capsys.readouterr().out
    # A rerun reads the rows instead of running the job.
    again = bench_peers._run_job(job)
    assert problem.calls == calls and "cached" in capsys.readouterr().out
    assert all(r["cached"] is True for r in again)
    assert [{**r, "cached": False} for r in again] == first  # same rows, same date
    # MAPFRAME_BENCH_NO_CACHE=1 disables reading (the job runs again and is stored again).
    monkeypatch.setenv(bench_peers.NO_CACHE_ENV, "1")
    assert bench_peers.cached_rows(job) is None
    assert all(r["cached"] is False for r in bench_peers._run_job(job))
    assert problem.calls > calls
    monkeypatch.delenv(bench_peers.NO_CACHE_ENV)
    # Another job, another peers.py or another overhead cap: a miss.
    assert bench_peers.cached_rows({**job, "budget": 16}) is None
    path = bench_peers.rows_cache_path(job)
    monkeypatch.setattr(bench_peers, "_peers_source", lambda: "changed")
    assert bench_peers.rows_cache_path(job) != path and bench_peers.cached_rows(job) is None
    monkeypatch.undo()
    _toy_setting(monkeypatch, tmp_path)
    assert bench_peers.cached_rows(job) is not None
    monkeypatch.setattr(bench_peers, "PEER_OVERHEAD_CAP", 1.0)
    assert bench_peers.cached_rows(job) is None
    monkeypatch.undo()
    _toy_setting(monkeypatch, tmp_path)
    assert bench_peers.cached_rows(job) is not None
    # Another installed version of a peer library (an Optuna upgrade, say): a miss.
    versions = bench_peers.peer_library_versions()
    assert versions["numpy"] == np.__version__
    monkeypatch.setattr(bench_peers, "peer_library_versions",
                        lambda: {**versions, "optuna": "0.0.1"})
    assert bench_peers.cached_rows(job) is None
    # mapframe's own jobs are never cached.
    assert bench_peers.cached_rows({"kind": "map", "n": 2, "budget": 9, "seed": 0,
                                    "mode": "mapframe Plain MAP", "proposal": False}) is None


def test_peer_job_rows_are_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _toy_setting(monkeypatch, tmp_path)
    job = {"kind": "peer", "n": 2, "seed": 0, "method": "random search", "checkpoints": [4, 6]}
    rows = bench_peers._run_job(job)
    assert [r["budget"] for r in rows] == [4, 6] and not any(r["cached"] for r in rows)
    monkeypatch.setitem(PEERS, "random search", lambda *a: pytest.fail("ran again"))
    again = bench_peers._run_job(job)
    assert all(r["cached"] for r in again)
    assert [r["hv_fraction"] for r in again] == [r["hv_fraction"] for r in rows]


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


def test_report_handles_any_subset_of_n_and_any_modes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = []
    for seed in (0, 1):
        for b, hv in ((14, 0.3), (28, 0.4)):
            rows += [
                {"method": "mapframe Plain MAP", "n": 6, "budget": b, "seed": seed,
                 "hv_fraction": hv, "igd": 0.2, "overhead_s": 0.5, "cached": False},
                # A mode the module does not know (another engineer may add one).
                {"method": "mapframe New mode", "n": 6, "budget": b, "seed": seed,
                 "hv_fraction": hv + 0.05, "igd": 0.2, "overhead_s": 0.5, "cached": False},
                {"method": "mapframe New mode (proposal quality)", "n": 6, "budget": b,
                 "seed": seed, "hv_fraction": 0.5, "igd": 0.1, "overhead_s": 0.5},
                {"method": "BoTorch qNParEGO", "n": 6, "budget": b, "seed": seed,
                 "hv_fraction": hv + 0.1, "igd": 0.1, "overhead_s": 30.0, "cached": True,
                 "computed": "2026-01-02T03:04:05"},
                {"method": "random search", "n": 6, "budget": b, "seed": seed,
                 "hv_fraction": hv - 0.1, "igd": 0.3, "overhead_s": 0.0, "cached": False,
                 "computed": "2026-01-03T03:04:05"},
            ]
    data = {"seeds": [0, 1], "verify_share": 0.3, "peer_settings": PEER_SETTINGS,
            "settings": {"6": {"tasks": bench_peers.TASKS[:6], "truth": ["sample", 20000],
                               "budgets": [14, 28], "truth_front_size": 8799,
                               "reference_point": [0] * 6, "peers": ["random search",
                                                                     "BoTorch qNParEGO"],
                               "scoring": {"hv": "monte-carlo", "points": 1000,
                                           "seed": 7}}},
            "rows": rows}
    text = bench_peers.report(data)
    assert "### N = 6" in text and "### N = 2" not in text
    assert "uniform random sample of 20000 points" in text and "Monte-Carlo" in text
    assert "| mapframe New mode | 0.350 ± 0.000" in text
    assert "*mapframe New mode (proposal quality)*" in text
    assert "BoTorch qNEHVI |" not in text  # peers that did not run at this N get no row
    assert "Best mapframe mode minus best peer at N = 6" in text
    assert "B = 14: -0.050, B = 28: -0.050" in text
    assert "Peer rows from the cache: 4 of 8 (computed 2026-01-02" in text
    assert [p.name for p in bench_peers.plot(data, tmp_path)] == ["peers-n6.png"]
