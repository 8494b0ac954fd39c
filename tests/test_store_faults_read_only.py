"""A finished store on a read-only file system is reused read-only, as docs/concepts.md
("What survives what") says: SQLite cannot open a WAL store there for writing ("unable to
open database file": its -shm file cannot be made), and the store was refused."""

from __future__ import annotations

import os
import sqlite3

import pytest

from mapframe import MergeStudy
from mapframe.errors import StoreError
from mapframe.storage import SQLiteStore
from tests.objectives import two_quadratics


def _study(db, budget):
    return MergeStudy(objective=two_quadratics, task_names=["a", "b"], budget=budget, seed=0,
                      storage=SQLiteStore(db), study_name="s", sampler="sobol",
                      surrogate="quadratic")


def _on_read_only_file_system(monkeypatch, db, error="unable to open database file"):
    """What a read-only file system does to the store: opening it for writing fails as
    SQLite says there, and neither the file nor its folder is writable."""
    def cannot_write(p, timeout=30.0):
        raise sqlite3.OperationalError(error)

    real_access = os.access

    def access(path, mode, *args, **kwargs):
        if mode & os.W_OK and os.path.abspath(path) in (str(db), str(db.parent)):
            return False
        return real_access(path, mode, *args, **kwargs)

    monkeypatch.setattr(SQLiteStore, "_set_up", staticmethod(cannot_write))
    monkeypatch.setattr(os, "access", access)


def test_a_finished_store_on_a_read_only_file_system_is_reused(tmp_path, monkeypatch):
    db = tmp_path / "s.sqlite"
    first = _study(db, 8).run()
    _on_read_only_file_system(monkeypatch, db)
    again = _study(db, 8).run()
    assert (again.n_reused, again.n_evaluated) == (8, 0)
    assert len(again.front) == len(first.front)
    with pytest.raises(StoreError, match=r"read-only.*still need running.*nothing was "
                                         r"evaluated") as info:
        _study(db, 12).run()
    assert "\n" not in str(info.value)


def test_a_store_that_cannot_be_written_opens_read_only(tmp_path, monkeypatch):
    db = tmp_path / "s.sqlite"
    _study(db, 6).run()
    _on_read_only_file_system(monkeypatch, db, error="disk I/O error")
    store = SQLiteStore(db)
    store.open("s", _study(db, 6).fingerprint())
    assert store.read_only and len(store.load()) == 6
    store.close()
