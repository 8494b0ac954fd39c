"""Pilot: two GP variants against the shipped GP, on what their exact front is worth.

The gap between mapframe's proposed front and the dense validation reference at 4 tasks is
the surrogates' error with few evaluations (docs/adaptive-sampling.md, "Where the gap to the
dense validation reference comes from"). This pilot asks whether a differently built GP
needs fewer evaluations, on the measure of the search-reference benchmark
(:func:`benchmarks.bench_search_reference.surrogate_error`): one model per task fitted to M
uniform validation evaluations of its 20 000-point pool (disjoint blocks), the models'
predicted Pareto set over the whole pool thinned by greedy hypervolume gain to ``k`` points
and scored on test (HV fraction of the ground truth), and their RMSE on 500 held-out points'
validation metrics. Variants:

- ``shipped``: :func:`mapframe.surrogates.gp.fit_gp` (Matérn 5/2 with ARD lengthscales, the
  `front` sampler's and the `gp` surrogate's fit);
- ``input-warp``: the same kernel on inputs warped per dimension by a Kumaraswamy CDF,
  ``1 − (1 − z^a)^b`` (the input warping of Snoek et al. 2014, BoTorch's ``Warp`` input
  transform), ``a`` and ``b`` fitted with the rest under log-normal priors (σ = 0.75): it
  can stretch the steep part of a coefficient's effect and flatten the saturated part;
- ``additive``: a sum of first- and second-order additive Matérn 5/2 kernels (one
  lengthscale per coefficient, the second-order part the elementary symmetric polynomial of
  the one-dimensional kernels: Duvenaud et al. 2011) plus a full ARD Matérn 5/2: on this
  pool an additive model with pairwise interactions explains 97-99 % of each task's
  variance, so the structure might save evaluations;
- ``shared-lengthscales``: one Matérn 5/2 GP per task whose ARD lengthscales are shared by
  all tasks (each task keeps its own constant mean, output scale and noise), fitted jointly
  on the sum of the tasks' log marginal likelihoods: N times the data per lengthscale, so
  with few points they might be estimated better than task by task;
- ``gp-and-quadratic``: the library's ``gp_and_quadratic`` surrogate
  (:class:`mapframe.surrogates.mean.GPQuadraticMeanSurrogate`), the mean of the ``gp``
  surrogate (bounds: the data's range, as in a study) and the ``auto`` quadratic (the
  sigmoid quadratic for an accuracy): a two-model ensemble.

The first three are fitted by L-BFGS on the log marginal likelihood plus log priors (the
shipped fit's priors on lengthscales, noise and output scales) from two fixed starts; the
best wins. Nothing is written to docs/benchmarks.md; docs/adaptive-sampling.md quotes it.

Usage::

    python benchmarks/pilot_gp_variants.py --n 4 --sizes 20,30 --blocks 6
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Mean = Callable[[np.ndarray], np.ndarray]
#: Fixed starts: (log lengthscale offset from the prior's centre, log noise variance).
_STARTS = ((-3.0, math.log(1e-2)), (-4.2, math.log(1e-3)))
#: Standard deviation of the log-normal priors on the Kumaraswamy concentrations.
_WARP_SIGMA = 0.75
_NOISE_FLOOR = 1e-6
_PREDICT_CHUNK = 4000


def _matern52(r: Any) -> Any:
    s5 = math.sqrt(5.0)
    return (1 + s5 * r + 5.0 / 3.0 * r * r) * (-s5 * r).exp()


def _full(torch: Any, A: Any, B: Any, log_ls: Any) -> Any:
    diff = (A[:, None, :] - B[None, :, :]) / log_ls.exp()
    return _matern52(torch.sqrt((diff * diff).sum(-1) + 1e-12))


def _kernel(torch: Any, p: dict[str, Any], A: Any, B: Any, variant: str) -> Any:
    """The variant's kernel between unit-cube rows ``A`` and ``B`` (warped first if so)."""
    if variant == "input-warp":
        a, b = p["log_a"].exp(), p["log_b"].exp()
        A = 1 - (1 - A.clamp(1e-6, 1 - 1e-6).pow(a)).pow(b)
        B = 1 - (1 - B.clamp(1e-6, 1 - 1e-6).pow(a)).pow(b)
    K = p["log_s"].exp() * _full(torch, A, B, p["log_ls"])
    if variant == "additive":
        one_d = _matern52((A.T[:, :, None] - B.T[:, None, :]).abs()
                          / p["log_ls1"].exp()[:, None, None])
        first = one_d.sum(0)
        second = (first * first - (one_d * one_d).sum(0)) / 2
        K = K + p["log_s1"].exp() * first + p["log_s2"].exp() * second
    return K


