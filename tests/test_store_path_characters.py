"""A store whose path holds ``?``, ``#``, ``%`` or a space is read where it lies.

The read-only connections (``mapframe store list/check/salvage``, the report and dashboard,
a store opened read-only) were made with ``f"file:{path}?mode=ro"``: SQLite's URI parser cut
the path at the first ``?`` or ``#`` and opened another file, so ``store list`` said the
store held no table and ``store check`` reported it as no mapframe store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mapframe import MergeStudy
from mapframe.report.sources import store_studies
from mapframe.storage import list_studies
from mapframe.storage.repair import check_store, salvage_store
from mapframe.storage.sqlite import SQLiteStore


def _f(C: np.ndarray) -> np.ndarray:
    return np.column_stack([1 - ((C - [0.8, 0.2]) ** 2).sum(1),
                            1 - ((C - [0.2, 0.8]) ** 2).sum(1)])


@pytest.fixture
def store(tmp_path: Path) -> Path:
    folder = tmp_path / "run 1#b?x=%20"
    folder.mkdir()
    path = folder / "s.sqlite"
    MergeStudy(objective=_f, task_names=["a", "b"], budget=8, sampler="sobol",
               storage=str(path), study_name="odd").run()
    return path


def test_the_uri_keeps_the_whole_path(tmp_path: Path) -> None:
    from mapframe.storage.sqlite import sqlite_uri

    uri = sqlite_uri(tmp_path / "a?b#c%d e" / "s.sqlite", "immutable=1")
    assert uri.endswith("/a%3Fb%23c%25d%20e/s.sqlite?immutable=1")


def test_every_reader_finds_the_store(store: Path, tmp_path: Path) -> None:
    [summary] = list_studies(store)
    assert summary.name == "odd" and summary.n_evaluations == 8
    report = check_store(store)
    assert report.ok and "8 readable evaluations" in " ".join(report.lines())
    assert [name for name, _ in store_studies(store)] == ["odd"]
    salvage_store(store, tmp_path / "copy.sqlite")
    assert list_studies(tmp_path / "copy.sqlite")[0].n_evaluations == 8
    conn = SQLiteStore._set_up_read_only(store)
    try:
        assert conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 8
    finally:
        conn.close()
