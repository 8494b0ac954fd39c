"""Merge strategies under MAP: front quality, preference-weighted score and cost per strategy.

The preference benchmark (Table 4) and the front-quality benchmark re-run **per merge
strategy** on the digits example at N = 2, 4 and 8 tasks (the first N of the example's task
list, the checkpoints of `mapframe example`). For every strategy, Plain MAP (the `sobol`
sampler, default surrogate and front solver) searches the coefficients on the *validation*
split with the same budget, max(2·(N+1)(N+2)/2, 20) evaluations (20, 30, 90), for seeds 0,
1, 2; its front points are then scored on the *test* split (not charged to the budget).
Two search boxes:

- `[0, 1]` — MAP's default `search_bounds`, what `merge_strategy: NAME` gives as is.
- `[0, 2α*]` — a box fitted to the strategy's scale: `α*` maximises the mean validation
  accuracy of the merge `c = α·(1, …, 1)` over α ∈ {0.25, 0.5, 1, 2, 4, 8} (the tuned global
  scale of the merging papers; 6 more validation evaluations, the same for every strategy).
  Iso-C, Iso-CTS and Model Stock shrink these small MLPs' task vectors (Iso-C spreads each
  update's few dominant singular values over the whole spectrum; Model Stock's weight
  `t = N cos θ / (1 + (N − 1) cos θ)` is near 0 for nearly orthogonal task vectors), so their
  useful coefficients lie well above 1; a [0, 1] box would judge the box, not the rule.

Reported per strategy, box and N, mean ± std over seeds:

- **HV fraction** — hypervolume of the test metrics of MAP's front over that of the *pooled*
  front: the non-dominated set of every strategy's fronts, both boxes, all seeds, at that N;
  one reference point per N (the pooled front's worst value per task minus 10 % of its
  range). 1.0 = the strategy's front alone covers all that every strategy found together.
  From N = 4 on, hypervolumes are Monte-Carlo estimates (the same fixed uniform points for
  every front).
- **pref. score** — the Table 4 number: preference-weighted test accuracy Σ p_i acc_i (%) of
  the front point with the best *predicted* Σ p_i m_i, averaged over the preference benchmark's
  20 Dirichlet preferences per N (the same vectors); **best on front** picks on test instead
  (an upper bound, not what a user gets).
- **Cost per evaluation** (one torch thread, measured once per strategy and N): **merge ms**,
  one merge of the coefficients into the model's tensors (mean of 10); **eval ms**, one whole
  validation evaluation, merge plus scoring (mean over a batch of 20); **peak MB**, the peak of
  the memory torch allocates during one merge on top of what was allocated before (the model
  and the task vectors are not counted), from the torch profiler's CPU memory events (running
  sum of each op's own allocations and frees in time order; numpy and Python objects are not
  seen); **prepare s / kept MB**: `prepare` (masks, SVD factors) once per study, and the torch
  memory it leaves allocated.

Strategy settings: `ties` trim 0.2 and `dare_ties` drop rate 0.5 (seed 0) as in the preference
benchmark; every new strategy at its defaults (docs/merge-strategies.md). `slerp` (N = 2 only)
and `soup` (coefficients only weight an average) are left to the preference benchmark.
"""

from __future__ import annotations

import time
from functools import partial
from typing import Any, cast

import numpy as np

from benchmarks.bench_peers import mc_dominated
from benchmarks.bench_preference import N_PREFERENCES
from benchmarks.common import DigitsProblem, map_budget, map_front, preference_scores
from mapframe.examples.digits import TASKS
from mapframe.metrics import hypervolume, pareto_mask, reference_point