def _minimise(objective: Callable[[dict[str, Any]], Any], inits: list[dict[str, Any]],
              what: str) -> dict[str, Any]:
    """The parameters (tensors) with the lowest ``objective`` after L-BFGS from each start in
    ``inits``; a start whose Cholesky fails is skipped."""
    import torch

    best: tuple[float, dict[str, Any]] | None = None
    for init in inits:
        p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
             for k, v in init.items()}
        opt = torch.optim.LBFGS(list(p.values()), lr=1.0, max_iter=200,
                                line_search_fn="strong_wolfe")

        def closure(p: dict[str, Any] = p, opt: Any = opt) -> Any:
            opt.zero_grad()
            loss = objective(p)
            loss.backward()
            return loss

        try:
            opt.step(closure)
            with torch.no_grad():
                loss = float(objective(p))
        except (RuntimeError, ValueError):  # a failed Cholesky: try the next start
            continue
        if math.isfinite(loss) and (best is None or loss < best[0]):
            best = (loss, {k: v.detach().clone() for k, v in p.items()})
    if best is None:
        raise RuntimeError(f"every start of the {what} fit failed")
    return best[1]


def fit(X: np.ndarray, y: np.ndarray, variant: str) -> Mean:
    """Fit ``variant`` (``input-warp`` or ``additive``) to ``X`` in ``[0, 1]^d`` and ``y``;
    return its posterior mean function."""
    import torch

    if variant not in ("input-warp", "additive"):
        raise ValueError(f"unknown variant {variant!r}")
    x = torch.as_tensor(X, dtype=torch.float64)
    t_raw = torch.as_tensor(y, dtype=torch.float64)
    mu, sd = float(t_raw.mean()), float(t_raw.std()) or 1.0
    t = (t_raw - mu) / sd
    n, d = x.shape
    centre = math.sqrt(2.0) + math.log(d) / 2.0  # the shipped lengthscale prior's location
    eye = torch.eye(n, dtype=torch.float64)

    def objective(p: dict[str, Any]) -> Any:
        K = _kernel(torch, p, x, x, variant) + (p["log_noise"].exp() + _NOISE_FLOOR) * eye
        L = torch.linalg.cholesky(K)
        r = (t - p["constant"])[:, None]
        nll = 0.5 * (r * torch.cholesky_solve(r, L)).sum() + torch.log(L.diagonal()).sum()
        prior = ((p["log_ls"] - centre) ** 2).sum() / 6.0 + (p["log_noise"] + 4.0) ** 2 / 2.0
        scales = [k for k in p if k.startswith("log_s") and not k.startswith("log_ls")]
        prior = prior + sum(0.15 * p[k].exp() - p[k] for k in scales)  # Gamma(2, 0.15)
        if variant == "input-warp":
            prior = prior + ((p["log_a"] ** 2 + p["log_b"] ** 2).sum()
                             / (2 * _WARP_SIGMA**2))
        else:
            prior = prior + ((p["log_ls1"] - math.sqrt(2.0)) ** 2).sum() / 6.0
        return nll + prior

    inits = []
    for offset, log_noise in _STARTS:
        init = {"log_ls": [centre + offset] * d, "log_s": 0.0, "log_noise": log_noise,
                "constant": 0.0}
        if variant == "input-warp":
            init.update(log_a=[0.0] * d, log_b=[0.0] * d)
        else:
            init.update(log_ls1=[math.sqrt(2.0) + offset] * d, log_s1=0.0, log_s2=0.0)
        inits.append(init)
    p = _minimise(objective, inits, variant)
    with torch.no_grad():
        K = _kernel(torch, p, x, x, variant) + (p["log_noise"].exp() + _NOISE_FLOOR) * eye
        alpha = torch.cholesky_solve((t - p["constant"])[:, None], torch.linalg.cholesky(K))

    def mean(Z: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(Z), _PREDICT_CHUNK):
                z = torch.as_tensor(Z[i:i + _PREDICT_CHUNK], dtype=torch.float64)
                out.append((_kernel(torch, p, z, x, variant) @ alpha)[:, 0] + p["constant"])
        return torch.cat(out).numpy() * sd + mu

    return mean


