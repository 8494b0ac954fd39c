"""``surrogate: auto`` in a study: the surrogate the pilots found best with the study's sampler.

``auto`` names :class:`~mapframe.surrogates.quadratic.AutoSurrogate` (MAP's quadratic, warped
by the task's metric range). These cases resolve to the ``gp`` surrogate instead (one, the
``front`` sampler at 3 tasks above the quadratic's parameter count, to the mean of the two):
a search budget up to the quadratic's parameter count (too small to fit it, or just enough to
interpolate), small search budgets from 4 tasks on, the ``botorch`` sampler at 3 tasks
(all below), and a sampler that fits one Gaussian process per task every round, the
``front`` sampler (also what ``sampler: auto`` picks from 3 tasks) or the ``gp`` sampler, at
3 or 4 tasks, where the study's front is chosen by hypervolume gain (the ``auto`` front
solver's ``select: auto``). There the study's final front from the GP's posterior means
scored higher on test than from the quadratic:

- ``front`` sampler, on the peers benchmark's pilot seeds (proposal quality, every evaluation
  on the search; ``python benchmarks/pilot_front.py select-hv select-hv-gp --proposal ...``
  and ``... no-warp gp-final-no-warp --proposal ...``, docs/adaptive-sampling.md): +0.006 to
  +0.014 at N = 3, B = 20 / 50 and N = 4, B = 50 / 100, +0.002 at N = 4, B = 30; and on the
  reported seeds (``python benchmarks/run.py peers``) +0.001 to +0.041 in every cell where it
  changed the surrogate.
- ``gp`` sampler, charged (``python benchmarks/pilot_front.py gp-sampler gp-sampler-gp-final
  --cells 3:30,3:50,4:30,4:50``, seeds 100-105): +0.008 / +0.006 at N = 3, B = 30 / 50 and
  +0.016 at N = 4, B = 50 (ahead on 5, 4 and 5 of 6 seeds; N = 4, B = 30 unchanged, the
  peers benchmark's rule already says ``gp`` there); the reported seeds' rows are in
  docs/benchmarks.md. The ``gp`` sampler's ``initial: auto`` is the study surrogate's
  parameter count, so with this rule its Sobol' start shrinks from the quadratic's
  (N + 1)(N + 2) / 2 points to N + 1: the pilot measured the two together, as they ship.

**The mean of the gp and the quadratic, with the ``front`` sampler at 3 tasks** (adopted
2026-12-06): where the search budget is above the quadratic's parameter count (more than 10
evaluations; task-wise coefficients), ``auto`` is the ``gp_and_quadratic`` surrogate
(:class:`~mapframe.surrogates.mean.GPQuadraticMeanSurrogate`), the mean of the two models'
predictions. On the peers benchmark's pilot seeds 100-105 (``python benchmarks/pilot_front.py
base gp-and-quadratic-final --cells 3:20,3:30,3:50,4:30,4:50 --proposal`` and ``... --cells
3:20,3:30,3:50``): proposal quality +0.006 / +0.005 / +0.004 at N = 3, B = 20 / 30 / 50
(ahead on 4, 5 and 4 of 6 seeds), charged +0.001 / +0.003 / +0.003 (B = 30: ahead on all 6);
at 4 tasks -0.004 / -0.002 (B = 30 / 50), so there it stays the ``gp``.

**Small budgets, from 4 tasks on** (any sampler; task-wise coefficients, gpytorch installed):
with a search budget below twice the quadratic's parameter count, (N + 1)(N + 2)
evaluations, ``auto`` is the ``gp`` surrogate (it needs N + 1 points; below (N + 1)(N + 2)/2
the quadratic cannot be fitted at all). This was the peers benchmark's own rule for every
mode until 2026-12-06 (``bench_peers.peers_rule_before``; since then the benchmark runs
``surrogate: auto`` as resolved here), measured against the quadratic with Plain MAP on pilot seeds
100-105 (``python benchmarks/pilot_front.py plain-gp plain-quadratic --cells
2:10,3:20,4:30,6:56,8:90`` charged, and ``--cells 3:15,4:20,4:25,6:40,8:60 --proposal``):
charged +0.021 / +0.057 / +0.068 at N = 4 / 6 / 8 (ahead on 4, 6 and 5 of 6 seeds), proposal
quality +0.069 / +0.027 at N = 4, B = 20 / 25, +0.030 at N = 6, +0.050 at N = 8 (6, 5, 4 and
5 of 6); at 2 and 3 tasks the quadratic was as good or better (charged -0.025 at N = 2,
B = 10 and +0.005 at N = 3, B = 20; proposal -0.010 at N = 3, B = 15), so the rule starts at
4. With the ``front`` sampler at 6 / 8 tasks, charged, seeds 100-102 (``python
benchmarks/pilot_front.py base quadratic-always --cells 6:56,8:90 --seeds 100-102``): +0.003 /
+0.007. At 5 and 7 tasks it is interpolated, not measured; layer-wise coefficients are unmeasured
and keep the quadratic, and so do more than 8 tasks (:data:`SMALL_BUDGET_MAX_TASKS`): there
one exact GP per task on hundreds of evaluations cost 40 times the quadratic's fit and solve
(N = 16, 200 Sobol' evaluations: 249 s against 6.2 s, 2 cores) with no measured gain.

**Up to the quadratic's parameter count** (any number of tasks and coefficients, any
sampler, gpytorch installed): a search budget of at least N + 1 but below (N + 1)(N + 2)/2
(N coefficients) cannot fit the quadratic at all, and at exactly (N + 1)(N + 2)/2 it
interpolates the noisy measurements, so ``auto`` is the ``gp`` surrogate there, which fits
N + 1 points, rather than a :class:`~mapframe.errors.BudgetError` or an interpolating
quadratic (for example 4-10 evaluations at 3 tasks, 3-6 at 2). Without gpytorch the study
still raises below the parameter count, and says how to proceed. Measured where the
quadratic runs, on pilot seeds 100-105, proposal quality (every evaluation on the search;
``python benchmarks/pilot_front.py plain plain-gp botorch-sampler botorch-sampler-gp-final
--cells 2:6,2:8,2:10,3:10,3:12,3:15,3:20 --proposal``, 2026-12-06, about 6 minutes on 2
cores), gp minus quadratic: at the parameter count, Plain MAP +0.165 at N = 3, B = 10 (the
quadratic's seeds 0.459-0.926, the gp's 0.843-0.898) and -0.005 at N = 2, B = 6 (standard
deviations over seeds 0.070 against 0.030), the ``botorch`` sampler +0.038 at N = 2, B = 6
(at N = 3 the next rule applies). Above it the quadratic mostly leads: Plain MAP -0.040 /
-0.015 at N = 2, B = 8 / 10, -0.010 at N = 3, B = 15, +0.001 at B = 20; the ``botorch``
sampler at N = 2 -0.016 / -0.036 at B = 8 / 10; charged (``... --cells 2:10,2:15,3:20,3:25``,
search budgets 7-18) the quadratic +0.025 / +0.019 at N = 2, B = 10 / 15 with Plain MAP,
+0.009 / +0.020 with the ``botorch`` sampler, and the gp +0.005 / +0.008 at N = 3, B = 20 /
25 with Plain MAP (inside the noise). One budget leans the other way: Plain MAP at N = 3,
B = 12 (two points above the count), +0.021 for the gp (the quadratic 0.885 ± 0.065 with one
seed at 0.748, the gp 0.906 ± 0.018); the rule stops at the count, where the reason holds
at every N, rather than at a threshold fitted to one budget.

**The ``botorch`` sampler at 3 tasks** (adopted 2026-12-06): its rounds fit one GP per task,
like the ``front`` and ``gp`` samplers', and on the same pilot seeds its study's final front
from the ``gp`` surrogate beat the quadratic's at every budget measured: proposal quality
+0.147 / +0.045 / +0.036 / +0.013 at B = 10 / 12 / 15 / 20 (above), +0.006 / +0.004 at
B = 30 / 50 (``python benchmarks/pilot_front.py botorch-sampler botorch-sampler-gp-final
--cells 3:30,3:50,4:30 --proposal --seeds 100-102``), charged +0.021 / +0.014 at B = 20 / 25
(ahead on 5 and 6 of 6 seeds). At 4 tasks that pilot read -0.009 (B = 30), so it stays the
quadratic there outside the small-budget rule; at 2 tasks the quadratic led above its
threshold (above). Only the plain name ``"auto"``
resolves; a mapping with settings for the quadratic (``{"name": "auto", "ridge": ...}``) or a
surrogate object is used as given.
"""

