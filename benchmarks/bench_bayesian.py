"""Bayesian MAP: adaptive samplers (`bins`, `gp`) vs Plain MAP vs random search.

Each method searches on the validation split of the built-in digits example with the same
number of real evaluations (the budget). The three MAP variants differ only in the sampler:
`sobol` (Plain MAP: the whole design at once), `bins` (the paper's Algorithm 3: hyperspherical
bins scored by an upper confidence bound on the surrogate's error) and `gp` (one Gaussian
process per task, batches chosen by Monte-Carlo expected hypervolume improvement); all fit the
default `auto` surrogate and solve with the default `auto` front solver. *GP sampler + GP
surrogate* also solves the front on the GP posterior means instead of quadratics. Random search
proposes the non-dominated set of its evaluated points. Every proposed set is evaluated for
real on the *test* split (not charged) and scored by its hypervolume fraction against the
Pareto front of a dense grid, also on test. *Sampler time* is the sampler's own work (all
`propose` calls; evaluation time excluded), per round at most and in total.

The *stopping rule* rows give the adaptive samplers a maximum budget of 50 with the `plateau`
rule, and report how many evaluations they used and the quality reached.

Reading of the recorded run. At the smallest budgets the GP sampler is clearly ahead of Plain
MAP at N = 2 (budget 9: 0.979 vs 0.950, with a smaller spread over seeds), which is the paper's
"6 + 3 beats 9" claim reproduced. From budget 20 on, all MAP variants sit at the ceiling this
example allows (a method that searches on validation and is scored on test cannot reach 1.0; at
N = 3 the 9261-point grid searched on validation, thinned to 100 points like MAP's front,
scores 0.917, see the Plain MAP benchmark), and the differences are within one standard error:
the GP sampler reaches 0.985 at N = 2 with 20 evaluations (target 0.98), but is not measurably
better than Plain MAP there. The bin sampler matches Plain MAP within noise but does not beat
it: on this example the quadratic fits well everywhere, so "where the surrogate is wrong"
carries little signal. At N = 3 and budget 9, only the GP surrogate can be fitted at all (a
quadratic needs 10 points); the quadratic surrogate beats the GP surrogate at N = 2 and ties at
N = 3. The plateau rule stopped the GP sampler early in 3 of 5 runs at N = 2 with no loss of
quality; with the bin sampler, whose leave-one-out error keeps moving, it rarely stops before
the maximum. Sampler overhead stays far below the 5 s per round target (slowest round under 1.2
s, that one including the one-off import of torch and gpytorch).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import DigitsProblem, mean_std
from mapframe import MergeStudy
from mapframe.metrics import hypervolume, pareto_mask, reference_point

SETTINGS = {
    2: {"tasks": ["rot90", "flip"], "grid": 51},
    3: {"tasks": ["rot90", "flip", "roll"], "grid": 21},
}
BUDGETS = [9, 12, 20, 30]
SEEDS = [0, 1, 2, 3, 4]
METHODS = {
    "Plain MAP (sobol)": {"sampler": "sobol"},
    "Bayesian MAP (bins)": {"sampler": "bins"},
    "Bayesian MAP (gp sampler)": {"sampler": "gp"},
    "GP sampler + GP surrogate": {"sampler": "gp", "surrogate": "gp"},
    "random search": None,
}
STOP_BUDGET = 50
STOP_METHODS = {
    "bins + plateau": {"sampler": "bins"},
    "gp sampler + plateau": {"sampler": "gp"},
}
OVERHEAD_TASKS = ["rot90", "flip", "roll", "invert"]


def _hv(F: np.ndarray, gt: np.ndarray, ref: np.ndarray) -> float:
    return hypervolume(F, ref) / hypervolume(gt, ref)


def _study(problem: DigitsProblem, budget: int, seed: int, **kw: Any) -> Any:
    ck = {"pretrained": problem.checkpoints["pretrained"],
          "finetuned": problem.checkpoints["finetuned"]}
    return MergeStudy(evaluator={"name": "digits", "tasks": problem.tasks,
                                 "split": "validation"},
                      checkpoints=ck, budget=budget, seed=seed, **kw)


def _map_row(problem: DigitsProblem, gt: np.ndarray, ref: np.ndarray, budget: int, seed: int,
             **kw: Any) -> dict[str, Any]:
    t = time.perf_counter()
    res = _study(problem, budget, seed, **kw).run()
    wall = time.perf_counter() - t
    F = problem.evaluate(res.front.coefficients, "test")
    rounds = res.rounds
    return {"hv_fraction": _hv(F, gt, ref), "evaluations": len(res.history),
            "proposed": len(F), "wall_s": wall, "rounds": len(rounds),
            "sampler_s": res.timings["propose_s"],
            "sampler_max_round_s": max(r["propose_s"] for r in rounds),
            "stopped_early": res.stopped_early is not None}


def run(quick: bool = False) -> dict[str, Any]:
    budgets = [9, 20] if quick else BUDGETS
    seeds = SEEDS[:1] if quick else SEEDS
    out: dict[str, Any] = {"budgets": budgets, "seeds": seeds, "settings": {}, "rows": [],
                           "stopping": [], "overhead": []}
    for n, setting in SETTINGS.items():
        problem = DigitsProblem.make(setting["tasks"])
        grid_n = 11 if quick else setting["grid"]
        _, gt = problem.ground_truth(grid_n)
        ref = reference_point(gt, margin=0.1)
        out["settings"][n] = {"tasks": setting["tasks"], "grid_points": grid_n**n,
                              "ground_truth_front_size": len(gt),
                              "reference_point": ref.tolist()}
        for budget in budgets:
            for seed in seeds:
                for method, kw in METHODS.items():
                    row: dict[str, Any] = {"n": n, "budget": budget, "seed": seed,
                                           "method": method}
                    if kw is None:
                        C = np.random.default_rng(seed).uniform(0, 1, (budget, n))
                        prop = C[pareto_mask(problem.evaluate(C, "validation"))]
                        row.update(hv_fraction=_hv(problem.evaluate(prop, "test"), gt, ref),
                                   evaluations=budget, proposed=len(prop))
                    elif budget < _min_budget(kw.get("surrogate", "auto"), n):
                        row.update(skipped=f"budget below the {_min_budget('auto', n)} "
                                           "parameters of the quadratic surrogate")
                    else:
                        row.update(_map_row(problem, gt, ref, budget, seed, **kw))
                    out["rows"].append(row)
                    print(f"  N={n} budget={budget} seed={seed} {method}: "
                          f"{row.get('hv_fraction', float('nan')):.3f}", flush=True)
        for seed in seeds:
            for method, kw in STOP_METHODS.items():
                row = {"n": n, "budget": STOP_BUDGET, "seed": seed, "method": method,
                       **_map_row(problem, gt, ref, STOP_BUDGET, seed, stopping="plateau",
                                  **kw)}
                out["stopping"].append(row)
    # Sampler overhead at N = 4 (timing only: no ground truth at this size).
    problem = DigitsProblem.make(OVERHEAD_TASKS)
    for method in ("bins", "gp"):
        t = time.perf_counter()
        res = _study(problem, 20 if quick else 40, 0, sampler=method).run()
        out["overhead"].append({
            "n": 4, "method": method, "evaluations": len(res.history), "rounds": len(res.rounds),
            "sampler_s": res.timings["propose_s"],
            "sampler_max_round_s": max(r["propose_s"] for r in res.rounds),
            "wall_s": time.perf_counter() - t})
    return out


def _versus_plain(data: dict[str, Any], n: Any) -> list[str]:
    """Per budget: the best adaptive MAP variant minus Plain MAP, with its standard error."""
    adaptive = [m for m in METHODS if m not in ("Plain MAP (sobol)", "random search")]
    out = [f"Best adaptive variant minus Plain MAP at N = {n} (difference of mean HV "
           "fractions ± its standard error over seeds; positive favours the adaptive one):", "",
           "| budget | best adaptive variant | difference |", "|---|---|---|"]
    for b in data["budgets"]:
        def vals(m: str, b: int = b) -> np.ndarray:
            return np.array([r["hv_fraction"] for r in data["rows"]
                             if str(r["n"]) == str(n) and r["budget"] == b
                             and r["method"] == m and "hv_fraction" in r])
        plain = vals("Plain MAP (sobol)")
        scored = [(vals(m).mean(), m) for m in adaptive if vals(m).size]
        if not scored:
            continue
        best_mean, best = max(scored)
        if plain.size == 0:
            out.append(f"| {b} | {best} | no Plain MAP at this budget |")
            continue
        a = vals(best)
        se = np.sqrt(a.var(ddof=1) / a.size + plain.var(ddof=1) / plain.size) \
            if min(a.size, plain.size) > 1 else float("nan")
        out.append(f"| {b} | {best} | {best_mean - plain.mean():+.3f} ± {se:.3f} |")
    return [*out, ""]


def _min_budget(surrogate: str, n: int) -> int:
    from mapframe.plugin import get_registry

    return int(get_registry().create("surrogate", surrogate).n_params(n))


def report(data: dict[str, Any]) -> str:
    lines = [
        "`HV fraction`: hypervolume of the test-split metrics of the proposed set over that of "
        "the ground-truth front (one reference point per N: the ground-truth front's worst "
        "value per task minus 10 % of its range). Mean ± std over seeds "
        f"{data['seeds']}. `sampler time`: the sampler's own time per study (mean over seeds) "
        "and its slowest single round. n/a: the budget is below the quadratic surrogate's "
        "parameter count ((N+1)(N+2)/2 = 10 at N = 3), so no quadratic can be fitted.",
        "",
    ]
    for n, st in data["settings"].items():
        lines += [
            f"**N = {n}** (tasks {', '.join(st['tasks'])}; ground truth: {st['grid_points']} "
            f"grid points on test, {st['ground_truth_front_size']} on its front).",
            "",
            "| budget | method | HV fraction | rounds | sampler time: total / slowest round (s) "
            "| wall time (s) |",
            "|---|---|---|---|---|---|",
        ]
        for b in data["budgets"]:
            for m in METHODS:
                rows = [r for r in data["rows"] if str(r["n"]) == str(n) and r["budget"] == b
                        and r["method"] == m]
                if not rows:
                    continue
                if "skipped" in rows[0]:
                    lines.append(f"| {b} | {m} | n/a | | | |")
                    continue
                if "rounds" in rows[0]:
                    extra = (f"{np.mean([r['rounds'] for r in rows]):.1f} | "
                             f"{np.mean([r['sampler_s'] for r in rows]):.2f} / "
                             f"{np.max([r['sampler_max_round_s'] for r in rows]):.2f} | "
                             f"{np.mean([r['wall_s'] for r in rows]):.1f}")
                else:
                    extra = "– | – | –"
                lines.append(f"| {b} | {m} | {mean_std(rows, 'hv_fraction')} | {extra} |")
        lines.append("")
        lines += _versus_plain(data, n)
        stop = [r for r in data["stopping"] if str(r["n"]) == str(n)]
        if stop:
            lines += [f"Stopping rule at N = {n} (`stopping: plateau`, maximum budget "
                      f"{stop[0]['budget']}):", "",
                      "| method | evaluations used | stopped early | HV fraction |",
                      "|---|---|---|---|"]
            for m in STOP_METHODS:
                rows = [r for r in stop if r["method"] == m]
                if rows:
                    used = [r["evaluations"] for r in rows]
                    lines.append(
                        f"| {m} | {np.mean(used):.1f} (min {min(used)}, max {max(used)}) | "
                        f"{sum(r['stopped_early'] for r in rows)} of {len(rows)} | "
                        f"{mean_std(rows, 'hv_fraction')} |")
            lines.append("")
    if data.get("overhead"):
        lines += ["Sampler overhead at N = 4 (tasks rot90, flip, roll, invert; seed 0):", "",
                  "| sampler | evaluations | rounds | sampler time total (s) | slowest round "
                  "(s) |", "|---|---|---|---|---|"]
        for r in data["overhead"]:
            lines.append(f"| {r['method']} | {r['evaluations']} | {r['rounds']} | "
                         f"{r['sampler_s']:.2f} | {r['sampler_max_round_s']:.2f} |")
        lines.append("")
    return "\n".join(lines)
