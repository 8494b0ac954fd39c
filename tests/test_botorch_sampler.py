"""The ``botorch`` sampler: BoTorch's multi-objective acquisitions in mapframe's rounds."""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

import numpy as np
import pytest
from test_front_pareto import Quadratics

pytest.importorskip("botorch")

import torch

from mapframe import MergeStudy
from mapframe.errors import ConfigError, MapframeWarning
from mapframe.history import Evaluation, History
from mapframe.metrics import hypervolume, reference_point
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace, Task
from mapframe.samplers.base import SamplerContext
from mapframe.samplers.botorch_sampler import AUTO_EHVI_TASKS, BoTorchSampler
from mapframe.surrogates.quadratic import AutoSurrogate
from mapframe.testing import AdaptiveSamplerContract

#: A cheap acquisition optimisation: the sampler's plumbing, not BoTorch's optimiser, is
#: under test (the quality check below keeps enough of it to beat a Sobol' design).
CHEAP: dict[str, Any] = {"num_restarts": 2, "raw_samples": 32, "mc_samples": 16}


#: The sampler contract's adaptive checks run several BoTorch rounds of seconds each on two
#: cores (about two minutes per class): slow, run by CI's ``-m slow`` step. The fast tests
#: below cover one round against BoTorch's own step, torch's random state and many tasks.
@pytest.mark.slow
class TestBoTorchSampler(AdaptiveSamplerContract):
    def make_sampler(self):
        return BoTorchSampler(**CHEAP)


@pytest.mark.slow
class TestBoTorchSamplerParEGO(AdaptiveSamplerContract):
    def make_sampler(self):
        return BoTorchSampler(acquisition="qlognparego", **CHEAP)


def test_registered_like_every_builtin() -> None:
    assert get_registry().get("sampler", "botorch") is BoTorchSampler
    described = BoTorchSampler().describe()
    assert described["name"] == "botorch" and described["acquisition"] == "auto"
    assert (described["mc_samples"], described["num_restarts"], described["raw_samples"]) == (
        128, 10, 512)  # BoTorch's multi-objective tutorial


def test_auto_is_ehvi_for_few_tasks_and_parego_for_many() -> None:
    """... and qLogNEI for one task, where a hypervolume needs 2 objectives."""
    s = BoTorchSampler()
    assert [s.acquisition_for(t) for t in (1, 2, AUTO_EHVI_TASKS, AUTO_EHVI_TASKS + 1, 8)] == [
        "qlognei", "qlognehvi", "qlognehvi", "qlognparego", "qlognparego"]
    assert BoTorchSampler(acquisition="qnehvi").acquisition_for(8) == "qnehvi"
    assert BoTorchSampler(acquisition="qlognparego").acquisition_for(1) == "qlognparego"


def _set_up(sampler: BoTorchSampler, n_tasks: int) -> None:
    sampler.setup(SamplerContext(space=SearchSpace.box(n_tasks),
                                 tasks=tuple(Task(f"t{j}") for j in range(n_tasks)),
                                 surrogate=AutoSurrogate(), budget=30, seed=0))


