"""How good is a space-filling design by itself? Its test hypervolume on the digits tasks.

Each design of ``size`` points in ``[0, 1]^N`` is scored as the peers benchmark scores a
proposed set (``bench_peers._setting(N)``'s scorer: HV fraction of the true front on test),
with *every* point kept (no filtering by validation, so for random search this is an upper
bound of its charged score, which keeps only the points no other point beats on
validation). Designs: i.i.d. uniform (``random``, numpy), scrambled Sobol' (``sobol``),
Latin hypercube (``lhs``), Latin hypercube optimised for centered discrepancy (``lhs-cd``,
scipy's ``random-cd``: the ``front`` sampler's start since 2026-12-06) and scrambled Halton
(``halton``); seed ``s`` draws each design. Printed: the mean over the seeds and its
standard error. Nothing is written to docs/benchmarks.md; docs/adaptive-sampling.md ("The
initial design") and the peers benchmark's reading quote it.

Usage::

    python benchmarks/pilot_design_hv.py --n 4 --sizes 6,10 --seeds 100
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
from scipy.stats import qmc

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DESIGNS = ("random", "sobol", "lhs", "lhs-cd", "halton")


def design(kind: str, size: int, n: int, seed: int) -> np.ndarray:
    """``size`` points of design ``kind`` in ``[0, 1]^n``, drawn with ``seed``."""
    if kind == "random":
        return np.random.default_rng(seed).random((size, n))
    if kind == "sobol":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # sizes that are not powers of two
            return qmc.Sobol(n, seed=seed).random(size)
    if kind == "lhs":
        return qmc.LatinHypercube(n, seed=seed).random(size)
    if kind == "lhs-cd":
        return qmc.LatinHypercube(n, seed=seed, optimization="random-cd").random(size)
    if kind == "halton":
        return qmc.Halton(n, seed=seed).random(size)
    raise ValueError(f"unknown design {kind!r}: one of {', '.join(DESIGNS)}")


def main(argv: list[str] | None = None) -> int:
    import benchmarks.bench_peers as bp

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=4, choices=sorted(bp.TRUTH))
    parser.add_argument("--sizes", default="6,10", help="design sizes, comma-separated")
    parser.add_argument("--seeds", type=int, default=100, help="number of seeds (0 to K-1)")
    args = parser.parse_args(argv)
    _, scorer = bp._setting(args.n)
    print(f"N = {args.n}: test HV fraction of a whole design, mean ± standard error over "
          f"{args.seeds} seeds")
    print("| size | " + " | ".join(DESIGNS) + " |")
    print("|---" * (len(DESIGNS) + 1) + "|")
    for size in (int(v) for v in args.sizes.split(",")):
        scores = np.array([[scorer(design(kind, size, args.n, seed))["hv_fraction"]
                            for kind in DESIGNS] for seed in range(args.seeds)])
        se = scores.std(axis=0, ddof=1) / np.sqrt(args.seeds)
        print(f"| {size} | " + " | ".join(f"{m:.3f} ± {e:.3f}" for m, e in
                                          zip(scores.mean(axis=0), se)) + " |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