from __future__ import annotations

from typing import Any

from mapframe._imports import installed
from mapframe.surrogates.quadratic import AutoSurrogate, n_quadratic_params

__all__ = ["BOTORCH_GP_TASKS", "GP_FINAL_SAMPLERS", "GP_FINAL_TASKS", "INSTALL_GP_HINT",
           "MEAN_SAMPLER", "MEAN_SURROGATE", "MEAN_TASKS", "SMALL_BUDGET_FACTOR",
           "SMALL_BUDGET_MAX_TASKS", "SMALL_BUDGET_TASKS", "resolve_auto_surrogate",
           "up_to_quadratic_count"]

#: The name that asks for the rule (the ``auto`` quadratic's registered name).
AUTO = AutoSurrogate.name
#: Samplers with whose GPs ``auto`` becomes the ``gp`` surrogate.
GP_FINAL_SAMPLERS = ("front", "gp")
#: Numbers of tasks at which it does.
GP_FINAL_TASKS = (3, 4)
#: Numbers of tasks at which the ``botorch`` sampler's study gets the ``gp`` surrogate too.
BOTORCH_GP_TASKS = (3,)
#: The sampler with which ``auto`` is the mean of the gp and the quadratic ...
MEAN_SAMPLER = "front"
#: ... at these numbers of tasks (task-wise coefficients, a search budget above the
#: quadratic's parameter count) ...
MEAN_TASKS = (3,)
#: ... under this registered name.
MEAN_SURROGATE = "gp_and_quadratic"
#: What a user without gpytorch is told to do where the budget rules would pick the gp.
INSTALL_GP_HINT = ("install gpytorch (pip install 'mapframe[gp]') so that surrogate: auto fits "
                   "the gp")


