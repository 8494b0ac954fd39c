"""The ``front`` sampler and the hypervolume-gain choice of points (verification, batches)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from test_front_pareto import Quadratics

from mapframe import MergeStudy
from mapframe.errors import ConfigError
from mapframe.history import Evaluation, History
from mapframe.hypervolume import greedy_hypervolume_subset, hypervolume_improvement
from mapframe.metrics import hypervolume, pareto_mask, reference_point
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.front import FrontSampler
from mapframe.samplers.space_filling import sobol_unit
from mapframe.testing import AdaptiveSamplerContract


class TestFrontSampler(AdaptiveSamplerContract):
    def make_sampler(self):
        return FrontSampler()


class TestFrontSamplerExpectedPicks(AdaptiveSamplerContract):
    def make_sampler(self):
        return FrontSampler(pick="expected", n_samples=32)


class TestFrontSamplerSobolStart(AdaptiveSamplerContract):
    def make_sampler(self):
        return FrontSampler(design="sobol")


# --------------------------------------------------------------------------- settings
@pytest.mark.parametrize("kwargs, fragment", [
    ({"initial": 1}, "initial must be an integer >= 2"),
    ({"initial": "many"}, "initial must be an integer >= 2"),
    ({"batch": 0}, 'batch must be an integer >= 1 or "auto"'),
    ({"batch": True}, 'batch must be an integer >= 1 or "auto"'),
    ({"optimism": -1}, "optimism must be a number from 0 to 10"),
    ({"optimism": "high"}, "optimism must be a number from 0 to 10"),
    ({"nu": 2.0}, "nu must be one of"),
    ({"pick": "ehvi"}, "pick must be 'hypervolume'"),
    ({"n_samples": 0}, "n_samples must be an integer >= 1"),
    ({"pick": "expected", "warp": "auto"}, "use it with warp: none"),
    ({"design": "latin"}, "design must be one of sobol, lhs"),
])
def test_bad_settings_are_one_line_errors(kwargs, fragment) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        FrontSampler(**kwargs)
    assert "\n" not in str(info.value)


def test_registered_like_every_builtin() -> None:
    assert get_registry().get("sampler", "front") is FrontSampler
    assert FrontSampler().describe()["name"] == "front"


def test_initial_design_shrinks_with_the_budget() -> None:
    s = FrontSampler()
    assert s.initial_size(3) == 8  # budget unknown: 2 (N + 1)
    assert [s.initial_size(3, b) for b in (9, 11, 12, 27, 200)] == [5, 5, 8, 8, 8]
    assert [s.initial_size(8, b) for b in (18, 26, 27, 81)] == [10, 10, 18, 18]
    assert FrontSampler(initial=4).initial_size(3, 200) == 4
    # In a study the budget comes from setup(): 9 search evaluations at N = 3 start with 5.
    s.setup(SamplerContext(space=SearchSpace.box(3), tasks=(Task("a"), Task("b")), budget=9))
    assert s.batch_size(9, History(3, 2, [])) == 5


def test_initial_design_then_rounds() -> None:
    s = FrontSampler()
    empty = History(3, 2, [])
    assert s.batch_size(50, empty) == 8  # 2 (N + 1)
    assert s.batch_size(5, empty) == 5
    full = History(3, 2, [Evaluation(np.full(3, i / 10), np.zeros(2)) for i in range(8)])
    assert s.batch_size(50, full) == 3
    assert s.batch_size(50, full, capacity=5) == 5
    assert FrontSampler(initial=4, batch=2).batch_size(50, full) == 2


def test_rounds_of_one_below_a_search_budget_of_3_n_plus_1() -> None:
    # batch: auto is 1 where the start shrinks to N + 2 (a handful of adaptive evaluations,
    # a refit after each), 3 from a search budget of 3 (N + 1); a pool's capacity still wins.
    s = FrontSampler()
    assert s.batch == "auto"
    assert [s.round_size(3, b) for b in (0, 9, 11, 12, 50)] == [3, 1, 1, 3, 3]
    assert [s.round_size(8, b) for b in (18, 26, 27)] == [1, 1, 3]
    assert FrontSampler(batch=2).round_size(3, 9) == 2
    space = SearchSpace.box(3)
    s.setup(SamplerContext(space=space, tasks=(Task("a"), Task("b")), budget=9))
    started = History(3, 2, [Evaluation(np.full(3, i / 10), np.zeros(2)) for i in range(5)])
    assert s.batch_size(4, started) == 1
    assert s.batch_size(4, started, capacity=2) == 2
    s.setup(SamplerContext(space=space, tasks=(Task("a"), Task("b")), budget=40))
    full = History(3, 2, [Evaluation(np.full(3, i / 10), np.zeros(2)) for i in range(8)])
    assert s.batch_size(32, full) == 3
    with pytest.raises(ConfigError, match='batch must be an integer >= 1 or "auto"'):
        FrontSampler(batch="many")


@pytest.mark.parametrize("design", ["lhs", "sobol"])
def test_initial_design_is_the_chosen_space_filling_design(design: str) -> None:
    s = FrontSampler(design=design)
    space = SearchSpace.box(4)
    s.setup(SamplerContext(space=space, tasks=(Task("a"), Task("b")), budget=40))
    empty = History(4, 2, [])
    n = s.batch_size(40, empty)
    X = s.propose(n, space, empty, np.random.default_rng([0, 0]))
    assert n == 10  # 2 (N + 1)
    strata = np.sort(np.floor(X * n).astype(int), axis=0)
    is_latin = all((strata[:, j] == np.arange(n)).all() for j in range(4))
    assert is_latin == (design == "lhs")
    if design == "sobol":
        np.testing.assert_array_equal(X, sobol_unit(n, 4, np.random.default_rng([0, 0])))


# --------------------------------------------------------------------------- proposals
def _history(problem: Quadratics, n: int, seed: int = 0) -> History:
    X = sobol_unit(n, problem.n, np.random.default_rng(seed))
    Y = problem(X)
    return History(problem.n, problem.n, [Evaluation(x, y) for x, y in zip(X, Y)])


@pytest.mark.parametrize("pick", ["hypervolume", "expected"])
@pytest.mark.parametrize("n", [3, 4])
def test_proposals_lie_near_the_pareto_set(n: int, pick: str) -> None:
    # After the initial design the picks come from the predicted Pareto set: far closer to
    # the true one (the targets' convex hull) than the measured points are.
    problem = Quadratics(n)
    history = _history(problem, 2 * (n + 1) + 4)
    s = FrontSampler(pick=pick)  # type: ignore[arg-type]
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    X = s.propose(3, problem.space, history, np.random.default_rng(1))
    assert X.shape == (3, n)
    measured = problem.hull_distance2(history.X)
    picked = problem.hull_distance2(X)
    assert picked.max() < 0.25 * np.median(measured), (picked, np.median(measured))


def test_rounds_keep_the_solvers_own_points(monkeypatch) -> None:
    # The rounds solve with select: solver; only the study's final front is re-chosen by
    # hypervolume gain at 3-4 tasks (select: auto).
    from mapframe.solvers.pymoo_solvers import AutoFrontSolver

    seen: list[str] = []
    solve = AutoFrontSolver.solve

    def spy(self, predict, space, tasks, seed=None):
        seen.append(self.selection(len(tasks)))
        return solve(self, predict, space, tasks, seed)

    monkeypatch.setattr(AutoFrontSolver, "solve", spy)
    problem = Quadratics(3)
    s = FrontSampler()
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    s.propose(3, problem.space, _history(problem, 12), np.random.default_rng(2))
    assert seen == ["solver"]


@pytest.mark.parametrize("pick", ["hypervolume", "expected"])
def test_proposals_extend_the_measured_front(pick: str) -> None:
    # Every pick is predicted to add hypervolume to the measured front (none repeats it).
    problem = Quadratics(3)
    history = _history(problem, 12)
    s = FrontSampler(pick=pick)  # type: ignore[arg-type]
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    X = s.propose(3, problem.space, history, np.random.default_rng(2))
    Y = history.Y
    ref = reference_point(np.vstack([Y, problem(X)]), margin=0.1)
    gains = hypervolume_improvement(problem(X), Y[pareto_mask(Y)], ref)
    assert np.all(gains > 0)


def test_expected_picks_run_q_ehvi_over_the_predicted_front(monkeypatch) -> None:
    # pick: expected hands the solver's predicted points (none repeating a measured one) to
    # the gp sampler's greedy q-EHVI instead of the hypervolume gain on the means.
    import mapframe.samplers.front as front_module

    calls: list[np.ndarray] = []
    qehvi = front_module.greedy_qehvi

    def spy(n, gps, Xc, *args, **kwargs):
        calls.append(Xc)
        return qehvi(n, gps, Xc, *args, **kwargs)

    monkeypatch.setattr(front_module, "greedy_qehvi", spy)
    monkeypatch.setattr(front_module, "greedy_hypervolume_subset",
                        lambda *a, **k: pytest.fail("the mean-based rule ran"))
    problem = Quadratics(3)
    history = _history(problem, 12)
    s = FrontSampler(pick="expected")
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    X = s.propose(3, problem.space, history, np.random.default_rng(4))
    assert len(calls) == 1 and calls[0].shape[0] > 3
    assert all(any(np.allclose(x, c) for c in calls[0]) for x in X)
    gap = np.abs(calls[0][:, None, :] - history.X[None]).max(axis=2).min(axis=1)
    assert gap.min() >= 1e-3
    again = s.propose(3, problem.space, history, np.random.default_rng(4))
    np.testing.assert_array_equal(X, again)


@pytest.mark.parametrize("pick", ["hypervolume", "expected"])
def test_min_tasks_are_handled(pick: str) -> None:
    problem = Quadratics(3, minimised=(1,))
    history = _history(problem, 12)
    s = FrontSampler(pick=pick)  # type: ignore[arg-type]
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    X = s.propose(2, problem.space, history, np.random.default_rng(0))
    assert problem.hull_distance2(X).max() < 0.25 * np.median(problem.hull_distance2(history.X))


def test_study_measures_a_better_front_than_plain_sobol() -> None:
    # Same budget, same objective: the measured points of the front sampler cover more
    # hypervolume than a Sobol design's.
    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]

    def measured_hv(sampler: str) -> float:
        res = MergeStudy(objective=problem, task_names=names, budget=20, seed=0,
                         sampler=sampler).run()
        return res.history.Y

    front, sobol = measured_hv("front"), measured_hv("sobol")
    ref = reference_point(np.vstack([front, sobol]), margin=0.1)
    assert hypervolume(front, ref) > 1.05 * hypervolume(sobol, ref)


@pytest.mark.filterwarnings("ignore:NaN or infinite metric")  # the case under test
@pytest.mark.parametrize("fault", ["raises", "nan"])
def test_a_point_that_failed_is_not_proposed_again(fault: str) -> None:
    """A failed (or NaN) point is not in the fitted data: a deterministic round proposed it
    again, the session skipped it (already evaluated), and after three empty rounds the
    study aborted with "keeps proposing points that were already evaluated"."""
    calls: list[tuple[float, ...]] = []

    def objective(C):
        C = np.atleast_2d(C)
        calls.extend(map(tuple, C))
        out = np.column_stack([1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1),
                               1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)])
        bad = (C[:, 0] >= 0.4) & (C[:, 0] <= 0.6)
        if fault == "raises" and bad.any():
            raise RuntimeError("cannot evaluate here")
        out[bad] = np.nan
        return out

    res = MergeStudy(objective=objective, task_names=["a", "b"], budget=14, sampler="front",
                     seed=0, on_error="record", executor={"name": "inprocess",
                                                          "batch_size": 1}).run()
    assert len(res.history) == 14 and len(calls) == 14
    failed = [e for e in res.history if not e.ok]
    assert failed  # the region was met, and the study went on
    assert len({e.key for e in res.history if e.phase == "search"}) == 14


def test_rounds_drop_picks_at_a_failed_point() -> None:
    problem = Quadratics(2)
    history = _history(problem, 8)
    s = FrontSampler(batch=2)
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=20))
    first = s.propose(2, problem.space, history, np.random.default_rng(0))
    for x in first:  # the same round's picks, now failed points of the history
        history.add(Evaluation(x, None, status="failed", error="boom"))
    again = s.propose(2, problem.space, history, np.random.default_rng(0))
    gap = np.abs(again[:, None, :] - first[None, :, :]).max(axis=2)
    assert again.shape == (2, 2) and gap.min() >= 1e-3


# --------------------------------------------------------------------------- hypervolume
def _brute_gain(Y: np.ndarray, front: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """HV(front ∪ {y}) − HV(front) with pymoo, maximisation form."""
    base = hypervolume(front, ref, "max") if len(front) else 0.0
    return np.array([hypervolume(np.vstack([front, y]), ref, "max") - base for y in Y])


@pytest.mark.parametrize("T", [2, 3, 4])
def test_hypervolume_improvement_is_exact(T: int) -> None:
    rng = np.random.default_rng(T)
    front = rng.random((12, T))
    Y = rng.random((30, T))
    ref = np.full(T, -0.1)
    np.testing.assert_allclose(hypervolume_improvement(Y, front, ref),
                               _brute_gain(Y, front, ref), atol=1e-10)


def test_hypervolume_improvement_beyond_the_table_is_monte_carlo() -> None:
    # Six objectives and 40 front points: the exact table would have ~42^6 cells.
    rng = np.random.default_rng(0)
    T = 6
    front = rng.random((40, T)) * 0.8
    Y = 0.3 + 0.7 * rng.random((5, T))
    ref = np.zeros(T)
    got = hypervolume_improvement(Y, front, ref)
    want = _brute_gain(Y, front, ref)
    np.testing.assert_allclose(got, want, rtol=0.1, atol=2e-3)
    assert np.all(hypervolume_improvement(Y, front, ref) == got)  # fixed points


def test_greedy_subset_picks_the_largest_gain_first() -> None:
    rng = np.random.default_rng(3)
    F = rng.random((25, 3))
    F = F[pareto_mask(F)]
    measured = rng.random((6, 3)) * 0.9
    idx = greedy_hypervolume_subset(F, 1, ["max"] * 3, measured)
    both = np.vstack([F, measured])
    lo, span = both.min(axis=0), np.ptp(both, axis=0)
    Z, Zm = (F - lo) / span, (measured - lo) / span
    gains = _brute_gain(Z, Zm[pareto_mask(Zm)], np.full(3, -0.1))
    assert idx.tolist() == [int(np.argmax(gains))]


def test_greedy_subset_is_optimal_for_two_picks_on_small_sets() -> None:
    # Greedy is not always optimal, but it must match a brute-force best pair to within the
    # (1 - 1/e) guarantee of submodular maximisation; here it usually equals it.
    rng = np.random.default_rng(4)
    F = rng.random((10, 2))
    idx = greedy_hypervolume_subset(F, 2, ["max", "max"])
    lo, span = F.min(axis=0), np.ptp(F, axis=0)
    Z = (F - lo) / span
    ref = np.full(2, -0.1)
    best = max(hypervolume(Z[list(p)], ref, "max") for p in itertools.combinations(range(10), 2))
    assert hypervolume(Z[idx], ref, "max") >= (1 - 1 / np.e) * best


def test_greedy_subset_skips_what_measurements_beat_and_fills_k() -> None:
    F = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.45, 0.45]])
    measured = np.array([[0.6, 0.6]])  # beats rows 1 and 3
    idx = greedy_hypervolume_subset(F, 2, ["max", "max"], measured)
    assert set(idx.tolist()) == {0, 2}
    assert len(greedy_hypervolume_subset(F, 4, ["max", "max"], measured)) == 4
    assert len(greedy_hypervolume_subset(F, 9, ["max", "max"], measured)) == 4
    # Minimised tasks: the same choice in mirrored units.
    idx_min = greedy_hypervolume_subset(-F, 2, ["min", "min"], -measured)
    assert idx_min.tolist() == idx.tolist()


def test_verification_goes_where_measurements_are_beaten() -> None:
    # The verified points' predictions are not dominated by a measured search point.
    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]
    res = MergeStudy(objective=problem, task_names=names, budget=20, seed=0,
                     verify=4).run()
    searched = np.array([e.metrics for e in res.history.select("search")])
    verified = np.array([e.coefficients for e in res.history.select("verify")])
    assert len(verified) == 4
    pred = problem(verified)  # exact surrogate: the prediction is the objective
    for p in pred:
        assert not np.any(np.all(searched >= p - 1e-9, axis=1))


def test_hypervolume_rule_measures_more_than_spreading(monkeypatch) -> None:
    # The rule before 2026-12-02 spread the verified points over the predicted front; on the
    # same study the hypervolume rule ends with a larger measured front.
    import mapframe.study as study_module
    from mapframe.metrics import spread_subset

    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]

    def measured() -> np.ndarray:
        res = MergeStudy(objective=problem, task_names=names, budget=12, seed=0, verify=3,
                         surrogate="gp").run()
        return np.array([e.metrics for e in res.history if e.ok])

    by_gain = measured()
    monkeypatch.setattr(study_module, "greedy_hypervolume_subset",
                        lambda F, k, directions, measured: spread_subset(F, k, directions))
    by_spread = measured()
    ref = reference_point(np.vstack([by_gain, by_spread]), margin=0.1)
    assert hypervolume(by_gain, ref) > hypervolume(by_spread, ref)


# --------------------------------------------------------------------------- sampler: auto
def test_auto_rule() -> None:
    from mapframe.samplers.choice import auto_sampler_name

    assert auto_sampler_name(2, 30) == "gp"
    assert auto_sampler_name(3, 30) == "front"
    assert auto_sampler_name(8, 90) == "front"
    # The front sampler's initial design is N + 2 points below a budget of 3 (N + 1):
    # one adaptive round of 3 needs 8 evaluations at N = 3 and 13 at N = 8.
    assert auto_sampler_name(3, 10) == "front"
    assert auto_sampler_name(3, 8) == "front"
    assert auto_sampler_name(3, 7) == "sobol"
    assert auto_sampler_name(8, 20) == "front"
    assert auto_sampler_name(8, 12) == "sobol"
    assert auto_sampler_name(2, 8) == "sobol"  # gp: no adaptive round after 2 (N + 1)
    # beyond the benchmark's 8 coefficients, Plain MAP: a front round at 12 tasks took
    # 20-25 s of mapframe's own time
    assert auto_sampler_name(9, 200) == "sobol" and auto_sampler_name(12, 500) == "sobol"


def test_auto_rule_without_gpytorch(monkeypatch) -> None:
    import mapframe.samplers.choice as choice

    monkeypatch.setattr(choice, "_has_gpytorch", lambda: False)
    assert choice.auto_sampler_name(3, 100) == "sobol"


@pytest.mark.parametrize("spec", ["auto", {"name": "auto", "batch": 2}, "AutoSampler"])
def test_a_study_runs_the_chosen_sampler(spec) -> None:
    from mapframe.samplers.choice import AutoSampler

    if spec == "AutoSampler":
        spec = AutoSampler(batch=2)
    problem = Quadratics(3)
    study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=14, seed=0, sampler=spec)
    assert isinstance(study.sampler, FrontSampler)
    assert study.sampler.batch == ("auto" if spec == "auto" else 2)
    small = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=7, seed=0, sampler="auto", surrogate="gp")
    assert small.sampler.name == "sobol"


def test_the_default_sampler_is_auto(monkeypatch) -> None:
    # Issue 20, item 6: a user who names no sampler gets what the head-to-head found best
    # (the front sampler from 3 tasks, gp at 2), and Plain MAP's Sobol' design where gpytorch
    # is missing; the YAML spec's default is the same.
    import mapframe.samplers.choice as choice
    from mapframe.spec import StudySpec

    names = {}
    for n, budget in ((2, 20), (3, 20), (4, 30)):
        problem = Quadratics(n)
        study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                           budget=budget, seed=0)
        names[n] = study.sampler.name
        assert study.settings()["sampler"]["name"] == names[n]
    assert names == {2: "gp", 3: "front", 4: "front"}
    assert StudySpec.model_fields["sampler"].default == "auto"
    monkeypatch.setattr(choice, "_has_gpytorch", lambda: False)
    problem = Quadratics(3)
    study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=20, seed=0)
    assert study.sampler.name == "sobol"


def test_auto_sampler_used_directly_delegates() -> None:
    from mapframe.samplers.choice import AutoSampler

    problem = Quadratics(3)
    s = AutoSampler()
    s.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    history = _history(problem, 12)
    assert s.batch_size(20, history) == 3
    X = s.propose(3, problem.space, history, np.random.default_rng(0))
    want = FrontSampler()
    want.setup(SamplerContext(space=problem.space, tasks=tuple(problem.tasks), budget=40))
    np.testing.assert_array_equal(X, want.propose(3, problem.space, history,
                                                  np.random.default_rng(0)))
    assert AutoSampler(batch=2).describe() == {"name": "auto", "batch": 2}


@pytest.mark.parametrize("sampler, n, surrogate, want", [
    ("front", 3, "auto", "gp_and_quadratic"), ("front", 4, "auto", "gp"),
    ("auto", 3, "auto", "gp_and_quadratic"),
    ("front", 5, "auto", "auto"), ("front", 2, "auto", "auto"), ("sobol", 3, "auto", "auto"),
    ("gp", 3, "auto", "gp"), ("gp", 4, "auto", "gp"), ("gp", 2, "auto", "auto"),
    ("gp", 5, "auto", "auto"), ("front", 3, "quadratic", "quadratic"),
    ("front", 3, {"name": "auto", "ridge": 1e-3}, "auto")])
def test_auto_surrogate_is_the_gp_with_the_front_and_gp_samplers_at_3_and_4_tasks(
        sampler, n, surrogate, want) -> None:
    """With the ``front`` sampler at 3 tasks and a budget above the quadratic's 10
    parameters, the mean of the gp and the quadratic (``gp_and_quadratic``)."""
    problem = Quadratics(n)
    # 50 evaluations: at 5 tasks at least twice the quadratic's 21 parameters (below that
    # the small-budget rule, tests/test_surrogate_choice.py, would pick the gp surrogate).
    study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=50, seed=0, sampler=sampler, surrogate=surrogate)
    assert study.surrogate.name == want
    assert study.settings()["surrogate"]["name"] == want  # summary.json says which ran


@pytest.mark.parametrize("n, surrogate, want", [
    (3, "auto", 4), (4, "auto", 5), (3, "quadratic", 10), (2, "auto", 6)])
def test_gp_sampler_initial_design_follows_the_resolved_surrogate(n, surrogate, want) -> None:
    """The ``gp`` sampler's ``initial: auto`` is the study surrogate's parameter count: with
    ``auto`` resolved to ``gp`` at 3-4 tasks that is N + 1 points, not the quadratic's
    (N + 1)(N + 2) / 2 (the combination the pilot measured)."""
    problem = Quadratics(n)
    study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=40, seed=0, sampler="gp", surrogate=surrogate)
    context = SamplerContext(space=problem.space, tasks=tuple(problem.tasks),
                             surrogate=study.surrogate, budget=40)
    assert study.sampler.initial_size(context) == want


def test_warp_setting() -> None:
    assert FrontSampler().describe()["warp"] == "none"
    assert FrontSampler(warp="auto").warp == "auto"
    with pytest.raises(ConfigError, match="warp must be one of auto, none"):
        FrontSampler(warp="logit")


def test_warped_rounds_fit_the_logits_of_bounded_metrics(monkeypatch) -> None:
    """With ``warp: auto`` each round's GPs are fitted to the warped metrics."""
    import mapframe.surrogates.warp as warp_module

    seen = []
    plain = warp_module.WarpedGP.fit.__func__

    def spy(cls, X, y, task, warp="auto", **kw):
        out = plain(cls, X, y, task, warp, **kw)
        seen.append(out.warp.kind)
        return out

    monkeypatch.setattr(warp_module.WarpedGP, "fit", classmethod(spy))
    problem = Quadratics(3)
    tasks = tuple(Task(t.name, t.direction, -10.0, 10.0) for t in problem.tasks)
    s = FrontSampler(warp="auto")
    s.setup(SamplerContext(space=problem.space, tasks=tasks, budget=40))
    X = s.propose(3, problem.space, _history(problem, 12), np.random.default_rng(0))
    assert X.shape == (3, 3) and seen == ["logit"] * 3
