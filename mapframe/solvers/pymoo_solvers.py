"""Built-in front solvers: NSGA-II and NSGA-III (from pymoo) and a dense grid.

All three solve the surrogate problem ``max/min_c (m_1(c), ..., m_T(c))`` over the box of
coefficient vectors and finish the same way (:func:`_finish`): the candidates are clipped to
the box, predicted once more, filtered to the mutually non-dominated, distinct points and
sorted by the first objective, so that ``SolverResult.F`` is exactly ``predict(SolverResult.X)``.
Then, with ``polish=True`` (the default), every point is checked and, when some point of the
box improves every task, moved onto the Pareto front by a local scalarised solve
(:func:`mapframe.solvers.polish.polish_front`): the genetic solvers' points only lie *near*
the front, the grid's only up to its spacing.

==========  =================================  ===========================================
name        how                                use when
==========  =================================  ===========================================
``nsga3``   pymoo NSGA-III, Das-Dennis dirs    default; spreads points evenly for T >= 3
``nsga2``   pymoo NSGA-II, crowding distance   T = 2 or 3, or to cross-check NSGA-III
``grid``    regular grid / Sobol sample        N <= 3 (exact up to grid spacing), ground truth
``auto``    ``grid`` for N <= 2, else nsga3    the default of MergeStudy; at 3-4 tasks
                                               its points re-chosen by hypervolume gain
==========  =================================  ===========================================
"""

from __future__ import annotations

import math
import warnings
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from mapframe._warning_filters import library_filters_unchanged
from mapframe.errors import ConfigError, MapframeWarning
from mapframe.metrics import pareto_mask, spread_subset
from mapframe.problem import SearchSpace, Task
from mapframe.settings import bool_setting, int_setting, number_setting
from mapframe.solvers._common import Predict, _finish, _predict_checked
from mapframe.solvers.base import FrontSolver, SolverResult
from mapframe.solvers.polish import DEFAULT_TOLERANCE, polish_front

__all__ = ["AutoFrontSolver", "GridSolver", "NSGA2Solver", "NSGA3Solver", "default_partitions"]

# Das-Dennis partitions per number of objectives, chosen so that the number of reference
# directions C(p + T - 1, T - 1) stays between ~85 and ~130: fronts fine enough to pick from,
# populations small enough that a whole solve stays well under a second.
_PARTITIONS = {2: 99, 3: 13, 4: 7, 5: 5, 6: 4, 7: 3, 8: 3}
# Population of the single-objective GA used when there is only one task.
_SINGLE_OBJECTIVE_POP = 50
# Rows per predict call in the grid solver; bounds the memory a surrogate may need per call.
_GRID_BATCH = 16384
#: ``select`` values: the algorithm's own points, a choice by hypervolume gain, or ``auto``
#: (hypervolume gain for :data:`SELECT_AUTO_OBJECTIVES` objectives, else the solver's points).
SELECTIONS = ("auto", "solver", "hypervolume")
#: Numbers of objectives for which ``select: auto`` chooses by hypervolume gain: where it was
#: measured to lift the handed-over front (docs/adaptive-sampling.md) and keeps fit + solve
#: within the time target (docs/benchmarks.md, "Surrogate fit + front solve time").
SELECT_AUTO_OBJECTIVES = (3, 4)
#: Sobol' points of the box added to the candidates of ``select: hypervolume``.
SELECT_POOL = 1 << 14
#: Non-dominated pool points kept as candidates at most (the first in the sequence's order).
SELECT_MAX_CANDIDATES = 4096


def default_partitions(n_obj: int) -> int:
    """Das-Dennis partitions used for ``n_obj`` objectives (about 85-130 directions up to 8).

    Beyond 8 objectives two partitions are used (``n_obj * (n_obj + 1) / 2`` directions).
    """
    if n_obj < 2:
        raise ConfigError(f"reference directions need at least 2 objectives, got {n_obj}")
    return _PARTITIONS.get(n_obj, 2)


def _n_directions(n_obj: int, n_partitions: int) -> int:
    return math.comb(n_partitions + n_obj - 1, n_obj - 1)


def _directions(tasks: Sequence[Task]) -> list[str]:
    if len(tasks) == 0:
        raise ConfigError("the solver needs at least one task")
    return [t.direction for t in tasks]


