"""``surrogate: auto`` resolved by the study (mapframe.surrogates.choice): the small-budget
rule (the ``gp`` surrogate below twice the quadratic's parameter count in search evaluations,
from SMALL_BUDGET_TASKS tasks on, with any sampler)."""

from __future__ import annotations

import pytest
from test_front_pareto import Quadratics

import mapframe.surrogates.choice as choice
from mapframe import MergeStudy
from mapframe.surrogates.choice import (
    SMALL_BUDGET_FACTOR,
    SMALL_BUDGET_TASKS,
    resolve_auto_surrogate,
)
from mapframe.surrogates.quadratic import n_quadratic_params

N = SMALL_BUDGET_TASKS
LIMIT = SMALL_BUDGET_FACTOR * n_quadratic_params(N)  # 30 at 4 tasks


@pytest.mark.parametrize("sampler, n_tasks, n_dims, budget, want", [
    ("sobol", N, N, LIMIT - 1, "gp"),          # below the limit: gp
    ("sobol", N, N, LIMIT, "auto"),            # at the limit: the quadratic
    ("bins", N + 2, N + 2, 2 * n_quadratic_params(N + 2) - 1, "gp"),  # any sampler, more tasks
    ("sobol", N - 1, N - 1, 5, "auto"),        # fewer tasks: unmeasured, the quadratic
    ("sobol", N, 3 * N, 10, "auto"),           # layer-wise coefficients: unmeasured
    ("sobol", N, N, None, "auto"),             # no budget known (Nested MAP's shared parts)
    ("front", 3, 3, 100, "gp"),                # the front/gp sampler rule at 3-4 tasks
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
