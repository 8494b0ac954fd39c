"""Non-adaptive samplers that spread the whole design over the search box in one call.

All four draw only from the ``rng`` handed to :meth:`~mapframe.samplers.base.Sampler.propose`
(never from global state), so the same seed gives the same design, and all return points of
the unit cube mapped into the box with :meth:`~mapframe.problem.SearchSpace.scale`.

- ``random`` (:class:`RandomSampler`): i.i.d. uniform points; prefix property¹.
- ``sobol`` (:class:`SobolSampler`): a scrambled Sobol' sequence; prefix property¹.
- ``lhs`` (:class:`LatinHypercubeSampler`): one point per stratum in every dimension.
- ``grid`` (:class:`GridSampler`): a regular grid with at least 3 levels per dimension;
  deterministic.

¹ With the same seed, proposing ``n`` and then ``n' > n`` points gives the same first ``n``.

The adaptive samplers' initial designs come from here too: :func:`fresh_design` (a Sobol'
prefix or one optimised Latin hypercube, without the points already evaluated).

A quadratic surrogate needs at least three distinct values per coordinate (with only two,
``c_j² `` is a linear function of ``c_j`` on the design); random, Sobol' and LHS designs have
``n`` distinct values per coordinate, and the grid sampler never uses fewer than three levels.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np

from mapframe._warning_filters import warning_filters
from mapframe.errors import ConfigError
from mapframe.history import History, coefficient_key
from mapframe.problem import SearchSpace
from mapframe.samplers.base import CheckedSampler, check_n
from mapframe.settings import bool_setting

if TYPE_CHECKING:
    from scipy.stats import qmc

__all__ = ["GridSampler", "LatinHypercubeSampler", "RandomSampler", "SobolSampler"]

#: The fewest grid levels per dimension that identify a quadratic.
MIN_GRID_LEVELS = 3


def _qmc_rng(engine: type[qmc.QMCEngine], rng: np.random.Generator) -> dict[str, Any]:
    """The keyword handing ``rng`` to a scipy QMC engine (``rng`` since 1.15, ``seed`` before)."""
    params = inspect.signature(engine.__init__).parameters
    return {"rng": rng} if "rng" in params else {"seed": rng}


def sobol_unit(n: int, n_dims: int, rng: np.random.Generator, scramble: bool = True
               ) -> np.ndarray:
    """The first ``n`` points of a Sobol' sequence in ``[0, 1]^n_dims``, scrambled with ``rng``.

    scipy's warning that ``n`` is not a power of two is silenced on purpose (MAP budgets such
    as 30 are normal; the points are still well spread).
    """
    from scipy.stats import qmc  # scipy.stats costs ~1 s to import: only when needed

    engine = qmc.Sobol(d=n_dims, scramble=scramble, **_qmc_rng(qmc.Sobol, rng))
    with warning_filters() as filters:
        filters.ignore(message="The balance properties of Sobol", category=UserWarning)
        return engine.random(n)


def fresh_sobol(n: int, space: SearchSpace, history: History, rng: np.random.Generator
                ) -> np.ndarray:
    """The first ``n`` points of a Sobol' sequence scrambled with ``rng``, in the box, that are
    not already search evaluations of ``history``: the initial design of adaptive samplers (the
    same ``rng`` gives the same design, so a resumed study re-proposes and reuses it)."""
    done = _search_keys(history)
    return _first_not_done(sobol_unit(n + len(done), space.n_dims, rng), n, space, done)


def _search_keys(history: History) -> set[str]:
    """The keys of ``history``'s search evaluations."""
    return {e.key for e in history if e.phase == "search"}


def _first_not_done(U: np.ndarray, n: int, space: SearchSpace, done: set[str]) -> np.ndarray:
    """The first ``n`` rows of the unit-cube points ``U``, mapped into the box, whose keys are
    not in ``done`` (fewer when ``U`` runs out)."""
    X = np.clip(space.scale(U), space.lower, space.upper)
    keep = [i for i, x in enumerate(X) if coefficient_key(x) not in done]
    return X[keep[:n]].reshape(-1, space.n_dims)