@pytest.mark.parametrize("acquisition", ["qlognehvi", "qnehvi"])
def test_hypervolume_acquisition_beyond_autos_limit_warns_in_setup(acquisition: str) -> None:
    """Beyond :data:`AUTO_EHVI_TASKS` tasks a hypervolume round is several times slower
    than qLogNParEGO's (or does not finish): named there, ``setup`` says so (no round run)."""
    with pytest.warns(MapframeWarning, match=rf"acquisition {acquisition} at "
                      rf"{AUTO_EHVI_TASKS + 1} tasks .* use acquisition: auto") as got:
        _set_up(BoTorchSampler(acquisition=acquisition), AUTO_EHVI_TASKS + 1)
    assert len(got) == 1 and "\n" not in str(got[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _set_up(BoTorchSampler(acquisition=acquisition), AUTO_EHVI_TASKS)
        _set_up(BoTorchSampler(), 8)
        _set_up(BoTorchSampler(acquisition="qlognparego"), 8)


def _one_task(x: np.ndarray) -> np.ndarray:
    """One task of one coefficient, best at 0.3."""
    return 1 - (np.atleast_2d(x)[:, :1] - 0.3) ** 2


@pytest.mark.parametrize("acquisition", ["qlognehvi", "qnehvi"])
def test_hypervolume_acquisition_for_one_task_is_refused_before_any_evaluation(
        acquisition: str) -> None:
    evaluated: list[np.ndarray] = []

    def objective(x: np.ndarray) -> np.ndarray:
        evaluated.append(x)
        return _one_task(x)

    study = MergeStudy(objective=objective, task_names=["acc"], budget=8, seed=0,
                       sampler={"name": "botorch", "acquisition": acquisition, **CHEAP})
    with pytest.raises(ConfigError, match=rf"acquisition {acquisition} .* needs at least 2 "
                                          r"tasks.*use acquisition: auto") as info:
        study.run()
    assert "\n" not in str(info.value) and evaluated == []


def test_single_task_study_runs_qlognei_past_the_start(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    """One task, budget 5: a start of N + 2 = 3 Sobol' points, then a round of the 2 left,
    chosen by qLogNEI (the default crashed there, asking qLogNEHVI for one objective)."""
    import mapframe.samplers.botorch_sampler as module

    ran: list[str] = []
    real = module.botorch_batch

    def spy(*args: Any, **kwargs: Any) -> np.ndarray:
        ran.append(args[3])
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "botorch_batch", spy)
    res = MergeStudy(objective=_one_task, task_names=["acc"], budget=5, seed=0,
                     sampler={"name": "botorch", **CHEAP}).run()
    assert ran == ["qlognei"]
    X = res.history.X
    assert X.shape == (5, 1) and X.min() >= 0.0 and X.max() <= 1.0
    assert len({tuple(x) for x in X}) == 5


@pytest.mark.parametrize("kwargs, fragment", [
    ({"acquisition": "ehvi"}, "acquisition must be one of auto, qlognehvi, qnehvi, qlognparego"),
    ({"batch": 0}, "botorch sampler: batch must be an integer >= 1"),
    ({"initial": 1}, "botorch sampler: initial must be an integer >= 2"),
    ({"mc_samples": True}, "botorch sampler: mc_samples must be an integer >= 1"),
    ({"num_restarts": 8, "raw_samples": 4}, "raw_samples must be an integer >= 8"),
])
def test_bad_settings_are_one_line_errors(kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment) as info:
        BoTorchSampler(**kwargs)
    assert "\n" not in str(info.value)


def test_without_botorch_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch
                                                        ) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "botorch" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'mapframe\[botorch\]'"):
        BoTorchSampler()


# --------------------------------------------------------------------------- the oracle
def _tutorial_batch(Xu: np.ndarray, Ymax: np.ndarray, q: int, seed: int) -> np.ndarray:
    """BoTorch's multi-objective tutorial step (qLogNEHVI), written out here as the oracle:
    unit-cube inputs, every objective maximised."""
    from botorch.acquisition.multi_objective.logei import (
        qLogNoisyExpectedHypervolumeImprovement,
    )
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import ModelListGP, SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim.optimize import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from botorch.utils.multi_objective.hypervolume import infer_reference_point
    from botorch.utils.multi_objective.pareto import is_non_dominated
    from gpytorch.mlls import SumMarginalLogLikelihood

    torch.manual_seed(seed)
    X = torch.tensor(Xu, dtype=torch.double)
    Y = torch.tensor(Ymax, dtype=torch.double)
    model = ModelListGP(*[SingleTaskGP(X, Y[:, i:i + 1], outcome_transform=Standardize(m=1))
                          for i in range(Y.shape[1])])
    fit_gpytorch_mll(SumMarginalLogLikelihood(model.likelihood, model))
    acq = qLogNoisyExpectedHypervolumeImprovement(
        model=model, ref_point=infer_reference_point(Y[is_non_dominated(Y)]).tolist(),
        X_baseline=X, prune_baseline=True,
        sampler=SobolQMCNormalSampler(sample_shape=torch.Size([CHEAP["mc_samples"]]),
                                      seed=seed))
    bounds = torch.stack([torch.zeros(X.shape[1], dtype=torch.double),
                          torch.ones(X.shape[1], dtype=torch.double)])
    cand, _ = optimize_acqf(acq, bounds=bounds, q=q, num_restarts=CHEAP["num_restarts"],
                            raw_samples=CHEAP["raw_samples"],
                            options={"batch_limit": 5, "maxiter": 200}, sequential=True)
    return cand.detach().numpy()


def test_picks_are_botorchs_own_on_the_scaled_problem() -> None:
    """In a box other than the unit cube, with a task to minimise, the sampler proposes what
    BoTorch's tutorial step proposes on the unit-cube, all-maximised problem."""
    space = SearchSpace(np.array([0.0, 0.5]), np.array([1.5, 1.0]))
    tasks = (Task("acc", "max", 0.0, 1.0), Task("loss", "min", 0.0, None))
    rng = np.random.default_rng(4)
    X = space.scale(rng.random((10, 2)))
    U = (X - space.lower) / (space.upper - space.lower)
    Y = np.column_stack([1 - (U[:, 0] - 0.8) ** 2 - 0.3 * U[:, 1] ** 2,
                         (U[:, 1] - 0.9) ** 2 + 0.2 * U[:, 0] ** 2])
    history = History(2, 2, [Evaluation(x, y) for x, y in zip(X, Y)])
    sampler = BoTorchSampler(**CHEAP)
    sampler.setup(SamplerContext(space=space, tasks=tasks, surrogate=AutoSurrogate(),
                                 budget=20, seed=0))
    got = np.asarray(sampler.propose(3, space, history, np.random.default_rng(7)))
    Xc, Yc = history.canonical()
    seed = int(np.random.default_rng(7).integers(1 << 31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = _tutorial_batch((Xc - space.lower) / (space.upper - space.lower),
                               Yc * np.array([1.0, -1.0]), 3, seed)
    np.testing.assert_allclose(got, space.lower + want * (space.upper - space.lower),
                               atol=1e-9)


def test_one_task_picks_are_botorchs_single_objective_step() -> None:
    """One task to minimise in a box other than the unit cube: the round proposes what
    BoTorch's single-objective step (``SingleTaskGP``, ``qLogNoisyExpectedImprovement``),
    written out here, proposes on the unit-cube, maximised problem."""
    from botorch.acquisition.logei import qLogNoisyExpectedImprovement
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from botorch.optim.optimize import optimize_acqf
    from botorch.sampling import SobolQMCNormalSampler
    from gpytorch.mlls import ExactMarginalLogLikelihood

    space = SearchSpace(np.array([0.5]), np.array([2.0]))
    X = space.scale(np.random.default_rng(3).random((5, 1)))
    history = History(1, 1, [Evaluation(x, (x - 1.2) ** 2) for x in X])
    sampler = BoTorchSampler(**CHEAP)
    sampler.setup(SamplerContext(space=space, tasks=(Task("loss", "min", 0.0, None),),
                                 surrogate=AutoSurrogate(), budget=10, seed=0))
    got = np.asarray(sampler.propose(2, space, history, np.random.default_rng(7)))
    Xc, Yc = history.canonical()
    seed = int(np.random.default_rng(7).integers(1 << 31))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(seed)
        Xt = torch.tensor((Xc - space.lower) / (space.upper - space.lower), dtype=torch.double)
        model = SingleTaskGP(Xt, torch.tensor(-Yc, dtype=torch.double),
                             outcome_transform=Standardize(m=1))
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        acq = qLogNoisyExpectedImprovement(
            model=model, X_baseline=Xt, prune_baseline=True,
            sampler=SobolQMCNormalSampler(sample_shape=torch.Size([CHEAP["mc_samples"]]),
                                          seed=seed))
        cand, _ = optimize_acqf(acq, bounds=torch.tensor([[0.0], [1.0]], dtype=torch.double),
                                q=2, num_restarts=CHEAP["num_restarts"],
                                raw_samples=CHEAP["raw_samples"],
                                options={"batch_limit": 5, "maxiter": 200}, sequential=True)
    want = space.lower + cand.detach().numpy() * (space.upper - space.lower)
    np.testing.assert_allclose(got, want, atol=1e-9)


def test_leaves_torchs_random_state_alone() -> None:
    sampler = BoTorchSampler(**CHEAP)
    space = SearchSpace.box(2)
    rng = np.random.default_rng(0)
    X = rng.random((8, 2))
    history = History(2, 2, [Evaluation(x, y) for x, y in
                             zip(X, np.column_stack([X[:, 0], 1 - X[:, 0] * X[:, 1]]))])
    sampler.setup(SamplerContext(space=space, tasks=(Task("a"), Task("b")),
                                 surrogate=AutoSurrogate(), budget=20, seed=0))
    torch.manual_seed(123)
    before = torch.get_rng_state()
    sampler.propose(2, space, history, np.random.default_rng(1))
    assert torch.equal(before, torch.get_rng_state())


def test_many_tasks_run_parego() -> None:
    """Five tasks: ``auto`` runs qLogNParEGO; a start of N + 2 = 7 Sobol' points (budget 9),
    then one round of 2 inside the box."""
    problem = Quadratics(5)
    names = [t.name for t in problem.tasks]
    res = MergeStudy(objective=problem, task_names=names, budget=9, seed=0, surrogate="gp",
                     sampler={"name": "botorch", **CHEAP}).run()
    assert res.history.X.shape == (9, 5)
    assert res.history.X.min() >= 0.0 and res.history.X.max() <= 1.0
    assert len({tuple(x) for x in res.history.X}) == 9


@pytest.mark.slow
def test_study_measures_a_better_front_than_plain_sobol() -> None:
    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]

    def measured(sampler: Any) -> np.ndarray:
        return MergeStudy(objective=problem, task_names=names, budget=20, seed=0,
                          sampler=sampler).run().history.Y

    bo = measured({"name": "botorch", "num_restarts": 4, "raw_samples": 128, "mc_samples": 32})
    sobol = measured("sobol")
    ref = reference_point(np.vstack([bo, sobol]), margin=0.1)
    assert hypervolume(bo, ref) > 1.05 * hypervolume(sobol, ref)
