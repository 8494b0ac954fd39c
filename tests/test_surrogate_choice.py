"""``surrogate: auto`` resolved by the study (mapframe.surrogates.choice): the small-budget
rule (the ``gp`` surrogate below twice the quadratic's parameter count in search evaluations,
from SMALL_BUDGET_TASKS tasks on, with any sampler) and the gp below the quadratic's parameter
count (inclusive) at any number of tasks, and with the botorch sampler at 3 tasks."""

from __future__ import annotations

import pytest
from test_front_pareto import Quadratics

import mapframe.samplers.choice as sampler_choice
import mapframe.surrogates.choice as choice
from mapframe import MergeStudy
from mapframe.errors import BudgetError, MapframeWarning
from mapframe.surrogates.choice import (
    SMALL_BUDGET_FACTOR,
    SMALL_BUDGET_TASKS,
    resolve_auto_surrogate,
)
from mapframe.surrogates.gp import GPSurrogate
from mapframe.surrogates.quadratic import QuadraticSurrogate, n_quadratic_params

N = SMALL_BUDGET_TASKS
LIMIT = SMALL_BUDGET_FACTOR * n_quadratic_params(N)  # 30 at 4 tasks


@pytest.mark.parametrize("sampler, n_tasks, n_dims, budget, want", [
    ("sobol", N, N, LIMIT - 1, "gp"),          # below the limit: gp
    ("sobol", N, N, LIMIT, "auto"),            # at the limit: the quadratic
    ("bins", N + 2, N + 2, 2 * n_quadratic_params(N + 2) - 1, "gp"),  # any sampler, more tasks
    ("sobol", N - 1, N - 1, 12, "auto"),       # fewer tasks: the quadratic where it fits
    ("sobol", N, 3 * N, 3 * N + 1, "gp"),      # layer-wise, below the quadratic: gp fits
    ("sobol", N, 3 * N, 3 * N, "auto"),        # ... not below N + 1: the quadratic's error
    ("sobol", N, 2 * N, n_quadratic_params(2 * N), "gp"),  # layer-wise, interpolating
    ("sobol", N, 2 * N, n_quadratic_params(2 * N) + 1, "auto"),  # layer-wise: unmeasured
    # Up to the quadratic's parameter count (N + 1)(N + 2)/2 the gp, from N + 1 points on.
    ("sobol", 3, 3, 9, "gp"),
    ("sobol", 3, 3, 4, "gp"),
    ("sobol", 3, 3, 10, "gp"),                 # the quadratic would interpolate
    ("sobol", 3, 3, 11, "auto"),
    ("sobol", 3, 3, 3, "auto"),                # below N + 1: the quadratic's BudgetError
    ("sobol", 2, 2, 5, "gp"),
    ("sobol", 2, 2, 6, "gp"),
    ("sobol", 2, 2, 7, "auto"),
    ("botorch", 2, 2, 3, "gp"),
    ("botorch", 2, 2, 100, "auto"),
    # The botorch sampler at 3 tasks: the gp at every budget; at 4 only by the budget rules.
    ("botorch", 3, 3, 100, "gp"),
    ("botorch", 4, 4, 100, "auto"),
    ("botorch", 4, 4, LIMIT - 1, "gp"),
    ("sobol", N, N, None, "auto"),             # no budget known (Nested MAP's shared parts)
    ("front", 4, 4, 100, "gp"),                # the front/gp sampler rule at 3-4 tasks
    ("gp", 3, 3, 100, "gp"),
    # The front sampler at 3 tasks: the mean of the gp and the quadratic above the
    # quadratic's parameter count (10), the gp up to it; layer-wise or no budget: the gp.
    ("front", 3, 3, 100, "gp_and_quadratic"),
    ("front", 3, 3, 11, "gp_and_quadratic"),
    ("front", 3, 3, 10, "gp"),
    ("front", 3, 3, 9, "gp"),
    ("front", 3, 6, 100, "gp"),
    ("front", 3, 3, None, "gp"),
    # the small-budget rule stops at 8 tasks (measured there; at 16 the GPs cost 40 times
    # the quadratic); at and below the quadratic's parameter count the gp still steps in
    ("sobol", 8, 8, 89, "gp"),
    ("sobol", 9, 9, 100, "auto"),
    ("sobol", 16, 16, 200, "auto"),
    ("sobol", 16, 16, 153, "gp"),
])
def test_small_budget_rule(sampler, n_tasks, n_dims, budget, want) -> None:
    assert resolve_auto_surrogate("auto", sampler, n_tasks, n_dims=n_dims,
                                  budget=budget) == want


def test_only_the_plain_name_auto_resolves() -> None:
    for spec in ("quadratic", {"name": "auto", "ridge": 1e-3}):
        assert resolve_auto_surrogate(spec, "sobol", N, n_dims=N, budget=5) == spec


def test_without_gpytorch_the_rule_keeps_the_quadratic(monkeypatch) -> None:
    monkeypatch.setattr(choice, "installed", lambda module: False)
    assert resolve_auto_surrogate("auto", "sobol", N, n_dims=N, budget=LIMIT - 1) == "auto"
    assert resolve_auto_surrogate("auto", "sobol", 3, n_dims=3, budget=9) == "auto"


