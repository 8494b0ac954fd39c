"""Stores kept across mapframe versions, copies and machines (docs/concepts.md, "Studies and
fingerprints" and "What survives what"): what an older mapframe wrote into a migrated store,
a store whose main file is copied without its ``-wal`` file after a crash, and fingerprints
of in-memory task vectors computed by another version or under another thread count."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from objectives import two_quadratics

from mapframe import MergeStudy
from mapframe.errors import MetricError
from mapframe.history import FailureReason
from mapframe.storage import SQLiteStore
from mapframe.storage.sqlite import ROW_COLUMNS, row_evaluation


def _study(db, budget=8, **kwargs):
    return MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=budget, seed=0,
                      storage=SQLiteStore(db), study_name="s", sampler="sobol",
                      surrogate="quadratic", **kwargs)


# -- rows an older mapframe wrote into a store a newer one had migrated -------------------

#: How mapframe wrote a row before stores kept a failure reason: no ``reason`` column.
_OLD_INSERT = ("INSERT OR REPLACE INTO evaluations (study_id, phase, key, coefficients, "
               "metrics, status, error, round, duration, created) "
               "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


def test_an_out_of_range_row_an_older_mapframe_wrote_stops_the_resume(tmp_path):
    """A study resumed by an old mapframe (a downgrade) in a migrated store stored an
    out-of-range row without a reason; back on this version, the resume reused it silently
    instead of raising MetricError again as the failure table says."""
    db = tmp_path / "s.sqlite"
    ranges = dict(metric_ranges=[(-10, 10), (-10, 10)])
    first = _study(db, **ranges).run()
    assert first.n_evaluated == 8
    with sqlite3.connect(db) as con:
        sid, phase, key, coef, rnd = con.execute(
            "SELECT study_id, phase, key, coefficients, round FROM evaluations "
            "ORDER BY seq DESC LIMIT 1").fetchone()
        con.execute(_OLD_INSERT, (
            sid, phase, key, coef, "[50.0, 1.0]", "invalid",
            "out of range: task 'a' metric 50 is outside its declared range [-10, 10]; fix the "
            "evaluator's scale (e.g. accuracy as a fraction) or the task's range",
            rnd, 0.1, 0.0))
        assert con.execute("SELECT reason FROM evaluations WHERE key = ?",
                           (key,)).fetchone() == (None,)
    with pytest.raises(MetricError, match="outside its declared range"):
        _study(db, **ranges).run()


@pytest.mark.parametrize(("status", "error", "reason"), [
    ("failed", "ValueError: boom", FailureReason.RAISED),
    ("invalid", "out of range: task 'a' metric 5 is outside its declared range [0, 1]",
     FailureReason.OUT_OF_RANGE),
    ("invalid", "non-finite metrics", FailureReason.NON_FINITE),
    ("ok", None, None),
])
def test_a_row_without_a_reason_gets_the_one_its_migration_would_give(status, error, reason):
    assert ROW_COLUMNS.split(", ")[-1] == "reason"
    row = ("[0.5, 0.5]", "[1.0, 2.0]", status, error, "explore", 0, 0.1, "k", None)
    assert row_evaluation(row).reason is reason
    # a stored reason is kept as it is
    stored = ("[0.5, 0.5]", "[1.0, 2.0]", "invalid", error, "explore", 0, 0.1, "k",
              "non_finite")
    assert row_evaluation(stored).reason is FailureReason.NON_FINITE
    assert np.array_equal(row_evaluation(row).coefficients, [0.5, 0.5])
