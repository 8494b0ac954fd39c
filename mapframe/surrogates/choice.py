"""``surrogate: auto`` in a study: the surrogate the pilots found best with the study's sampler.

``auto`` names :class:`~mapframe.surrogates.quadratic.AutoSurrogate` (MAP's quadratic, warped
by the task's metric range). One case resolves to the ``gp`` surrogate instead: a sampler
that fits one Gaussian process per task every round, the ``front`` sampler (also what
``sampler: auto`` picks from 3 tasks) or the ``gp`` sampler, at 3 or 4 tasks, where the
study's front is chosen by hypervolume gain (the ``auto`` front solver's ``select: auto``).
There the study's final front from the GP's posterior means scored higher on test than from
the quadratic:

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

With the ``botorch`` sampler (GPs every round too) it was piloted and not adopted: proposal
quality on seeds 100-102 (``python benchmarks/pilot_front.py botorch-sampler
botorch-sampler-gp-final --cells 3:30,3:50,4:30 --proposal --seeds 100-102``) +0.006 / +0.004
at N = 3, B = 30 / 50 and -0.009 at N = 4, B = 30. Elsewhere it is unmeasured and ``auto``
stays the quadratic. Only the plain name ``"auto"``
resolves; a mapping with settings for the quadratic (``{"name": "auto", "ridge": ...}``) or a
surrogate object is used as given.
"""

from __future__ import annotations

from typing import Any

from mapframe.surrogates.quadratic import AutoSurrogate

__all__ = ["GP_FINAL_SAMPLERS", "GP_FINAL_TASKS", "resolve_auto_surrogate"]

#: The name that asks for the rule (the ``auto`` quadratic's registered name).
AUTO = AutoSurrogate.name
#: Samplers with whose GPs ``auto`` becomes the ``gp`` surrogate.
GP_FINAL_SAMPLERS = ("front", "gp")
#: Numbers of tasks at which it does.
GP_FINAL_TASKS = (3, 4)


def resolve_auto_surrogate(spec: Any, sampler_name: str, n_tasks: int) -> Any:
    """``"gp"`` where the rule above applies to ``spec``, else ``spec`` unchanged."""
    if (isinstance(spec, str) and spec == AUTO and sampler_name in GP_FINAL_SAMPLERS
            and n_tasks in GP_FINAL_TASKS):
        return "gp"
    return spec
