"""Where the gap to the dense validation reference comes from: the surrogate, its solve, or size.

The peers benchmark compares each proposal-quality front with a dense validation search
thinned to as many points (``bench_peers.thinned_reference``). This diagnostic, on the pilot
seeds (100-102 by default, never the reported 0-2), runs the ``front`` sampler's
proposal-quality study (every evaluation on the search) and scores on test, at several front
sizes ``k``:

- ``front``: the handed-over front (``res.front``), as the benchmark scores it;
- ``surrogate``: the study's surrogates evaluated on the *whole* dense set, their predicted
  Pareto set thinned to ``k`` points by greedy hypervolume gain on the predictions: the best
  the study's surrogates could hand over with an exact front solve;
- ``reference``: the dense validation search thinned to ``k`` points, the benchmark's
  reference.

If ``surrogate`` matches ``front``, the front solve loses nothing; if ``surrogate`` trails
``reference`` at every ``k``, the gap is the surrogates' accuracy, not the front's size.
Nothing is written to docs/benchmarks.md.

Usage::

    python benchmarks/pilot_reference_gap.py --cells 3:10,3:20,4:30,4:100 --seeds 100-102
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pilot_front import pilot_seeds

#: Front sizes scored besides the handed-over front's own.
SIZES = (300, 600, 1000, 2000)
MODE = "mapframe Bayesian MAP (front)"


def gap_row(n: int, budget: int, seed: int
            ) -> tuple[float, list[tuple[int, float, float]]]:
    """One proposal-quality run: the handed-over front's score, and ``(k, surrogates' exact
    front, reference)`` at the front's own size ``k`` and at ``SIZES``."""
    import benchmarks.bench_peers as bp
    from mapframe.hypervolume import greedy_hypervolume_subset
    from mapframe.metrics import pareto_mask

    problem, scorer = bp._setting(n)
    dense = bp.dense_points(n, *bp.TRUTH[n])
    C, F = bp.dense_validation_front(problem)
    _, res, _ = bp.run_map_study(problem, MODE, budget, seed, proposal=True)
    predicted = res.predict(dense)
    keep = pareto_mask(predicted)
    Cp, Fp = dense[keep], predicted[keep]
    top = max(SIZES)
    by_surrogate = greedy_hypervolume_subset(Fp, min(top, len(Fp)), ordered=True)
    by_validation = greedy_hypervolume_subset(F, min(top, len(F)), ordered=True)
    return scorer(res.front.coefficients)["hv_fraction"], [
        (k, scorer(Cp[by_surrogate[:k]])["hv_fraction"],
         scorer(C[by_validation[:k]])["hv_fraction"])
        for k in (len(res.front), *SIZES)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", default="3:20,4:30", help="N:B pairs (N = 3 or 4)")
    parser.add_argument("--seeds", default="100-102", help="e.g. 100-102 or 100,101")
    args = parser.parse_args(argv)
    seeds = pilot_seeds(parser, args.seeds)
    print("HV fraction on test: k = front size: surrogate's dense front vs dense reference")
    for cell in args.cells.split(","):
        n, budget = (int(v) for v in cell.split(":"))
        if n not in (3, 4):
            parser.error(f"cell {cell}: the dense reference exists at N = 3 and 4 only")
        for seed in seeds:
            front, by_size = gap_row(n, budget, seed)
            sizes = " | ".join(f"k={k}: {s:.3f} vs {r:.3f} ({s - r:+.3f})"
                               for k, s, r in by_size)
            print(f"N={n} B={budget:3d} seed {seed}: front {front:.3f} | {sizes}",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
