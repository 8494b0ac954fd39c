"""Adaptive sampling on the predicted front (``"front"``): measure where the Pareto front is
predicted to be, refit, re-solve, repeat.

:class:`FrontSampler` documents the algorithm. It is MAP's own loop turned into a sampler:
each round fits one Gaussian process per task on everything measured, solves the
multi-objective problem on their posterior means with the built-in front solver (so the
candidates are the *whole predicted Pareto set*, found by a solver, not a random candidate
pool), and measures the predicted points that would add most hypervolume to the front of the
points already measured. Verify → refit → re-solve rounds, with the hypervolume as the score.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np

from mapframe.errors import ConfigError
from mapframe.hypervolume import greedy_hypervolume_subset
from mapframe.problem import SearchSpace
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.gp import gp_fit_settings, greedy_qehvi, scaled_front
from mapframe.samplers.rounds import RoundsSampler
from mapframe.settings import int_setting, number_setting
from mapframe.surrogates.warp import WarpedGP, WarpName, check_warp

__all__ = ["FrontSampler"]

#: How the sampler's setting errors name it.
_WHO = "front sampler"


class FrontSampler(RoundsSampler):
    """Adaptive sampling on the front predicted by one Gaussian process per task (``"front"``).

    Call order as for every adaptive sampler (:class:`~mapframe.samplers.base.Sampler`).

    **Rounds.** First an initial space-filling design drawn from ``rng`` (the same ``rng``
    gives the same design, so a resumed study re-proposes, and reuses, the same points):
    ``design: lhs`` (the default since 2026-12-06), one Latin hypercube of ``initial`` points
    with its strata permuted to lower the centered discrepancy (scipy's ``random-cd``), or
    ``design: sobol``, the first points of one scrambled Sobol' sequence (the default
    before). On the peers benchmark's pilot seeds the Latin hypercube raised the charged
    score in 8 of 9 cells at 3-4 tasks (B = 20 and 30: +0.006 to +0.024, two to three
    standard errors) and left it level at 6-8 tasks (docs/adaptive-sampling.md, "The initial
    design"). Its size is ``initial``; ``"auto"`` is ``2 (N + 1)`` (BoTorch's tutorial
    start), or ``N + 2`` when the search budget ``B`` is
    below ``3 (N + 1)`` (a function of the study's budget, so a resumed study uses the same
    size): there the full start would leave fewer than ``N + 1`` adaptive evaluations. On
    the pilot seeds of the peers benchmark (100-105) ``N + 2`` raised the charged score at
    ``B = 10`` by 0.044 at 3 tasks and 0.024 at 4; at ``B = 20`` and ``30`` it changed it
    by less than the spread over seeds, and on the reported seeds it lost 0.03 at 4 tasks,
    so larger budgets keep the full start. Afterwards
    every round proposes ``max(batch, capacity)`` points (never more than remain);
    ``batch: "auto"`` (the default since 2026-12-06; 3 before) is 1 below that same search
    budget of ``3 (N + 1)``, where only a handful of adaptive evaluations follow the start
    and one batch of 3 would spend most of them on one fit, else 3. On the pilot seeds
    (100-123) rounds of 1 there raised the charged score at N = 3, 4, 6 and 8 (B = 10, 10,
    14, 20: +0.007 to +0.024 on the mean) and left it level at larger budgets (seeds
    100-111), at 1.7-2.5 times the own overhead (docs/adaptive-sampling.md, "Rounds of 1
    point below a search budget of 3 (N + 1)").

    **Each adaptive round** (a function of ``history.canonical()`` and ``rng``):

    1. fit one exact GP per task on the successful evaluations
       (:func:`~mapframe.surrogates.gp.fit_gp`: Matérn ``nu``, ARD, unit-cube inputs,
       standardised outputs, deterministic fit) on the raw metrics (``warp: auto`` fits
       them through the task's metric warp instead, e.g. an accuracy's logit,
       :mod:`mapframe.surrogates.warp`; on the pilot seeds that lowered the charged score,
       docs/adaptive-sampling.md);
    2. solve the multi-objective problem on the posterior means (with a warp: the warped
       latent means), each shifted by ``optimism`` posterior standard deviations in the
       task's better direction (0: the means themselves), with the ``auto`` front solver
       (the grid for N <= 2, NSGA-III with the Pareto polish beyond; seeded from ``rng``)
       keeping its own points
       (``select: solver``): the predicted Pareto set. The study's final front is re-chosen
       by hypervolume gain at 3-4 tasks (``select: auto``); with that re-choice in these rounds
       as well, this sampler's charged score on the peers benchmark at 4 tasks, B = 10 and
       20, was 0.035 and 0.040 lower (reported seeds, 2026-12-04) and a round cost about
       three times as much;
    3. drop the predicted points within 1e-3 (max-norm, unit cube) of an evaluated point;
    4. choose the batch greedily by hypervolume gain
       (:func:`~mapframe.hypervolume.greedy_hypervolume_subset`): each pick is the predicted
       point that adds most hypervolume to the front of the measured metrics plus the picks
       so far (tasks scaled to [0, 1], reference a tenth of the range below the worst);
       once nothing adds volume, the rest are spread over the predicted front;
       (``pick: expected`` instead: greedy sequential q-EHVI over the same candidates, with
       ``n_samples`` joint posterior samples, the ``gp`` sampler's acquisition,
       :func:`~mapframe.samplers.gp.greedy_qehvi`, so a pick's uncertainty counts too; on
       the peers benchmark's pilot seeds it scored level with the default,
       docs/adaptive-sampling.md);
    5. too few candidates left (a tiny front): the rest are fresh Sobol' points.

    Why this and not expected improvement over a random candidate pool (the ``gp``
    sampler): the candidates are the optimiser's whole predicted Pareto set, continuous,
    not a pool that rarely lands on the front in 3 or more dimensions, and the score is the
    one a user is charged on (the measured front's hypervolume). On the peers benchmark
    (``docs/benchmarks.md``) it leads the ``gp`` sampler from 3 tasks on; at 2 tasks the
    ``gp`` sampler's exploration is better.

    Settings: ``initial``, ``batch`` (``"auto"`` or an integer >= 1), ``design``
    (``"lhs"`` or ``"sobol"``), ``optimism`` (``0``), ``warp`` (``"none"`` or ``"auto"``),
    ``pick`` (``"hypervolume"`` or ``"expected"``) and ``n_samples`` (``128``, for ``pick:
    expected``), ``nu``, ``restarts`` and ``noise_floor`` (the GP fits, as for
    :class:`~mapframe.surrogates.gp.GPSurrogate`).
    Everything random comes from ``rng``; the fits are deterministic; so the same
    ``(history, rng)`` gives the same proposal. A round costs a GP fit per task plus one
    front solve: about 0.3-1 s for N <= 4 on two CPU cores. Needs gpytorch
    (``pip install 'mapframe[gp]'``).
    """

    name: ClassVar[str] = "front"
    who = _WHO
    adaptive: ClassVar[bool] = True

    def __init__(
        self,
        initial: int | Literal["auto"] = "auto",
        batch: int | Literal["auto"] = "auto",
        optimism: float = 0.0,
        nu: float = 2.5,
        restarts: int = 2,
        noise_floor: float = 1e-6,
        warp: WarpName = "none",
        pick: Literal["hypervolume", "expected"] = "hypervolume",
        n_samples: int = 128,
        design: Literal["sobol", "lhs"] = "lhs",
    ) -> None:
        if pick not in ("hypervolume", "expected"):
            raise ConfigError(
                f"front sampler: pick must be 'hypervolume' (gain on the posterior means) or "
                f"'expected' (q-EHVI over the predicted front), got {pick!r}")
        self._set_rounds(initial, batch, design)
        self.optimism = number_setting(
            optimism, "optimism", 0.0, 10.0, who=_WHO,
            meaning="posterior standard deviations added in each task's better direction")
        self.warp: WarpName = check_warp(warp)
        self.pick: Literal["hypervolume", "expected"] = pick
        self.n_samples = int_setting(n_samples, "n_samples", 1, who=_WHO)
        if self.pick == "expected" and self.warp != "none":
            raise ConfigError("front sampler: pick 'expected' samples the GPs on the metrics' "
                              "own scale; use it with warp: none (the default)")
        self.nu, self.restarts, self.noise_floor = gp_fit_settings(nu, restarts, noise_floor)

    # ---- rounds
    def round_picks(
        self,
        n: int,
        space: SearchSpace,
        context: SamplerContext,
        X: np.ndarray,
        Y: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        from mapframe.solvers.pymoo_solvers import AutoFrontSolver

        box = (space.lower, space.upper)
        gps = [WarpedGP.fit(X, Y[:, j], task, self.warp, bounds=box, nu=self.nu,
                            noise_floor=self.noise_floor, restarts=self.restarts)
               for j, task in enumerate(context.tasks)]
        signs = np.array([t.sign for t in context.tasks], dtype=float)

        def predict(C: np.ndarray) -> np.ndarray:
            return np.column_stack([gp.shifted(C, signs[j] * self.optimism)
                                    for j, gp in enumerate(gps)])

        # The solver's own points (select: solver), not the hypervolume re-choice that the
        # study's final front gets at 3-4 tasks: the batch is chosen by hypervolume gain next.
        sol = AutoFrontSolver(select="solver").solve(predict, space, list(context.tasks),
                                                     int(rng.integers(1 << 31)))
        Xc = self.far_from_evaluated(sol.X, X, space)
        if Xc.shape[0] == 0:
            return np.empty((0, space.n_dims))
        if self.pick == "expected":
            lo, span, P, _ = scaled_front(Y, signs)
            idx = np.array(greedy_qehvi(n, [gp.latent for gp in gps], Xc, signs, lo, span,
                                        P, self.n_samples, rng), dtype=int)
        else:
            directions = [t.direction for t in context.tasks]
            idx = greedy_hypervolume_subset(predict(Xc), n, directions, Y)
        return np.clip(Xc[idx], space.lower, space.upper)