def _without_gpytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    """As without gpytorch installed: both auto rules (sampler and surrogate) fall back."""
    monkeypatch.setattr(choice, "installed", lambda module: False)
    monkeypatch.setattr(sampler_choice, "installed", lambda module: False)


def test_without_gpytorch_a_budget_below_the_quadratic_says_what_to_install(monkeypatch) -> None:
    _without_gpytorch(monkeypatch)
    problem = Quadratics(3)
    with pytest.raises(BudgetError, match=r"set budget >= 10 .*pip install 'mapframe\[gp\]'"
                                          r".*needs 4$"):
        MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks], budget=9,
                   seed=0)
    # Below N + 1 neither fits: the quadratic's error alone.
    with pytest.raises(BudgetError, match=r"set budget >= 10 \(the paper uses about twice "
                                          r"that, 20\)$"):
        MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks], budget=3,
                   seed=0)


@pytest.mark.parametrize("n_tasks, budget", [(2, 5), (3, 8)])
def test_a_study_below_the_quadratics_parameters_runs_on_the_gp(n_tasks, budget) -> None:
    # A BudgetError before: at 2 and 3 tasks too, auto now takes the gp below the quadratic.
    problem = Quadratics(n_tasks)
    res = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                     budget=budget, seed=0, sampler="sobol").run()
    assert res.settings["surrogate"]["name"] == "gp"
    assert len(res.history) == budget and len(res.front.coefficients) > 0
    # ... and the quadratic from one point beyond its parameter count (at the count it would
    # interpolate: the gp there too).
    for extra, want in ((0, "gp"), (1, "auto")):
        study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                           budget=n_quadratic_params(n_tasks) + extra, seed=0,
                           sampler="sobol")
        assert study.surrogate.name == want


@pytest.mark.parametrize("budget, want", [(LIMIT - 10, "gp"), (LIMIT, "auto")])
def test_a_plain_map_study_resolves_by_its_budget(budget, want) -> None:
    problem = Quadratics(N)
    study = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                       budget=budget, seed=0, sampler="sobol")
    assert study.surrogate.name == want
    assert study.settings()["surrogate"]["name"] == want  # summary.json says which ran


def test_a_budget_below_the_quadratics_parameters_now_runs_on_the_gp() -> None:
    # 10 evaluations cannot fit the 15-parameter quadratic at 4 tasks (a BudgetError before);
    # with gpytorch the study runs on the gp surrogate, which needs N + 1 = 5.
    problem = Quadratics(N)
    res = MergeStudy(objective=problem, task_names=[t.name for t in problem.tasks],
                     budget=10, seed=0, sampler="sobol").run()
    assert res.settings["surrogate"]["name"] == "gp"
    assert len(res.history) == 10 and len(res.front.coefficients) > 0


def test_a_quadratic_fitted_to_exactly_its_parameter_count_warns(monkeypatch) -> None:
    # Without gpytorch, auto at the count is the quadratic: it interpolates; the study says so
    # (one line, in result.warnings too) and names the way out.
    _without_gpytorch(monkeypatch)
    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]
    with pytest.warns(MapframeWarning, match=r"auto surrogate has 10 parameters per task and "
                                             r"was fitted to exactly 10 evaluations.*"
                                             r"pip install 'mapframe\[gp\]'"):
        res = MergeStudy(objective=problem, task_names=names, budget=10, seed=0).run()
    assert any("interpolates" in w for w in res.warnings)
    # A quadratic named explicitly: the same warning, pointing at surrogate: gp ...
    with pytest.warns(MapframeWarning, match=r"or use surrogate: gp$"):
        MergeStudy(objective=problem, task_names=names, budget=10, seed=0,
                   surrogate="quadratic").run()
    # ... and none with one evaluation more.
    res = MergeStudy(objective=problem, task_names=names, budget=11, seed=0).run()
    assert not any("interpolates" in w for w in res.warnings)


class _NoisyQuadratic(QuadraticSurrogate):
    """A quadratic that says it does not interpolate at its parameter count (as a plugin
    surrogate that models noise would)."""

    name = "noisy_quadratic"
    interpolates_at_n_params = False


def test_the_interpolation_warning_follows_the_surrogate_not_its_name() -> None:
    # The check reads Surrogate.interpolates_at_n_params: a surrogate that declares it
    # False gets no warning at its parameter count, whatever its name; gp declares False.
    problem = Quadratics(3)
    names = [t.name for t in problem.tasks]
    res = MergeStudy(objective=problem, task_names=names, budget=10, seed=0,
                     surrogate=_NoisyQuadratic()).run()
    assert not any("interpolates" in w for w in res.warnings)
    assert GPSurrogate.interpolates_at_n_params is False
    assert QuadraticSurrogate.interpolates_at_n_params is True
    # The gp at its own minimum (N + 1 = 4 evaluations) draws no interpolation warning.
    res = MergeStudy(objective=problem, task_names=names, budget=4, seed=0, sampler="sobol",
                     surrogate="gp").run()
    assert not any("interpolates" in w for w in res.warnings)
