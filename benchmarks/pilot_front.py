"""Pilot runs of the front sampler's variants on seeds the peers benchmark does not report.

Settings of the front sampler (and of how the peers benchmark uses it) are chosen here, on
the *pilot* seeds (100-105 by default), never on the reported seeds 0-2 of
``python benchmarks/run.py peers`` (nor 3-8, its close cells' more seeds). Each run is one
charged mapframe run of the peers benchmark (``bench_peers._map_job``: search on validation,
verify, score on test), or with ``--proposal`` one proposal-quality run (every evaluation
spent on the search, the handed-over front scored). Printed: the mean ± std of the test HV
fraction per variant and cell, the per-seed values and the own overhead. Nothing is written
to docs/benchmarks.md. Other seeds are not other data: a pilot scores on the same test split
as the reported rows, so a setting chosen here is chosen by test scores (docs/benchmarks.md
says so where it lists the piloted settings).

Usage::

    python benchmarks/pilot_front.py base optimism-0.5 --cells 3:20,4:10
    python benchmarks/pilot_front.py base gp-final --cells 4:50 --proposal --seeds 100-105

Variants (``VARIANTS``): ``base`` (the front sampler as shipped, the benchmark's verify
share), ``optimism-0.5`` / ``optimism-1`` (the predicted front solved on the posterior mean
plus that many posterior standard deviations), ``share-0.2`` (verify 20 % of the budget
instead of 10 %), ``quadratic-mean`` (each GP fitted to the residuals of a ridge quadratic
once there are at least as many evaluations as the quadratic has parameters: a GP whose
prior mean is the MAP quadratic), ``gp-final`` (the study's final surrogate is ``gp`` at
every budget instead of the benchmark's rule), ``gp-sampler`` (the ``gp`` sampler instead
of ``front``, verifying 30 % of the budget as the peers benchmark's ``gp`` mode does),
``gp-sampler-gp-final`` (that, with ``gp`` as the study's final surrogate at every budget:
the ``gp`` sampler as shipped since 2026-12-05, when ``surrogate: auto`` with it at 3-4 tasks
became the ``gp`` surrogate; ``gp-sampler`` is it as shipped before),
``gp-sampler-share-0.2`` / ``gp-sampler-share-0.1`` (that, verifying 20 % or 10 % of the
budget instead of the peers benchmark's 30 %),
``plain`` (Plain MAP as the peers benchmark runs it: Sobol' design, verify 30 %,
``surrogate: auto`` as the library resolves it), ``plain-gp`` (that, with the ``gp``
surrogate at every budget: ``plain`` as the benchmark ran it before 2026-12-06 wherever its
own rule said ``gp``, below twice the quadratic's parameter count in search evaluations, which
covers every cell of the small-budget pilot in docs/adaptive-sampling.md), ``plain-quadratic``
(that, with the quadratic at every budget where it can be fitted), ``quadratic-always``
(the ``front`` sampler with the quadratic as the study's final surrogate at every budget,
where the benchmark's rule said ``gp`` too),
``botorch-sampler`` (the ``botorch`` sampler as shipped and as the peers benchmark's
``botorch`` mode runs it: verify 30 %, ``surrogate: auto`` as the library resolves it) and
``botorch-sampler-gp-final`` (that, with ``gp`` as the study's final surrogate at every
budget: whether the ``surrogate: auto`` rule of the ``front`` and ``gp`` samplers should
cover it too),
``select-hv`` (the study's front solved by the ``auto`` solver with ``select: hypervolume``;
since it became ``select: auto``'s choice for 3-4 tasks, ``base`` there is the same),
``select-hv-gp`` (that, with ``gp`` as the study's final surrogate at every budget) and
``select-solver`` (``select: solver``: NSGA-III's own points, the default before),
``small-start`` (an initial design of N + 2 Sobol' points at every budget, not only below a
search budget of 3 (N + 1)), ``batch-1`` / ``batch-2`` (adaptive rounds of 1 or 2 points
at every budget; ``base`` has rounds of 1 only below a search budget of 3 (N + 1) since
``batch: auto`` became the default on 2026-12-06, rounds of 3 before),
``quadratic-final`` (the quadratic as the study's surrogate wherever the benchmark's rule
says ``auto``: the default before 2026-12-05, when ``surrogate: auto`` with the front sampler
at 3-4 tasks became the ``gp`` surrogate), the warps (:mod:`mapframe.surrogates.warp`):
``no-warp`` (the sampler's GPs and the ``gp`` surrogate on the raw accuracies, the
default), ``warp-rounds`` (the sampler's GPs on the logits), ``warp-final`` (the ``gp``
surrogate on the logits), ``warp-both``, and ``gp-final-warp`` / ``gp-final-no-warp``
(``gp`` as the study's surrogate at every budget, on the logits or the raw accuracies),
``pick-expected`` (each round's batch by greedy q-EHVI over the predicted front, ``pick:
expected``, instead of the hypervolume gain on the means; otherwise as shipped).
Added 2026-12-06, each otherwise as shipped: ``botorch-sampler-share-0.2`` /
``botorch-sampler-share-0.1`` (the ``botorch`` sampler verifying 20 % or 10 % of the budget
instead of 30 %), ``gp-final-nu-1.5`` / ``gp-final-nu-0.5`` (the ``gp`` surrogate with a
rougher Matérn kernel than the default ``nu = 2.5``), ``trend`` (every GP fit, the sampler's
rounds and the ``gp`` surrogate, with a quadratic trend in its kernel:
``fit_gp(trend="quadratic")``), ``final-lcb-0.5`` / ``final-lcb-1`` (the study's front, its
verification and the handed-over front from the ``gp`` surrogate's posterior mean minus 0.5 or
1 posterior standard deviation: a pessimistic front) and ``final-ucb-0.5`` / ``final-ucb-1``
(plus: an optimistic one).
Added later on 2026-12-06: ``botorch-sampler-matern`` (the ``botorch`` sampler as shipped, its
``SingleTaskGP`` models with the ``gp`` surrogate's kernel instead of BoTorch's default RBF:
a Matérn-5/2 ARD kernel under a ``ScaleKernel`` with the outputscale prior Gamma(2, 0.15),
BoTorch's own lengthscale prior and floor; on smooth functions ``fit_gp`` predicts with
about 0.8x the RMSE of BoTorch's default GP, tests/test_gp_oracles.py).
Added later on 2026-12-06, each otherwise as shipped then: ``lhs-start`` (the ``front``
sampler's start an optimised Latin hypercube, ``design: lhs``, instead of Sobol' points; it
became the default the same day, so ``base`` has it from then on: compare ``sobol-start``
with ``base`` to repeat that pilot), ``sobol-start`` (the ``front`` sampler with ``design:
sobol``, its start before), ``gp-sampler-shipped`` (the ``gp`` sampler as the peers
benchmark runs it, verify 30 %), ``gp-sampler-lhs`` (that, with ``design: lhs``),
``plain-lhs`` (Plain MAP on an optimised Latin hypercube, ``sampler: {name: lhs,
optimization: random-cd}``, instead of ``sobol``), ``small-start-lhs`` (``small-start`` with
the shipped surrogate rule and, from then on, the Latin hypercube start),
``botorch-sampler-lhs`` (the ``botorch`` sampler as the peers benchmark runs it, with the
Latin hypercube start instead of BoTorch's Sobol' one; compare with ``botorch-sampler``).
Added 2026-12-06 (later): ``gp-and-quadratic-final`` (the study's final surrogate the mean of
the ``gp`` surrogate and the ``auto`` quadratic, ``surrogate: gp_and_quadratic``, at every
budget; needs a search budget above the quadratic's parameter count).
Added 2026-12-06 (session 44): ``share-min`` (the ``front`` sampler verifying one point,
the least ``bench_peers.map_split`` allows, instead of 10 % of the budget).

Every variant not marked ``shipped`` (``base``, ``plain``, ``botorch-sampler``,
``pick-expected`` and ``gp-sampler-shipped`` are) or ``current_rule`` (those added on
2026-12-06) runs with the
benchmark's surrogate rule as it was until 2026-12-06 (``bench_peers.peers_rule_before``) and
keeps the quadratic where that says ``auto`` (:func:`_surrogate_rule`), as every pilot before
2026-12-05 ran; the others run with ``surrogate: auto`` as the library resolves it, like the
peers benchmark since 2026-12-06.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mapframe.surrogates.quadratic import n_quadratic_params, quadratic_features

VARIANTS: dict[str, dict[str, Any]] = {
    "base": {"shipped": True},
    "optimism-0.5": {"sampler": {"optimism": 0.5}},
    "optimism-1": {"sampler": {"optimism": 1.0}},
    "share-0.2": {"share": 0.2},
    "quadratic-mean": {"quadratic_mean": True},
    "gp-final": {"surrogate": "gp"},
    "gp-sampler": {"sampler": {"name": "gp"}, "share": 0.3},
    "gp-sampler-gp-final": {"sampler": {"name": "gp"}, "share": 0.3, "surrogate": "gp"},
    "gp-sampler-share-0.2": {"sampler": {"name": "gp"}, "share": 0.2, "surrogate": "gp"},
    "gp-sampler-share-0.1": {"sampler": {"name": "gp"}, "share": 0.1, "surrogate": "gp"},
    "plain": {"sampler": {"name": "sobol"}, "share": 0.3, "shipped": True},
    "plain-quadratic": {"sampler": {"name": "sobol"}, "share": 0.3, "surrogate": "auto"},
    "plain-gp": {"sampler": {"name": "sobol"}, "share": 0.3, "surrogate": "gp"},
    "quadratic-always": {"surrogate": "auto"},
    "botorch-sampler": {"sampler": {"name": "botorch"}, "share": 0.3, "shipped": True},
    "botorch-sampler-gp-final": {"sampler": {"name": "botorch"}, "share": 0.3,
                                 "surrogate": "gp"},
    "botorch-sampler-share-0.2": {"sampler": {"name": "botorch"}, "share": 0.2,
                                  "current_rule": True},
    "botorch-sampler-share-0.1": {"sampler": {"name": "botorch"}, "share": 0.1,
                                  "current_rule": True},
    "select-hv": {"front_solver": {"name": "auto", "select": "hypervolume"}},
    "select-hv-gp": {"front_solver": {"name": "auto", "select": "hypervolume"},
                     "surrogate": "gp"},
    "select-solver": {"front_solver": {"name": "auto", "select": "solver"}},
    "small-start": {"small_start": True},
    "batch-1": {"sampler": {"batch": 1}},
    "batch-2": {"sampler": {"batch": 2}},
    "quadratic-final": {},
    "pick-expected": {"sampler": {"pick": "expected"}, "shipped": True},
    "no-warp": {"sampler": {"warp": "none"}, "gp_surrogate": {"warp": "none"}},
    "warp-rounds": {"sampler": {"warp": "auto"}, "gp_surrogate": {"warp": "none"}},
    "warp-final": {"sampler": {"warp": "none"}, "gp_surrogate": {"warp": "auto"}},
    "warp-both": {"sampler": {"warp": "auto"}, "gp_surrogate": {"warp": "auto"}},
    "gp-final-warp": {"sampler": {"warp": "none"}, "surrogate": "gp",
                      "gp_surrogate": {"warp": "auto"}},
    "gp-final-no-warp": {"sampler": {"warp": "none"}, "surrogate": "gp",
                         "gp_surrogate": {"warp": "none"}},
    "trend": {"trend": True, "current_rule": True},
    "final-lcb-0.5": {"final_beta": 0.5, "current_rule": True},
    "final-lcb-1": {"final_beta": 1.0, "current_rule": True},
    "final-ucb-0.5": {"final_beta": -0.5, "current_rule": True},
    "final-ucb-1": {"final_beta": -1.0, "current_rule": True},
    "gp-final-nu-1.5": {"surrogate": "gp", "gp_surrogate": {"nu": 1.5}, "current_rule": True},
    "gp-final-nu-0.5": {"surrogate": "gp", "gp_surrogate": {"nu": 0.5}, "current_rule": True},
    "botorch-sampler-matern": {"sampler": {"name": "botorch"}, "share": 0.3,
                               "botorch_matern": True, "current_rule": True},
    "lhs-start": {"sampler": {"design": "lhs"}, "current_rule": True},
    "sobol-start": {"sampler": {"design": "sobol"}, "current_rule": True},
    "small-start-lhs": {"small_start": True, "current_rule": True},
    "botorch-sampler-lhs": {"sampler": {"name": "botorch", "design": "lhs"}, "share": 0.3,
                            "current_rule": True},
    "gp-sampler-shipped": {"sampler": {"name": "gp"}, "share": 0.3, "shipped": True},
    "gp-sampler-lhs": {"sampler": {"name": "gp", "design": "lhs"}, "share": 0.3,
                       "current_rule": True},
    "plain-lhs": {"sampler": {"name": "lhs", "optimization": "random-cd"}, "share": 0.3,
                  "current_rule": True},
    "gp-and-quadratic-final": {"surrogate": "gp_and_quadratic", "current_rule": True},
    "share-min": {"share": 0.0, "current_rule": True},
}
FRONT_MODE = "mapframe Bayesian MAP (front)"


class _QuadraticMeanGP:
    """A fitted GP on the residuals of a ridge quadratic, with the quadratic added back."""

    def __init__(self, gp: Any, weights: np.ndarray, lower: np.ndarray, width: np.ndarray):
        self.gp, self.weights, self.lower, self.width = gp, weights, lower, width

    def _prior(self, X: np.ndarray) -> np.ndarray:
        return quadratic_features((np.atleast_2d(X) - self.lower) / self.width) @ self.weights

    def mean(self, X: np.ndarray) -> np.ndarray:
        return self._prior(X) + self.gp.mean(X)

    def mean_var(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, var = self.gp.mean_var(X)
        return self._prior(X) + mean, var


@contextlib.contextmanager
def _quadratic_mean(ridge: float = 1e-3) -> Iterator[None]:
    """The GP fit (``mapframe.surrogates.gp.fit_gp``, which the front sampler's rounds call)
    replaced by a quadratic-prior-mean fit while active."""
    import mapframe.surrogates.gp as front

    plain = front.fit_gp

    def fit(X: np.ndarray, y: np.ndarray, *, bounds: Any = None, **kw: Any) -> Any:
        n_params = n_quadratic_params(X.shape[1])
        if X.shape[0] < n_params or bounds is None:
            return plain(X, y, bounds=bounds, **kw)
        lower = np.asarray(bounds[0], dtype=float)
        width = np.asarray(bounds[1], dtype=float) - lower
        F = quadratic_features((X - lower) / width)
        penalty = ridge * len(y) * np.diag([1.0] * (n_params - 1) + [0.0])  # not the 1
        weights = np.linalg.solve(F.T @ F + penalty, F.T @ y)
        return _QuadraticMeanGP(plain(X, y - F @ weights, bounds=bounds, **kw), weights,
                                lower, width)

    with mock.patch.object(front, "fit_gp", fit):
        yield


@contextlib.contextmanager
def _quadratic_trend() -> Iterator[None]:
    """Every GP fit (the front sampler's rounds and the ``gp`` surrogate) with a quadratic
    trend in its kernel (``fit_gp(trend="quadratic")``) while active."""
    import mapframe.surrogates.gp as gp

    plain = gp.fit_gp

    def fit(*args: Any, **kw: Any) -> Any:
        kw.setdefault("trend", "quadratic")
        return plain(*args, **kw)

    with mock.patch.object(gp, "fit_gp", fit):
        yield


@contextlib.contextmanager
def _final_bound(beta: float) -> Iterator[None]:
    """The ``gp`` surrogate's predictions (the study's front solve, verification and
    handed-over front; not the sampler's rounds, whose GPs are their own) replaced by the
    posterior mean minus ``beta`` posterior standard deviations while active: a pessimistic
    front for ``beta > 0``, an optimistic one below 0 (every task of the benchmark is
    maximised)."""
    from mapframe.surrogates.gp import GPSurrogate

    plain = GPSurrogate.predict

    def predict(self: GPSurrogate, X: np.ndarray) -> np.ndarray:
        return plain(self, X) - beta * self.predict_std(X)

    with mock.patch.object(GPSurrogate, "predict", predict):
        yield


@contextlib.contextmanager
def _botorch_matern() -> Iterator[None]:
    """The ``botorch`` sampler's ``SingleTaskGP`` models (``botorch_batch`` imports the class
    from ``botorch.models`` at each call) built with the ``gp`` surrogate's kernel while
    active: Matérn-5/2 ARD under a ``ScaleKernel`` with the outputscale prior Gamma(2, 0.15);
    the lengthscale prior and floor are BoTorch's own (those of ``fit_gp``)."""
    import botorch.models
    from botorch.models.utils.gpytorch_modules import get_covar_module_with_dim_scaled_prior
    from gpytorch.kernels import ScaleKernel
    from gpytorch.priors import GammaPrior

    plain = botorch.models.SingleTaskGP

    def single_task_gp(X: Any, Y: Any, **kw: Any) -> Any:
        base = get_covar_module_with_dim_scaled_prior(ard_num_dims=X.shape[-1],
                                                      use_rbf_kernel=False)
        covar = ScaleKernel(base, outputscale_prior=GammaPrior(2.0, 0.15))
        return plain(X, Y, covar_module=covar, **kw)

    with mock.patch.object(botorch.models, "SingleTaskGP", single_task_gp):
        yield


def _surrogate_rule(name: str, rule: Any) -> Any:
    """The surrogate rule as variant ``name`` changes it: its ``surrogate`` replaces the
    rule's choice, its ``gp_surrogate`` settings go to the ``gp`` surrogate. A variant marked
    ``shipped`` starts from ``rule`` (the benchmark's :func:`bench_peers.surrogate_for`:
    ``auto``, which the study resolves as for a user); every other variant from the
    benchmark's rule until 2026-12-06 (:func:`bench_peers.peers_rule_before`) and keeps the
    quadratic where that says ``auto`` (the mapping ``{"name": "auto"}``, which the study
    does not resolve to ``gp``): the pilots before 2026-12-05 ran with it, so their commands
    measure what they measured then."""
    import benchmarks.bench_peers as bp

    spec = VARIANTS[name]
    current = spec.get("shipped") or spec.get("current_rule")
    base = rule if current else bp.peers_rule_before

    def pick(search: int, n: int) -> str | dict[str, Any]:
        chosen = str(spec["surrogate"]) if "surrogate" in spec else base(search, n)
        if chosen == "gp" and "gp_surrogate" in spec:
            return {"name": "gp", **spec["gp_surrogate"]}
        if chosen == "auto" and not current:
            return {"name": "auto"}
        return chosen

    return pick


def _one(task: tuple[str, int, int, int, bool]) -> tuple[str, int, int, int, float, float]:
    import benchmarks.bench_peers as bp

    name, n, budget, seed, proposal = task
    spec = VARIANTS[name]
    label = f"{FRONT_MODE} [{name}]"
    sampler = {"name": "front", **spec.get("sampler", {})}  # a sampler config mapping
    if spec.get("small_start"):
        sampler["initial"] = n + 2
    bp.MAP_MODES[label] = {"sampler": sampler}  # type: ignore[dict-item]
    if "front_solver" in spec:
        bp.MAP_MODES[label]["front_solver"] = spec["front_solver"]  # type: ignore[index]
    bp.VERIFY_SHARE_OF[label] = spec.get("share", bp.VERIFY_SHARE_OF[FRONT_MODE])
    plain_rule = bp.surrogate_for
    bp.surrogate_for = _surrogate_rule(name, plain_rule)  # type: ignore[assignment]
    job = {"kind": "map", "mode": label, "n": n, "budget": budget, "seed": seed,
           "proposal": proposal}
    try:
        with (_quadratic_mean() if spec.get("quadratic_mean") else
              _quadratic_trend() if spec.get("trend") else
              _final_bound(spec["final_beta"]) if "final_beta" in spec else
              _botorch_matern() if spec.get("botorch_matern") else
              contextlib.nullcontext()):
            row = bp._map_job(job)[0]
    finally:
        bp.surrogate_for = plain_rule
    return name, n, budget, seed, float(row["hv_fraction"]), float(row["overhead_s"])


def _seeds(text: str) -> list[int]:
    if "-" in text:
        lo, hi = (int(v) for v in text.split("-"))
        return list(range(lo, hi + 1))
    return [int(v) for v in text.split(",")]


def pilot_seeds(parser: argparse.ArgumentParser, text: str) -> list[int]:
    """The seeds ``text`` names (``100-105`` or ``100,101``); the peers benchmark's reported
    seeds (0-2, and 3-8 of its close cells on more seeds) are refused through ``parser``:
    settings are chosen on other seeds."""
    seeds = _seeds(text)
    if set(seeds) & set(range(9)):
        parser.error("seeds 0-8 are the peers benchmark's reported seeds (0-2, and 3-8 on "
                     "its close cells): pilot on others, e.g. 100-105")
    return seeds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("variants", nargs="+", choices=sorted(VARIANTS))
    parser.add_argument("--cells", default="3:20,4:10",
                        help="N:B pairs, comma-separated (default 3:20,4:10)")
    parser.add_argument("--seeds", default="100-105", help="e.g. 100-105 or 100,101")
    parser.add_argument("--proposal", action="store_true",
                        help="score the handed-over front of a search using every evaluation")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    seeds = pilot_seeds(parser, args.seeds)
    cells = [tuple(int(v) for v in c.split(":")) for c in args.cells.split(",")]
    tasks = [(v, n, b, s, args.proposal) for v in args.variants for n, b in cells
             for s in seeds]
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    out: dict[tuple[str, int, int], list[tuple[float, float]]] = {}
    with ProcessPoolExecutor(args.workers) as pool:
        for name, n, b, _seed, hv, overhead in pool.map(_one, tasks):
            out.setdefault((name, n, b), []).append((hv, overhead))
    kind = "proposal quality" if args.proposal else "charged"
    print(f"HV fraction on test ({kind}), seeds {seeds}")
    for (name, n, b), values in sorted(out.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                     kv[0][0])):
        a = np.array(values)
        print(f"N={n} B={b:3d} {name:15s} {a[:, 0].mean():.3f} ± {a[:, 0].std():.3f}  "
              f"{np.round(a[:, 0], 3).tolist()}  overhead {a[:, 1].mean():.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
