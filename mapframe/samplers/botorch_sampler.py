"""BoTorch's multi-objective acquisitions as a sampler (``"botorch"``): qLogNEHVI for a few
tasks, qLogNParEGO for many (qLogNEI for one), optimised over the continuous box by
``optimize_acqf``.

For users who know BoTorch's multi-objective loop and want it inside a :class:`MergeStudy`
(store, resume, executors, verification, the handed-over front). ``sampler: auto`` does not
pick it: on the peers benchmark's tasks the ``front`` sampler scored as well within noise,
with better proposed fronts, at a fraction of the overhead (docs/benchmarks.md, "Adaptive
search: BoTorch qLogNEHVI in the front sampler's loop vs the front sampler", and this
sampler's mode in "Head-to-head"). Needs ``pip install 'mapframe[botorch]'``.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar, Literal

import numpy as np

from mapframe._imports import installed
from mapframe._warning_filters import Filters, warning_filters
from mapframe.errors import ConfigError, MapframeWarning
from mapframe.problem import SearchSpace
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.rounds import RoundsSampler
from mapframe.settings import int_setting
from mapframe.surrogates.gp import _single_threaded

__all__ = ["ACQUISITIONS", "AUTO_EHVI_TASKS", "BoTorchSampler", "botorch_batch"]

Acquisition = Literal["auto", "qlognehvi", "qnehvi", "qlognparego"]
#: The values of ``acquisition`` (``auto`` resolved by :meth:`BoTorchSampler.acquisition_for`).
ACQUISITIONS: tuple[str, ...] = ("auto", "qlognehvi", "qnehvi", "qlognparego")
#: The hypervolume-improvement acquisitions: they need at least 2 tasks (objectives).
HYPERVOLUME_ACQUISITIONS: tuple[str, ...] = ("qlognehvi", "qnehvi")
#: ``acquisition: auto`` is qLogNEHVI up to this many tasks and qLogNParEGO beyond: the
#: hypervolume-improvement acquisitions decompose the measured front into boxes, which grows
#: too slow at 6-8 objectives (the peers benchmark dropped BoTorch's qNEHVI there; a round of
#: 3 on 14 evaluations at 6 tasks, default settings, 2 cores: qLogNEHVI 77 s CPU,
#: qLogNParEGO 26 s; at 8 tasks qLogNEHVI's did not finish in 175 s). :meth:`setup` warns
#: when a hypervolume acquisition is named beyond it.
AUTO_EHVI_TASKS = 4
#: ``optimize_acqf``'s inner optimiser options (those of the peers benchmark's BoTorch loop).
_OPTIONS: dict[str, Any] = {"batch_limit": 5, "maxiter": 200}
_WHO = "botorch sampler"


def _require_botorch() -> None:
    if not installed("botorch"):
        raise ConfigError("the botorch sampler needs BoTorch, which is not installed: "
                          "pip install 'mapframe[botorch]'")


class BoTorchSampler(RoundsSampler):
    """Adaptive sampling with BoTorch's acquisitions (``"botorch"``), BoTorch's tutorial loop.

    The start and the rounds are those of the ``front`` sampler
    (:class:`~mapframe.samplers.rounds.RoundsSampler`: ``initial`` points, ``"auto"``
    ``2 (N + 1)`` as in BoTorch's tutorial, or ``N + 2`` on a small budget; then rounds of
    ``batch`` points), but the start's ``design`` defaults to ``"sobol"``, BoTorch's
    tutorial's (``"lhs"``: the ``front`` sampler's default, an optimised Latin hypercube).
    Each round, on the successful evaluations in canonical order:

    1. coefficients scaled to the unit cube, metrics signed so that every task is maximised;
    2. one ``SingleTaskGP`` per task (``Standardize`` outcome transform) in a
       ``ModelListGP``, fitted by ``fit_gpytorch_mll``;
    3. the acquisition: ``qlognehvi`` (``qLogNoisyExpectedHypervolumeImprovement``) or
       ``qnehvi`` (``qNoisyExpectedHypervolumeImprovement``), reference point
       ``infer_reference_point`` of the measured front, ``X_baseline`` every measured point,
       ``prune_baseline``, ``mc_samples`` Sobol' QMC samples, the batch optimised
       sequentially by ``optimize_acqf`` (``num_restarts``, ``raw_samples``); or
       ``qlognparego`` (``qLogNParEGO``): one acquisition with its own random Chebyshev
       weights per batch point, optimised one after the other by ``optimize_acqf_list``.
       ``auto``: ``qlognehvi`` up to :data:`AUTO_EHVI_TASKS` tasks, ``qlognparego`` beyond;
       for one task ``qlognei`` (``qLogNoisyExpectedImprovement`` on that task's
       ``SingleTaskGP``, BoTorch's single-objective step: the hypervolume acquisitions need
       2 objectives, and qLogNParEGO's Chebyshev scalarisation of one objective is only a
       rescaling of it), otherwise as ``qlognehvi``. Naming ``qlognehvi`` or ``qnehvi`` for
       one task is a :class:`~mapframe.errors.ConfigError` in :meth:`setup`;
    4. candidates within 1e-3 (max-norm, unit cube) of a measured point are dropped and
       replaced by fresh Sobol' points.

    Defaults are those of BoTorch's multi-objective tutorial (128 QMC samples, 10 restarts,
    512 raw samples). Randomness: torch's generator is seeded from ``rng`` inside
    ``torch.random.fork_rng``, so the same ``(history, rng)`` gives the same proposal on a
    machine and the caller's torch random state is left as it was. torch runs on one thread
    during a round (its setting restored after): the matrices are small, and where processes
    share the cores more threads only spin. A round costs seconds to minutes (the GP fits and
    the acquisition's optimisation; docs/benchmarks.md measures it).
    Needs BoTorch (``pip install 'mapframe[botorch]'``).
    """

    name: ClassVar[str] = "botorch"
    adaptive: ClassVar[bool] = True
    who = _WHO

    def __init__(
        self,
        acquisition: Acquisition = "auto",
        initial: int | Literal["auto"] = "auto",
        batch: int | Literal["auto"] = 3,
        mc_samples: int = 128,
        num_restarts: int = 10,
        raw_samples: int = 512,
        design: Literal["sobol", "lhs"] = "sobol",
    ) -> None:
        if acquisition not in ACQUISITIONS:
            raise ConfigError(f"{_WHO}: acquisition must be one of {', '.join(ACQUISITIONS)}, "
                              f"got {acquisition!r}")
        self.acquisition: Acquisition = acquisition
        self._set_rounds(initial, batch, design)
        self.mc_samples = int_setting(mc_samples, "mc_samples", 1, who=_WHO)
        self.num_restarts = int_setting(num_restarts, "num_restarts", 1, who=_WHO)
        self.raw_samples = int_setting(raw_samples, "raw_samples", self.num_restarts,
                                       who=_WHO)
        _require_botorch()

    def acquisition_for(self, n_tasks: int) -> str:
        """The acquisition run for ``n_tasks`` tasks (``auto`` resolved: ``qlognei`` for one
        task, ``qlognehvi`` up to :data:`AUTO_EHVI_TASKS`, ``qlognparego`` beyond); a
        :class:`~mapframe.errors.ConfigError` for a hypervolume acquisition named for one
        task."""
        if self.acquisition in HYPERVOLUME_ACQUISITIONS and n_tasks < 2:
            raise ConfigError(
                f"{_WHO}: acquisition {self.acquisition} is a hypervolume improvement, which "
                f"needs at least 2 tasks, and this study has {n_tasks}; use acquisition: auto "
                "(qLogNEI for one task) or qlognparego")
        if self.acquisition != "auto":
            return self.acquisition
        if n_tasks == 1:
            return "qlognei"
        return "qlognehvi" if n_tasks <= AUTO_EHVI_TASKS else "qlognparego"

    def setup(self, context: SamplerContext) -> None:
        """Also refuses (:meth:`acquisition_for`) a hypervolume acquisition for one task,
        before any evaluation, and warns when one is named for more than
        :data:`AUTO_EHVI_TASKS` tasks (the rounds' own warnings are silenced)."""
        super().setup(context)
        n_tasks = len(context.tasks)
        self.acquisition_for(n_tasks)
        if self.acquisition in HYPERVOLUME_ACQUISITIONS and n_tasks > AUTO_EHVI_TASKS:
            warnings.warn(
                f"{_WHO}: acquisition {self.acquisition} at {n_tasks} tasks (more than "
                f"{AUTO_EHVI_TASKS}) makes every round several times slower (measured at 6 "
                "tasks: 77 s CPU a round against 26 s for qlognparego; at 8 tasks a round "
                "did not finish in 175 s); use acquisition: auto (qlognparego beyond "
                f"{AUTO_EHVI_TASKS} tasks) or qlognparego", MapframeWarning, stacklevel=2)

    def round_picks(
        self,
        n: int,
        space: SearchSpace,
        context: SamplerContext,
        X: np.ndarray,
        Y: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        import torch

        seed = int(rng.integers(1 << 31))
        lo, width = space.lower, space.upper - space.lower
        signs = np.array([t.sign for t in context.tasks], dtype=float)
        Xu = (X - lo) / width
        # warning_filters() first: its lock also keeps other threads' blocks from restoring
        # torch's RNG state and thread count (process-wide) under this one.
        with warning_filters() as filters, torch.random.fork_rng(devices=[]), \
                _single_threaded(torch):
            _quiet_botorch(filters)
            torch.manual_seed(seed)
            C = botorch_batch(Xu, Y * signs, n, self.acquisition_for(len(context.tasks)),
                              mc_samples=self.mc_samples, num_restarts=self.num_restarts,
                              raw_samples=self.raw_samples, seed=seed)
        C = self.far_from_evaluated(lo + C * width, X, space)
        return np.clip(C, space.lower, space.upper)


def _quiet_botorch(filters: Filters) -> None:
    """Filters for BoTorch's, GPyTorch's and linear_operator's own warnings (numerical, input
    data, optimisation), inside a :func:`warning_filters` block. Not ``simplefilter("ignore")``:
    warning filters are the process's, so that hid every other thread's warnings (another
    study's) while the round's acquisition ran."""
    from botorch.exceptions.warnings import BotorchWarning

    filters.ignore(category=BotorchWarning)
    filters.ignore(module=r"(botorch|gpytorch|linear_operator)(\..*)?$")
    try:
        from linear_operator.utils.warnings import NumericalWarning
    except ImportError:  # pragma: no cover - linear_operator comes with gpytorch
        return
    filters.ignore(category=NumericalWarning)


def botorch_batch(X: np.ndarray, Y: np.ndarray, q: int, acquisition: str, *,
                  mc_samples: int, num_restarts: int, raw_samples: int,
                  seed: int) -> np.ndarray:
    """``q`` points of the unit cube chosen by BoTorch's ``acquisition`` (``qlognehvi``,
    ``qnehvi``, ``qlognparego``, or ``qlognei`` for a single column) after fitting one
    ``SingleTaskGP`` per column of ``Y`` (every column maximised) on ``X`` (unit cube).
    Uses torch's global generator: seed it (the sampler does so inside ``fork_rng``);
    ``seed`` seeds the QMC samplers."""
    import torch
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
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
    from gpytorch.mlls import ExactMarginalLogLikelihood, SumMarginalLogLikelihood

    Xt = torch.as_tensor(X, dtype=torch.double)
    Yt = torch.as_tensor(Y, dtype=torch.double)
    d = Xt.shape[1]
    bounds = torch.stack([torch.zeros(d, dtype=torch.double),
                          torch.ones(d, dtype=torch.double)])
    gps = [SingleTaskGP(Xt, Yt[:, j:j + 1], outcome_transform=Standardize(m=1))
           for j in range(Yt.shape[1])]
    model: Any
    if acquisition == "qlognei":  # BoTorch's single-objective step: the task's own GP
        if len(gps) != 1:
            raise ValueError(f"qlognei is single-objective; Y has {len(gps)} columns")
        model = gps[0]
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    else:
        model = ModelListGP(*gps)
        fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))

    def sampler(k: int = 0) -> Any:
        return SobolQMCNormalSampler(sample_shape=torch.Size([mc_samples]), seed=seed + k)

    if acquisition == "qlognei":
        acq: Any = qLogNoisyExpectedImprovement(model=model, X_baseline=Xt,
                                                prune_baseline=True, sampler=sampler())
        cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=num_restarts,
                                raw_samples=raw_samples, options=_OPTIONS, sequential=True)
    elif acquisition == "qlognparego":
        acqs: list[Any] = [qLogNParEGO(model=model, X_baseline=Xt, prune_baseline=True,
                                       sampler=sampler(k)) for k in range(q)]
        cand, _ = optimize_acqf_list(acqs, bounds=bounds, num_restarts=num_restarts,
                                     raw_samples=raw_samples, options=_OPTIONS)
    else:
        cls = (qLogNoisyExpectedHypervolumeImprovement if acquisition == "qlognehvi"
               else qNoisyExpectedHypervolumeImprovement)
        ref = infer_reference_point(Yt[is_non_dominated(Yt)])
        acq = cls(model=model, ref_point=ref.tolist(), X_baseline=Xt, prune_baseline=True,
                  sampler=sampler())
        cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=num_restarts,
                                raw_samples=raw_samples, options=_OPTIONS, sequential=True)
    return np.asarray(cand.detach().numpy(), dtype=float).reshape(-1, d)