def fit_shared(X: np.ndarray, Y: np.ndarray) -> Mean:
    """GPs of every column of ``Y`` (``(M, T)``) on ``X`` in ``[0, 1]^d`` with shared ARD
    lengthscales (the ``shared-lengthscales`` variant); returns the ``(K, T)`` posterior
    means of rows ``Z``."""
    import torch

    x = torch.as_tensor(X, dtype=torch.float64)
    y = torch.as_tensor(Y, dtype=torch.float64)
    mu, sd = y.mean(0), y.std(0).clamp_min(1e-12)
    t = ((y - mu) / sd).T  # (T, M)
    tasks, n = t.shape
    d = x.shape[1]
    centre = math.sqrt(2.0) + math.log(d) / 2.0
    eye = torch.eye(n, dtype=torch.float64)

    def kernel(p: dict[str, Any], A: Any, B: Any) -> Any:
        return p["log_s"].exp()[:, None, None] * _full(torch, A, B, p["log_ls"])[None]

    def gram(p: dict[str, Any]) -> Any:
        return kernel(p, x, x) + (p["log_noise"].exp() + _NOISE_FLOOR)[:, None, None] * eye

    def objective(p: dict[str, Any]) -> Any:
        L = torch.linalg.cholesky(gram(p))
        r = (t - p["constant"][:, None])[..., None]
        nll = (0.5 * (r * torch.cholesky_solve(r, L)).sum()
               + torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum())
        prior = (((p["log_ls"] - centre) ** 2).sum() / 6.0
                 + ((p["log_noise"] + 4.0) ** 2).sum() / 2.0
                 + (0.15 * p["log_s"].exp() - p["log_s"]).sum())
        return nll + prior

    inits = [{"log_ls": [centre + offset] * d, "log_s": [0.0] * tasks,
              "log_noise": [log_noise] * tasks, "constant": [0.0] * tasks}
             for offset, log_noise in _STARTS]
    p = _minimise(objective, inits, "shared-lengthscales")
    with torch.no_grad():
        alpha = torch.cholesky_solve((t - p["constant"][:, None])[..., None],
                                     torch.linalg.cholesky(gram(p)))

    def mean(Z: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(Z), _PREDICT_CHUNK):
                z = torch.as_tensor(Z[i:i + _PREDICT_CHUNK], dtype=torch.float64)
                m = (kernel(p, z, x) @ alpha)[..., 0] + p["constant"][:, None]
                out.append(m.T * sd + mu)
        return torch.cat(out).numpy()

    return mean


def _gp_and_quadratic(X: np.ndarray, y: np.ndarray) -> Mean:
    """The library's ``gp_and_quadratic`` surrogate on an accuracy in [0, 1]."""
    from mapframe.problem import Task
    from mapframe.surrogates.mean import GPQuadraticMeanSurrogate

    return GPQuadraticMeanSurrogate().fit(X, y, Task("task", "max", 0.0, 1.0)).predict


VARIANTS: dict[str, Callable[[np.ndarray, np.ndarray], Mean] | None] = {
    "shipped": None,  # bench_search_reference's default: fit_gp on the unit box
    "input-warp": lambda X, y: fit(X, y, "input-warp"),
    "additive": lambda X, y: fit(X, y, "additive"),
    "gp-and-quadratic": _gp_and_quadratic,
    "shared-lengthscales": None,  # a joint fit of all tasks: JOINT
}
#: Variants fitted to every task at once (``surrogate_error``'s ``fit_tasks``).
JOINT: dict[str, Callable[[np.ndarray, np.ndarray], Mean]] = {
    "shared-lengthscales": fit_shared,
}


def main(argv: list[str] | None = None) -> int:
    from benchmarks import bench_search_reference as sr

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, choices=sr.NS)
    parser.add_argument("--sizes", default="20,30", help="M values, comma-separated")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--blocks", type=int, default=6, help="disjoint blocks per M")
    parser.add_argument("--k", type=int, default=150, help="front size the fronts are "
                        "thinned to (the proposed fronts' size at N = 4: 127-212)")
    args = parser.parse_args(argv)
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {sorted(VARIANTS)}")
    import torch

    torch.set_num_threads(1)
    _, F_val, F_test = sr.pool(args.n)
    _, scorer = sr.bp._setting(args.n)

    def hv_fraction(F: np.ndarray) -> float:
        return float(scorer.hypervolume(F) / scorer.hv_truth)

    dense = sr.thinned_scores(F_val, F_test, [args.k], hv_fraction)[args.k]
    print(f"N = {args.n}, k = {args.k}: dense reference {dense:.3f}; per variant and M the "
          f"exact front's test HV fraction (mean over {args.blocks} blocks) and the RMSE "
          "(mean over tasks and blocks)", flush=True)
    for m in [int(v) for v in args.sizes.split(",")]:
        for name in names:
            err = sr.surrogate_error(args.n, [m], ks=[args.k], repeats=args.blocks,
                                     hv_fraction=hv_fraction, fit=VARIANTS[name],
                                     fit_tasks=JOINT.get(name))
            score = err["gp_front"][str(m)][str(args.k)]
            print(f"M = {m:4d}  {name:10s}  {score:.3f} ({score - dense:+.3f})  "
                  f"RMSE {np.mean(err['gp_rmse'][str(m)]):.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
