"""Verification's accounting: a front point the search already measured is not evaluated
again, and the verify stage's progress counts the points it really verifies."""

from __future__ import annotations

from collections import Counter

import numpy as np

from mapframe import MergeStudy
from mapframe.study import ProgressEvent


def _corner(calls: list[tuple[float, ...]]):
    def f(C: np.ndarray) -> np.ndarray:
        C = np.atleast_2d(C)
        calls.extend(tuple(r) for r in C)
        # both tasks best at (1, 1): the front is that corner, a point of the 3 x 3 grid
        return np.column_stack([1 - ((C - 1) ** 2).sum(1), 1 - 2 * ((C - 1) ** 2).sum(1)])
    return f


def test_a_front_point_the_search_measured_is_not_verified_again() -> None:
    calls: list[tuple[float, ...]] = []
    res = MergeStudy(objective=_corner(calls), task_names=["a", "b"], budget=9, seed=0,
                     sampler="grid", front_solver="grid", verify=1).run()
    assert res.front.coefficients.tolist() == [[1.0, 1.0]]
    assert res.front.sources.tolist() == ["measured"]
    assert res.front.real[0].tolist() == [1.0, 1.0]
    # it evaluated (1, 1) twice: once in the search, once to "verify" the known value
    assert max(Counter(calls).values()) == 1 and len(calls) == 9
    assert res.n_evaluated == 9 and res.verification is not None
    assert res.verification["n_verified"] == 0


def test_with_a_preference_a_measured_choice_is_not_verified_again() -> None:
    calls: list[tuple[float, ...]] = []
    res = MergeStudy(objective=_corner(calls), task_names=["a", "b"], budget=9, seed=0,
                     sampler="grid", front_solver="grid", verify=2,
                     preference=[0.5, 0.5]).run()
    assert max(Counter(calls).values()) == 1
    assert res.selected is not None and res.front.sources[res.selected] == "measured"


def test_the_verify_stage_counts_the_points_it_verifies() -> None:
    events: list[ProgressEvent] = []

    def f(C: np.ndarray) -> np.ndarray:
        return np.column_stack([1 - ((C - 0.8) ** 2).sum(1), 1 - ((C - 0.2) ** 2).sum(1)])

    res = MergeStudy(objective=f, task_names=["a", "b"], budget=9, seed=0, sampler="sobol",
                     verify=150, progress=events.append).run()
    verify = [(e.done, e.total) for e in events if e.stage == "verify"]
    n = res.verification["n_verified"] if res.verification else 0
    assert 0 < n < 150
    # the total was `verify` (150), so the stage never read as finished
    assert verify[0] == (0, n) and verify[-1] == (n, n)
