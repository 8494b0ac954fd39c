"""``sampler: auto``: the sampler the head-to-head benchmark found best for a study's size.

The rule (measured in ``docs/benchmarks.md``, head-to-head section, 2026-12-02):

- gpytorch missing, or a budget that leaves no adaptive round of 3 points after the
  adaptive sampler's initial design: ``sobol`` (Plain MAP, one batch);
- N <= 2 coefficients: ``gp`` (expected hypervolume improvement; its exploration pays
  where the front is a curve), from ``budget >= 2 (N + 1) + 3``;
- N >= 3: ``front`` (measure the predicted front by hypervolume gain, refit, re-solve),
  from ``budget >= initial + 3`` with the front sampler's budget-aware initial design
  (``N + 2`` points below a budget of ``3 (N + 1)``, else ``2 (N + 1)``): 8 evaluations
  at N = 3, 13 at N = 8.
  On the peers benchmark's pilot seeds (100-105) it beat Plain MAP at the smallest budgets
  too (N = 3, B = 10: 0.682 against 0.650; N = 8, B = 20: 0.138 against 0.108; N = 4,
  B = 10: 0.354 against 0.351);
- N > 8 (:data:`MAX_ADAPTIVE_DIMS`, the most the benchmark measured): ``sobol``. The
  ``front`` sampler's rounds fit one GP per task and solve their front every round: at 12
  tasks a round of 3 points took 20-25 s of its own (an instant objective, 2 cores), tens of
  minutes for a budget of 200, with no measured gain to pay for it. Name ``front`` (or
  ``gp``) to run Bayesian MAP there anyway.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from mapframe._imports import installed
from mapframe.history import History
from mapframe.problem import SearchSpace
from mapframe.samplers.base import Sampler, SamplerContext

__all__ = ["AUTO", "MAX_ADAPTIVE_DIMS", "AutoSampler", "auto_adaptive_budget",
           "auto_sampler_name", "is_auto", "resolve_auto_sampler"]

#: The name that asks for the rule.
AUTO = "auto"
#: Points of one adaptive round beyond the initial design, for the rule's budget test.
_ONE_ROUND = 3
#: The most coefficients at which ``auto`` picks an adaptive sampler (the benchmark's
#: largest N); beyond, Plain MAP's ``sobol``.
MAX_ADAPTIVE_DIMS = 8


def _has_gpytorch() -> bool:
    return installed("gpytorch")


def auto_sampler_name(n_dims: int, budget: int) -> str:
    """The sampler ``auto`` stands for with ``n_dims`` coefficients and ``budget``."""
    if not _has_gpytorch() or n_dims > MAX_ADAPTIVE_DIMS:
        return "sobol"
    if n_dims <= 2:
        return "gp" if budget >= 2 * (n_dims + 1) + _ONE_ROUND else "sobol"
    from mapframe.samplers.front import FrontSampler

    initial = FrontSampler().initial_size(n_dims, budget)
    return "front" if budget >= initial + _ONE_ROUND else "sobol"


def auto_adaptive_budget(n_dims: int) -> int | None:
    """The smallest budget at which ``auto`` picks an adaptive sampler for ``n_dims``
    coefficients (``None`` without gpytorch, or beyond :data:`MAX_ADAPTIVE_DIMS`
    coefficients: never)."""
    if not _has_gpytorch() or n_dims > MAX_ADAPTIVE_DIMS:
        return None
    return next(b for b in range(1, 10_000) if auto_sampler_name(n_dims, b) != "sobol")


def is_auto(spec: Any) -> bool:
    """Whether a sampler spec asks for the rule (``"auto"``, ``{"name": "auto", ...}`` or an
    :class:`AutoSampler`)."""
    return (isinstance(spec, AutoSampler) or (isinstance(spec, str) and spec == AUTO)
            or (isinstance(spec, dict) and spec.get("name") == AUTO))


def resolve_auto_sampler(spec: Any, n_dims: int, budget: int) -> Any:
    """``spec`` with ``auto`` replaced by the rule's choice (anything else unchanged).

    ``{"name": "auto", ...}`` keeps its other settings for the chosen sampler (for example
    ``batch``, which every adaptive sampler has)."""
    if isinstance(spec, AutoSampler):
        return spec.chosen(n_dims, budget)
    if isinstance(spec, str) and spec == AUTO:
        return auto_sampler_name(n_dims, budget)
    if isinstance(spec, dict) and spec.get("name") == AUTO:
        settings = {k: v for k, v in spec.items() if k != "name"}
        return _with_settings(auto_sampler_name(n_dims, budget), settings)
    return spec


#: The samplers the rule picks from, whose settings ``{"name": "auto", ...}`` may carry.
_CANDIDATES = ("sobol", "gp", "front")


def _with_settings(name: str, settings: dict[str, Any]) -> dict[str, Any]:
    """The chosen sampler's spec with the settings given to ``auto``. Where the rule falls
    back to Plain MAP's ``sobol`` (no adaptive round fits the budget, or no gpytorch), the
    adaptive samplers' settings (``batch``, ``initial``, ...) have nothing to apply to and
    are left out, rather than failing with an error about a sampler the user never named;
    they are still checked, so that a typo or a bad value fails at every budget, not only
    where the rule picks an adaptive sampler."""
    if name == "sobol":
        import inspect

        from mapframe.errors import ConfigError
        from mapframe.plugin import get_registry

        registry = get_registry()
        takes = {c: set(inspect.signature(registry.get("sampler", c)).parameters)
                 for c in _CANDIDATES}
        unknown = [k for k in settings if not any(k in t for t in takes.values())]
        if unknown:
            known = sorted(set().union(*takes.values()))
            raise ConfigError(
                f"sampler 'auto' does not take parameter(s) {', '.join(unknown)}; the samplers "
                f"it picks from ({', '.join(_CANDIDATES)}) take: {', '.join(known)}")
        for key, value in settings.items():
            if key not in takes["sobol"]:
                _check_value(registry, key, value, [c for c in _CANDIDATES if key in takes[c]])
        settings = {k: v for k, v in settings.items() if k in takes["sobol"]}
    return {"name": name, **settings}


def _check_value(registry: Any, key: str, value: Any, candidates: list[str]) -> None:
    """Raise the first candidate's one-line error unless one of the ``candidates`` (the
    samplers taking ``key``) accepts ``value`` for it."""
    from mapframe.errors import ConfigError

    first: ConfigError | None = None
    for candidate in candidates:
        try:
            registry.create("sampler", {"name": candidate, key: value})
            return
        except ConfigError as exc:
            first = first or exc
    if first is not None:
        raise first


class AutoSampler(Sampler):
    """``sampler: auto``: the sampler :func:`auto_sampler_name` picks for the study's size.

    A study never runs this class itself: :func:`~mapframe.assembly.assemble` replaces
    ``auto`` (a name, a mapping or an instance of this class) by the chosen sampler, built
    with the settings given here, so its ``adaptive`` flag and checks are the real ones.
    Used on its own, it builds that sampler in :meth:`setup` (from the context's box and
    budget) and hands every call to it; ``settings`` go to the chosen sampler's constructor.
    """

    name: ClassVar[str] = AUTO

    def __init__(self, **settings: Any) -> None:
        self.settings = dict(settings)
        self._delegate: Sampler | None = None

    def describe(self) -> dict[str, Any]:
        return {"name": AUTO, **self.settings}

    def chosen(self, n_dims: int, budget: int) -> Sampler:
        """The sampler the rule picks, built with this one's settings."""
        from mapframe.plugin import get_registry

        spec = _with_settings(auto_sampler_name(n_dims, budget), self.settings)
        return get_registry().create("sampler", spec)  # type: ignore[return-value]

    def setup(self, context: SamplerContext) -> None:
        super().setup(context)
        self._delegate = self.chosen(context.space.n_dims, context.budget)
        self._delegate.setup(context)

    def _active(self, space: SearchSpace) -> Sampler:
        if self._delegate is None:
            self._delegate = self.chosen(space.n_dims, 0)
        return self._delegate

    def batch_size(self, remaining: int, history: History, capacity: int = 1) -> int:
        if self._delegate is None:
            return remaining
        return self._delegate.batch_size(remaining, history, capacity)

    def propose(
        self, n: int, space: SearchSpace, history: History, rng: np.random.Generator
    ) -> np.ndarray:
        """The chosen sampler's proposal."""
        return self._active(space).propose(n, space, history, rng)
