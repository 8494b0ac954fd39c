"""Checking and salvaging an SQLite evaluation store: ``mapframe store check|salvage``.

:func:`check_store` reads a store without writing to it and reports, per study, how many
evaluations are readable and which are not (a value that is not valid JSON, a row on a
damaged page), plus SQLite's own integrity check. :func:`salvage_store` copies every
readable evaluation (and readable study metadata) into a new store, study by study with the
same names and fingerprints, so that a rerun of the study resumes from the copy.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.storage.sqlite import ROW_COLUMNS, SQLiteStore, row_evaluation

__all__ = ["StoreReport", "StudyReport", "check_store", "salvage_store"]


@dataclass
class StudyReport:
    """One study of a store: its evaluations that can be read, and those that cannot."""

    name: str
    readable: int = 0
    unreadable: list[str] = field(default_factory=list)


@dataclass
class StoreReport:
    """What :func:`check_store` found."""

    path: str
    integrity: list[str]
    studies: list[StudyReport]
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.integrity == ["ok"] and not self.problems and not any(
            s.unreadable for s in self.studies)

    def lines(self) -> list[str]:
        out = [f"store {self.path}: "
               + ("ok" if self.ok else "DAMAGED")]
        if self.integrity != ["ok"]:
            out += [f"  sqlite integrity: {line}" for line in self.integrity[:5]]
        out += [f"  {p}" for p in self.problems]
        for s in self.studies:
            bad = f", {len(s.unreadable)} unreadable" if s.unreadable else ""
            out.append(f"  study {s.name!r}: {s.readable} readable evaluations{bad}")
            out += [f"    {u}" for u in s.unreadable[:5]]
        return out


def _connect_read_only(path: str | Path) -> sqlite3.Connection:
    p = Path(path)
    if not p.is_file():
        raise StoreError(f"no store at {p} (check the path)")
    try:
        return sqlite3.connect(f"file:{p}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {p} read-only ({exc})") from None


def _studies(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    return [(int(i), str(n), str(f)) for i, n, f in conn.execute(
        "SELECT id, name, fingerprint FROM studies ORDER BY id")]


def _evaluations(conn: sqlite3.Connection, study_id: int
                 ) -> tuple[list[Evaluation], list[str]]:
    """The readable evaluations of a study and a description of each unreadable row, read
    row by row so that one damaged row or page does not hide the others."""
    good: list[Evaluation] = []
    bad: list[str] = []
    try:
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM evaluations WHERE study_id = ? ORDER BY seq", (study_id,))]
    except sqlite3.DatabaseError as exc:
        return good, [f"the evaluations table cannot be listed ({exc})"]
    has_reason = any(r[1] == "reason" for r in conn.execute("PRAGMA table_info(evaluations)"))
    columns = ROW_COLUMNS if has_reason else ROW_COLUMNS.replace("reason", "NULL")
    for seq in seqs:
        try:
            row = conn.execute(
                f"SELECT {columns} FROM evaluations WHERE seq = ?", (seq,)).fetchone()
            good.append(row_evaluation(row))
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            bad.append(f"row {seq}: {type(exc).__name__}: {str(exc)[:80]}")
    return good, bad


def check_store(path: str | Path) -> StoreReport:
    """Read the store at ``path`` (without writing) and report what can be read."""
    conn = _connect_read_only(path)
    try:
        try:
            integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            integrity = [f"{exc}"]
        report = StoreReport(str(path), integrity, [])
        try:
            studies = _studies(conn)
        except sqlite3.DatabaseError as exc:
            report.problems.append(f"the studies table cannot be read ({exc})")
            return report
        for sid, name, fp in studies:
            study = StudyReport(name)
            try:
                json.loads(fp)
            except ValueError:
                study.unreadable.append("its fingerprint is not valid JSON")
            good, bad = _evaluations(conn, sid)
            study.readable, study.unreadable = len(good), study.unreadable + bad
            report.studies.append(study)
        return report
    finally:
        conn.close()


def salvage_store(path: str | Path, out: str | Path) -> dict[str, int]:
    """Copy every readable evaluation of the store at ``path`` into a new store at ``out``
    (same study names and fingerprints); returns the count copied per study."""
    target = Path(out)
    if target.exists():
        raise StoreError(f"{target} exists: salvage into a new file")
    conn = _connect_read_only(path)
    copied: dict[str, int] = {}
    try:
        try:
            studies = _studies(conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the studies table of {path} cannot be read ({exc}); nothing "
                             "can be salvaged") from None
        for sid, name, fp in studies:
            try:
                fingerprint = json.loads(fp)
            except ValueError:
                continue  # without its fingerprint no evaluation can be matched to a setup
            good, _ = _evaluations(conn, sid)
            store = SQLiteStore(target)
            store.open(name, fingerprint)
            try:
                for ev in good:
                    store.add(ev)
                try:
                    for key, value in conn.execute(
                            "SELECT key, value FROM meta WHERE study_id = ?", (sid,)):
                        store.set_meta(key, json.loads(value))
                except (sqlite3.DatabaseError, ValueError):
                    pass  # metadata (the last run's summary) is rewritten by the next run
            finally:
                store.close()
            copied[name] = len(good)
    finally:
        conn.close()
    return copied
