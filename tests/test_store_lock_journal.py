"""Another program holding the SQLite store's lock while a study runs (a sqlite3 shell left
in a transaction, a backup tool): the study that stops on it neither holds up the next
study of the same process with claims it could not release, nor loses the evaluations that
finished but could not be written (they are kept in a journal next to the store and
stored by the next run)."""

from __future__ import annotations

import gc
import json
import sqlite3
import types

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.session import EvaluationSession
from mapframe.storage import SQLiteStore
from mapframe.storage.base import driver_id

FP = {"x": 1}


@pytest.fixture
def short_lock(monkeypatch):
    monkeypatch.setattr(SQLiteStore, "lock_timeout", 0.3)


def _objective(C):
    return np.column_stack([C[:, 0], C[:, 1]]) * [1, -1] + [0, 1] - (C[:, :1] - C[:, 1:]) ** 2


def _lock_on_second_batch(path):
    """An objective that, in its second batch, makes another program take the store's
    write lock; and the function that lets it go."""
    calls: list[int] = []
    holder: list[sqlite3.Connection] = []

    def objective(C):
        calls.append(len(C))
        if len(calls) == 2:
            holder.append(sqlite3.connect(path, isolation_level=None))
            holder[0].execute("BEGIN IMMEDIATE")
        return _objective(C)

    def release() -> None:
        holder[0].execute("ROLLBACK")
        holder[0].close()

    objective.calls = calls  # type: ignore[attr-defined]
    return objective, release


def _study(path, objective, claim_ttl=3600.0) -> MergeStudy:
    return MergeStudy(objective=objective, task_names=["a", "b"], budget=10, seed=0,
                      storage=SQLiteStore(path, claim_ttl=claim_ttl), study_name="s",
                      sampler="sobol", surrogate="quadratic")


def _session(store: SQLiteStore) -> EvaluationSession:
    return EvaluationSession(store, "s", FP, types.SimpleNamespace(identifiable=True), None,
                             None, [])  # type: ignore[arg-type]


# -- fault 1: claims a closed study of this process could not release --------------------
def test_the_next_study_takes_over_claims_a_locked_out_study_left_at_once(
        tmp_path, short_lock, monkeypatch):
    path = tmp_path / "s.sqlite"
    objective, release = _lock_on_second_batch(path)
    with pytest.raises(StoreError):
        _study(path, objective).run()  # its release of the claims is locked out too
    release()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT COUNT(*) FROM claims").fetchone()[0] > 0  # left behind
    claim = SQLiteStore.claim

    def no_wait(self, phase, keys, owner, limit=None):
        got = claim(self, phase, keys, owner, limit)
        # an empty claim makes the study wait claim_ttl (an hour here) for the old claims
        assert got or not keys, "the next study waits for claims of a study that ended"
        return got

    monkeypatch.setattr(SQLiteStore, "claim", no_wait)
    res = _study(path, objective).run()
    assert len(res.history) == 10


@pytest.mark.parametrize("how", ["closed", "garbage collected"])
def test_claims_of_an_ended_session_of_this_process_are_taken_over_at_once(tmp_path, how):
    path = tmp_path / "s.sqlite"
    first = _session(SQLiteStore(path, claim_ttl=3600)).open()
    assert first.store.claim("search", ["k1", "k2"], first.owner) == ["k1", "k2"]
    other = SQLiteStore(path, claim_ttl=3600)
    other.open("s", FP)
    assert other.claim("search", ["k1", "k2"], driver_id()) == []  # a live driver's
    if how == "closed":
        first.close()  # its claims were not released (a locked store, an exception)
    else:
        store = first.store
        del first
        gc.collect()
        store.close()
    assert other.claim("search", ["k1", "k2"], driver_id()) == ["k1", "k2"]
    other.close()


def test_a_reopened_session_holds_its_claims_again(tmp_path):
    path = tmp_path / "s.sqlite"
    session = _session(SQLiteStore(path, claim_ttl=3600))
    session.open()
    session.close()
    session.open()
    assert session.store.claim("search", ["k1"], session.owner) == ["k1"]
    other = SQLiteStore(path, claim_ttl=3600)
    other.open("s", FP)
    assert other.claim("search", ["k1"], driver_id()) == []
    other.close()
    session.close()