def _make_problem(predict: Predict, space: SearchSpace, directions: Sequence[str]) -> Any:
    """The surrogate problem as a vectorised pymoo ``Problem`` in minimisation form."""
    from pymoo.core.problem import Problem

    signs = np.array([1.0 if d == "max" else -1.0 for d in directions])
    n_obj = len(directions)

    class SurrogateProblem(Problem):
        """Evaluates a whole population with one ``predict`` call; maximised columns negated."""

        def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
            out["F"] = -_predict_checked(predict, x, n_obj) * signs

    return SurrogateProblem(
        n_var=space.n_dims, n_obj=n_obj, xl=space.lower, xu=space.upper, vtype=float
    )


def _sobol_box(space: SearchSpace, n: int, seed: int | None) -> np.ndarray:
    """The first ``n`` points of a scrambled Sobol' sequence (``seed``) in the box, drawn as
    the next power of two (which keeps the sequence balanced)."""
    from scipy.stats import qmc

    m = max(0, math.ceil(math.log2(n)))
    return space.scale(qmc.Sobol(d=space.n_dims, scramble=True, seed=seed).random_base2(m)[:n])


def _predict_batched(predict: Predict, X: np.ndarray, n_obj: int) -> np.ndarray:
    """``predict(X)`` in batches of ``_GRID_BATCH`` rows (bounds a surrogate's memory)."""
    return np.concatenate([_predict_checked(predict, X[i : i + _GRID_BATCH], n_obj)
                           for i in range(0, len(X), _GRID_BATCH)])


def _select_setting(value: object) -> str:
    if value not in SELECTIONS:
        raise ConfigError(f"front solver: select must be one of {', '.join(SELECTIONS)} "
                          f"(how the returned points are chosen), got {value!r}")
    return str(value)


def _select_by_hypervolume(
    predict: Predict, result: SolverResult, space: SearchSpace, directions: list[str],
    pool: int, max_candidates: int, seed: int | None,
) -> SolverResult:
    """``select: hypervolume``: as many points as ``result`` holds, chosen by greedy
    hypervolume gain on the surrogates among ``result``'s points and the non-dominated ones
    of ``pool`` scrambled Sobol' points of the box (at most ``max_candidates`` of those, in
    the sequence's order; :func:`mapframe.hypervolume.sampled_hypervolume_subset`)."""
    from mapframe.hypervolume import sampled_hypervolume_subset

    k = len(result.X)
    if k == 0 or len(directions) < 2:
        return result
    X = _sobol_box(space, pool, seed)
    F = _predict_batched(predict, X, len(directions))
    keep = np.flatnonzero(pareto_mask(F, directions))[:max_candidates]
    X_all = np.vstack([result.X, X[keep]])
    F_all = np.vstack([result.F, F[keep]])
    nd = np.flatnonzero(pareto_mask(F_all, directions))
    pick = nd[sampled_hypervolume_subset(F_all[nd], k, directions)]
    finished = _finish(predict, X_all[pick], space, directions,
                       result.n_evaluations + len(X))
    return SolverResult(X=finished.X, F=finished.F, n_evaluations=finished.n_evaluations,
                        diagnostics={**result.diagnostics, "select": "hypervolume",
                                     "select_candidates": int(nd.size)})


class _BoxSolver(FrontSolver):
    """Shared entry point of the built-in solvers: :meth:`solve` checks the tasks, hands
    their directions to :meth:`_solve`, re-chooses the points by hypervolume gain when
    ``select`` is ``"hypervolume"`` and, when ``polish`` is on, polishes the result."""

    polish: bool = True
    tolerance: float = DEFAULT_TOLERANCE
    select: str = "solver"
    pool: int = SELECT_POOL
    max_candidates: int = SELECT_MAX_CANDIDATES

    def _set_polish(self, polish: bool, tolerance: float) -> None:
        self.polish = bool_setting(polish, "polish")
        self.tolerance = number_setting(tolerance, "tolerance", 0.0, 1.0, open_low=True,
                                        open_high=True)

    def selection(self, n_obj: int) -> str:
        """How the points are chosen for ``n_obj`` objectives: ``select``, with ``auto``
        resolved (``hypervolume`` for :data:`SELECT_AUTO_OBJECTIVES` objectives, else
        ``solver``)."""
        if self.select != "auto":
            return self.select
        return "hypervolume" if n_obj in SELECT_AUTO_OBJECTIVES else "solver"

    def solve(
        self,
        predict: Predict,
        space: SearchSpace,
        tasks: Sequence[Task],
        seed: int | None = None,
    ) -> SolverResult:
        """Return the non-dominated set found on the surrogate problem (see :meth:`_solve`),
        polished onto the Pareto front when ``polish`` is on (``diagnostics`` says how many
        points were dominated before)."""
        directions = _directions(tasks)
        result = self._solve(predict, space, directions, seed)
        if self.selection(len(directions)) == "hypervolume":
            result = _select_by_hypervolume(predict, result, space, directions, self.pool,
                                            self.max_candidates, seed)
        if not self.polish:
            return result
        return polish_front(predict, result, space, directions, self.tolerance)

    @abstractmethod
    def _solve(
        self, predict: Predict, space: SearchSpace, directions: list[str], seed: int | None
    ) -> SolverResult:
        """Solve for the tasks' ``directions`` (at least one)."""


