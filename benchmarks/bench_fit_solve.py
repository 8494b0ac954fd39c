"""Surrogate fit + front solve time for N = 2 ... 8 tasks of the digits example.

For each N, 2 × (N+1)(N+2)/2 Sobol points are evaluated on the validation split (not timed);
then the N auto surrogates (sigmoid-warped quadratics, since accuracy is in [0, 1]) are
fitted and the front is solved with NSGA-III, NSGA-II and the grid solver (a regular grid
for N <= 3, 16384 Sobol points beyond), each timed together with the fit. The median
of 3 repetitions is reported, with the surrogates' mean R² and leave-one-out R².
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np

from benchmarks.common import DigitsProblem
from mapframe.examples.digits import TASKS
from mapframe.history import History
from mapframe.plugin import get_registry
from mapframe.problem import SearchSpace
from mapframe.samplers.base import Sampler

REPEATS = 3


def run(quick: bool = False) -> dict[str, Any]:
    registry = get_registry()
    ns = [2, 4, 8] if quick else list(range(2, 9))
    rows = []
    problem_all = DigitsProblem.make(list(TASKS))
    for n in ns:
        tasks = list(TASKS[:n])
        problem = problem_all if n == len(TASKS) else DigitsProblem.make(tasks)
        space = SearchSpace.box(n)
        p = (n + 1) * (n + 2) // 2
        sampler: Sampler = registry.create("sampler", "sobol")  # type: ignore[assignment]
        X = sampler.propose(2 * p, space, History(n, n), np.random.default_rng(0))
        Y = problem.evaluate(X, "validation")
        task_specs = problem.val.tasks
        proto = registry.create("surrogate", "auto")
        for solver_name in ("nsga3", "nsga2", "grid"):
            solver = registry.create("front_solver", solver_name)
            times, fit_times, sizes, r2s, loos = [], [], [], [], []
            for _ in range(REPEATS):
                t0 = time.perf_counter()
                sur = [copy.deepcopy(proto).fit(X, Y[:, j], task_specs[j]) for j in range(n)]
                t1 = time.perf_counter()

                def predict(C: np.ndarray, sur: list = sur) -> np.ndarray:
                    return np.column_stack([s.predict(C) for s in sur])

                res = solver.solve(predict, space, task_specs, seed=0)  # type: ignore[attr-defined]
                t2 = time.perf_counter()
                times.append(t2 - t0)
                fit_times.append(t1 - t0)
                sizes.append(len(res.X))
                r2s.append(np.mean([s.diagnostics()["r2"] for s in sur]))
                loos.append(np.nanmean([s.diagnostics()["loo_r2"] for s in sur]))
            rows.append({"n": n, "solver": solver_name, "samples": 2 * p,
                         "fit_s": float(np.median(fit_times)),
                         "fit_solve_s": float(np.median(times)),
                         "front_size": int(np.median(sizes)), "r2": float(np.mean(r2s)),
                         "loo_r2": float(np.mean(loos))})
    return {"rows": rows, "repeats": REPEATS}


def report(data: dict[str, Any]) -> str:
    lines = [
        "Median of 3 repetitions; fit = N sigmoid-warped quadratic surrogates on 2 × (N+1)(N+2)/2 "
        "evaluations (validation split); solve = the front solver with its default settings on "
        "those surrogates.",
        "",
        "| N | evaluations | fit (s) | fit + NSGA-III (s) | fit + NSGA-II (s) | fit + grid (s) "
        "| front size (NSGA-III) | mean R² | mean LOO R² |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    by = {(r["n"], r["solver"]): r for r in data["rows"]}
    for n in sorted({r["n"] for r in data["rows"]}):
        a, b, g = by[(n, "nsga3")], by[(n, "nsga2")], by[(n, "grid")]
        lines.append(f"| {n} | {a['samples']} | {a['fit_s']:.3f} | {a['fit_solve_s']:.3f} | "
                     f"{b['fit_solve_s']:.3f} | {g['fit_solve_s']:.3f} | {a['front_size']} | "
                     f"{a['r2']:.3f} | "
                     f"{a['loo_r2']:.3f} |")
    lines.append("")
    return "\n".join(lines)
