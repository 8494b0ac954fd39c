"""The selection pilot (benchmarks/pilot_selection.py): its own pieces.

What is checked: both selection rules return k distinct non-dominated rows, the greedy
hypervolume rule's subset has at least the hypervolume of the spread rule's on a curved
3-task front, candidates above the cap are thinned first, the logit GP stays inside (0, 1)
and follows its data, and unknown surrogate names get a one-line error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import pilot_selection
from mapframe.metrics import hypervolume, pareto_mask


def _front(n: int = 3000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    P = rng.uniform(size=(n, 3)) ** 0.7  # a cloud whose non-dominated rows form a curved front
    return P


def test_both_rules_pick_k_distinct_nondominated_rows_and_greedy_has_more_volume():
    P = _front()
    nd = set(np.flatnonzero(pareto_mask(P)).tolist())
    got = {}
    for rule in ("spread", "hypervolume"):
        pick = pilot_selection.select(P, 20, rule, max_candidates=2000)
        assert len(pick) == len(set(pick.tolist())) == 20
        assert set(pick.tolist()) <= nd
        got[rule] = hypervolume(P[pick], np.zeros(3), ["max"] * 3)
    assert got["hypervolume"] >= got["spread"]


def test_candidates_above_the_cap_are_thinned_first():
    P = _front()
    n_nd = int(pareto_mask(P).sum())
    assert n_nd > 30
    pick = pilot_selection.select(P, 10, "hypervolume", max_candidates=30)
    assert len(pick) == 10
    capped = np.flatnonzero(pareto_mask(P))
    from mapframe.metrics import spread_subset

    allowed = set(capped[spread_subset(P[capped], 30)].tolist())
    assert set(pick.tolist()) <= allowed


def test_logit_gp_stays_in_the_unit_interval_and_follows_its_data():
    pytest.importorskip("gpytorch")
    rng = np.random.default_rng(1)
    X = rng.uniform(size=(25, 2))
    y = 1 / (1 + np.exp(-(3 * X[:, 0] - 2 * X[:, 1])))
    model = pilot_selection._logit_gp(X, y)
    Z = rng.uniform(-0.5, 1.5, size=(200, 2))
    out = model(Z)
    assert np.all((out > 0) & (out < 1))
    np.testing.assert_allclose(model(X), y, atol=0.02)


def test_unknown_surrogate_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit):
        pilot_selection.main(["--surrogates", "gp,cubic"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "unknown surrogate(s) ['cubic']" in err
