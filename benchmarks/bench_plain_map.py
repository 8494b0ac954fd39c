"""Plain MAP vs random search on the built-in digits example, scored on the test split.

Both methods search on the validation split with the same number of real evaluations. MAP
proposes its predicted front; random search proposes the non-dominated set of its evaluated
points. Each proposed set is then evaluated for real on the *test* split (not charged to the
budget) and scored by its hypervolume as a fraction of the ground truth's: the Pareto front
of a dense grid over [0, 1]^N, also evaluated on the test split, with one reference point per
N shared by every method.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import DigitsProblem
from mapframe import MergeStudy
from mapframe.metrics import (
    hypervolume,
    inverted_generational_distance,
    pareto_mask,
    reference_point,
)

SETTINGS = {
    2: {"tasks": ["rot90", "flip"], "grid": 51},
    3: {"tasks": ["rot90", "flip", "roll"], "grid": 21},
}
BUDGETS = [10, 20, 30, 50]
SEEDS = [0, 1, 2]


def _score(F: np.ndarray, gt: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    return {"hv_fraction": hypervolume(F, ref) / hypervolume(gt, ref),
            "igd": inverted_generational_distance(F[pareto_mask(F)], gt)}


def run(quick: bool = False) -> dict[str, Any]:
    budgets = [10, 20] if quick else BUDGETS
    seeds = SEEDS[:1] if quick else SEEDS
    out: dict[str, Any] = {"budgets": budgets, "seeds": seeds, "settings": {}, "rows": []}
    for n, setting in SETTINGS.items():
        problem = DigitsProblem.make(setting["tasks"])
        t = time.perf_counter()
        grid = setting["grid"] if not quick else 11
        _, gt = problem.ground_truth(grid)
        gt_time = time.perf_counter() - t
        ref = reference_point(gt, margin=0.1)
        out["settings"][n] = {"tasks": setting["tasks"], "grid_points": grid**n,
                              "ground_truth_front_size": len(gt), "ground_truth_s": gt_time,
                              "reference_point": ref.tolist(),
                              "ground_truth_hv": hypervolume(gt, ref)}
        for budget in budgets:
            if budget < (n + 1) * (n + 2) // 2:
                continue
            for seed in seeds:
                # Plain MAP: search on validation, propose the predicted front.
                t = time.perf_counter()
                res = MergeStudy(evaluator={"name": "digits", "tasks": problem.tasks,
                                            "split": "validation"},
                                 budget=budget, seed=seed,
                                 checkpoints={"pretrained": problem.checkpoints["pretrained"],
                                              "finetuned": problem.checkpoints["finetuned"]},
                                 sampler="sobol", surrogate="auto",
                                 front_solver="nsga3").run()
                map_time = time.perf_counter() - t
                F_map = problem.evaluate(res.front.coefficients, "test")
                r2 = [d.get("r2") for d in res.diagnostics.values()]
                loo = [d.get("loo_r2") for d in res.diagnostics.values()]
                out["rows"].append({"n": n, "budget": budget, "seed": seed, "method": "MAP",
                                    **_score(F_map, gt, ref), "proposed": len(F_map),
                                    "r2_mean": float(np.mean(r2)),
                                    "loo_r2_mean": float(np.nanmean(loo)),
                                    "wall_s": map_time})
                # Random search: the same number of validation evaluations.
                rng = np.random.default_rng(seed)
                C = rng.uniform(0, 1, (budget, n))
                F_val = problem.evaluate(C, "validation")
                proposed = C[pareto_mask(F_val)]
                F_rand = problem.evaluate(proposed, "test")
                out["rows"].append({"n": n, "budget": budget, "seed": seed,
                                    "method": "random search", **_score(F_rand, gt, ref),
                                    "proposed": len(proposed)})
    return out


def report(data: dict[str, Any]) -> str:
    lines = [
        "Searched on the validation split, scored on the test split. `HV fraction` is the "
        "hypervolume of the test-split metrics of each method's proposed set divided by "
        "that of the ground-truth front (a dense grid over [0, 1]^N evaluated on the test "
        "split), with one shared reference point per N (the ground-truth front's worst value "
        "per task minus 10 % of its range). IGD is measured from the ground-truth front to "
        "the proposed set's non-dominated points (accuracy units; lower is better). "
        "Mean ± std over seeds "
        f"{data['seeds']}.",
        "",
    ]
    for n, st in data["settings"].items():
        lines.append(f"**N = {n}** (tasks {', '.join(st['tasks'])}; ground truth: "
                     f"{st['grid_points']} grid points, {st['ground_truth_front_size']} on "
                     f"the front, evaluated in {st['ground_truth_s']:.1f} s)")
        lines.append("")
        lines.append("| budget | MAP HV fraction | random HV fraction | MAP IGD | random IGD "
                     "| MAP surrogate R² (LOO) | MAP wall time |")
        lines.append("|---|---|---|---|---|---|---|")
        for b in data["budgets"]:
            rows = [r for r in data["rows"] if str(r["n"]) == str(n) and r["budget"] == b]
            if not rows:
                continue
            m = [r for r in rows if r["method"] == "MAP"]
            r_ = [r for r in rows if r["method"] == "random search"]

            def ms(rs: list[dict[str, Any]], key: str, fmt: str = ".3f") -> str:
                v = np.array([r[key] for r in rs], float)
                return f"{v.mean():{fmt}} ± {v.std():{fmt}}"

            lines.append(f"| {b} | {ms(m, 'hv_fraction')} | {ms(r_, 'hv_fraction')} | "
                         f"{ms(m, 'igd', '.4f')} | {ms(r_, 'igd', '.4f')} | "
                         f"{np.mean([r['r2_mean'] for r in m]):.3f} "
                         f"({np.mean([r['loo_r2_mean'] for r in m]):.3f}) | "
                         f"{np.mean([r['wall_s'] for r in m]):.2f} s |")
        lines.append("")
    return "\n".join(lines)
