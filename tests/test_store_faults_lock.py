"""Another program holding the SQLite store's write lock (a sqlite3 shell left in a
transaction, a backup tool) while a study writes: writes wait for it (bounded by
SQLiteStore.lock_timeout), then stop with a one-line StoreError naming the file; what was
stored stays stored."""

from __future__ import annotations

import sqlite3
import threading
import time

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.storage import SQLiteStore

FP = {"x": 1}


def _ev(key: str) -> Evaluation:
    return Evaluation(coefficients=np.array([0.5]), metrics=np.array([0.5]), status="ok",
                      phase="search", round=0, duration=0.0, key=key)


@pytest.fixture
def short_lock(monkeypatch):
    monkeypatch.setattr(SQLiteStore, "lock_timeout", 0.3)


def _locked_error(info: pytest.ExceptionInfo[StoreError], path) -> None:
    text = str(info.value)
    assert "\n" not in text
    assert str(path) in text and "holds its lock" in text
    assert "wait for it to finish or close it" in text and "use another store" in text


def test_writes_while_another_program_holds_the_lock_stop_with_one_line(tmp_path,
                                                                        short_lock):
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    store.open("s", FP)
    store.add(_ev("k1"))
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    writes = {"add": lambda: store.add(_ev("k2")),
              "set_meta": lambda: store.set_meta("m", 1),
              "claim": lambda: store.claim("search", ["k3"], "A"),
              "release_claims": lambda: store.release_claims("A")}
    for name, write in writes.items():
        start = time.monotonic()
        with pytest.raises(StoreError) as info:
            write()
        assert time.monotonic() - start < 3, name  # bounded by lock_timeout
        _locked_error(info, path)
        assert "1 evaluations of this study are safely stored" in str(info.value)
    # a new study on the locked file: its row cannot be written
    fresh = SQLiteStore(path)
    with pytest.raises(StoreError) as info:
        fresh.open("another", FP)
    _locked_error(info, path)
    other.execute("ROLLBACK")
    other.close()
    store.add(_ev("k2"))  # the lock is gone: writes go through again
    assert [e.key for e in store.load()] == ["k1", "k2"]
    fresh.open("another", FP)
    store.close()
    fresh.close()


def test_a_lock_held_for_a_moment_is_waited_for(tmp_path):
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    store.open("s", FP)
    taken = threading.Event()

    def hold() -> None:
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        taken.set()
        time.sleep(0.3)
        other.execute("ROLLBACK")
        other.close()

    t = threading.Thread(target=hold)
    t.start()
    taken.wait()
    store.add(_ev("k1"))
    t.join()
    assert [e.key for e in store.load()] == ["k1"]
    store.close()


def test_a_study_whose_store_gets_locked_stops_with_one_line_and_resumes(tmp_path,
                                                                         short_lock):
    path = tmp_path / "s.sqlite"
    calls: list[int] = []
    holder: list[sqlite3.Connection] = []

    def objective(C):
        calls.append(len(C))
        if len(calls) == 2:  # another program takes the lock during the second batch
            holder.append(sqlite3.connect(path, isolation_level=None))
            holder[0].execute("BEGIN IMMEDIATE")
        return np.column_stack([C[:, 0], C[:, 1]]) * [1, -1] + [0, 1] - (C[:, :1] - C[:, 1:]) ** 2

    def study():
        return MergeStudy(objective=objective, task_names=["a", "b"], budget=10, seed=0,
                          # the failed run's claims (its release was locked out too)
                          # are taken over at once: their session is closed
                          storage=SQLiteStore(path, claim_ttl=3600), study_name="s",
                          sampler="sobol",
                          surrogate="quadratic")

    with pytest.raises(StoreError) as info:
        study().run()
    _locked_error(info, path)
    holder[0].execute("ROLLBACK")
    holder[0].close()
    first = calls[0]
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == first
    res = study().run()
    # neither the first batch (stored) nor the second (kept in the journal, stored now)
    # is evaluated again
    assert res.n_reused == sum(calls)
