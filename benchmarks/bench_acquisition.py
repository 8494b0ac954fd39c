"""BoTorch's qLogNEHVI as the acquisition of the front sampler's loop, against the front sampler.

Issue 20 asked for the adaptive search to be built on BoTorch (qLogNEHVI, `optimize_acqf`
over the continuous box). This benchmark keeps everything of the `front` sampler's loop
(`mapframe/samplers/front.py`) and swaps only how each round's batch is chosen:

- **front sampler** (`sampler: front`, defaults): one exact GP per task (mapframe's
  `fit_gp`), the predicted Pareto set solved on the posterior means, the batch picked from it
  by hypervolume gain over the measured front;
- **BoTorch qLogNEHVI** (the `botorch` sampler, `sampler: {name: botorch, acquisition:
  qlognehvi}`, `mapframe/samplers/botorch_sampler.py`; until 2026-12-05 a benchmark-only
  subclass of the front sampler with the same round): coefficients scaled to the unit cube,
  metrics turned into maximisation, one `SingleTaskGP` per task (`Standardize` outcome
  transform) in a `ModelListGP`, `fit_gpytorch_mll`,
  `qLogNoisyExpectedHypervolumeImprovement` (reference point
  `infer_reference_point` of the measured front, `X_baseline` every measured point,
  `prune_baseline`, 64 Sobol' QMC samples), `optimize_acqf` over the box with 4 restarts and
  256 raw samples (`batch_limit` 5, `maxiter` 200), the batch of 3 chosen sequentially.
  Candidates within 1e-3 (max-norm) of a measured point are replaced by fresh Sobol' points,
  as in the front sampler.

Both run inside `MergeStudy` (no verification) with the same initial design, the first
2 (N + 1) points of the same scrambled Sobol' sequence, and then batches of 3. The setting and
scoring are the peers benchmark's (`benchmarks/bench_peers.py`, imported): the digits example
at N = 3 (rot90, flip, roll), search on the validation split, every set scored on the test
split against the Pareto front of a 21^3 grid. **HV fraction**: the test hypervolume of the
points that no other evaluated point dominates on validation (the peers' rule), over the
ground truth's. **Own overhead**: wall time not spent evaluating, until the B-th evaluation.
One study per method and seed runs to the largest budget and is scored at every budget from
its first B evaluations (both methods pick their batches greedily, so the first B points are
what a study with budget B proposes, up to the last batch being cut).

The default run is seeds 0-2 at budgets 10 / 20 / 30 / 50 (`--quick`: seed 0 at 10 / 20):
qLogNEHVI's own overhead per study was 188 s to B = 30 and 396 s to B = 50 in the recorded
run (2 cores), so the whole run takes about 13 minutes. Both methods' studies run two at a time
(one per core), so their overheads are measured under the same load.

Reading of the recorded run (seeds 0-2, 2026-12-05, the shipped `botorch` sampler; the
studies ran two at a time, one per core, so both methods' overheads are measured under the
same load): **BoTorch's acquisition does not beat the front sampler.** The front sampler is
ahead at B = 20, 30 and 50 (+0.012 / +0.013 / +0.011, 3 of 3 seeds each) and level at
B = 10 (-0.003, 2 of 3 seeds ahead: after the shared 8-point start each has chosen only 2
points), at 2.2-25 s of own overhead against 48-396 s (16-22 times less). The run of
2026-12-03 (the benchmark-only subclass, the same round; the ground truth then had 1 437
front points, now 1 411) read the same: +0.012 at B = 20-50, -0.002 at B = 10, with
qLogNEHVI's overhead at 14-301 s on the machine of that day. The 2026-12-02
throw-away prototype (seed 0 for qLogNEHVI, on a loaded machine) had read 0.669 / 0.796 /
0.841 / 0.875 for qLogNEHVI against 0.661 / 0.776 / 0.822 / 0.879 for the front sampler;
this rerunnable loop, with the front sampler's own initial design for both, does not
reproduce qLogNEHVI's lead at B = 10-30. So `sampler: auto` keeps picking `front`; the
`botorch` sampler is there for users who want BoTorch's own acquisition in a study.
"""

from __future__ import annotations

import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

from benchmarks.bench_peers import TASKS, TRUTH, _black_box, _setting
from benchmarks.common import mean_std
from mapframe import MergeStudy
from mapframe.samplers.botorch_sampler import BoTorchSampler
from mapframe.samplers.front import FrontSampler

