"""How many evaluations a plain search needs to match mapframe's proposed front (N = 3, 4).

The peers benchmark scores each proposal-quality run (all B evaluations spent on the search,
the handed-over front scored on test) against a *dense validation search*: 20 000 or 9 261
validation evaluations, their validation Pareto set thinned to as many points as the proposed
front. This benchmark asks what lies between: **random search on validation with M
evaluations** (M = 10 to 20 000 uniform points in [0, 1]^N), its validation Pareto set thinned
by greedy hypervolume gain (`greedy_hypervolume_subset`, as for the dense reference) to at
most as many points as the proposed front, scored on test with the peers benchmark's scorer
(same ground truth, same reference point). One pool of 20 000 uniform points per N (seed
12345; at N = 4 the peers benchmark's own dense sample) is evaluated once on validation and
test and cached; random search with M evaluations is a block of M of them, averaged over up
to 5 disjoint blocks.

Read per (N, B) and mapframe mode, from the recorded peers results
(`benchmarks/results/peers.json`, proposal-quality rows, the same seeds and front sizes):
- **mapframe**: its proposal's HV fraction (mean over seeds) and front size k (mean);
- **random, M = B**: random search with the same number of evaluations, thinned to k;
- **random search reaches it at M**: where on the ladder random search's mean score reaches
  mapframe's, as `a-b` (with a evaluations it stays below, with b it reaches it: mapframe's B
  evaluations are worth between a and b), `> 20000` when it never does;
- **dense (20 000)**: the whole pool thinned to k, the uniform-sample version of the peers
  benchmark's dense reference (at N = 3 that one is a 21^3 grid, so the two differ slightly).

And per N and front size: where random search comes within 0.01 of its own 20 000-point
value, which says what the issue's "within 0.01 of a dense validation search" asks of a
search with B <= 100 evaluations.

Reading of the recorded run (2026-12-06; mapframe's rows: the peers results recorded then,
whose N = 2, 3 rows were rerun that day with `surrogate: auto` as the library resolves it,
on another machine, and whose `front` rows at N = 3, 4 were rerun later that day with the
sampler's Latin hypercube start, and at N = 3 once more in the evening with the
`gp_and_quadratic` final surrogate (B = 20: 0.920 to 0.923); the other N = 4 rows are those
of 2026-12-05, with `select: auto` and, for the `front` sampler at 3-4 tasks, the `gp` final
surrogate; the runs before read the same but where noted):
- **A proposed front from B evaluations is worth at least 10 B random validation evaluations
  at every budget, and up to 50 B.** The `front` sampler's proposal lies between random
  search with 200-500 / 200-500 / 500-1000 / 500-1000 evaluations at N = 3, B = 10 / 20 /
  30 / 50 (100-200 at B = 10 with the Sobol' start), and 200-500 / 200-500 / 500-1000 /
  1000-2000 / 2000-5000 at N = 4, B = 10 / 20 / 30 / 50 / 100 (100-200 at B = 10 with the
  Sobol' start; the run of 2026-12-03, before those two defaults, read 4 B to 25 B, below
  10 B at three budgets). Random search with the same B
  evaluations scores 0.37 to 0.44 below it at B = 10 and 0.156-0.219 below at the largest
  budgets.
- **The issue's "within 0.01 of the dense validation search" asks for thousands of
  evaluations' worth.** Random search itself comes within 0.01 of its own 20 000-point value
  between M = 500 and 1 000 evaluations at N = 3 and between 5 000 and 10 000 at N = 4.
  The `front` sampler's proposals are 0.007 (N = 3, B = 50: 0.939 vs 0.946) and 0.020
  (N = 4, B = 100: 0.860 vs 0.880; 0.016 with the Sobol' start) below it, where random
  search with 50 and 100 evaluations is 0.164 and 0.239 below. The gap left is the
  surrogates' error with B evaluations (last table: a GP fitted to M uniform validation
  evaluations, its RMSE on held-out validation points, against the validation-test
  difference that no search can remove).
- **What a surrogate from M evaluations could hand over** (run of 2026-12-06, 3 disjoint
  blocks per M; the last two lines per N): the exact front of the GPs fitted to M uniform
  validation evaluations (their predicted Pareto set over the whole pool, thinned like the
  reference) is within 0.01 of the dense reference from M = 100 at N = 3 (-0.014 / -0.002 /
  +0.003 at M = 30 / 100 / 300: smoothing the noisy validation metrics can even beat
  selecting on them), but at N = 4 only from several hundred: -0.072 / -0.027 / -0.015 /
  -0.007 at M = 30 / 100 / 300 / 800. The `front` sampler's adaptive evaluations do better
  than uniform ones (N = 4, B = 100: -0.020 against its reference, where 100 uniform
  evaluations leave -0.027; B = 30: -0.053 against -0.072), but the issue's "within 0.01" at
  N = 4 asks of B <= 100 evaluations what a GP reaches with 300-800 uniform ones: there the
  reference measures the surrogate's data need, which no choice of the front's points
  removes (docs/adaptive-sampling.md, "Where the gap to the dense validation reference comes
  from"). This run shared the 2 cores with another job, hence its time.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import bench_peers as bp
from mapframe.hypervolume import greedy_hypervolume_subset
from mapframe.metrics import pareto_mask

#: The N at which the reference is computed (those of the peers benchmark's dense reference).
NS = bp.DENSE_REFERENCE_AT
#: Uniform points per N in the pool random search draws its blocks from.
POOL = 20_000
#: Random-search sizes M.
LADDER = [10, 20, 30, 50, 100, 200, 500, 1000, 2000, 5000, 10_000, 20_000]
#: Disjoint blocks averaged per M (fewer when the pool holds fewer).
BLOCKS = 5
#: "Within" for the random-search table.
WITHIN = 0.01
#: Evaluations the GP of the surrogate-error table is fitted to, and held-out points.
GP_SIZES = [30, 100, 300, 800]
HELD_OUT = 500
#: Disjoint blocks of M pool points the GP of the surrogate tables is fitted to, averaged.
GP_REPEATS = 3


def pool(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pool's coefficients and their validation and test metrics (cached:
    :func:`bench_peers.dense_metrics`; at N = 4 the peers benchmark's own dense sample)."""
    problem, _ = bp._setting(n)
    return (bp.dense_points(n, "sample", POOL),
            bp.dense_metrics(problem, "sample", POOL, "validation"),
            bp.dense_metrics(problem, "sample", POOL, "test"))