# -- fault 2: finished evaluations the locked store could not take -----------------------
def _ev(key: str, value: float = 0.5) -> Evaluation:
    return Evaluation(coefficients=np.array([value]), metrics=np.array([value]), status="ok",
                      phase="search", round=0, duration=0.0, key=key)


def _locked(path) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


def test_a_locked_out_study_keeps_its_finished_evaluations_for_the_next_run(
        tmp_path, short_lock):
    path = tmp_path / "s.sqlite"
    objective, release = _lock_on_second_batch(path)
    with pytest.raises(StoreError) as info:
        _study(path, objective).run()
    release()
    text = str(info.value)
    calls = objective.calls  # type: ignore[attr-defined]
    first, second = calls[0], sum(calls[1:])  # stored; finished under the lock
    assert "\n" not in text and "holds its lock" in text
    assert f"{first} evaluations of this study are safely stored" in text
    assert f"{second} finished evaluations that could not be written are kept in " \
           f"{path}.pending" in text and "the next run with this store stores them" in text
    assert len(list((tmp_path / "s.sqlite.pending").glob("*.json"))) == second
    res = _study(path, objective).run()
    assert res.n_reused == first + second  # none of the finished ones is evaluated again
    assert not (tmp_path / "s.sqlite.pending").exists()
    with sqlite3.connect(path) as c:
        assert c.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 10


def test_kept_evaluations_land_only_in_their_own_study(tmp_path, short_lock):
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    store.open("s", FP)
    store.add(_ev("k1"))
    other = _locked(path)
    with pytest.raises(StoreError, match="kept in"):
        store.add(_ev("k2"))
    with pytest.raises(StoreError, match="kept in"):  # at once: no second wait on the lock
        store.add(_ev("k3"))
    other.execute("ROLLBACK")
    other.close()
    store.close()
    journal = tmp_path / "s.sqlite.pending"
    assert len(list(journal.glob("*.json"))) == 2
    # another study of the file (another name; the same name with another setup elsewhere)
    stranger = SQLiteStore(path)
    stranger.open("t", FP)
    assert stranger.load() == []
    stranger.close()
    elsewhere = SQLiteStore(tmp_path / "other.sqlite")
    elsewhere.open("s", {"x": 2})
    assert elsewhere.load() == []
    elsewhere.close()
    assert len(list(journal.glob("*.json"))) == 2  # left for their study
    # a kept file of the same name but another fingerprint is never taken
    forged = json.loads(next(journal.glob("*.json")).read_text())
    forged.update(fingerprint=json.dumps({"x": 2}), key="k9")
    (journal / "0-forged.json").write_text(json.dumps(forged))
    store.open("s", FP)
    assert [e.key for e in store.load()] == ["k1", "k2", "k3"]
    assert [p.name for p in journal.glob("*.json")] == ["0-forged.json"]
    store.close()


def test_a_kept_evaluation_does_not_replace_one_stored_meanwhile(tmp_path, short_lock):
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    store.open("s", FP)
    other = _locked(path)
    with pytest.raises(StoreError, match="kept in"):
        store.add(_ev("k1", 0.25))
    other.execute("ROLLBACK")
    other.close()
    store.close()
    # another driver of the study evaluated the point again and stored it meanwhile
    (journal,) = (tmp_path / "s.sqlite.pending").glob("*.json")
    record = json.loads(journal.read_text())
    sqlite3.connect(path, isolation_level=None).execute(
        "INSERT INTO evaluations (study_id, phase, key, coefficients, metrics, status, round, "
        "duration, created) VALUES (1, 'search', 'k1', '[0.75]', '[0.75]', 'ok', 0, 0, 0)")
    store.open("s", FP)
    (ev,) = store.load()
    assert ev.metrics is not None and ev.metrics[0] == 0.75 and record["metrics"] == "[0.25]"
    assert not (tmp_path / "s.sqlite.pending").exists()
    store.close()
