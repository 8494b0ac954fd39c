"""Pilot: where a proposed front loses to the dense validation search — the surrogate, or how
the front's points are chosen on it.

The peers benchmark scores a proposed front of k points against a dense validation search
thinned to k points by greedy hypervolume gain (``docs/benchmarks.md``, "Dense validation
reference"). This pilot separates the two things a proposal depends on, on the pool of the
search-reference benchmark (``bench_search_reference.pool(N)``: 20 000 uniform points with
their validation and test metrics, cached):

- **surrogate**, fitted per task to the validation metrics of M uniform pool points (3
  disjoint blocks, each 1 100 points apart): ``gp`` (:func:`mapframe.surrogates.gp.fit_gp`,
  the front sampler's and the ``gp`` surrogate's fit), ``sigmoid_quadratic`` (MAP's model for
  accuracies; what the study's ``auto`` surrogate picks for these tasks), ``logit_gp`` (the
  same GP fitted to the logits of the accuracies, its mean mapped back);
- **selection** of the front's points on the surrogate: ``solver`` (the ``auto`` front solver,
  NSGA-III with the Pareto polish from 3 tasks on: what a study hands over; k is its size),
  ``spread`` (the surrogate's non-dominated set over the solver's points and 2^14 scrambled
  Sobol' points, thinned to k by :func:`mapframe.metrics.spread_subset`, the grid solver's
  rule) and ``hypervolume`` (the same candidates thinned to k by
  :func:`mapframe.hypervolume.greedy_hypervolume_subset`, the dense reference's rule) and
  ``select_hv`` (the ``auto`` front solver with ``select: hypervolume``: the library's
  version of the last, with the sampled greedy subset and the Pareto polish);
- **dense**: the pool's validation Pareto set thinned to the same k by greedy hypervolume
  gain (the reference).

Each front is scored by its points' *test* metrics (the peers benchmark's scorer: HV
fraction of the ground truth). Candidate sets above ``--max-candidates`` points are first
thinned by ``spread_subset`` (the exact greedy costs seconds per thousand candidates at 3
tasks and more at 4), the dense set included. Nothing is written to docs/benchmarks.md.

Usage::

    python benchmarks/pilot_selection.py --n 3 --sizes 20,50,100
    python benchmarks/pilot_selection.py --n 4 --sizes 50,100 --surrogates gp,sigmoid_quadratic
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mapframe.hypervolume import greedy_hypervolume_subset
from mapframe.metrics import pareto_mask, spread_subset

Model = Callable[[np.ndarray], np.ndarray]
#: Logits are taken of accuracies clipped this far inside (0, 1).
_LOGIT_EPS = 1e-3
#: Pool points between the starts of two repeats' training blocks.
_BLOCK_STRIDE = 1100
SELECTIONS = ("solver", "spread", "hypervolume", "select_hv")


def _gp(X: np.ndarray, y: np.ndarray) -> Model:
    from mapframe.surrogates.gp import fit_gp

    return fit_gp(X, y, bounds=(np.zeros(X.shape[1]), np.ones(X.shape[1]))).mean


def _logit_gp(X: np.ndarray, y: np.ndarray) -> Model:
    p = np.clip(y, _LOGIT_EPS, 1 - _LOGIT_EPS)
    mean = _gp(X, np.log(p / (1 - p)))
    return lambda Z: 1.0 / (1.0 + np.exp(-mean(Z)))


def _sigmoid_quadratic(X: np.ndarray, y: np.ndarray) -> Model:
    from mapframe.problem import Task
    from mapframe.surrogates.quadratic import SigmoidQuadraticSurrogate

    return SigmoidQuadraticSurrogate().fit(X, y, Task("task", "max", 0.0, 1.0)).predict


SURROGATES: dict[str, Callable[[np.ndarray, np.ndarray], Model]] = {
    "gp": _gp, "sigmoid_quadratic": _sigmoid_quadratic, "logit_gp": _logit_gp,
}


def select(P: np.ndarray, k: int, rule: str, max_candidates: int) -> np.ndarray:
    """Indices of ``k`` rows of the predictions ``P`` (all tasks maximised) chosen by
    ``rule`` (``"spread"`` or ``"hypervolume"``) among their non-dominated rows, which are
    first thinned to ``max_candidates`` by ``spread_subset`` when there are more."""
    nd = np.flatnonzero(pareto_mask(P))
    if nd.size > max_candidates:
        nd = nd[spread_subset(P[nd], max_candidates)]
    pick = (spread_subset(P[nd], k) if rule == "spread"
            else greedy_hypervolume_subset(P[nd], k))
    return nd[pick]


def run(n: int, sizes: list[int], surrogates: list[str], max_candidates: int,
        repeats: int = 3) -> list[dict[str, float | int | str]]:
    """One row per (M, surrogate): the mean test HV fraction of each selection and of the
    dense reference at the solver's front size, and the mean seconds of each selection."""
    from scipy.stats import qmc

    from benchmarks import bench_peers as bp
    from benchmarks import bench_search_reference as bs
    from mapframe.problem import SearchSpace, Task
    from mapframe.solvers.pymoo_solvers import AutoFrontSolver

    C, F_val, F_test = bs.pool(n)
    problem, scorer = bp._setting(n)

    def hv_fraction(F: np.ndarray) -> float:
        return float(scorer.hypervolume(F) / scorer.hv_truth)

    space = SearchSpace(np.zeros(n), np.ones(n))
    tasks = [Task(f"t{j}", "max", 0.0, 1.0) for j in range(n)]
    rows = []
    for m in sizes:
        for name in surrogates:
            got: dict[str, list[float]] = {}
            for rep in range(repeats):
                train = np.arange(rep * _BLOCK_STRIDE, rep * _BLOCK_STRIDE + m)
                models = [SURROGATES[name](C[train], F_val[train, j]) for j in range(n)]

                def predict(X: np.ndarray, models: list[Model] = models) -> np.ndarray:
                    return np.column_stack([f(np.atleast_2d(X)) for f in models])

                t0 = time.perf_counter()
                X_solver = np.asarray(AutoFrontSolver().solve(predict, space, tasks,
                                                              1234 + rep).X).reshape(-1, n)
                got.setdefault("solver_s", []).append(time.perf_counter() - t0)
                k = len(X_solver)
                got.setdefault("k", []).append(k)
                got.setdefault("solver", []).append(
                    hv_fraction(problem.evaluate(X_solver, "test")))
                sobol = qmc.Sobol(d=n, scramble=True, seed=rep).random_base2(14)
                X_all = np.vstack([X_solver, sobol])
                P_all = predict(X_all)
                for rule in ("spread", "hypervolume"):
                    t0 = time.perf_counter()
                    pick = select(P_all, k, rule, max_candidates)
                    got.setdefault(f"{rule}_s", []).append(time.perf_counter() - t0)
                    got.setdefault(rule, []).append(
                        hv_fraction(problem.evaluate(X_all[pick], "test")))
                t0 = time.perf_counter()
                X_hv = np.asarray(AutoFrontSolver(select="hypervolume").solve(
                    predict, space, tasks, 1234 + rep).X).reshape(-1, n)
                got.setdefault("select_hv_s", []).append(time.perf_counter() - t0)
                got.setdefault("select_hv", []).append(
                    hv_fraction(problem.evaluate(X_hv, "test")))
                dense = select(F_val, k, "hypervolume", max_candidates)
                got.setdefault("dense", []).append(hv_fraction(F_test[dense]))
            row: dict[str, float | int | str] = {"n": n, "m": m, "surrogate": name}
            row.update({key: float(np.mean(v)) for key, v in got.items()})
            rows.append(row)
            print(f"N={n} M={m:3d} {name:17s} k={row['k']:.0f}  "
                  + "  ".join(f"{s} {row[s]:.3f}" for s in (*SELECTIONS, "dense"))
                  + f"  (s: solver {row['solver_s']:.2f}, spread {row['spread_s']:.2f}, "
                  f"hypervolume {row['hypervolume_s']:.2f}, select_hv {row['select_hv_s']:.2f})",
                  flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=3, choices=(3, 4))
    parser.add_argument("--sizes", default="20,50,100", help="M values, comma-separated")
    parser.add_argument("--surrogates", default=",".join(SURROGATES))
    parser.add_argument("--max-candidates", type=int, default=2000)
    args = parser.parse_args(argv)
    names = args.surrogates.split(",")
    unknown = sorted(set(names) - set(SURROGATES))
    if unknown:
        parser.error(f"unknown surrogate(s) {unknown}; choose from {sorted(SURROGATES)}")
    print("test HV fraction of the proposal from M uniform validation evaluations, "
          "mean over 3 blocks")
    run(args.n, [int(v) for v in args.sizes.split(",")], names, args.max_candidates)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