#: Initial designs an adaptive sampler can start with (its ``design`` setting).
DESIGNS = ("sobol", "lhs")


def check_design(design: object, who: str) -> str:
    """Validate an adaptive sampler's ``design`` setting (one of :data:`DESIGNS`)."""
    if design not in DESIGNS:
        raise ConfigError(f"{who}: design must be one of {', '.join(DESIGNS)} (the initial "
                          f"space-filling design), got {design!r}")
    return str(design)


def lhs_unit(n: int, n_dims: int, rng: np.random.Generator,
             optimization: Literal["random-cd"] | None = "random-cd") -> np.ndarray:
    """A Latin hypercube of ``n`` points in ``[0, 1]^n_dims`` drawn from ``rng``; with
    ``optimization="random-cd"`` its strata are permuted to lower the centered discrepancy
    (scipy's option; the Latin property is kept)."""
    from scipy.stats import qmc

    engine = qmc.LatinHypercube(d=n_dims, optimization=optimization,
                                **_qmc_rng(qmc.LatinHypercube, rng))
    return engine.random(n)


def fresh_design(design: str, n: int, size: int, space: SearchSpace, history: History,
                 rng: np.random.Generator) -> np.ndarray:
    """The next ``n`` points of an adaptive sampler's initial design of ``size`` points that
    are not already search evaluations of ``history`` (the same ``rng`` gives the same design,
    so a resumed study re-proposes and reuses it).

    ``"sobol"``: :func:`fresh_sobol` (``size`` plays no part: the sequence has the prefix
    property). ``"lhs"``: one Latin hypercube of ``size`` points (:func:`lhs_unit`), its
    points not yet evaluated in order; when fewer than ``n`` are left (a failed evaluation
    leaves the design short of successful points), fresh Sobol' points fill the rest.
    """
    if design == "sobol":
        return fresh_sobol(n, space, history, rng)
    X = _first_not_done(lhs_unit(max(int(size), 1), space.n_dims, rng), n, space,
                        _search_keys(history))
    if X.shape[0] < n:
        X = np.vstack([X, fresh_sobol(n - X.shape[0], space, history, rng)])
    return X


class RandomSampler(CheckedSampler):
    """Independent uniform points in the box (``name = "random"``).

    Rows are drawn one after another from ``rng``, so a longer design with the same seed
    starts with the shorter one.
    """

    name: ClassVar[str] = "random"

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return ``n`` uniform points inside ``space``."""
        return space.scale(rng.random((n, space.n_dims)))


class SobolSampler(CheckedSampler):
    """A scrambled Sobol' sequence (``name = "sobol"``): low discrepancy, any ``n``.

    The scrambling is drawn from ``rng`` when the engine is built and does not depend on
    ``n``; the points are then the first ``n`` of that one sequence (``Sobol.random(n)``), so
    the same seed proposing ``n`` and then ``n' > n`` points shares the first ``n`` (the
    *prefix property*). Sobol' points are best balanced when ``n`` is a power of two; other
    ``n`` are still well spread, and scipy's warning about that is silenced here on purpose
    (budgets such as 30 or 250 are normal for MAP).
    """

    name: ClassVar[str] = "sobol"

    def __init__(self, scramble: bool = True) -> None:
        self.scramble = bool_setting(scramble, "scramble", who="sampler 'sobol'")

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return the first ``n`` points of a Sobol' sequence scrambled with ``rng``."""
        return space.scale(sobol_unit(n, space.n_dims, rng, self.scramble))


