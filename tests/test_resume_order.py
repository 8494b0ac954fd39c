"""A study resumed after an interruption mid-round gives the front of an uninterrupted one.

With parallel workers a later point of a round can be stored while an earlier one is still
running when the driver dies. On resume the stored points of that round went into the
history first and the points evaluated then after them: the same points in another order,
and the final fit (which reads the history in order) gave another front.
"""

from __future__ import annotations

import shutil
import sqlite3

import numpy as np
import pytest

from mapframe import MergeStudy


def wavy(C: np.ndarray) -> np.ndarray:
    C = np.atleast_2d(C)
    cols = []
    for j in range(3):
        t = np.full(3, 0.2)
        t[j] = 0.9
        cols.append(1 - ((C - t) ** 2).sum(axis=1) + 0.03 * np.sin(7 * C[:, j]))
    return np.column_stack(cols)


def _study(path, sampler):
    return MergeStudy(objective=wavy, task_names=["a", "b", "c"], budget=14, seed=11,
                      sampler=sampler, storage=str(path))


@pytest.mark.parametrize("sampler", [{"name": "bins", "initial": 8, "batch": 3},
                                     {"name": "front"}])
def test_a_round_cut_short_resumes_to_the_same_history_and_front(tmp_path, sampler):
    if sampler["name"] == "front":
        pytest.importorskip("gpytorch")
    whole = _study(tmp_path / "whole.sqlite", sampler).run()
    # the store as a driver killed in round 1 leaves it: only that round's last point was
    # stored (the others were still running), nothing after it
    cut = tmp_path / "cut.sqlite"
    shutil.copy(tmp_path / "whole.sqlite", cut)
    with sqlite3.connect(cut) as db:
        rows = db.execute("select seq, round from evaluations where phase = 'search' "
                          "order by seq").fetchall()
        in_round = [seq for seq, r in rows if r == 1]
        assert len(in_round) >= 2
        drop = [seq for seq, r in rows if r > 1] + in_round[:-1]
        db.execute(f"delete from evaluations where phase = 'verify' or seq in "
                   f"({','.join(map(str, drop))})")
    resumed = _study(cut, sampler).run()
    assert resumed.rounds[1]["reused"] == 1 and resumed.rounds[1]["new"] >= 1
    order = [e.key for e in whole.history if e.phase == "search"]
    assert [e.key for e in resumed.history if e.phase == "search"] == order
    np.testing.assert_array_equal(resumed.front.coefficients, whole.front.coefficients)
    np.testing.assert_array_equal(resumed.front.predicted, whole.front.predicted)
