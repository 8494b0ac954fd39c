"""The round structure shared by the ``front`` and ``botorch`` samplers: a space-filling start,
then rounds whose batch an acquisition chooses from everything measured.

:class:`RoundsSampler` owns the start (its size, ``initial``), the batch size and the fallback
(fresh Sobol' points when a round chooses fewer points than asked); a subclass implements
only :meth:`RoundsSampler.round_picks`.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Literal

import numpy as np

from mapframe.history import History
from mapframe.problem import SearchSpace
from mapframe.samplers.base import CheckedSampler, SamplerContext
from mapframe.samplers.space_filling import check_design, fresh_design, fresh_sobol
from mapframe.settings import int_setting
from mapframe.surrogates.quadratic import _one_blas_thread

__all__ = ["TOO_CLOSE", "RoundsSampler", "failed_coefficients", "far_from_measured"]

#: Candidates closer than this (max-norm, unit cube) to an evaluated point are not proposed.
TOO_CLOSE = 1e-3


def far_from_measured(C: np.ndarray, X: np.ndarray, space: SearchSpace) -> np.ndarray:
    """The rows of ``C`` at least :data:`TOO_CLOSE` (max-norm, unit cube) from every row of
    ``X``."""
    C = np.asarray(C, dtype=float).reshape(-1, space.n_dims)
    if C.shape[0] == 0 or X.shape[0] == 0:
        return C
    width = space.upper - space.lower
    gap = np.abs((C[:, None, :] - X[None, :, :]) / width).max(axis=2).min(axis=1)
    return C[gap >= TOO_CLOSE]


def failed_coefficients(history: History) -> np.ndarray:
    """The coefficients of ``history``'s search evaluations that failed or gave invalid
    metrics (not in ``history.X``): ``(F, n_dims)``."""
    rows = [e.coefficients for e in history if e.phase == "search" and not e.ok]
    return np.array(rows, dtype=float).reshape(len(rows), history.n_dims)


def _small_budget(n_dims: int, budget: int) -> bool:
    """A known search budget below ``3 (N + 1)``: the full start of ``2 (N + 1)`` points
    would leave fewer than ``N + 1`` adaptive evaluations, so ``"auto"`` shrinks the start to
    ``N + 2`` and the rounds to 1 point."""
    return 0 < budget < 3 * (n_dims + 1)


class RoundsSampler(CheckedSampler):
    """An adaptive sampler that starts with a space-filling design and then proposes rounds
    of ``batch`` points chosen by :meth:`round_picks`: the base of the ``front`` and
    ``botorch`` samplers, and the quickest way to try another acquisition (implement
    :meth:`round_picks`, call ``self._set_rounds(initial, batch, design)`` in ``__init__``).

    The start is a space-filling design drawn from ``rng`` (the same ``rng`` gives the same
    design, so a resumed study re-proposes, and reuses, the same points): ``design``
    ``"sobol"``, the first points of one scrambled Sobol' sequence, or ``"lhs"``, one
    optimised Latin hypercube of the start's size
    (:func:`~mapframe.samplers.space_filling.fresh_design`); its size is ``initial``,
    ``"auto"`` resolved by :meth:`initial_size`. A round
    proposes ``max(batch, capacity)`` points, never more than remain (``batch: "auto"``
    resolved by :meth:`round_size`), from
    ``history.canonical()`` (so the order of the history does not matter); when
    :meth:`round_picks` returns fewer, fresh Sobol' points fill the batch.
    """

    #: How setting errors name the sampler.
    who: str = "sampler"

    def _set_rounds(self, initial: int | Literal["auto"], batch: int | Literal["auto"],
                    design: str = "sobol") -> None:
        self.initial = int_setting(initial, "initial", 2, who=self.who, auto=True)
        self.batch = int_setting(batch, "batch", 1, who=self.who, auto=True)
        self.design = check_design(design, self.who)

    def round_size(self, n_dims: int, budget: int = 0) -> int:
        """The points per adaptive round for ``n_dims`` coefficients and a search budget of
        ``budget`` (``0``: unknown): ``batch``, or for ``"auto"`` 1 when ``budget`` is below
        ``3 (N + 1)`` (the budgets that start with ``N + 2`` points, leaving a handful of
        adaptive evaluations: a refit after each), else 3."""
        if self.batch != "auto":
            return int(self.batch)
        return 1 if _small_budget(n_dims, budget) else 3

    def initial_size(self, n_dims: int, budget: int = 0) -> int:
        """The size of the initial space-filling design for ``n_dims`` coefficients and a
        search budget of ``budget`` evaluations (``0``: unknown, the full ``2 (N + 1)``):
        ``initial``, or for ``"auto"`` ``2 (N + 1)`` (BoTorch's tutorial start), ``N + 2``
        when ``budget`` is below ``3 (N + 1)`` (the full start would leave fewer than
        ``N + 1`` adaptive evaluations)."""
        if self.initial != "auto":
            return int(self.initial)
        return n_dims + 2 if _small_budget(n_dims, budget) else 2 * (n_dims + 1)

    def _budget(self, history: History) -> int:
        """The study's search budget as :meth:`setup` gave it (0 when not set up)."""
        ctx = self._context
        return ctx.budget if ctx is not None and ctx.space.n_dims == history.n_dims else 0

    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        """The rest of the initial design while it is incomplete, then ``max(batch,
        capacity)`` (``batch`` as :meth:`round_size` resolves it); never more than
        ``remaining`` (and at least 1)."""
        done = history.X.shape[0]
        budget = self._budget(history)
        initial = self.initial_size(history.n_dims, budget)
        n = (initial - done if done < initial
             else max(self.round_size(history.n_dims, budget), int(capacity)))
        return max(1, min(n, int(remaining)))

    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return ``n`` points: the initial design's, or the round's picks."""
        X, Y = history.canonical()
        initial = self.initial_size(space.n_dims, self._budget(history))
        if X.shape[0] < max(2, initial):
            return fresh_design(self.design, n, initial, space, history, rng)
        context = self.context_for(space, history)
        self._failed = failed_coefficients(history)
        with _one_blas_thread():
            picks = self.round_picks(n, space, context, X, Y, rng)
        # A point that failed (or gave invalid metrics) is not in X: never propose it again
        # (a deterministic acquisition would, and the round would add nothing).
        picks = far_from_measured(picks, self._failed, space)
        if picks.shape[0] < n:
            extra = fresh_sobol(n - picks.shape[0], space, history, rng)
            picks = np.vstack([picks, extra]) if picks.size else extra
        return picks

    def far_from_evaluated(self, C: np.ndarray, X: np.ndarray, space: SearchSpace
                           ) -> np.ndarray:
        """The rows of ``C`` far (:func:`far_from_measured`) from every measured point ``X``
        and from every point of this round's history that failed or gave invalid metrics."""
        failed = getattr(self, "_failed", None)
        if failed is not None and failed.shape[0]:
            X = np.vstack([np.asarray(X, dtype=float).reshape(-1, space.n_dims), failed])
        return far_from_measured(C, X, space)

    @abstractmethod
    def round_picks(
        self,
        n: int,
        space: SearchSpace,
        context: SamplerContext,
        X: np.ndarray,
        Y: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """At most ``n`` points of ``space`` to measure next, none within :data:`TOO_CLOSE`
        of a row of ``X`` (canonical order; ``Y`` their metrics in the tasks' units and
        directions, ``context.tasks``) or of a point that failed
        (:meth:`far_from_evaluated` filters candidates by both; a pick near a failed point
        is dropped after the call anyway); fewer are topped up with fresh Sobol' points."""