#: With a search budget below this many times the quadratic's parameter count ...
SMALL_BUDGET_FACTOR = 2
#: ... ``auto`` is the ``gp`` surrogate from this many tasks on, with any sampler ...
SMALL_BUDGET_TASKS = 4
#: ... up to this many (the most the pilots measured: beyond, one exact GP per task on
#: hundreds of points cost 40 times the quadratic, 249 s against 6 s at 16 tasks and 200
#: evaluations, with no measured gain).
SMALL_BUDGET_MAX_TASKS = 8


def up_to_quadratic_count(n_dims: int, budget: int) -> bool:
    """Whether a search budget is one where ``auto`` takes the ``gp`` for want of points (when
    gpytorch is installed): enough for the gp (``n_dims + 1``) but at most the quadratic's
    parameter count, where the quadratic cannot be fitted or interpolates."""
    return n_dims + 1 <= budget <= n_quadratic_params(n_dims)


def resolve_auto_surrogate(spec: Any, sampler_name: str, n_tasks: int, *,
                           n_dims: int | None = None, budget: int | None = None) -> Any:
    """``"gp"`` (or ``"gp_and_quadratic"``) where a rule above applies to ``spec``, else
    ``spec`` unchanged.

    ``n_dims`` (coefficients) and ``budget`` (search evaluations) drive the budget rules,
    which apply only when gpytorch is installed: the small-budget rule to task-wise
    coefficients only (``n_dims == n_tasks``), the rule below the quadratic's parameter count
    to any coefficients.
    """
    if not (isinstance(spec, str) and spec == AUTO):
        return spec
    if (sampler_name == MEAN_SAMPLER and n_tasks in MEAN_TASKS and n_dims == n_tasks
            and budget is not None and budget > n_quadratic_params(n_dims)):
        return MEAN_SURROGATE
    if sampler_name in GP_FINAL_SAMPLERS and n_tasks in GP_FINAL_TASKS:
        return "gp"
    if sampler_name == "botorch" and n_tasks in BOTORCH_GP_TASKS:
        return "gp"
    if budget is None or n_dims is None or not installed("gpytorch"):
        return spec
    if (n_dims == n_tasks and SMALL_BUDGET_TASKS <= n_tasks <= SMALL_BUDGET_MAX_TASKS
            and budget < SMALL_BUDGET_FACTOR * n_quadratic_params(n_tasks)):
        return "gp"
    if up_to_quadratic_count(n_dims, budget):
        return "gp"
    return spec
