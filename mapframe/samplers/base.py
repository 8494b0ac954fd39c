"""The :class:`Sampler` component: which coefficient vectors to evaluate."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.component import Component
from mapframe.errors import ConfigError
from mapframe.history import History
from mapframe.problem import SearchSpace, Task

if TYPE_CHECKING:
    from mapframe.surrogates.base import Surrogate

__all__ = ["Sampler", "SamplerContext"]


def check_n(n: int) -> int:
    """The number of points to propose as an int; :class:`ConfigError` unless an int >= 0."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"the number of points to propose must be an integer >= 0, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class SamplerContext:
    """What a study tells its sampler before the first round (see :meth:`Sampler.setup`).

    ``surrogate`` is the study's *prototype* surrogate (unfitted): an adaptive sampler that
    wants to know where the surrogate is wrong fits its own ``copy.deepcopy`` of it.
    ``capacity`` is how many evaluations the executor runs at once.
    """

    space: SearchSpace
    tasks: tuple[Task, ...]
    surrogate: Surrogate | None = None
    budget: int = 0
    seed: int = 0
    capacity: int = 1
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        return [t.direction for t in self.tasks]


class Sampler(Component):
    """Proposes the coefficient vectors a study evaluates.

    Call order, as :class:`~mapframe.study.MergeStudy` drives it::

        sampler.setup(context)                              # once per run: tasks, box, ...
        remaining = budget - len(history)
        while remaining > 0 and not stopped:
            n = sampler.batch_size(remaining, history, capacity)  # how many to ask for now
            X = sampler.propose(n, space, history, rng)     # (n, N) points inside the box
            ... evaluate X (possibly elsewhere, possibly out of order), store, refit ...
            # history grows with every stored evaluation

    A non-adaptive sampler (``adaptive = False``) proposes the whole design in one call: its
    :meth:`batch_size` returns ``remaining``. An adaptive sampler proposes in rounds and may use
    everything in ``history`` (coefficients and metrics evaluated so far, in any order); it
    should read it through :meth:`History.canonical`, so that the order in which evaluations
    finished (which differs between a live and a resumed run) cannot change its proposals.

    ``rng`` is derived from the study seed and the round number, so that a sampler which draws
    only from ``rng`` (never from global state) is reproducible, and a resumed study proposes
    the same points again: those already in the store are then not re-evaluated. An adaptive
    sampler must therefore be a function of ``(history, rng)`` and its settings only; state
    kept between rounds would be lost on resume.
    Proposals must lie inside ``space``; duplicates of evaluated points are allowed but waste
    budget.
    """

    kind: ClassVar[str] = "sampler"
    #: Proposes in rounds using the history (True) or the whole design at once (False).
    adaptive: ClassVar[bool] = False
    #: The design does not depend on the random generator (a regular grid, say).
    deterministic: ClassVar[bool] = False

    _context: SamplerContext | None = None

    def setup(self, context: SamplerContext) -> None:
        """Receive the study's tasks, box, surrogate prototype, budget, seed and capacity.

        Called once per :meth:`~mapframe.study.MergeStudy.run`, before the first
        :meth:`batch_size`. The default keeps ``context`` for :meth:`context_for`.
        """
        self._context = context

    def context_for(self, space: SearchSpace, history: History) -> SamplerContext:
        """The context given to :meth:`setup`; without one (``propose`` called directly), a
        default: every task maximised with an unknown range, the ``auto`` surrogate."""
        ctx = self._context
        if ctx is not None and ctx.space.n_dims == space.n_dims and (
            len(ctx.tasks) == history.n_tasks
        ):
            return ctx
        from mapframe.surrogates.base import default_surrogate

        tasks = tuple(Task(f"task{j}") for j in range(history.n_tasks))
        return SamplerContext(space=space, tasks=tasks, surrogate=default_surrogate())

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


def warn_without_adaptive_round(who: str, initial: int, budget: int) -> None:
    """Warn (:class:`~mapframe.errors.MapframeWarning`) when an adaptive sampler's explicit
    initial design of ``initial`` points takes the whole search ``budget``: the study then
    runs only (part of) that design and never adapts, which the settings do not say."""
    if budget > 0 and initial >= budget:
        import warnings

        from mapframe.errors import MapframeWarning

        warnings.warn(
            f"{who}: its initial design of {initial} points takes the whole budget of "
            f"{budget} evaluations, so no adaptive round runs; set initial below the budget "
            "(or 'auto') or raise the budget", MapframeWarning, stacklevel=3)


class CheckedSampler(Sampler):
    """Base of the built-in samplers: :meth:`propose` checks ``n`` with :func:`check_n` and
    returns the empty design for ``n == 0`` itself, so subclasses implement :meth:`_propose`
    for ``n >= 1`` only; :meth:`setup` warns when an adaptive one's explicit ``initial``
    design takes the whole budget."""

    def setup(self, context: SamplerContext) -> None:
        super().setup(context)
        initial = getattr(self, "initial", "auto")
        if self.adaptive and initial != "auto":
            warn_without_adaptive_round(f"{self.name} sampler", int(initial), context.budget)

    def propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """Return an ``(n, space.n_dims)`` array of coefficient vectors inside ``space``."""
        n = check_n(n)
        if n == 0:
            return np.empty((0, space.n_dims))
        return self._propose(n, space, history, rng)

    @abstractmethod
    def _propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """The ``n >= 1`` points of :meth:`propose`."""
