"""The verification and acquisition benchmarks' own pieces, on cheap synthetic objectives.

What is checked: the benchmark-only spread rule verifies exactly the points the old rule
(``spread_subset``) picks, the qLogNEHVI sampler keeps the front sampler's initial design and
proposes inside the box, and both reports render from recorded rows.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

pytest.importorskip("gpytorch")

from benchmarks import bench_acquisition, bench_verification
from mapframe import MergeStudy
from mapframe.history import coefficient_key
from mapframe.metrics import spread_subset
from mapframe.samplers.botorch_sampler import BoTorchSampler

TARGETS = np.array([[0.9, 0.1], [0.1, 0.9]])


def objective(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    return np.column_stack([1.0 - np.sum((C - t) ** 2, axis=1) for t in TARGETS])


def test_spread_rule_verifies_the_spread_subset() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = bench_verification.SpreadVerifyStudy(objective=objective,
                                                     task_names=["a", "b"], budget=12,
                                                     verify=4, seed=0)
        res = study.run()
        plain = MergeStudy(objective=objective, task_names=["a", "b"], budget=12, verify=4,
                           seed=0).run()
    verified = {coefficient_key(e.coefficients) for e in res.history.select("verify")}
    assert len(verified) == 4
    # Only the verification differs from the default study: the search is the same.
    search = [coefficient_key(e.coefficients) for e in res.history.select("search")]
    assert search == [coefficient_key(e.coefficients) for e in plain.history.select("search")]
    with pytest.raises(ValueError, match="without a preference"):
        bench_verification.SpreadVerifyStudy(objective=objective, task_names=["a", "b"],
                                             budget=12, verify=2, seed=0,
                                             preference=[0.5, 0.5]).run()


def test_spread_rule_matches_spread_subset_on_the_front() -> None:
    picked: dict[str, np.ndarray] = {}

    class Probe(bench_verification.SpreadVerifyStudy):
        def _verify(self, run):  # type: ignore[no-untyped-def]
            picked["F"] = run.F_front.copy()
            picked["X"] = run.X_front.copy()
            super()._verify(run)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = Probe(objective=objective, task_names=["a", "b"], budget=12, verify=3,
                    seed=1).run()
    expected = picked["X"][spread_subset(picked["F"], 3, ["max", "max"])]
    got = np.array([e.coefficients for e in res.history.select("verify")])
    assert sorted(map(coefficient_key, expected)) == sorted(map(coefficient_key, got))


def test_qlognehvi_sampler_keeps_the_initial_design() -> None:
    pytest.importorskip("botorch")
    sampler = BoTorchSampler(acquisition="qlognehvi", mc_samples=8, num_restarts=1,
                             raw_samples=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = MergeStudy(objective=objective, task_names=["a", "b"], budget=9, seed=0,
                          sampler=sampler).run()
        front = MergeStudy(objective=objective, task_names=["a", "b"], budget=9, seed=0,
                           sampler={"name": "front", "design": "sobol"}).run()
    X = np.array([e.coefficients for e in ours.history.select("search")])
    Xf = np.array([e.coefficients for e in front.history.select("search")])
    assert X.shape == (9, 2) and np.all((X >= 0) & (X <= 1))
    np.testing.assert_allclose(X[:6], Xf[:6])  # 2 (N + 1) shared Sobol' points (the
    # botorch sampler's start; the front sampler's default is a Latin hypercube)
    assert len({coefficient_key(x) for x in X}) == 9


def test_reports_render() -> None:
    rows = []
    for mode in bench_verification.MODES:
        for rule in bench_verification.RULES:
            for seed in (0, 1):
                rows.append({"mode": mode, "rule": rule, "budget": 10, "seed": seed,
                             "charged": 0.5 + 0.1 * (rule == "hypervolume gain"),
                             "handed_over": 0.8, "measured_all": 0.6,
                             "measured_val_front": 0.6,
                             "handed_over_sources": {"predicted": 90, "verified": 3,
                                                     "measured": 2}})
    text = bench_verification.report({
        "n": 3, "tasks": ["a", "b", "c"], "truth": ["grid", 21], "truth_front_size": 5,
        "budgets": [10], "seeds": [0, 1], "modes": bench_verification.MODES,
        "rules": list(bench_verification.RULES), "verify_share": 0.3,
        "verify_share_of": {}, "rows": rows})
    assert "+0.100 (2/2 seeds up)" in text and "+0.200 (2/2 seeds ≥ 0)" in text
    rows = [{"method": m, "seed": 0, "budget": 10, "hv_fraction": h, "overhead_s": 1.0}
            for m, h in zip(bench_acquisition.METHODS, (0.7, 0.6), strict=True)]
    text = bench_acquisition.report({
        "n": 3, "tasks": ["a", "b", "c"], "truth": ["grid", 21], "truth_front_size": 5,
        "budgets": [10], "seeds": [0], "methods": list(bench_acquisition.METHODS),
        "qlognehvi": bench_acquisition.QLOGNEHVI_SETTINGS, "rows": rows})
    assert "+0.100 (1/1 seeds ahead)" in text