class _PymooSolver(_BoxSolver):
    """Shared driver of the pymoo solvers: build the algorithm, run it, finish the front.

    With a single task both solvers run pymoo's single-objective ``GA`` (NSGA-III's reference
    directions need two objectives) and return the best point found.
    """

    def __init__(
        self,
        pop_size: int | None = None,
        n_gen: int = 40,
        eliminate_duplicates: bool = False,
        polish: bool = True,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        self.pop_size = None if pop_size is None else int_setting(pop_size, "pop_size", 4)
        self.n_gen = int_setting(n_gen, "n_gen", 1)
        self.eliminate_duplicates = bool_setting(eliminate_duplicates, "eliminate_duplicates")
        self._set_polish(polish, tolerance)

    @abstractmethod
    def _algorithm(self, n_obj: int) -> Any:
        """A fresh pymoo algorithm for ``n_obj >= 2`` objectives."""

    def _single_objective(self) -> Any:
        from pymoo.algorithms.soo.nonconvex.ga import GA

        return GA(
            pop_size=self.pop_size or _SINGLE_OBJECTIVE_POP,
            eliminate_duplicates=self.eliminate_duplicates,
        )

    def _solve(
        self, predict: Predict, space: SearchSpace, directions: list[str], seed: int | None
    ) -> SolverResult:
        """Run the genetic algorithm on the surrogates and return its non-dominated set."""
        from pymoo.optimize import minimize

        n_obj = len(directions)
        algorithm = self._single_objective() if n_obj == 1 else self._algorithm(n_obj)
        problem = _make_problem(predict, space, directions)
        # pymoo's NSGA-III calls warnings.simplefilter("ignore") while it normalises (its
        # get_nadir_point, pymoo 0.6) to hide numpy's division warnings there: that filter
        # would silence every warning of the process (every thread's) from then on. Its
        # filter changes do nothing here; numpy's floating point warnings are silenced for
        # this thread only.
        with library_filters_unchanged("pymoo"), np.errstate(divide="ignore", invalid="ignore",
                                                             over="ignore"):
            res = minimize(
                problem,
                algorithm,
                ("n_gen", self.n_gen),
                seed=seed,
                verbose=False,
                copy_algorithm=False,
            )
        X = res.pop.get("X")
        return _finish(predict, X, space, directions, int(algorithm.evaluator.n_eval))


class NSGA2Solver(_PymooSolver):
    """NSGA-II (pymoo) on the surrogate problem.

    Args:
        pop_size: population size; ``None`` uses the NSGA-III default for the same number of
            objectives (100 for 2 tasks, about 85-130 up to 8 tasks) so that both solvers
            return fronts of similar size.
        n_gen: number of generations (default 40: the Pareto polish, not more
            generations, puts the points on the front).
        eliminate_duplicates: let pymoo drop duplicate offspring; off by default because
            real-valued crossover rarely makes exact duplicates and the check costs time.
        polish: move the final points onto the Pareto front of the surrogates (see
            :func:`~mapframe.solvers.polish.polish_front`); off returns the raw population's
            non-dominated set, whose points typically lose 1e-3 to 1e-2 on every task.
        tolerance: a returned point may be improvable on every task by at most about this
            fraction of the task's range over the front (default 1e-6).

    With a single task it runs pymoo's single-objective ``GA`` instead and returns the one
    best point found.
    """

    name: ClassVar[str] = "nsga2"

    def _algorithm(self, n_obj: int) -> Any:
        from pymoo.algorithms.moo.nsga2 import NSGA2

        pop = self.pop_size or _n_directions(n_obj, default_partitions(n_obj))
        return NSGA2(pop_size=pop, eliminate_duplicates=self.eliminate_duplicates)


class NSGA3Solver(_PymooSolver):
    """NSGA-III (pymoo) with Das-Dennis reference directions on the surrogate problem.

    Args:
        pop_size: population size; ``None`` uses the number of reference directions.
        n_gen: number of generations (default 40: the Pareto polish, not more
            generations, puts the points on the front).
        n_partitions: Das-Dennis partitions; ``None`` uses :func:`default_partitions`
            (T=2: 99 -> 100 directions, T=3: 13 -> 105, T=4: 7 -> 120, T=5: 5 -> 126,
            T=6: 4 -> 126, T=7: 3 -> 84, T=8: 3 -> 120).
        eliminate_duplicates: as for :class:`NSGA2Solver`.
        polish, tolerance: as for :class:`NSGA2Solver`.

    Parents are drawn uniformly at random: the surrogate problem has no constraints, so this
    is what NSGA-III's feasibility tournament amounts to, without its Python loop. With a
    single task (reference directions need two objectives) it runs pymoo's single-objective
    ``GA`` instead and returns the one best point found.
    """

    name: ClassVar[str] = "nsga3"

    def __init__(
        self,
        pop_size: int | None = None,
        n_gen: int = 40,
        n_partitions: int | None = None,
        eliminate_duplicates: bool = False,
        polish: bool = True,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        super().__init__(pop_size=pop_size, n_gen=n_gen, eliminate_duplicates=eliminate_duplicates,
                         polish=polish, tolerance=tolerance)
        self.n_partitions = (
            None if n_partitions is None else int_setting(n_partitions, "n_partitions", 1)
        )

    def _algorithm(self, n_obj: int) -> Any:
        from pymoo.algorithms.moo.nsga3 import NSGA3
        from pymoo.operators.selection.rnd import RandomSelection
        from pymoo.util.ref_dirs import get_reference_directions

        partitions = self.n_partitions or default_partitions(n_obj)
        ref_dirs = get_reference_directions("das-dennis", n_obj, n_partitions=partitions)
        return NSGA3(
            ref_dirs=ref_dirs,
            pop_size=self.pop_size or len(ref_dirs),
            # The surrogate problem has no constraints, so NSGA-III's default tournament
            # (feasibility first, then a coin flip, in a Python loop) is random selection.
            selection=RandomSelection(),
            eliminate_duplicates=self.eliminate_duplicates,
        )


class GridSolver(_BoxSolver):
    """Dense sampling of the box followed by non-dominated filtering.

    For ``N <= 3`` coefficients a regular grid with ``points_per_dim`` points per axis
    (default: 2001 for N=1, 201 for N=2, 41 for N=3), which includes the box's corners; for
    larger ``N`` the first ``n_samples`` points of a scrambled Sobol sequence (seeded with the
    ``seed`` given to :meth:`solve`). Exact up to the grid spacing (exact after the polish)
    and fast for small ``N``; the ground truth to compare the genetic solvers against. The
    number of points does not grow with the generations of a GA, so for large ``N`` coverage
    is coarse.

    The non-dominated set of a fine grid can hold thousands of points (a 3-task front is a
    surface); ``max_points`` thins it to that many points spread over the front (each task's
    best, then farthest-point sampling in normalised objective space), like the ~100 points a
    genetic solver returns. Returning every grid point would make a front look better when
    scored on noisy held-out data simply because more distinct merges get a chance.

    Args:
        points_per_dim: grid points per axis for ``N <= 3``; ``None`` picks the default above.
        n_samples: Sobol points for ``N > 3`` (default 16384 = 2**14; a power of two keeps the
            Sobol sequence balanced).
        max_points: most points returned (``None``: the whole non-dominated set; the polish
            then checks every one of them, which costs about 0.3 ms per point at N = 3).
        polish, tolerance: as for :class:`NSGA2Solver` (the polish runs after the thinning).
    """

    name: ClassVar[str] = "grid"
    default_points_per_dim: ClassVar[dict[int, int]] = {1: 2001, 2: 201, 3: 41}

    def __init__(
        self,
        points_per_dim: int | None = None,
        n_samples: int = 16384,
        max_points: int | None = 100,
        polish: bool = True,
        tolerance: float = DEFAULT_TOLERANCE,
    ) -> None:
        self.points_per_dim = (
            None if points_per_dim is None else int_setting(points_per_dim, "points_per_dim", 2)
        )
        self.n_samples = int_setting(n_samples, "n_samples", 1)
        self.max_points = None if max_points is None else int_setting(max_points,
                                                                       "max_points", 1)
        self._set_polish(polish, tolerance)

    def candidates(self, space: SearchSpace, seed: int | None = None) -> np.ndarray:
        """The points of the box this solver evaluates, shape (M, N)."""
        n = space.n_dims
        if n > 3:
            return _sobol_box(space, self.n_samples, seed)
        k = self.points_per_dim or self.default_points_per_dim[n]
        axes = [np.linspace(0.0, 1.0, k)] * n
        return space.scale(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, n))

    def _solve(
        self, predict: Predict, space: SearchSpace, directions: list[str], seed: int | None
    ) -> SolverResult:
        """Evaluate the grid (or Sobol sample) in batches and return its non-dominated set."""
        X = self.candidates(space, seed)
        F = _predict_batched(predict, X, len(directions))
        keep = np.flatnonzero(pareto_mask(F, directions))
        if self.max_points is not None and keep.size > self.max_points:
            keep = keep[spread_subset(F[keep], self.max_points, directions)]
        return _finish(predict, X[keep], space, directions, len(X))


class AutoFrontSolver(_BoxSolver):
    """The default solver (``"auto"``): the dense grid for ``N <= max_grid_dims`` coefficients
    (exact on the surrogate up to the grid spacing, and the fastest there), NSGA-III beyond.

    On the built-in example the grid's front, thinned to ``max_points``, scored a higher
    test-split hypervolume than NSGA-III's at N = 2 (see docs/benchmarks.md); at N = 3 the
    41**3-point grid costs about a second, so NSGA-III takes over from N = 3 by default.
    ``polish`` and ``tolerance`` apply to either (see :class:`NSGA2Solver`).

    ``select`` says how the returned points are chosen. ``"solver"``: the algorithm's own
    (the grid's spread thinning, NSGA-III's population, one per reference direction).
    ``"hypervolume"``: as many points, chosen by greedy hypervolume gain on the
    surrogates among the algorithm's points and the non-dominated points of ``pool``
    scrambled Sobol' points of the box (at most ``max_candidates`` of those), then
    polished. The front then holds the points that together cover most of the predicted
    objective space, as a dense search thinned by hypervolume would. It costs 2.3-2.9 times
    the default solve from N = 3 (the pool's predictions and the sampled greedy subset,
    :func:`mapframe.hypervolume.sampled_hypervolume_subset`; docs/benchmarks.md, "Surrogate
    fit + front solve time"). See docs/adaptive-sampling.md for what it changes on the
    peers benchmark's tasks.
    """

    name: ClassVar[str] = "auto"

    def __init__(self, max_grid_dims: int = 2, max_points: int = 100, n_gen: int = 40,
                 polish: bool = True, tolerance: float = DEFAULT_TOLERANCE,
                 select: str = "auto", pool: int = SELECT_POOL,
                 max_candidates: int = SELECT_MAX_CANDIDATES) -> None:
        self.max_grid_dims = int_setting(max_grid_dims, "max_grid_dims", 0)
        self.max_points = int_setting(max_points, "max_points", 1)
        self.n_gen = int_setting(n_gen, "n_gen", 1)
        self._set_polish(polish, tolerance)
        self.select = _select_setting(select)
        self.pool = int_setting(pool, "pool", 2)
        self.max_candidates = int_setting(max_candidates, "max_candidates", 1)
        if self.select == "solver" and self._pool_set():
            raise ConfigError("front solver: pool and max_candidates apply only when the "
                              "points are chosen by hypervolume; drop them or set select: "
                              "hypervolume (or auto)")
        self._pool_warned = False

    def _pool_set(self) -> bool:
        return self.pool != SELECT_POOL or self.max_candidates != SELECT_MAX_CANDIDATES

    def selection(self, n_obj: int) -> str:
        """As :meth:`_BoxSolver.selection`; with ``select: auto`` where that resolves to
        ``solver``, a ``pool`` or ``max_candidates`` of the user's is said to go unused."""
        chosen = super().selection(n_obj)
        if chosen == "solver" and self._pool_set() and not self._pool_warned:
            self._pool_warned = True
            warnings.warn(MapframeWarning(
                f"front solver: select: auto chooses the solver's own points at {n_obj} "
                f"task(s) (hypervolume selection at "
                f"{' and '.join(map(str, SELECT_AUTO_OBJECTIVES))}), so pool and "
                f"max_candidates go unused; set select: hypervolume to use them"),
                stacklevel=2)
        return chosen

    def choose(self, space: SearchSpace) -> _BoxSolver:
        """The solver used for ``space``."""
        if space.n_dims <= self.max_grid_dims:
            return GridSolver(max_points=self.max_points, polish=self.polish,
                              tolerance=self.tolerance)
        return NSGA3Solver(n_gen=self.n_gen, polish=self.polish, tolerance=self.tolerance)

    def _solve(
        self, predict: Predict, space: SearchSpace, directions: list[str], seed: int | None
    ) -> SolverResult:
        """Solve with :meth:`choose` (space); :meth:`solve` polishes the result."""
        return self.choose(space)._solve(predict, space, directions, seed)
