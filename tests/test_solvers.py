"""Tests of the built-in front solvers on analytic quadratic problems."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest

from mapframe.errors import ConfigError, EvaluationError
from mapframe.metrics import hypervolume, pareto_mask, reference_point
from mapframe.problem import SearchSpace, Task
from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.solvers.pymoo_solvers import (
    AutoFrontSolver,
    GridSolver,
    NSGA2Solver,
    NSGA3Solver,
    default_partitions,
)

# Two tasks m_t(c) = 1 - ||c - a_t||^2 on [0, 1]^2. Every point of the segment [a_1, a_2] is
# Pareto-optimal (moving off it increases both distances), so with c(s) = a_1 + s (a_2 - a_1)
# and L = |a_2 - a_1| the true front is (1 - s^2 L^2, 1 - (1 - s)^2 L^2), s in [0, 1].
A1 = np.array([0.2, 0.7])
A2 = np.array([0.8, 0.3])
SPACE = SearchSpace.box(2)
TWO_TASKS = [Task("a"), Task("b")]


def two_quadratics(X: np.ndarray) -> np.ndarray:
    return np.stack(
        [1.0 - np.sum((X - A1) ** 2, axis=1), 1.0 - np.sum((X - A2) ** 2, axis=1)], axis=1
    )


def analytic_front(n: int = 10001) -> np.ndarray:
    s = np.linspace(0.0, 1.0, n)[:, None]
    return two_quadratics(A1 + s * (A2 - A1))


def distance_to_segment(X: np.ndarray) -> np.ndarray:
    d = A2 - A1
    s = np.clip((X - A1) @ d / (d @ d), 0.0, 1.0)
    return np.linalg.norm(X - (A1 + s[:, None] * d), axis=1)


FAST = {"nsga2": NSGA2Solver(n_gen=40), "nsga3": NSGA3Solver(n_gen=40), "grid": GridSolver()}


def check_result(
    result: SolverResult,
    space: SearchSpace,
    tasks: list[Task],
    predict: Callable[[np.ndarray], np.ndarray],
) -> None:
    """Properties every solver's result must have."""
    directions = [t.direction for t in tasks]
    assert isinstance(result, SolverResult)
    assert result.X.ndim == 2 and result.X.shape[1] == space.n_dims
    assert result.F.shape == (len(result.X), len(tasks))
    assert len(result.X) >= 1
    assert space.contains(result.X).all()
    np.testing.assert_allclose(result.F, predict(result.X))
    assert pareto_mask(result.F, directions).all()  # non-dominated and distinct
    assert np.all(np.diff(result.F[:, 0]) >= 0)  # sorted by the first objective
    assert result.n_evaluations >= len(result.X)


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "grid"])
def test_front_on_the_pareto_segment(name: str) -> None:
    solver = FAST[name]
    assert isinstance(solver, FrontSolver)
    result = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=0)
    check_result(result, SPACE, TWO_TASKS, two_quadratics)
    assert len(result.X) >= 20
    # The Pareto set is the segment. Off it by d the objectives lose only ~d^2, so a GA's
    # points scatter around it (median ~0.01 after 40 generations); the grid's discrete front
    # keeps points up to a couple of cells (0.005) away.
    dist = distance_to_segment(result.X)
    if name == "grid":
        assert dist.max() < 0.01
    else:
        assert np.median(dist) < 0.02
        assert dist.max() < 0.1


@pytest.mark.parametrize("cls", [NSGA2Solver, NSGA3Solver, GridSolver])
def test_hypervolume_close_to_analytic_front(cls: type[FrontSolver]) -> None:
    result = cls().solve(two_quadratics, SPACE, TWO_TASKS, seed=1)
    true = analytic_front()
    ref = reference_point(true)
    ratio = hypervolume(result.F, ref) / hypervolume(true, ref)
    assert 0.99 <= ratio <= 1.0 + 1e-9


def test_min_direction_with_negated_function_gives_same_set() -> None:
    def mixed(X: np.ndarray) -> np.ndarray:
        return two_quadratics(X) * np.array([1.0, -1.0])

    tasks = [Task("a"), Task("loss", direction="min")]
    for solver in FAST.values():
        ref = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=3)
        flipped = solver.solve(mixed, SPACE, tasks, seed=3)
        check_result(flipped, SPACE, tasks, mixed)
        # Same minimisation problem, same seed: the same coefficient vectors.
        np.testing.assert_allclose(flipped.X, ref.X)
        np.testing.assert_allclose(flipped.F, ref.F * np.array([1.0, -1.0]))


