"""The :class:`Sampler` component: which coefficient vectors to evaluate."""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.history import History
from mapframe.problem import SearchSpace

__all__ = ["Sampler"]


class Sampler(Component):
    """Proposes the coefficient vectors a study evaluates.

    Call order, as :class:`~mapframe.study.MergeStudy` drives it::

        remaining = budget - len(history)
        while remaining > 0:
            n = sampler.batch_size(remaining, history, capacity)  # how many to ask for now
            X = sampler.propose(n, space, history, rng)     # (n, N) points inside the box
            ... evaluate X (possibly elsewhere, possibly out of order), store, refit ...
            # history grows with every stored evaluation

    A non-adaptive sampler (``adaptive = False``) proposes the whole design in one call: its
    :meth:`batch_size` returns ``remaining``. An adaptive sampler proposes in rounds and may use
    everything in ``history`` (coefficients and metrics evaluated so far, in any order).

    ``rng`` is derived from the study seed and the round number, so that a sampler which draws
    only from ``rng`` (never from global state) is reproducible, and a resumed study proposes
    the same points again: those already in the store are then not re-evaluated.
    Proposals must lie inside ``space``; duplicates of evaluated points are allowed but waste
    budget.
    """

    kind: ClassVar[str] = "sampler"
    #: Proposes in rounds using the history (True) or the whole design at once (False).
    adaptive: ClassVar[bool] = False
    #: The design does not depend on the random generator (a regular grid, say).
    deterministic: ClassVar[bool] = False

    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        """How many points to propose in the next round (default: all remaining at once).

        ``capacity`` is how many evaluations the executor runs at once; an adaptive sampler
        proposes at least that many per round when it can, so no worker idles.
        """
        return remaining

    @abstractmethod
    def propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return an ``(n, space.n_dims)`` array of coefficient vectors inside ``space``."""
