"""The stopping kind: :class:`StoppingRule` and the :class:`RoundState` it sees after a round.

Rules must be a function of the rounds they have seen (no wall clock, no global random
state): a resumed study replays the same rounds from the store and must stop at the same one.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.history import History
from mapframe.problem import SearchSpace, Task

__all__ = ["RoundState", "StoppingRule"]


@dataclass(frozen=True)
class RoundState:
    """What a stopping rule sees after a round.

    ``surrogates`` are fitted (one per task, in task order) on every successful search
    evaluation so far; ``diagnostics`` are their :meth:`~mapframe.surrogates.Surrogate.
    diagnostics`. ``n_evaluated`` counts search evaluations, failed ones included (what the
    budget counts).
    """

    round: int
    n_evaluated: int
    budget: int
    history: History
    surrogates: Sequence[Any]
    diagnostics: dict[str, dict[str, Any]]
    tasks: tuple[Task, ...]
    space: SearchSpace
    n_params: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def predict(self, C: np.ndarray) -> np.ndarray:
        """Surrogate predictions ``(M, T)`` at coefficient vectors ``(M, N)``."""
        C = np.atleast_2d(C)
        return np.column_stack([s.predict(C) for s in self.surrogates])


class StoppingRule(Component):
    """Decides, after each adaptive round, whether the study should stop before its budget.

    Call order, as :class:`~mapframe.study.MergeStudy` drives it::

        rule.reset()                       # at the start of every run
        after each round of an adaptive sampler, while budget remains:
            reason = rule.update(state)    # a RoundState; surrogates fitted on all data
            if reason: stop sampling, record the reason, fit/solve/verify as usual
        rule.trace()                       # per-round records, kept in the result

    Rounds in which the surrogates cannot be fitted yet (fewer successful evaluations than
    they have parameters) are not passed to the rule.
    """

    kind: ClassVar[str] = "stopping"

    @abstractmethod
    def reset(self) -> None:
        """Forget earlier rounds (a study may be run more than once)."""

    @abstractmethod
    def update(self, state: RoundState) -> str | None:
        """Take one round into account; return why the study should stop, or ``None``."""

    def trace(self) -> list[dict[str, Any]]:
        """Per-round values the rule looked at (JSON-compatible), for the study summary."""
        return []