def test_wrong_direction_gives_a_different_front() -> None:
    # Minimising task "b" instead pushes the front away from a_2 towards the box's corners.
    tasks = [Task("a"), Task("b", direction="min")]
    result = FAST["nsga3"].solve(two_quadratics, SPACE, tasks, seed=0)
    check_result(result, SPACE, tasks, two_quadratics)
    assert distance_to_segment(result.X).max() > 0.1


@pytest.mark.parametrize("name", ["nsga2", "nsga3"])
def test_reproducible_under_the_same_seed(name: str) -> None:
    solver = FAST[name]
    a = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=11)
    b = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=11)
    c = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=12)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.F, b.F)
    assert a.X.shape != c.X.shape or not np.array_equal(a.X, c.X)


def test_box_is_respected_when_optima_lie_outside() -> None:
    space = SearchSpace.box(2, [(0.0, 1.5), (-0.5, 0.5)])
    far1, far2 = np.array([3.0, 2.0]), np.array([2.0, -3.0])

    def predict(X: np.ndarray) -> np.ndarray:
        return -np.stack(
            [np.sum((X - far1) ** 2, axis=1), np.sum((X - far2) ** 2, axis=1)], axis=1
        )

    for solver in FAST.values():
        result = solver.solve(predict, space, TWO_TASKS, seed=0)
        check_result(result, space, TWO_TASKS, predict)
        # Both optima are beyond c_0 = 1.5, so the whole Pareto set lies on that face.
        np.testing.assert_allclose(result.X[:, 0], 1.5, atol=0.05)


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "grid"])
def test_single_task_returns_the_optimum(name: str) -> None:
    def one(X: np.ndarray) -> np.ndarray:
        return two_quadratics(X)[:, :1]

    tasks = [Task("a")]
    result = FAST[name].solve(one, SPACE, tasks, seed=0)
    check_result(result, SPACE, tasks, one)
    assert result.X.shape == (1, 2)
    np.testing.assert_allclose(result.X[0], A1, atol=0.02)

    # Minimising instead: the worst corner of the box, (1, 0).
    min_task = [Task("a", direction="min")]
    worst = FAST[name].solve(one, SPACE, min_task, seed=0)
    np.testing.assert_allclose(worst.X[0], [1.0, 0.0], atol=0.02)


def test_three_tasks_in_three_dimensions() -> None:
    centres = np.array([[0.2, 0.2, 0.8], [0.8, 0.3, 0.2], [0.4, 0.9, 0.5]])

    def predict(X: np.ndarray) -> np.ndarray:
        return -np.sum((X[:, None, :] - centres[None]) ** 2, axis=2)

    space = SearchSpace.box(3)
    tasks = [Task("a"), Task("b"), Task("c")]
    grid = GridSolver(points_per_dim=21).solve(predict, space, tasks, seed=0)
    check_result(grid, space, tasks, predict)
    nsga3 = NSGA3Solver(n_gen=60).solve(predict, space, tasks, seed=0)
    check_result(nsga3, space, tasks, predict)
    assert len(nsga3.X) >= 50
    ref = reference_point(grid.F, nsga3.F)
    assert hypervolume(nsga3.F, ref) >= 0.95 * hypervolume(grid.F, ref)


def test_nsga3_leaves_the_processes_warning_filters_as_they_were() -> None:
    # pymoo's NSGA-III calls warnings.simplefilter("ignore") while it normalises; unscoped,
    # that silenced every later warning of the process (a study's MapframeWarnings too).
    centres = np.array([[0.2, 0.2, 0.8], [0.8, 0.3, 0.2], [0.4, 0.9, 0.5]])

    def predict(X: np.ndarray) -> np.ndarray:
        return -np.sum((X[:, None, :] - centres[None]) ** 2, axis=2)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        NSGA3Solver(n_gen=30).solve(predict, SearchSpace.box(3),
                                    [Task("a"), Task("b"), Task("c")], seed=0)
        assert warnings.filters == before
        with pytest.warns(UserWarning, match="still heard"):
            warnings.warn("still heard", UserWarning, stacklevel=1)


