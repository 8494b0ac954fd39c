"""``plateau``: stop when the predicted front and the surrogates' error stop improving."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from mapframe.problem import SearchSpace
from mapframe.settings import int_setting, number_setting
from mapframe.stopping.base import RoundState, StoppingRule

__all__ = ["PlateauStopping"]

#: Leave-one-out error changes (in units of the metric's spread) below this are round-off.
_LOO_FLOOR = 1e-6


class PlateauStopping(StoppingRule):
    """Stop when the predicted front and the surrogates' error have both stopped improving
    (``name = "plateau"``).

    After each round it computes two numbers:

    - **front hypervolume**: the hypervolume of the non-dominated surrogate predictions over a
      fixed set of ``n_candidates`` scrambled-Sobol' points in the box (plus the evaluated
      points), against a reference point and scale fixed at the first round it sees (worst
      observed value minus 10 % of the observed range, per task). The same candidates are
      used every round, so changes come from the surrogates only;
    - **leave-one-out error**: the mean over tasks of the surrogate's ``loo_rmse`` divided
      by the spread (standard deviation) of that task's observed metric. Surrogates that do
      not report ``loo_rmse`` leave this criterion out.

    A round is *settled* when the hypervolume moved by at most ``hv_tol`` (relative) since the
    previous round and the leave-one-out error is not below ``(1 − loo_tol)`` times the best
    seen so far. The study stops after ``patience`` settled rounds in a row, once at least
    ``min_evaluations`` search evaluations were made (``"auto"``: twice the surrogate's
    parameter count, the paper's recommended budget).
    """

    name: ClassVar[str] = "plateau"

    def __init__(
        self,
        patience: int = 3,
        hv_tol: float = 0.005,
        loo_tol: float = 0.02,
        min_evaluations: int | str = "auto",
        n_candidates: int = 2048,
    ) -> None:
        who = "plateau"
        self.patience = int_setting(patience, "patience", 1, who=who)
        self.hv_tol = number_setting(hv_tol, "hv_tol", 0.0, 1.0, who=who, open_high=True)
        self.loo_tol = number_setting(loo_tol, "loo_tol", 0.0, 1.0, who=who, open_high=True)
        self.min_evaluations = int_setting(min_evaluations, "min_evaluations", 1, who=who,
                                           auto=True)
        self.n_candidates = int_setting(n_candidates, "n_candidates", 16, who=who)
        self.reset()

    def reset(self) -> None:
        self._trace: list[dict[str, Any]] = []
        self._ref: np.ndarray | None = None
        self._scale: np.ndarray | None = None
        self._candidates: np.ndarray | None = None
        self._best_loo = math.inf
        self._settled = 0

    def trace(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._trace]

    def _candidate_set(self, space: SearchSpace) -> np.ndarray:
        if self._candidates is None or self._candidates.shape[1] != space.n_dims:
            from mapframe.samplers.space_filling import sobol_unit

            self._candidates = space.scale(
                sobol_unit(self.n_candidates, space.n_dims, np.random.default_rng(0)))
        return self._candidates

    def front_hypervolume(self, state: RoundState) -> float:
        """Normalised hypervolume of the predicted front (see the class docstring)."""
        from mapframe.metrics import hypervolume, pareto_mask

        directions = [t.direction for t in state.tasks]
        X, Y = state.history.canonical()
        if self._ref is None:
            signs = np.array([1.0 if d == "max" else -1.0 for d in directions])
            G = Y * signs  # larger is better
            span = np.ptp(G, axis=0)
            span = np.where(span > 0, span, 1.0)
            self._ref = (G.min(axis=0) - 0.1 * span) * signs
            self._scale = span
        C = np.vstack([self._candidate_set(state.space), X])
        P = state.predict(C)
        P = P[np.all(np.isfinite(P), axis=1)]
        if P.shape[0] == 0:
            return 0.0
        P = P[pareto_mask(P, directions)]
        assert self._scale is not None
        return hypervolume(P / self._scale, self._ref / self._scale, directions)

    @staticmethod
    def loo_error(state: RoundState) -> float:
        """Mean over tasks of ``loo_rmse / std(metric)``; NaN when no surrogate reports it."""
        _, Y = state.history.canonical()
        errs = []
        for j, task in enumerate(state.tasks):
            v = state.diagnostics.get(task.name, {}).get("loo_rmse")
            sd = float(np.std(Y[:, j])) if Y.shape[0] else 0.0
            if v is None or not math.isfinite(float(v)) or sd <= 0:
                continue
            errs.append(float(v) / sd)
        return float(np.mean(errs)) if errs else math.nan

    def update(self, state: RoundState) -> str | None:
        hv = self.front_hypervolume(state)
        loo = self.loo_error(state)
        prev = self._trace[-1]["hypervolume"] if self._trace else None
        hv_change = math.inf if prev is None or prev <= 0 else abs(hv - prev) / prev
        hv_settled = hv_change <= self.hv_tol
        if math.isnan(loo):
            loo_settled = True
        else:
            # "Improved" means by more than loo_tol of the best so far (and by more than a
            # numerical floor, so an exact surrogate's round-off noise counts as settled).
            loo_settled = math.isfinite(self._best_loo) and (
                self._best_loo - loo <= self.loo_tol * self._best_loo + _LOO_FLOOR)
            self._best_loo = min(self._best_loo, loo)
        self._settled = self._settled + 1 if (hv_settled and loo_settled) else 0
        floor = (2 * state.n_params if self.min_evaluations == "auto"
                 else int(self.min_evaluations))
        self._trace.append({
            "round": state.round, "n_evaluated": state.n_evaluated, "hypervolume": hv,
            "hv_change": None if math.isinf(hv_change) else hv_change,
            "loo_error": None if math.isnan(loo) else loo, "settled": hv_settled and loo_settled,
        })
        if self._settled >= self.patience and state.n_evaluated >= floor:
            what = "front hypervolume" + ("" if math.isnan(loo) else
                                          " and surrogate leave-one-out error")
            return (f"{what} settled for {self._settled} rounds (hypervolume change "
                    f"<= {self.hv_tol:g}, leave-one-out error improvement < {self.loo_tol:g}) "
                    f"after {state.n_evaluated} of {state.budget} evaluations")
        return None