def blocks(m: int, size: int = POOL, most: int = BLOCKS) -> list[np.ndarray]:
    """Index blocks of ``m`` consecutive pool points: ``min(most, size // m)`` disjoint ones."""
    return [np.arange(i * m, (i + 1) * m) for i in range(max(1, min(most, size // m)))]


def thinned_scores(F_val: np.ndarray, F_test: np.ndarray, ks: list[int],
                   hv_fraction: Any) -> dict[int, float]:
    """One random search's score at each front size in ``ks``: its validation Pareto set,
    ordered by greedy hypervolume gain, the first ``k`` scored on their test metrics."""
    mask = pareto_mask(F_val)
    Fv, Ft = F_val[mask], F_test[mask]
    order = greedy_hypervolume_subset(Fv, max(ks), ordered=True)
    return {k: float(hv_fraction(Ft[order[:k]])) for k in ks}


def curve(n: int, ks: list[int], ladder: list[int] = LADDER) -> dict[int, dict[int, float]]:
    """``{M: {k: mean test HV fraction}}``: random search with M evaluations, thinned to k."""
    _, scorer = bp._setting(n)
    _, F_val, F_test = pool(n)

    def hv_fraction(F: np.ndarray) -> float:
        return scorer.hypervolume(F) / scorer.hv_truth

    out: dict[int, dict[int, float]] = {}
    for m in ladder:
        per_block = [thinned_scores(F_val[idx], F_test[idx], ks, hv_fraction)
                     for idx in blocks(m, len(F_val))]
        out[m] = {k: float(np.mean([s[k] for s in per_block])) for k in ks}
        print(f"  N = {n}: M = {m} done", flush=True)
    return out


#: A surrogate fit for :func:`surrogate_error`: ``fit(X, y)`` -> the fitted mean function.
Fit = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]
#: A joint fit of every task: ``(X (M, d), Y (M, T))`` to a function of ``Z (K, d)`` that
#: returns the ``(K, T)`` predictions.
FitTasks = Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _fit_gp_mean(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The front sampler's GP fit (:func:`mapframe.surrogates.gp.fit_gp`) on the unit box."""
    from mapframe.surrogates.gp import fit_gp

    d = X.shape[1]
    return fit_gp(X, y, bounds=(np.zeros(d), np.ones(d))).mean


def surrogate_error(n: int, sizes: list[int] = GP_SIZES, held_out: int = HELD_OUT,
                    ks: list[int] | None = None, repeats: int = GP_REPEATS,
                    hv_fraction: Any = None, fit: Fit | None = None,
                    fit_tasks: FitTasks | None = None) -> dict[str, Any]:
    """What a GP fitted to M uniform validation evaluations is worth, for each M in ``sizes``.

    Per M, over up to ``repeats`` disjoint blocks of M pool points (the pool's last
    ``held_out`` points excluded), one GP per task (:func:`mapframe.surrogates.gp.fit_gp`, the
    front sampler's fit) fitted to the block's validation metrics:

    - ``gp_rmse[M]``: per task, the mean over blocks of its RMSE on the held-out points'
      validation metrics;
    - ``gp_front[M][k]`` (when ``ks`` is given): the mean test HV fraction of the GPs' *exact
      front on the pool*, their predicted Pareto set over all pool points thinned to ``k`` by
      greedy hypervolume gain (:func:`thinned_scores` on the predictions): what a surrogate
      from M uniform evaluations could hand over with a perfect front solve, to be read
      against the dense reference (the pool's own validation Pareto set thinned alike);

    and ``val_test_rms``, the RMS difference between the validation and test metrics over
    the pool, per task (what no search can remove). ``hv_fraction`` scores a front's test
    metrics (default: the peers benchmark's scorer at ``n`` tasks); ``fit(X, y)`` returns a
    model's mean function on the unit box (default: :func:`fit_gp`'s, with the box as bounds;
    ``benchmarks/pilot_gp_variants.py`` passes others); ``fit_tasks(X, Y)``, when given,
    replaces it with one model of all tasks (predictions ``(K, T)``)."""
    C, F_val, F_test = pool(n)
    fit = fit or _fit_gp_mean
    if ks and hv_fraction is None:
        _, scorer = bp._setting(n)

        def hv_fraction(F: np.ndarray) -> float:
            return float(scorer.hypervolume(F) / scorer.hv_truth)

    Xh, Fh = C[-held_out:], F_val[-held_out:]
    out: dict[str, Any] = {"val_test_rms": np.sqrt(np.mean((F_val - F_test) ** 2, axis=0))
                           .tolist(), "gp_rmse": {}, "repeats": repeats}
    if ks:
        out["gp_front"] = {}
    for m in sizes:
        errs, fronts = [], []
        for idx in blocks(m, len(C) - held_out, repeats):
            if fit_tasks is not None:
                predict = fit_tasks(C[idx], F_val[idx])
            else:
                means = [fit(C[idx], F_val[idx, j]) for j in range(n)]

                def predict(Z: np.ndarray, means: list[Any] = means) -> np.ndarray:
                    return np.column_stack([mean(Z) for mean in means])
            errs.append(np.sqrt(np.mean((predict(Xh) - Fh) ** 2, axis=0)).tolist())
            if ks:
                P = predict(C)
                fronts.append(thinned_scores(P, F_test, ks, hv_fraction))
        out["gp_rmse"][str(m)] = np.mean(errs, axis=0).tolist()
        if ks:
            out["gp_front"][str(m)] = {str(k): float(np.mean([f[k] for f in fronts]))
                                       for k in ks}
        print(f"  N = {n}: GP from M = {m} done", flush=True)
    return out


def proposal_rows(peers: dict[str, Any], n: int) -> list[dict[str, Any]]:
    """The peers benchmark's proposal-quality rows at ``n`` tasks."""
    return [r for r in peers["rows"]
            if int(r["n"]) == n and str(r["method"]).endswith("(proposal quality)")]


def run(quick: bool = False) -> dict[str, Any]:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    peers = bp.recorded_results("this benchmark reads its proposal-quality rows")
    ladder = LADDER[:6] if quick else LADDER
    out: dict[str, Any] = {"ladder": ladder, "pool": POOL, "blocks": BLOCKS,
                           "within": WITHIN, "peers_computed": peers["_meta"], "n": {}}
    for n in NS:
        rows = proposal_rows(peers, n)
        ks = sorted({int(r["proposed"]) for r in rows})
        if not ks:
            continue
        by_m = curve(n, ks, ladder)
        out["n"][str(n)] = {
            "rows": [{k: r[k] for k in ("method", "budget", "seed", "hv_fraction",
                                        "proposed")} for r in rows],
            "curve": {str(m): {str(k): v for k, v in by_k.items()}
                      for m, by_k in by_m.items()},
            "surrogate_error": surrogate_error(n, GP_SIZES[:2] if quick else GP_SIZES,
                                               ks=ks)}
    return out


# --------------------------------------------------------------------------- report


def at_budget(data: dict[str, Any], n: str, m: int, ks: list[int]) -> float:
    """Mean over runs of random search's score with ``m`` evaluations at each run's ``k``."""
    table = data["n"][n]["curve"][str(m)]
    return float(np.mean([table[str(k)] for k in ks]))


def surrogate_front(err: dict[str, Any], m: int | str, ks: list[int]) -> float:
    """Mean over the front sizes ``ks`` of the GP-from-M-evaluations exact front's score."""
    return float(np.mean([err["gp_front"][str(m)][str(k)] for k in ks]))


def needed(data: dict[str, Any], n: str, target: float, ks: list[int]) -> str:
    """Where random search reaches ``target`` on the ladder: ``"a-b"`` when ``b`` is the
    smallest M whose mean score reaches it and ``a`` the M before (which does not), ``"<= b"``
    when the smallest M already does, ``"> max"`` when none does."""
    ladder = data["ladder"]
    for i, m in enumerate(ladder):
        if at_budget(data, n, m, ks) >= target:
            return f"<= {m}" if i == 0 else f"{ladder[i - 1]}-{m}"
    return f"> {ladder[-1]}"


def report(data: dict[str, Any]) -> str:
    ladder = data["ladder"]
    lines = [f"Pool: {data['pool']} uniform points per N; random search with M evaluations "
             f"averaged over up to {data['blocks']} disjoint blocks; mapframe's rows from the "
             f"peers run recorded {data['peers_computed'].get('command', '')!s} "
             f"({data['peers_computed'].get('seconds', 0):.0f} s). HV fraction on test.", ""]
    for n, part in data["n"].items():
        rows = part["rows"]
        lines += [f"**N = {n}**", "",
                  "| mode | B | k (mean) | mapframe | random, M = B "
                  "| random search reaches it at M "
                  f"| dense ({ladder[-1]}) |", "|---|---|---|---|---|---|---|"]
        for mode in sorted({r["method"] for r in rows}):
            for b in sorted({int(r["budget"]) for r in rows if r["method"] == mode}):
                here = [r for r in rows if r["method"] == mode and int(r["budget"]) == b]
                ks = [int(r["proposed"]) for r in here]
                score = float(np.mean([r["hv_fraction"] for r in here]))
                same = (f"{at_budget(data, n, b, ks):.3f}" if str(b) in part["curve"]
                        else "–")
                lines.append(
                    f"| {mode.removeprefix('mapframe ').removesuffix(' (proposal quality)')} "
                    f"| {b} | {np.mean(ks):.0f} | {score:.3f} | {same} | "
                    f"{needed(data, n, score, ks)} | "
                    f"{at_budget(data, n, ladder[-1], ks):.3f} |")
        all_ks = sorted({int(r["proposed"]) for r in rows})
        full = at_budget(data, n, ladder[-1], all_ks)
        lines += ["", f"Random search within {data['within']} of its own {ladder[-1]}-point "
                  f"value ({full:.3f}, mean over the front sizes above): at M = "
                  f"{needed(data, n, full - data['within'], all_ks)}. Random search by M "
                  "(same front sizes): "
                  + ", ".join(f"{m}: {at_budget(data, n, m, all_ks):.3f}" for m in ladder)
                  + ".", ""]
        if "surrogate_error" in part:
            err = part["surrogate_error"]
            blocks_note = (f" (mean over {err['repeats']} disjoint blocks)"
                           if err.get("repeats", 1) > 1 else "")
            if "gp_front" in err:
                lines += ["What such a surrogate could hand over: the exact front of GPs "
                          "fitted to M uniform validation evaluations (their predicted Pareto "
                          "set over the whole pool, thinned alike, scored on test"
                          f"{blocks_note}), against the dense reference ({full:.3f}; mean "
                          "over the front sizes above) — "
                          + "; ".join(f"M = {m}: {score:.3f} ({score - full:+.3f})"
                                      for m, score in ((m, surrogate_front(err, m, all_ks))
                                                       for m in err["gp_front"]))
                          + ".", ""]
            lines += ["Surrogate error: RMSE per task of a GP fitted to M uniform validation "
                      f"evaluations{blocks_note}, on {HELD_OUT} held-out points' validation "
                      "metrics — "
                      + "; ".join(f"M = {m}: " + ", ".join(f"{v:.3f}" for v in e)
                                  for m, e in err["gp_rmse"].items())
                      + ". Validation vs test, RMS difference per task over the pool: "
                      + ", ".join(f"{v:.3f}" for v in err["val_test_rms"]) + ".", ""]
    return "\n".join(lines)
