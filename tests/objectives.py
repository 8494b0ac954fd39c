"""Objectives used by CLI and subprocess tests (importable by module path)."""

from __future__ import annotations

import os
import time

import numpy as np


def two_quadratics(C):
    """Two concave tasks with optima at (0.8, 0.2) and (0.2, 0.8)."""
    C = np.atleast_2d(C)
    a = 1.0 - ((C - [0.8, 0.2]) ** 2).sum(axis=1)
    b = 1.0 - ((C - [0.2, 0.8]) ** 2).sum(axis=1)
    return np.column_stack([a, b])


def slow_logged(C):
    """Like two_quadratics, but slow, and it appends one line per evaluated row to a log."""
    log = os.environ["MAPFRAME_TEST_LOG"]
    out = two_quadratics(C)
    for row in np.atleast_2d(C):
        time.sleep(float(os.environ.get("MAPFRAME_TEST_DELAY", "0.3")))
        with open(log, "a") as fh:
            fh.write(",".join(f"{v!r}" for v in row) + "\n")
    return out


def search_keys(db) -> list[str]:
    """Keys of the search evaluations stored so far in the SQLite store ``db`` (a study
    running in another process may not have created the file or its table yet)."""
    import sqlite3
    from pathlib import Path

    if not Path(db).exists():
        return []
    try:
        with sqlite3.connect(str(db), timeout=5) as conn:
            rows = conn.execute("SELECT key FROM evaluations WHERE phase='search'").fetchall()
    except sqlite3.OperationalError:
        return []
    return [r[0] for r in rows]