def test_grid_uses_sobol_beyond_three_dimensions() -> None:
    space = SearchSpace.box(5)
    solver = GridSolver(n_samples=256)
    X = solver.candidates(space, seed=0)
    assert X.shape == (256, 5)
    np.testing.assert_array_equal(X, solver.candidates(space, seed=0))
    assert not np.array_equal(X, solver.candidates(space, seed=1))
    assert GridSolver(points_per_dim=5).candidates(SearchSpace.box(2)).shape == (25, 2)

    centres = np.eye(5) * 0.8 + 0.1

    def predict(X: np.ndarray) -> np.ndarray:
        return -np.sum((X[:, None, :] - centres[None, :2]) ** 2, axis=2)

    raw = GridSolver(n_samples=256, polish=False).solve(predict, space, TWO_TASKS, seed=0)
    check_result(raw, space, TWO_TASKS, predict)
    assert raw.n_evaluations == 256 + len(raw.X)
    assert raw.diagnostics == {}
    result = solver.solve(predict, space, TWO_TASKS, seed=0)
    check_result(result, space, TWO_TASKS, predict)
    # The polish's predictions are counted too.
    assert result.n_evaluations == (raw.n_evaluations + result.diagnostics["polish_evaluations"]
                                    + len(result.X))


@pytest.mark.parametrize("name", ["nsga2", "nsga3", "grid"])
@pytest.mark.parametrize(
    ("bad_predict", "match"),
    [
        (lambda X: np.zeros(len(X)), "shape"),
        (lambda X: np.zeros((len(X), 3)), "shape"),
        (lambda X: np.zeros((1, 2)), "shape"),
        (lambda X: np.where(X[:, :1] > 0.5, np.nan, 0.0) * np.ones((1, 2)), "NaN"),
        (lambda X: [["a", "b"]] * len(X), "numeric"),
    ],
)
def test_bad_predict_raises_evaluation_error(
    name: str, bad_predict: Callable[[np.ndarray], object], match: str
) -> None:
    with pytest.raises(EvaluationError, match=match):
        FAST[name].solve(bad_predict, SPACE, TWO_TASKS, seed=0)


def test_no_tasks_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one task"):
        FAST["nsga3"].solve(two_quadratics, SPACE, [], seed=0)


@pytest.mark.parametrize(
    "make",
    [
        lambda: NSGA2Solver(pop_size=2),
        lambda: NSGA3Solver(n_gen=0),
        lambda: NSGA3Solver(n_partitions=0),
        lambda: NSGA2Solver(pop_size=10.5),  # type: ignore[arg-type]
        lambda: GridSolver(points_per_dim=1),
        lambda: GridSolver(n_samples=0),
        lambda: NSGA3Solver(n_gen="many"),  # type: ignore[arg-type]
        lambda: NSGA3Solver(n_gen=True),
        lambda: NSGA3Solver(tolerance=0),
        lambda: NSGA2Solver(tolerance=1.5),
        lambda: GridSolver(tolerance="small"),  # type: ignore[arg-type]
        lambda: GridSolver(polish="yes"),  # type: ignore[arg-type]
        lambda: AutoFrontSolver(tolerance=-1e-6),
        lambda: AutoFrontSolver(select="best"),
        lambda: AutoFrontSolver(pool=1),
        lambda: AutoFrontSolver(max_candidates=0),
    ],
)
def test_invalid_settings(make: Callable[[], object]) -> None:
    with pytest.raises(ConfigError):
        make()


def test_names_defaults_and_describe() -> None:
    assert (NSGA2Solver.name, NSGA3Solver.name, GridSolver.name) == ("nsga2", "nsga3", "grid")
    assert NSGA3Solver.kind == "front_solver"
    assert NSGA3Solver().describe() == {
        "name": "nsga3",
        "pop_size": None,
        "n_gen": 40,
        "eliminate_duplicates": False,
        "polish": True,
        "tolerance": 1e-6,
        "n_partitions": None,
    }
    assert GridSolver().describe() == {"name": "grid", "points_per_dim": None, "n_samples": 16384,
                                       "max_points": 100, "polish": True, "tolerance": 1e-6}
    assert [default_partitions(t) for t in range(2, 9)] == [99, 13, 7, 5, 4, 3, 3]
    with pytest.raises(ConfigError):
        default_partitions(1)