N = 3
BUDGETS = [10, 20, 30, 50]
QUICK_BUDGETS = [10, 20]
SEEDS = [0, 1, 2]
METHODS = ("front sampler", "BoTorch qLogNEHVI")
#: The BoTorch settings of the loop (those of the 2026-12-02 prototype).
QLOGNEHVI_SETTINGS = {"mc_samples": 64, "num_restarts": 4, "raw_samples": 256, "batch": 3}


def _job(job: dict[str, Any]) -> list[dict[str, Any]]:
    """One study of ``job["method"]`` to the largest budget, scored at every budget."""
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)
    method, seed, budgets = job["method"], job["seed"], job["budgets"]
    problem, scorer = _setting(N)
    # Both loops start from the same Sobol' design (the front sampler's default start is a
    # Latin hypercube since 2026-12-06; this comparison is of the rounds' acquisition).
    sampler = (FrontSampler(design="sobol") if method == "front sampler"
               else BoTorchSampler(acquisition="qlognehvi", **QLOGNEHVI_SETTINGS))
    bb = _black_box(problem, N, max(budgets))
    bb.start()
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        MergeStudy(objective=bb, tasks=problem.val.tasks, budget=max(budgets), seed=seed,
                   sampler=sampler).run()
    print(f"  {method} seed {seed}: {time.perf_counter() - t:.0f} s", flush=True)
    rows = []
    for b in budgets:
        X, F = bb.arrays(b)
        rows.append({"method": method, "seed": seed, "budget": b,
                     "hv_fraction": scorer.proposed(X, F)["hv_fraction"],
                     "overhead_s": bb.overhead_at(b), "eval_s": bb.eval_before[b - 1]})
    return rows


def run(quick: bool = False, workers: int = 2) -> dict[str, Any]:
    budgets, seeds = (QUICK_BUDGETS, SEEDS[:1]) if quick else (BUDGETS, SEEDS)
    _, scorer = _setting(N)  # the ground truth once, before the workers start
    # qLogNEHVI first (the slowest), so that both workers stay busy.
    todo = [{"method": m, "seed": s, "budgets": budgets} for m in reversed(METHODS)
            for s in seeds]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        rows = [r for part in pool.map(_job, todo) for r in part]
    return {"n": N, "tasks": TASKS[:N], "truth": list(TRUTH[N]),
            "truth_front_size": len(scorer.truth), "budgets": budgets, "seeds": seeds,
            "methods": list(METHODS), "qlognehvi": QLOGNEHVI_SETTINGS, "rows": rows}


def report(data: dict[str, Any]) -> str:
    budgets = data["budgets"]
    lines = [f"N = {data['n']} (tasks {', '.join(data['tasks'])}); seeds {data['seeds']}; "
             f"ground truth: a grid of {data['truth'][1] ** data['n']} points on test, "
             f"{data['truth_front_size']} on its front. qLogNEHVI settings: "
             + ", ".join(f"{k} {v}" for k, v in data["qlognehvi"].items())
             + ". Each cell: HV fraction (test) mean ± std over seeds / own overhead in "
             "seconds (mean over seeds); studies ran two at a time, one per core, on a "
             "shared machine.", "",
             "| method | " + " | ".join(f"B = {b}" for b in budgets) + " |",
             "|---|" + "---|" * len(budgets)]
    for m in data["methods"]:
        cells = []
        for b in budgets:
            rows = [r for r in data["rows"] if r["method"] == m and r["budget"] == b]
            cells.append(f"{mean_std(rows, 'hv_fraction')} / "
                         f"{np.mean([r['overhead_s'] for r in rows]):.1f}")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    first, second = data["methods"][:2]
    cells = []
    for b in budgets:
        hv = {m: {r["seed"]: r["hv_fraction"] for r in data["rows"]
                  if r["method"] == m and r["budget"] == b} for m in (first, second)}
        d = [hv[first][s] - hv[second][s] for s in hv[first] if s in hv[second]]
        cells.append(f"{np.mean(d):+.3f} ({sum(x > 0 for x in d)}/{len(d)} seeds ahead)")
    lines.append(f"| *{first} minus {second}* | " + " | ".join(cells) + " |")
    return "\n".join(lines)
