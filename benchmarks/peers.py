"""The peers of the head-to-head benchmark, each behind one black-box objective.

Every method sees the same :class:`BlackBox`: coefficient vectors in ``[0, 1]^N`` in, the
validation metrics of the merged models out (all maximised). The black box counts every real
evaluation, refuses to go past the budget, and times itself, so that a method's *own
overhead* is its wall time minus the time spent inside the black box.

Peers are *anytime* methods: they never see the budget, so one run up to the largest budget
is scored at every smaller budget from the evaluations it had made by then (each batch is cut
so that it never straddles a checkpoint). Their settings are their libraries' documented
defaults or tutorial values (listed in :data:`PEER_SETTINGS`), not tuned on this benchmark.
botorch and optuna are imported lazily: ``pip install -e ".[bench]"`` installs them.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: What each peer runs with (shown in the benchmark's docs).
PEER_SETTINGS = {
    "random search": "uniform in [0, 1]^N (numpy, seeded)",
    "grid search": "floor(B^(1/N)) points per axis, linspace(0, 1) (0.5 when 1); deterministic",
    "Optuna TPE": "TPESampler(seed) defaults: 10 random start-up trials, then multi-objective TPE",
    "Optuna NSGA-II": "NSGAIISampler(population_size=10, seed): default operators; population "
                      "10 instead of 50 so that it evolves at these budgets",
    "Optuna GP": "GPSampler(seed) defaults: 10 start-up trials, then log-EHVI on one GP per "
                 "objective",
    "BoTorch qNEHVI": "BoTorch's multi-objective tutorial: 2(N+1) Sobol' start points, one "
                      "SingleTaskGP per objective (Standardize), fit_gpytorch_mll, "
                      "qNoisyExpectedHypervolumeImprovement with 128 QMC samples and "
                      "prune_baseline, optimize_acqf(num_restarts=10, raw_samples=512, "
                      "sequential=True), batches of q=2; reference point inferred from the "
                      "observed front each round (infer_reference_point)",
    "BoTorch qLogNEHVI": "as BoTorch qNEHVI with qLogNoisyExpectedHypervolumeImprovement",
    "BoTorch qNParEGO": "BoTorch's multi-objective tutorial, qNParEGO arm: 2(N+1) Sobol' start "
                        "points, one SingleTaskGP per objective (Standardize), "
                        "fit_gpytorch_mll, qLogNParEGO (random Chebyshev weights from the "
                        "simplex, 128 QMC samples, prune_baseline) with one acquisition "
                        "function per batch point, optimised sequentially (optimize_acqf_list: "
                        "num_restarts=10, raw_samples=512), batches of q=2",
}


class BudgetExceeded(RuntimeError):
    """A method asked for more real evaluations than its budget."""


@dataclass
class BlackBox:
    """The objective every method calls: ``(B, N)`` coefficients -> ``(B, T)`` metrics.

    ``function`` computes the validation metrics; every row is one charged evaluation.
    A call after ``overhead_cap`` seconds of the method's own work raises ``TimeoutError``.
    ``X``/``F`` keep every evaluation in order, ``done_at`` the wall time (from the first
    call of :meth:`start`) at which each finished, ``eval_s`` the time spent evaluating.
    """

    function: Callable[[np.ndarray], np.ndarray]
    n_coefficients: int
    budget: int
    X: list[np.ndarray] = field(default_factory=list)
    F: list[np.ndarray] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)
    eval_before: list[float] = field(default_factory=list)
    #: Rows of each call, in order (a method's batches).
    calls: list[int] = field(default_factory=list)
    eval_s: float = 0.0
    t0: float = 0.0
    #: A call made after more own overhead than this (seconds) raises TimeoutError.
    overhead_cap: float = math.inf

    def start(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def count(self) -> int:
        return len(self.X)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.atleast_2d(np.asarray(X, dtype=float))
        if X.shape[1] != self.n_coefficients:
            raise ValueError(f"expected {self.n_coefficients} coefficients, got {X.shape[1]}")
        if self.count + len(X) > self.budget:
            raise BudgetExceeded(f"{self.count} + {len(X)} evaluations exceed the budget "
                                 f"{self.budget}")
        spent = time.perf_counter() - self.t0 - self.eval_s
        if spent > self.overhead_cap:
            raise TimeoutError(f"own overhead {spent:.0f} s passed the cap of "
                               f"{self.overhead_cap:.0f} s after {self.count} evaluations")
        X = np.clip(X, 0.0, 1.0)
        t = time.perf_counter()
        F = np.asarray(self.function(X), dtype=float)
        self.eval_s += time.perf_counter() - t
        now = time.perf_counter() - self.t0
        self.calls.append(len(X))
        for x, f in zip(X, F, strict=True):
            self.X.append(x)
            self.F.append(f)
            self.done_at.append(now)
            self.eval_before.append(self.eval_s)
        return F

    def overhead_at(self, b: int) -> float:
        """Own overhead (wall minus evaluation time) until the ``b``-th evaluation finished."""
        return self.done_at[b - 1] - self.eval_before[b - 1]

    def arrays(self, b: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        b = self.count if b is None else b
        return np.array(self.X[:b]), np.array(self.F[:b])


def _next_stop(count: int, checkpoints: Sequence[int]) -> int:
    return min(c for c in checkpoints if c > count)


# --------------------------------------------------------------------------- simple peers


def random_search(bb: BlackBox, checkpoints: Sequence[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    bb.start()
    while bb.count < max(checkpoints):
        bb(rng.uniform(0.0, 1.0, (_next_stop(bb.count, checkpoints) - bb.count,
                                  bb.n_coefficients)))


def grid_points(budget: int, n: int) -> np.ndarray:
    """The largest full grid with at most ``budget`` points over ``[0, 1]^n``."""
    k = int(np.floor(budget ** (1.0 / n) + 1e-9))
    axis = np.linspace(0.0, 1.0, k) if k > 1 else np.array([0.5])
    return np.stack(np.meshgrid(*[axis] * n, indexing="ij"), -1).reshape(-1, n)


# --------------------------------------------------------------------------- optuna


def optuna_search(bb: BlackBox, checkpoints: Sequence[int], seed: int, kind: str,
                  n_tasks: int) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(population_size=10, seed=seed),
        "gp": lambda: optuna.samplers.GPSampler(seed=seed),
    }
    bb.start()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.create_study(directions=["maximize"] * n_tasks,
                                    sampler=samplers[kind]())
        while bb.count < max(checkpoints):
            trial = study.ask()
            x = np.array([trial.suggest_float(f"c{i}", 0.0, 1.0)
                          for i in range(bb.n_coefficients)])
            study.tell(trial, bb(x[None])[0].tolist())


# --------------------------------------------------------------------------- botorch


#: Acquisition functions of :func:`botorch_search`.
BOTORCH_ACQUISITIONS = ("qNEHVI", "qLogNEHVI", "qLogNParEGO")


def botorch_search(bb: BlackBox, checkpoints: Sequence[int], seed: int,
                   acquisition: str = "qNEHVI", q: int = 2, mc_samples: int = 128,
                   num_restarts: int = 10, raw_samples: int = 512) -> None:
    """BoTorch's multi-objective tutorial loop, batches of ``q``.

    ``acquisition`` is ``"qNEHVI"`` or ``"qLogNEHVI"`` (one acquisition function for the
    batch, ``optimize_acqf(sequential=True)``) or ``"qLogNParEGO"`` (the tutorial's qNParEGO
    arm: one acquisition function with its own random scalarisation weights per batch
    point, ``optimize_acqf_list``, which picks them one after the other).
    """
    if acquisition not in BOTORCH_ACQUISITIONS:
        raise ValueError(f"unknown acquisition {acquisition!r}; choose from "
                         f"{', '.join(BOTORCH_ACQUISITIONS)}")
    import torch
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.monte_carlo import (
        qNoisyExpectedHypervolumeImprovement,
    )
    from botorch.acquisition.multi_objective.parego import qLogNParEGO
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim.optimize import optimize_acqf, optimize_acqf_list
    from botorch.sampling import SobolQMCNormalSampler
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated
    from botorch.utils.sampling import draw_sobol_samples
    from gpytorch.mlls import SumMarginalLogLikelihood

    bb.start()
    torch.manual_seed(seed)
    d = bb.n_coefficients
    tkw: dict[str, Any] = {"dtype": torch.double}
    bounds = torch.stack([torch.zeros(d, **tkw), torch.ones(d, **tkw)])
    n_init = min(2 * (d + 1), min(checkpoints))
    X = draw_sobol_samples(bounds=bounds, n=n_init, q=1, seed=seed).squeeze(1)
    Y = torch.as_tensor(bb(X.numpy()), **tkw)
    acq_cls = (qLogNoisyExpectedHypervolumeImprovement if acquisition == "qLogNEHVI"
               else qNoisyExpectedHypervolumeImprovement)
    options: dict[str, Any] = {"batch_limit": 5, "maxiter": 200}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        while bb.count < max(checkpoints):
            n_new = min(q, _next_stop(bb.count, checkpoints) - bb.count)
            models = [SingleTaskGP(X, Y[:, i:i + 1], outcome_transform=Standardize(m=1))
                      for i in range(Y.shape[1])]
            model = ModelListGP(*models)
            fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
            if acquisition == "qLogNParEGO":
                # One acquisition function per batch point, each drawing its own weights.
                acqs = [qLogNParEGO(model=model, X_baseline=X, prune_baseline=True,
                                    sampler=SobolQMCNormalSampler(
                                        sample_shape=torch.Size([mc_samples])))
                        for _ in range(n_new)]
                cand, _ = optimize_acqf_list(acqs, bounds=bounds, num_restarts=num_restarts,
                                             raw_samples=raw_samples, options=options)
            else:
                ref = infer_reference_point(Y[is_non_dominated(Y)])
                acq = acq_cls(model=model, ref_point=ref.tolist(), X_baseline=X,
                              prune_baseline=True,
                              sampler=SobolQMCNormalSampler(
                                  sample_shape=torch.Size([mc_samples])))
                cand, _ = optimize_acqf(acq, bounds=bounds, q=n_new,
                                        num_restarts=num_restarts, raw_samples=raw_samples,
                                        options=options, sequential=True)
            Y_new = torch.as_tensor(bb(cand.detach().numpy()), **tkw)
            X = torch.cat([X, cand.detach()])
            Y = torch.cat([Y, Y_new])


#: name -> function(bb, checkpoints, seed, n_tasks) for every anytime peer.
PEERS: dict[str, Callable[[BlackBox, Sequence[int], int, int], None]] = {
    "random search": lambda bb, cps, seed, t: random_search(bb, cps, seed),
    "Optuna TPE": lambda bb, cps, seed, t: optuna_search(bb, cps, seed, "tpe", t),
    "Optuna NSGA-II": lambda bb, cps, seed, t: optuna_search(bb, cps, seed, "nsga2", t),
    "Optuna GP": lambda bb, cps, seed, t: optuna_search(bb, cps, seed, "gp", t),
    "BoTorch qNEHVI": lambda bb, cps, seed, t: botorch_search(bb, cps, seed, "qNEHVI"),
    "BoTorch qLogNEHVI": lambda bb, cps, seed, t: botorch_search(bb, cps, seed, "qLogNEHVI"),
    "BoTorch qNParEGO": lambda bb, cps, seed, t: botorch_search(bb, cps, seed, "qLogNParEGO"),
}