def test_custom_population_size() -> None:
    solver = NSGA2Solver(pop_size=20, n_gen=10, polish=False)
    result = solver.solve(two_quadratics, SPACE, TWO_TASKS, seed=0)
    check_result(result, SPACE, TWO_TASKS, two_quadratics)
    assert len(result.X) <= 20
    assert result.n_evaluations == 20 * 10 + len(result.X)


def test_grid_solver_thins_dense_fronts():
    space = SearchSpace.box(2, (0.0, 1.0))
    tasks = [Task("a"), Task("b")]

    def predict(C):
        return np.column_stack([C[:, 0] - 0.1 * C[:, 1] ** 2, C[:, 1] - 0.1 * C[:, 0] ** 2])

    full = GridSolver(max_points=None).solve(predict, space, tasks, seed=0)
    thin = GridSolver(max_points=20).solve(predict, space, tasks, seed=0)
    assert len(full.X) > 100 and len(thin.X) == 20
    # the thinned front keeps both extremes of the full one
    assert thin.F[:, 0].max() == full.F[:, 0].max()
    assert thin.F[:, 1].max() == full.F[:, 1].max()
    # every thinned point is one of the full front's points
    full_rows = {tuple(r) for r in np.round(full.X, 12)}
    assert all(tuple(r) in full_rows for r in np.round(thin.X, 12))


def test_select_setting_is_a_one_line_error_and_described() -> None:
    with pytest.raises(ConfigError) as err:
        AutoFrontSolver(select="volume")
    message = str(err.value)
    assert "\n" not in message
    assert "select must be one of auto, solver, hypervolume" in message and "'volume'" in message
    desc = AutoFrontSolver(select="hypervolume", pool=1024).describe()
    assert (desc["select"], desc["pool"], desc["max_candidates"]) == ("hypervolume", 1024, 4096)
    assert AutoFrontSolver().describe()["select"] == "auto"


@pytest.mark.parametrize(("n_obj", "expected"), [(1, "solver"), (2, "solver"), (3, "hypervolume"),
                                                 (4, "hypervolume"), (5, "solver"), (8, "solver")])
def test_select_auto_chooses_by_hypervolume_for_three_and_four_objectives(
    n_obj: int, expected: str
) -> None:
    assert AutoFrontSolver().selection(n_obj) == expected
    assert AutoFrontSolver(select="solver").selection(n_obj) == "solver"
    assert AutoFrontSolver(select="hypervolume").selection(n_obj) == "hypervolume"
    assert NSGA3Solver().selection(n_obj) == "solver"  # a named algorithm keeps its points


def test_pool_with_select_solver_is_refused_in_one_line() -> None:
    for kwargs in ({"pool": 1024}, {"max_candidates": 100}):
        with pytest.raises(ConfigError) as err:
            AutoFrontSolver(select="solver", **kwargs)
        message = str(err.value)
        assert "\n" not in message
        assert "pool and max_candidates apply only" in message and "select: hypervolume" in message
    AutoFrontSolver(select="solver")  # the defaults are no request


def test_pool_unused_by_select_auto_is_said_once() -> None:
    solver = AutoFrontSolver(pool=1024)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert solver.selection(3) == "hypervolume"
        assert not caught  # used at 3 tasks
        assert solver.selection(6) == "solver"
        assert solver.selection(6) == "solver"
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "pool and max_candidates go unused" in messages[0]
    assert "at 6 task(s)" in messages[0]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        AutoFrontSolver().selection(6)
    assert not caught


def test_select_hypervolume_with_one_task_keeps_the_optimum() -> None:
    space = SearchSpace.box(3)
    one = [Task("a")]

    def predict(X: np.ndarray) -> np.ndarray:
        return (1.0 - np.sum((X - 0.3) ** 2, axis=1))[:, None]

    plain = AutoFrontSolver().solve(predict, space, one, seed=0)
    chosen = AutoFrontSolver(select="hypervolume").solve(predict, space, one, seed=0)
    np.testing.assert_allclose(chosen.X, plain.X)
