"""A full disk when a stored study is reopened: nothing needs writing, so it opens (it
died with a raw sqlite3 traceback in the study row's INSERT); a write then says the disk is
full in one line."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.storage import SQLiteStore

FP = {"x": 1}


def _ev(key: str) -> Evaluation:
    return Evaluation(coefficients=np.array([0.5]), metrics=np.array([0.5]), status="ok",
                      phase="search", round=0, duration=0.0, key=key)


class _FullDisk(sqlite3.Connection):
    """A connection to a store on a full disk: every write fails as SQLite says then."""

    def execute(self, sql, *args):  # type: ignore[override]
        if sql.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE", "BEGIN IMMEDIATE")):
            raise sqlite3.OperationalError("database or disk is full")
        return super().execute(sql, *args)


def test_reopening_a_stored_study_on_a_full_disk(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    store = SQLiteStore(path)
    store.open("s", FP)
    store.add(_ev("k1"))
    store.add(_ev("k2"))
    store.close()
    real = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect",
                        lambda *a, **kw: real(*a, **{**kw, "factory": _FullDisk}))
    again = SQLiteStore(path)
    again.open("s", FP)  # nothing to write: it opens
    assert [e.key for e in again.load()] == ["k1", "k2"]
    with pytest.raises(StoreError, match="the disk holding the store is full") as info:
        again.add(_ev("k3"))
    assert "\n" not in str(info.value)
    assert "2 evaluations of this study are safely stored" in str(info.value)
    again.close()
    new_study = SQLiteStore(path)
    with pytest.raises(StoreError, match="the disk holding the store is full") as info:
        new_study.open("another", FP)
    assert "\n" not in str(info.value)
