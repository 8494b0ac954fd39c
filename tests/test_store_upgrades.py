"""Stores kept across mapframe versions, copies and machines (docs/concepts.md, "Studies and
fingerprints" and "What survives what"): what an older mapframe wrote into a migrated store,
a store whose main file is copied without its ``-wal`` file after a crash, and fingerprints
of in-memory task vectors computed by another version or under another thread count."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from objectives import two_quadratics

import mapframe
from mapframe import MergeStudy
from mapframe.errors import MetricError
from mapframe.history import Evaluation, FailureReason
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


# -- the main file alone, copied after a crash --------------------------------------------

def _rows(path) -> int:
    """Evaluations in the SQLite file ``path`` read alone (no ``-wal`` file beside it)."""
    assert not Path(f"{path}-wal").exists()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "evaluations" not in tables:
            return 0
        return int(con.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
    finally:
        con.close()


def test_the_main_file_of_an_open_store_holds_its_rows(tmp_path):
    """While a store is open (a running study), its rows were only in the ``-wal`` file: a
    copy of the main file alone held no table at all."""
    db = tmp_path / "s.sqlite"
    store = SQLiteStore(db)
    store.open("s", {"x": 1})
    for i in range(7):
        store.add(Evaluation(coefficients=np.array([i / 7, 0.5]), metrics=np.array([1.0, 2.0]),
                             status="ok", error=None, phase="search", round=0, duration=0.1,
                             key=f"k{i}"))
    store.set_meta("note", "kept")
    try:
        copy = tmp_path / "copy.sqlite"
        shutil.copyfile(db, copy)
        assert _rows(copy) == 7
        again = SQLiteStore(copy)
        again.open("s", {"x": 1})
        assert [e.key for e in again.load()] == [f"k{i}" for i in range(7)]
        assert again.get_meta("note") == "kept"
        again.close()
    finally:
        store.close()


_KILLED_STUDY = """
import os, signal, sys
import mapframe
from mapframe import MergeStudy
from mapframe.storage import SQLiteStore
from objectives import two_quadratics

def progress(event):
    if event.stage == "evaluate" and event.done >= 5:
        os.kill(os.getpid(), signal.SIGKILL)

MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=8, seed=0,
           storage=SQLiteStore(sys.argv[1]), study_name="s", sampler="sobol",
           surrogate="quadratic", executor={"name": "inprocess", "batch_size": 1},
           progress=progress).run()
"""


def test_a_copy_of_a_killed_studys_main_file_resumes_it(tmp_path):
    """A study killed with ``kill -9`` after 5 evaluations, its store's main file copied alone
    (as a user copies a store to read it elsewhere): the copy was an empty store, taken for
    a new one, and the resumed study evaluated everything again."""
    db = tmp_path / "s.sqlite"
    here = Path(__file__).resolve().parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(mapframe.__file__).resolve().parents[1]), str(here)])}
    proc = subprocess.run([sys.executable, "-c", _KILLED_STUDY, str(db)], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert Path(f"{db}-wal").exists()  # killed: nothing closed the store
    copy = tmp_path / "copy" / "s.sqlite"
    copy.parent.mkdir()
    shutil.copyfile(db, copy)
    stored = _rows(copy)
    assert stored >= 5
    resumed = _study(copy, executor={"name": "inprocess", "batch_size": 1}).run()
    assert (resumed.n_reused, resumed.n_evaluated) == (stored, 8 - stored)