#: Label -> strategy spec, in the order of the tables.
STRATEGIES: dict[str, Any] = {
    "task_arithmetic": "task_arithmetic",
    "ties": {"name": "ties", "trim": 0.2},
    "dare_ties": {"name": "dare_ties", "drop_rate": 0.5, "seed": 0},
    "tsv_m": "tsv_m",
    "iso_c": "iso_c",
    "iso_cts": "iso_cts",
    "breadcrumbs": "breadcrumbs",
    "della": "della",
    "model_stock": "model_stock",
    "karcher": "karcher",
    "multislerp": "multislerp",
}
NS = [2, 4, 8]
SEEDS = [0, 1, 2]
#: From this N on, hypervolumes are Monte-Carlo estimates with these fixed uniform points.
MC_HV_FROM_N = 4
MC_POINTS = 200_000
MC_SEED = 20240
#: The global scales tried to fit each strategy's search box.
SCALES = [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
BOXES = ["[0, 1]", "[0, 2α*]"]


def preferences(n: int) -> np.ndarray:
    """The preference benchmark's preference vectors at ``n`` tasks (same seed)."""
    return np.random.default_rng(1000 + n).dirichlet(np.ones(n), size=N_PREFERENCES)


def _torch_peak_bytes(fn: Any) -> tuple[float, float]:
    """(peak, net) bytes torch allocates on the CPU while ``fn()`` runs, from the profiler's
    memory events: a running sum of every op's own allocations and frees in time order."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    cur = peak = 0
    for e in events:
        cur += e.self_cpu_memory_usage
        peak = max(peak, cur)
    return float(peak), float(cur)


def cost(problem: DigitsProblem, spec: Any, reps: int = 10) -> dict[str, float]:
    """Prepare and per-evaluation cost of one strategy on ``problem`` (see the module doc)."""
    import torch

    from mapframe.merging import Merger, MergeStrategy
    from mapframe.plugin import get_registry

    n = len(problem.tasks)
    tv = problem.task_vectors
    assert tv is not None

    def strategy() -> MergeStrategy:
        return cast("MergeStrategy", get_registry().create("merge_strategy", spec))

    Merger(strategy(), tv)  # warm-up (lazy imports, first SVDs)
    t = time.perf_counter()
    Merger(strategy(), tv)
    prepare_s = time.perf_counter() - t
    holder: list[Any] = []
    _, kept = _torch_peak_bytes(lambda: holder.append(Merger(strategy(), tv)))
    merger = holder[0]
    out = {k: torch.empty((1, *tv.base(k).shape), dtype=tv.base(k).dtype) for k in tv.keys()}
    C = np.random.default_rng(0).uniform(0.0, 1.0, (reps, n))
    merger.merge_batch(C[:1], out)  # warm-up
    t = time.perf_counter()
    for c in C:
        merger.merge_batch(c[None], out)
    merge_s = (time.perf_counter() - t) / reps
    peak, _ = _torch_peak_bytes(lambda: merger.merge_batch(C[:1], out))
    ev = problem.evaluator(spec, "validation")
    C20 = np.random.default_rng(1).uniform(0.0, 1.0, (20, n))
    ev.evaluate(C20[:2])  # warm-up
    t = time.perf_counter()
    ev.evaluate(C20)
    eval_s = (time.perf_counter() - t) / len(C20)
    ev.close()
    return {"prepare_s": prepare_s, "kept_mb": kept / 1e6, "merge_ms": 1e3 * merge_s,
            "peak_mb": peak / 1e6, "eval_ms": 1e3 * eval_s}


def fit_scale(problem: DigitsProblem, spec: Any) -> tuple[float, list[float]]:
    """α* maximising the mean validation accuracy of ``c = α·1`` over :data:`SCALES`, and
    those mean accuracies."""
    ev = problem.evaluator(spec, "validation")
    acc = ev.evaluate(np.array(SCALES)[:, None] * np.ones((1, len(problem.tasks)))).mean(axis=1)
    ev.close()
    return SCALES[int(np.argmax(acc))], acc.tolist()


def _hv(F: np.ndarray, ref: np.ndarray, U: np.ndarray | None, box: float) -> float:
    if U is None:
        return hypervolume(F, ref)
    return box * float(mc_dominated(F, U).mean())


def new_results(seeds: list[int], names: list[str]) -> dict[str, Any]:
    """An empty results dict; :func:`run_setting` adds one N to it."""
    return {"ns": [], "seeds": seeds, "strategies": names, "settings": {}, "runs": [],
            "costs": [], "preferences": N_PREFERENCES, "mc_points": MC_POINTS,
            "mc_from_n": MC_HV_FROM_N}


def run_setting(out: dict[str, Any], problem: Any) -> None:
    """Every strategy of ``out`` on ``problem`` (a :class:`DigitsProblem` or anything with its
    ``tasks``, ``checkpoints``, ``task_vectors``, ``evaluator`` and ``evaluator_spec``): cost,
    fitted scale, MAP per box and seed, then the hypervolume fractions against the pooled
    front of this N."""
    n = len(problem.tasks)
    P = preferences(n)
    budget = map_budget(n)
    fronts: list[tuple[dict[str, Any], np.ndarray]] = []
    for name in out["strategies"]:
        spec = STRATEGIES[name]
        alpha, scale_acc = fit_scale(problem, spec)
        out["costs"].append({"n": n, "strategy": name, "alpha": alpha,
                             "scale_accuracy": scale_acc, **cost(problem, spec)})
        for box, hi in zip(BOXES, (1.0, 2.0 * alpha)):
            for seed in out["seeds"]:
                t = time.perf_counter()
                res, F_test = map_front(problem, spec, budget, seed, (0.0, hi),
                                        skip_failed=True)
                wall = time.perf_counter() - t
                ok = np.isfinite(F_test).all(axis=1)  # merges that raised are dropped
                F_test = F_test[ok]
                selected, best = preference_scores(res.front.predicted[ok], F_test, P)
                row = {"n": n, "strategy": name, "box": box, "upper": hi, "seed": seed,
                       "budget": budget + (len(SCALES) if box != BOXES[0] else 0),
                       "front_size": len(F_test), "failed_merges": int((~ok).sum()),
                       "pref": float(100 * selected.mean()),
                       "pref_std": float(100 * selected.std()),
                       "pref_best": float(100 * best.mean()), "wall_s": wall}
                out["runs"].append(row)
                fronts.append((row, F_test[pareto_mask(F_test)]))
        print(f"  N = {n} {name}: done", flush=True)
    pooled = np.vstack([F for _, F in fronts])
    pooled = pooled[pareto_mask(pooled)]
    ref = reference_point(pooled, margin=0.1)
    U, volume = None, 1.0
    if n >= MC_HV_FROM_N:
        top = pooled.max(axis=0)
        volume = float(np.prod(top - ref))
        U = np.random.default_rng(MC_SEED).uniform(ref, top, (MC_POINTS, n))
    hv_pooled = _hv(pooled, ref, U, volume)
    for row, F in fronts:
        row["hv_fraction"] = _hv(F, ref, U, volume) / hv_pooled
    out["ns"].append(n)
    out["settings"][str(n)] = {"tasks": list(problem.tasks), "budget": budget,
                               "reference_point": ref.tolist(),
                               "pooled_front_size": len(pooled)}


def run(quick: bool = False, ns: list[int] | None = None,
        strategies: list[str] | None = None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    out = new_results(SEEDS[:1] if quick else SEEDS, strategies or list(STRATEGIES))
    for n in ns or ([2, 4] if quick else NS):
        run_setting(out, DigitsProblem.make(list(TASKS[:n])))
    return out


# --------------------------------------------------------------------------- report


def _stats(data: dict[str, Any], n: int, name: str, box: str,
           key: str) -> tuple[float, float]:
    v = np.array([r[key] for r in data["runs"]
                  if r["n"] == n and r["strategy"] == name and r["box"] == box])
    return (float(v.mean()), float(v.std())) if len(v) else (np.nan, np.nan)


def _mean_of(data: dict[str, Any], n: int, col: tuple[str, str], name: str) -> float:
    return _stats(data, n, name, *col)[0]


def _cost(data: dict[str, Any], n: int, name: str) -> dict[str, Any] | None:
    return next((c for c in data["costs"] if c["n"] == n and c["strategy"] == name), None)


def _ms(v: tuple[float, float], fmt: str = ".3f") -> str:
    return f"{v[0]:{fmt}} ± {v[1]:{fmt}}"


def _box_reading(data: dict[str, Any], n: int, names: list[str], box: str) -> str:
    hv = {s: _stats(data, n, s, box, "hv_fraction") for s in names}
    pref = {s: _stats(data, n, s, box, "pref") for s in names}
    by_hv = sorted(names, key=lambda s: -hv[s][0])
    top = by_hv[0]
    # Within one standard deviation (over seeds, the larger of the two) of the best mean.
    tied = [s for s in by_hv[1:] if hv[top][0] - hv[s][0] <= max(hv[top][1], hv[s][1])]
    text = f"box `{box}`: best front `{top}` (HV fraction {_ms(hv[top])}"
    if tied:
        text += f"; within a standard deviation: {', '.join(f'`{s}`' for s in tied)}"
    text += ")"
    if top != "task_arithmetic" and "task_arithmetic" in hv:
        text += f", task arithmetic {_ms(hv['task_arithmetic'])}"
    ahead = [s for s in names if s != "task_arithmetic" and "task_arithmetic" in hv
             and hv[s][0] > hv["task_arithmetic"][0]]
    text += (f"; ahead of task arithmetic: {', '.join(f'`{s}`' for s in ahead) or 'none'}; "
             f"worst `{by_hv[-1]}` ({hv[by_hv[-1]][0]:.3f}).")
    best_pref = max(names, key=lambda s: pref[s][0])
    text += f" Best preference-weighted score `{best_pref}` ({pref[best_pref][0]:.1f} %"
    if best_pref != "task_arithmetic" and "task_arithmetic" in pref:
        text += f"; task arithmetic {pref['task_arithmetic'][0]:.1f} %"
    return text + ")."


def reading(data: dict[str, Any]) -> list[str]:
    """The written reading, generated from the numbers."""
    lines = []
    for n in data["ns"]:
        names = [s for s in data["strategies"] if _cost(data, n, s)]
        budget = data["settings"][str(n)]["budget"]
        parts = [_box_reading(data, n, names, box) for box in BOXES]
        costs = {s: _cost(data, n, s) for s in names}
        ta = costs.get("task_arithmetic")
        if ta:
            slow = sorted((s for s in names if costs[s]["eval_ms"] > 2 * ta["eval_ms"]),  # type: ignore[index]
                          key=lambda s: -costs[s]["eval_ms"])  # type: ignore[index]
            if slow:
                parts.append("Evaluations more than twice as costly as task arithmetic's "
                             f"({ta['eval_ms']:.1f} ms): " + ", ".join(
                                 f"`{s}` {costs[s]['eval_ms']:.1f} ms"  # type: ignore[index]
                                 for s in slow) + ".")
        lines.append(f"- **N = {n}** ({budget} evaluations; {budget + len(SCALES)} in the "
                     "fitted box) — " + " ".join(parts))
    return lines


def report(data: dict[str, Any]) -> str:
    mc = (f"Monte-Carlo hypervolumes ({data['mc_points']:,} fixed uniform points) from N = "
          f"{data['mc_from_n']} on")
    lines = [f"Mean ± std over seeds {data['seeds']}; {data['preferences']} preferences per N; "
             f"{mc}. Cost columns: one torch thread, one measurement per strategy and N on a "
             "machine shared with other jobs (expect outliers; compare orders of magnitude). "
             "The best mean per column in **bold**.", ""]
    for n in data["ns"]:
        st = data["settings"][str(n)]
        names = [s for s in data["strategies"] if _cost(data, n, s)]
        lines += [f"**N = {n}** (tasks {', '.join(st['tasks'])}; MAP budget {st['budget']} "
                  "validation evaluations per strategy and box; pooled front "
                  f"{st['pooled_front_size']} points)", "",
                  "| strategy | `α*` | HV `[0, 1]` | pref. (%) `[0, 1]` | HV `[0, 2α*]` | "
                  "pref. (%) `[0, 2α*]` | best on front (%) `[0, 2α*]` | merge ms | eval ms "
                  "| peak MB / merge | prepare s | kept MB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        cols = [(box, key) for box in BOXES for key in ("hv_fraction", "pref")]
        best = {col: max(names, key=partial(_mean_of, data, n, col)) for col in cols}
        for s in names:
            c = _cost(data, n, s)
            assert c is not None
            cells = []
            for col in cols:
                txt = _ms(_stats(data, n, s, *col), ".3f" if col[1] == "hv_fraction" else ".1f")
                cells.append(f"**{txt}**" if best[col] == s else txt)
            lines.append(
                f"| `{s}` | {c['alpha']:g} | " + " | ".join(cells) + " | "
                f"{_stats(data, n, s, BOXES[1], 'pref_best')[0]:.1f} | {c['merge_ms']:.2f} | "
                f"{c['eval_ms']:.1f} | {c['peak_mb']:.2f} | {c['prepare_s']:.2f} | "
                f"{c['kept_mb']:.2f} |")
        lines.append("")
    failed = [r for r in data["runs"] if r.get("failed_merges")]
    if failed:
        lines += ["Merges that raised when the front was scored on test (dropped from that "
                  "front): " + "; ".join(
                      f"`{r['strategy']}` N = {r['n']} box `{r['box']}` seed {r['seed']}: "
                      f"{r['failed_merges']} of {r['front_size'] + r['failed_merges']}"
                      for r in failed) + ".", ""]
    lines += ["Reading (generated from the numbers above; within a box every strategy had the "
              "same evaluations, so the best front per evaluation spent is the best HV "
              "fraction):", "", *reading(data), ""]
    return "\n".join(lines)
