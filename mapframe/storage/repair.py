"""Checking and salvaging an SQLite evaluation store: ``mapframe store check|salvage``.

:func:`check_store` reads a store without writing to it and reports, per study, how many
evaluations are readable and which are not (a value that is not valid JSON, a row on a
damaged page), plus SQLite's own integrity check. :func:`salvage_store` copies every
readable evaluation (and readable study metadata) into a new store, study by study with the
same names and fingerprints, so that a rerun of the study resumes from the copy.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mapframe.errors import StoreError
from mapframe.history import Evaluation
from mapframe.storage.sqlite import (
    ROW_COLUMNS,
    _floats,
    has_column,
    row_evaluation,
    sqlite_uri,
)

__all__ = ["StoreReport", "StudyReport", "check_store", "missing_bytes", "salvage_store"]


@dataclass
class StudyReport:
    """One study of a store: its evaluations that can be read, and those that cannot."""

    name: str
    readable: int = 0
    unreadable: list[str] = field(default_factory=list)
    #: The readable evaluations by phase and status (``{"search": {"ok": 10, "failed": 1}}``).
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def counted(self) -> str:
        """``counts`` for people: ``search 10 ok, 1 failed; verify 2 ok``."""
        return "; ".join(
            f"{phase} " + ", ".join(f"{n} {status}" for status, n in by_status.items())
            for phase, by_status in self.counts.items())


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
            counted = f" ({s.counted()})" if s.counts else ""
            out.append(f"  study {s.name!r}: {s.readable} readable evaluations{bad}{counted}")
            out += [f"    {u}" for u in s.unreadable[:5]]
        return out


def missing_bytes(path: str | Path) -> tuple[int, int]:
    """``(bytes missing, expected size)`` of an SQLite file cut short: its header records
    the page size and the page count, and a file shorter than their product lost its tail
    (a copy that did not finish, a full disk). ``(0, size)`` for a whole file or one whose
    header cannot tell."""
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\0"):
        return 0, size
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when its version number matches the file's
    # change counter (SQLite's file format, section 1.3.7).
    if header[92:96] != header[24:28] or pages == 0:
        return 0, size
    expected = pages * page_size
    return max(0, expected - size), expected


@contextlib.contextmanager
def _read_only(path: str | Path) -> Iterator[tuple[sqlite3.Connection, list[str]]]:
    """A read-only connection to the store at ``path`` and notes on how it was read. A file
    cut short is read from a temporary copy padded with zeros to its recorded size (SQLite
    refuses the short file whole, though every page before the cut is intact); the rows on
    the lost pages are then unreadable, the rest readable."""
    from mapframe.storage.manage import _refuse_not_a_store, store_path

    p = store_path(path)
    missing, expected = missing_bytes(p)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mapframe-salvage-") as tmp:
        source = p
        if missing:
            source = Path(tmp) / p.name
            shutil.copyfile(p, source)
            with open(source, "ab") as fh:
                fh.truncate(expected)
            wal = p.with_name(p.name + "-wal")
            if wal.is_file():
                shutil.copyfile(wal, source.with_name(source.name + "-wal"))
            notes.append(f"the file is {missing} bytes shorter than the {expected} its header "
                         "records (truncated): read from a copy padded with zeros, so rows "
                         "on the lost pages are unreadable")
        try:
            conn = sqlite3.connect(sqlite_uri(source), uri=True, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {p} read-only ({exc})") from None
        try:
            _refuse_not_a_store(conn, p)
            yield conn, notes
        finally:
            conn.close()


def _studies(conn: sqlite3.Connection) -> list[tuple[int, str, str]]:
    return [(int(i), str(n), str(f)) for i, n, f in conn.execute(
        "SELECT id, name, fingerprint FROM studies ORDER BY id")]


def _evaluations(conn: sqlite3.Connection, study_id: int
                 ) -> tuple[list[tuple[Evaluation, float]], list[str]]:
    """The readable evaluations of a study, each with the time it was stored (``created``;
    the time of reading where that cannot be read), and a description of each unreadable
    row, read row by row so that one damaged row or page does not hide the others."""
    good: list[tuple[Evaluation, float]] = []
    bad: list[str] = []
    try:
        seqs = [r[0] for r in conn.execute(
            "SELECT seq FROM evaluations WHERE study_id = ? ORDER BY seq", (study_id,))]
    except sqlite3.DatabaseError as exc:
        return good, [f"the evaluations table cannot be listed ({exc})"]
    has_reason = has_column(conn, "evaluations", "reason")
    columns = ROW_COLUMNS if has_reason else ROW_COLUMNS.replace("reason", "NULL")
    for seq in seqs:
        try:
            row = conn.execute(
                f"SELECT {columns}, created FROM evaluations WHERE seq = ?", (seq,)).fetchone()
            good.append((row_evaluation(row[:-1]), _time(row[-1])))
        except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
            bad.append(f"row {seq}: {type(exc).__name__}: {str(exc)[:80]}")
    return good, bad


def _time(value: Any) -> float:
    """A stored time (``created``) as a float; now when it cannot be read."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        return time.time()
    return t if math.isfinite(t) else time.time()


