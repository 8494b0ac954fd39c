"""The :class:`FrontSolver` component: a multi-objective solver run on the surrogates."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.problem import SearchSpace, Task

__all__ = ["FrontSolver", "SolverResult"]


@dataclass(frozen=True)
class SolverResult:
    """Non-dominated coefficient vectors ``X`` (K, N) and their predicted metrics ``F`` (K, T).

    ``n_evaluations`` counts the ``predict`` rows the solver used. ``diagnostics`` holds what
    a solver reports about its run; the built-in solvers' Pareto polish adds ``polished``,
    ``tolerance``, ``n_candidates``, ``dominated_share_before``, ``n_polished``,
    ``max_gain_before`` and ``polish_evaluations`` (see :func:`mapframe.solvers.polish_front`).
    """

    X: np.ndarray
    F: np.ndarray
    n_evaluations: int = 0
    diagnostics: dict[str, Any] = field(default_factory=dict)


class FrontSolver(Component):
    """Finds the Pareto set of the surrogate problem ``max/min_c (m_1(c), ..., m_T(c))``.

    Call order: after the surrogates are fitted, the study calls :meth:`solve` once (a
    sampler or a later round may call it again on other surrogates; keep no state between
    calls)::

        result = solver.solve(predict, space, tasks, seed)

    ``predict`` maps an ``(M, N)`` array of coefficient vectors to an ``(M, T)`` array of
    predicted metrics in their natural units and directions (``tasks[j].direction`` says
    whether column ``j`` is maximised or minimised). Solvers must respect those directions
    and the box ``space``, and return only mutually non-dominated points. ``predict`` is cheap
    and vectorised: call it on whole populations, never point by point.
    """

    kind: ClassVar[str] = "front_solver"

    @abstractmethod
    def solve(
        self,
        predict: Callable[[np.ndarray], np.ndarray],
        space: SearchSpace,
        tasks: Sequence[Task],
        seed: int | None = None,
    ) -> SolverResult:
        """Return the non-dominated set found on the surrogate problem."""