class LatinHypercubeSampler(CheckedSampler):
    """A Latin hypercube (``name = "lhs"``): each of the ``n`` equal strata of every
    coordinate holds exactly one point.

    ``optimization="random-cd"`` permutes the strata to lower the centered discrepancy (the
    Latin property is kept); it costs a little time and also draws only from ``rng``.
    Designs of different sizes do not share points.
    """

    name: ClassVar[str] = "lhs"

    def __init__(self, optimization: Literal["random-cd"] | None = None) -> None:
        if optimization not in (None, "random-cd"):
            raise ConfigError(
                f"lhs optimization must be 'random-cd' or None, got {optimization!r}"
            )
        self.optimization = optimization

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return a Latin hypercube of ``n`` points inside ``space``."""
        return space.scale(lhs_unit(n, space.n_dims, rng, self.optimization))


class GridSampler(CheckedSampler):
    """A regular grid of ``k`` evenly spaced levels per dimension (``name = "grid"``).

    ``k`` is ``points_per_dim``, raised where needed so that ``k ** N >= n``; with
    ``points_per_dim=None`` it is the smallest ``k >= 3`` with ``k ** N >= n``. Fewer than three
    levels would leave the quadratic unidentifiable, so ``points_per_dim < 3`` is rejected.

    When ``k ** N == n`` the full grid is returned in lexicographic order (first coordinate
    slowest). When ``k ** N > n`` an evenly spread subset is taken, deterministically: the
    unit cube is cut into the ``k ** N`` equal cells around the grid points (level ``i`` owns
    ``[i / k, (i + 1) / k)`` of each coordinate), the unscrambled Halton sequence is walked
    from its start, and the first ``n`` distinct cells it visits are kept (in lexicographic
    order). A low-discrepancy sequence visits equal cells at nearly equal rates, so every
    level of every coordinate is used about ``n / k`` times. The grid never uses ``rng``.
    """

    name: ClassVar[str] = "grid"
    deterministic: ClassVar[bool] = True

    def __init__(self, points_per_dim: int | None = None) -> None:
        if points_per_dim is not None:
            if isinstance(points_per_dim, bool) or not isinstance(
                points_per_dim, (int, np.integer)
            ):
                raise ConfigError(
                    f"grid points_per_dim must be an integer or None, got {points_per_dim!r}"
                )
            if points_per_dim < MIN_GRID_LEVELS:
                raise ConfigError(
                    f"grid points_per_dim must be at least {MIN_GRID_LEVELS} (with fewer levels "
                    f"a quadratic surrogate is not identifiable), got {points_per_dim}"
                )
            points_per_dim = int(points_per_dim)
        self.points_per_dim = points_per_dim

    def levels(self, n: int, n_dims: int) -> int:
        """The number of levels per dimension used for ``n`` points in ``n_dims`` dimensions."""
        n = check_n(n)
        k = max(self.points_per_dim or MIN_GRID_LEVELS, MIN_GRID_LEVELS)
        if k**n_dims < n:
            k = max(k, int(np.floor(n ** (1.0 / n_dims))))
            while k**n_dims < n:
                k += 1
        return k

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return ``n`` grid points inside ``space`` (the full grid when it has ``n`` points)."""
        d = space.n_dims
        k = self.levels(n, d)
        if k**d == n:
            axes = np.meshgrid(*([np.arange(k)] * d), indexing="ij")
            cells = np.stack([a.reshape(-1) for a in axes], axis=1)
        else:
            cells = _spread_cells(n, d, k)
        return space.scale(cells / (k - 1))


def _spread_cells(n: int, d: int, k: int) -> np.ndarray:
    """The first ``n`` distinct cells of the ``k ** d`` grid visited by the Halton sequence."""
    from scipy.stats import qmc

    engine = qmc.Halton(d=d, scramble=False)
    seen: set[bytes] = set()
    picked: list[np.ndarray] = []

    def pick(rows: Iterable[np.ndarray]) -> None:
        """Append the rows of ``rows`` not seen before to ``picked``, until it holds ``n``."""
        for row in rows:
            key = row.tobytes()
            if key not in seen:
                seen.add(key)
                picked.append(row)
                if len(picked) == n:
                    return

    chunk = max(2 * n, 1024)
    drawn = 0
    # Low discrepancy makes this quick; the cap only guards against a pathological walk, after
    # which the rest is filled from the unused cells in lexicographic order.
    cap = 64 * k**d
    while len(picked) < n and drawn < cap:
        cells = np.minimum(np.floor(engine.random(chunk) * k), k - 1).astype(np.int64)
        drawn += chunk
        pick(cells)
    if len(picked) < n:
        pick(np.array(np.unravel_index(flat, (k,) * d), dtype=np.int64) for flat in range(k**d))
    out = np.array(picked, dtype=np.int64)
    return out[np.lexsort(out.T[::-1])]
