"""Stores kept across mapframe versions, copies and machines (docs/concepts.md, "Studies and
fingerprints" and "What survives what"): what an older mapframe wrote into a migrated store,
a store whose main file is copied without its ``-wal`` file after a crash, and fingerprints
of in-memory task vectors computed by another version or under another thread count."""

from __future__ import annotations

import json
import math
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
from mapframe.evaluators import ModelEvaluator
from mapframe.history import Evaluation, FailureReason
from mapframe.problem import Task
from mapframe.storage import SQLiteStore
from mapframe.storage.base import fingerprint_diff
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
from mapframe.storage.base import fingerprint_diff
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


# -- fingerprints of in-memory task vectors -------------------------------------------------

def _merge(weights):
    return {"tasks": [], "merge": {"strategy": {"name": "task_arithmetic"},
                                   "in_memory": weights}}


#: What mapframe stored for in-memory task vectors before their digest (float32 sums) and
#: what it computes now for the same weights (float64 sums to 10 digits, and a digest).
_STORED_BEFORE_THE_DIGEST = {"base_sq_norm": 1.4514862075448036, "params": 68,
                             "task_sq_norms": [2.14635319262743, 1.8270318545401096],
                             "tasks": ["a", "b"], "tensors": 2}
_NOW = {"tasks": ["a", "b"], "tensors": 2, "params": 68, "base_sq_norm": 1.451486273,
        "task_sq_norms": [2.146353221, 1.827031848],
        "digest": "9c9bb03abfa9a6185beae55656a1f984"}


def test_task_vectors_stored_with_float32_norms_match_the_same_weights_now():
    """A study stored before the digest (float32 norms in full) was refused as "merge
    differ" by this version (float64 norms to 10 digits) for the very same weights."""
    old = _merge(_STORED_BEFORE_THE_DIGEST)
    assert fingerprint_diff(old, _merge(_NOW)) == []
    # Other weights are still another setup: a norm off by 1e-5, a task, a count.
    for change in ({"task_sq_norms": [2.146353221, 1.827031848 * (1 + 1e-5)]},
                   {"base_sq_norm": 1.451486273 * (1 - 1e-5)},
                   {"task_sq_norms": [2.146353221]},
                   {"tasks": ["a", "c"]}, {"params": 69}, {"tensors": 3}):
        assert fingerprint_diff(old, _merge({**_NOW, **change})) == ["merge"], change


def test_task_vectors_with_one_digest_match_whatever_their_norms_last_digits():
    """The same bytes (one digest) summed under another torch thread count: a float64 sum
    near a 10-digit rounding boundary flipped the last digit and the resume was refused."""
    one_thread = {**_NOW, "base_sq_norm": 0.0, "task_sq_norms": [4001036.617, 1000259.154]}
    two_threads = {**one_thread, "task_sq_norms": [4001036.616, 1000259.154]}
    assert fingerprint_diff(_merge(one_thread), _merge(two_threads)) == []
    # the digest decides: other bytes with the same norms (a negated vector) differ
    assert fingerprint_diff(_merge(one_thread), _merge({**one_thread, "digest": "0" * 32})
                            ) == ["merge"]
    for change in ({"tasks": ["b", "a"]}, {"params": 67}):
        assert fingerprint_diff(_merge(one_thread), _merge({**two_threads, **change})
                                ) == ["merge"], change


class _Weights(ModelEvaluator):
    name = "weights-probe"

    @property
    def tasks(self):
        return [Task("a"), Task("b")]

    def build_model(self):
        import torch

        return torch.nn.Linear(3, 2)

    def score(self, model):
        return [float(model.weight.sum()), float(model.bias.sum())]


def _tv_study(db):
    torch = pytest.importorskip("torch")
    from mapframe.merging import TaskVectors

    torch.manual_seed(0)
    base = torch.nn.Linear(3, 2).state_dict()
    fts = [{k: v + torch.randn_like(v) for k, v in base.items()} for _ in range(2)]
    return MergeStudy(evaluator=_Weights(), task_vectors=TaskVectors(base, fts, ["x", "y"]),
                      budget=8, seed=0, sampler="sobol", storage=SQLiteStore(db),
                      study_name="tv")


def _edit_stored_weights(db, edit):
    with sqlite3.connect(db) as con:
        (text,) = con.execute("SELECT fingerprint FROM studies WHERE name = 'tv'").fetchone()
        fp = json.loads(text)
        fp["merge"]["in_memory"] = edit(fp["merge"]["in_memory"])
        con.execute("UPDATE studies SET fingerprint = ? WHERE name = 'tv'", (json.dumps(fp),))


@pytest.mark.filterwarnings("ignore:no trade-off")
@pytest.mark.parametrize("stored_by", ["a mapframe before the digest", "another thread count"])
def test_a_task_vectors_study_resumes_across_versions_and_thread_counts(tmp_path, stored_by):
    """The same in-memory task vectors, stored by a mapframe that summed their norms in
    float32 (no digest), or under another torch thread count (the last of the 10 digits
    flipped, the same digest): the resume was refused as "merge differ"."""
    import torch

    db = tmp_path / "s.sqlite"
    first = _tv_study(db).run()
    assert first.n_evaluated == 8

    def older(weights):  # float32 sums in full, no digest
        study = _tv_study(db)
        tv = study.merge_spec.task_vectors
        sq = [sum(float(torch.sum(tv.vector(i)[k].float() ** 2)) for k in tv.vector(i))
              for i in range(2)]
        assert [f"{x:.10g}" for x in sq] != [f"{x:.10g}" for x in weights["task_sq_norms"]]
        return {k: v for k, v in weights.items() if k != "digest"} | {"task_sq_norms": sq}

    def other_threads(weights):  # the last of 10 digits flipped, the same digest
        flipped = [float(f"{x + 10 ** (math.floor(math.log10(x)) - 9):.10g}")
                   for x in weights["task_sq_norms"]]
        assert flipped != weights["task_sq_norms"]
        return {**weights, "task_sq_norms": flipped}

    _edit_stored_weights(db, older if stored_by.startswith("a mapframe") else other_threads)
    again = _tv_study(db).run()
    assert (again.n_evaluated, again.n_reused) == (0, 8)