def _counts(good: list[tuple[Evaluation, float]]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for ev, _ in good:
        by_status = out.setdefault(ev.phase, {})
        by_status[ev.status] = by_status.get(ev.status, 0) + 1
    return out


def check_store(path: str | Path) -> StoreReport:
    """Read the store at ``path`` (without writing) and report what can be read."""
    with _read_only(path) as (conn, notes):
        try:
            integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        except sqlite3.DatabaseError as exc:
            integrity = [f"{exc}"]
        report = StoreReport(str(path), integrity, [], list(notes))
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
            study.counts = _counts(good)
            report.studies.append(study)
        return report


def salvage_store(path: str | Path, out: str | Path) -> dict[str, int]:
    """Copy every readable evaluation of the store at ``path`` into a new store at ``out``
    (same study names, fingerprints and creation times; each evaluation keeps the time it
    was stored, and readable study-level values are copied); returns the count copied per
    study. The new store is written in one transaction: whole, or not at all."""
    from mapframe.storage.manage import _write, insert_study

    target = Path(out)
    if target.exists():
        raise StoreError(f"{target} exists: salvage into a new file")
    copied: dict[str, int] = {}
    studies: list[tuple[str, str, float, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
    with _read_only(path) as (conn, _):
        try:
            rows = conn.execute(
                "SELECT id, name, fingerprint, created FROM studies ORDER BY id").fetchall()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"the studies table of {path} cannot be read ({exc}); nothing "
                             "can be salvaged") from None
        updated = "updated" if has_column(conn, "meta", "updated") else "NULL"
        for sid, name, fp, created in rows:
            try:
                json.loads(fp)
            except (TypeError, ValueError):
                continue  # without its fingerprint no evaluation can be matched to a setup
            good, _ = _evaluations(conn, sid)
            evaluations = [
                (_floats(ev.coefficients), _floats(ev.metrics), ev.status, ev.error, ev.phase,
                 ev.round, ev.duration, ev.key,
                 None if ev.reason is None else ev.reason.value, at)
                for ev, at in good]
            meta: list[tuple[Any, ...]] = []
            try:
                for key, value, when in conn.execute(
                        f"SELECT key, value, {updated} FROM meta WHERE study_id = ?", (sid,)):
                    json.loads(value)
                    meta.append((str(key), value, None if when is None else _time(when)))
            except (sqlite3.DatabaseError, TypeError, ValueError):
                pass  # metadata (the last run's summary) is rewritten by the next run
            studies.append((str(name), str(fp), _time(created), evaluations, meta))
            copied[str(name)] = len(good)

    def write(conn: sqlite3.Connection) -> None:
        for study in studies:
            insert_study(conn, *study)

    _write(target, write, create=True)
    return copied
