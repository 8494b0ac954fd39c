"""Managing the studies of an SQLite evaluation store: ``mapframe store list|delete|rename|
copy|export``.

:func:`list_studies` says what a store holds (per study: its tasks, its evaluations by phase
and status, when they were made, whether a finished run's summary is stored, and whether a
driver is running it now). :func:`delete_study` and :func:`rename_study` change one study,
refusing while a live driver holds claims on it; :func:`copy_study` copies studies into a
new or existing store with their timestamps and fingerprints, so that a study run on the
copy resumes; :func:`export_study` gives every stored evaluation of a study as rows (and
:func:`write_csv` as CSV).

Every write takes the store's write lock as a running study does (one ``BEGIN IMMEDIATE``
transaction, waiting up to :attr:`SQLiteStore.lock_timeout` for another process's lock), so
nothing is half done; reads use a read-only connection and never block a running study.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import shlex
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO, TypeVar

from mapframe._files import write_atomically
from mapframe.errors import ConfigError, StoreError
from mapframe.storage.base import driver_is_gone
from mapframe.storage.sqlite import (
    _SQLITE_MAGIC,
    ROW_COLUMNS,
    SQLiteStore,
    _is_lock_error,
    _refuse_foreign,
    _write_transaction,
    damaged_store_error,
    has_column,
    row_evaluation,
    sqlite_uri,
)

__all__ = ["StoredRun", "StudySummary", "copy_study", "delete_study", "export_study",
           "list_studies", "read_stored_run", "rename_study", "store_path", "stored_run",
           "write_csv"]

_T = TypeVar("_T")

#: The name of the store inside a results folder (``mapframe run``'s default).
RESULTS_STORE = "evaluations.sqlite"


@dataclass
class StudySummary:
    """One study of a store, as :func:`list_studies` reads it.

    ``counts`` holds the evaluations by phase and status (``{"search": {"ok": 10,
    "failed": 1}, "verify": {"ok": 2}}``); ``first_evaluation``/``last_evaluation`` and
    ``created`` are ``time.time()`` values (``None``: no evaluation yet). ``finished`` is
    whether the summary of a finished run is stored, with when it was stored
    (``finished_at``, ``None`` for a summary stored by a mapframe that did not record it) and
    that run's ``budget`` and ``seed``; ``front_size`` the number of points of the front
    that run stored (``None``: no front stored, the run predating stored fronts, or the
    front stored being an older run's). ``live_claims`` counts the points live drivers are
    evaluating now (their ids in ``drivers``): ``running`` is true while there are any. A
    running study holds claims only while points are being evaluated, not while its
    surrogate is fitted between rounds."""

    name: str
    task_names: list[str]
    created: float
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    first_evaluation: float | None = None
    last_evaluation: float | None = None
    finished: bool = False
    finished_at: float | None = None
    budget: int | None = None
    seed: int | None = None
    front_size: int | None = None
    live_claims: int = 0
    drivers: list[str] = field(default_factory=list)
    pending: int = 0

    @property
    def n_evaluations(self) -> int:
        """Every stored evaluation of the study, of every phase and status."""
        return sum(sum(by_status.values()) for by_status in self.counts.values())

    @property
    def running(self) -> bool:
        """Whether a live driver holds claims on the study (it is evaluating points now)."""
        return self.live_claims > 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-compatible values (times as ISO 8601 strings too)."""
        out: dict[str, Any] = {
            "name": self.name, "task_names": list(self.task_names),
            "n_evaluations": self.n_evaluations, "counts": self.counts,
            "created": iso_time(self.created),
            "first_evaluation": iso_time(self.first_evaluation),
            "last_evaluation": iso_time(self.last_evaluation),
            "finished": self.finished, "finished_at": iso_time(self.finished_at),
            "budget": self.budget, "seed": self.seed, "front_size": self.front_size,
            "running": self.running,
            "live_claims": self.live_claims, "drivers": list(self.drivers),
            "pending": self.pending}
        return out


def iso_time(t: float | None) -> str | None:
    """``t`` (a ``time.time()``) as a local ISO 8601 time with its UTC offset, to the
    millisecond; ``None`` stays ``None``."""
    if t is None or not math.isfinite(t):
        return None
    return datetime.fromtimestamp(t).astimezone().isoformat(timespec="milliseconds")


# -- finding and opening a store -------------------------------------------------------------
def store_path(path: str | os.PathLike[str]) -> Path:
    """``path`` as the file of an existing mapframe store, else a one-line
    :class:`StoreError` that says what it is instead and what to give: nothing there, a
    folder (a results folder: its ``evaluations.sqlite`` is named), an empty file, a file
    that is no SQLite database. Whether an SQLite file is a mapframe store is known only
    once it is read (:func:`_refuse_not_a_store`)."""
    p = Path(path)
    if p.is_dir():
        inner = p / RESULTS_STORE
        if not inner.is_file():
            inner = summary_store(p) or inner
        if inner.is_file():
            raise StoreError(
                f"{p} is a folder (a results folder); its store is {inner}: give that "
                "path instead")
        named = summary_store(p)
        if named is not None:
            raise StoreError(f"{p} is a folder (a results folder); its summary.json names the "
                             f"store {named}, which is not there (moved?): give the store's "
                             "path")
        raise StoreError(f"{p} is a folder, not an evaluation store; give the store's "
                         f".sqlite file (a results folder holds it as {RESULTS_STORE})")
    if not p.is_file():
        raise StoreError(f"no store at {p} (check the path)")
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise StoreError(f"cannot read {p} ({exc})") from None
    if not head:
        raise StoreError(f"{p} is an empty file, not a mapframe store (no study was ever "
                         "stored in it); check the path")
    if head != _SQLITE_MAGIC[:len(head)] or len(head) < len(_SQLITE_MAGIC):
        raise StoreError(f"{p} is not an evaluation store (an existing file that is no "
                         "SQLite database); check the path")
    return p


def summary_store(folder: Path) -> Path | None:
    """The store a results folder's ``summary.json`` names (its run's ``storage.path``,
    relative to the folder or absolute), whether or not it is there."""
    try:
        with open(folder / "summary.json", encoding="utf-8") as fh:
            where = json.load(fh)["settings"]["storage"]["path"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not isinstance(where, str) or not where or "://" in where:
        return None
    return folder / where  # an absolute path stays itself


def _refuse_not_a_store(conn: sqlite3.Connection, p: Path) -> None:
    """A one-line :class:`StoreError` when the SQLite database on ``conn`` is not a mapframe
    store: it has no tables, or another program's (as opening it as a store says)."""
    try:
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if tables:
            _refuse_foreign(conn, p)
    except sqlite3.DatabaseError:
        return  # damaged: the caller reports that
    if not tables:
        raise StoreError(f"{p} is an SQLite database without tables, not a mapframe store "
                         "(no study was ever stored in it); check the path")


@contextlib.contextmanager
def _reading(path: str | os.PathLike[str]) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the mapframe store at ``path``, reading one snapshot (a
    read transaction): it never blocks a running study, nor waits for one."""
    p = store_path(path)
    conn: sqlite3.Connection | None = None
    last: BaseException | None = None
    # mode=ro needs the WAL index (or a folder where it can make it); immutable=1 reads a
    # file nobody can write as it is.
    for query in ("mode=ro", "immutable=1"):
        try:
            conn = sqlite3.connect(sqlite_uri(p, query), uri=True, isolation_level=None,
                                   timeout=SQLiteStore.lock_timeout)
            conn.execute("SELECT name FROM sqlite_master").fetchall()
            break
        except sqlite3.DatabaseError as exc:
            last = exc
            if conn is not None:
                conn.close()
                conn = None
            if "malformed" in str(exc).lower() or "not a database" in str(exc).lower():
                raise damaged_store_error(p, str(exc)) from None
    if conn is None:
        raise StoreError(f"cannot read the store {p} ({last}); check it is readable")
    try:
        _refuse_not_a_store(conn, p)
        conn.execute("BEGIN")
        yield conn
    except sqlite3.DatabaseError as exc:
        raise damaged_store_error(p, str(exc)) from None
    finally:
        conn.close()


def _write(path: str | os.PathLike[str], write: Callable[[sqlite3.Connection], _T], *,
           create: bool = False) -> _T:
    """``write(connection)`` in one write transaction on the store at ``path`` (made when
    ``create`` and absent), waiting for another process's lock as a study does (up to
    :attr:`SQLiteStore.lock_timeout`); a lock held past it, a full disk or a read-only
    store is a one-line :class:`StoreError` saying that nothing was changed."""
    p = Path(path)
    if not (create and not p.exists()):
        with _reading(p):  # a mapframe store (nothing is written to any other file)
            pass
    elif not p.parent.is_dir():
        raise StoreError(f"cannot create the store {p}: its folder {p.parent} does not exist")
    deadline = time.monotonic() + SQLiteStore.lock_timeout
    delay = 0.01
    conn: sqlite3.Connection | None = None
    try:
        while True:
            try:
                if conn is None:
                    conn = SQLiteStore._set_up(p, SQLiteStore.lock_timeout)
                with _write_transaction(conn):
                    return write(conn)
            except sqlite3.OperationalError as exc:
                if not _is_lock_error(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
    except sqlite3.DatabaseError as exc:
        text = str(exc).lower()
        if "malformed" in text or "not a database" in text:
            raise damaged_store_error(p, str(exc)) from None
        if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
            why = (f"another program holds its lock (still after "
                   f"{SQLiteStore.lock_timeout:g} s: {exc}); wait for it to finish or close it")
        elif "full" in text:
            why = f"the disk holding it is full ({exc}); free space"
        elif "readonly" in text or "read-only" in text or "unable to open" in text:
            why = f"it is read-only ({exc}); make it writable"
        else:
            why = f"{exc}"
        raise StoreError(f"cannot write to the store {p}: {why}; nothing was changed") from None
    finally:
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            conn.close()


# -- reading --------------------------------------------------------------------------------
def _study_names(conn: sqlite3.Connection) -> list[str]:
    return [str(r[0]) for r in conn.execute("SELECT name FROM studies ORDER BY id")]


def _unknown(p: Path | str, name: str, names: Sequence[str]) -> StoreError:
    held = (f"the store holds {', '.join(map(repr, names))}" if names
            else "the store holds no study")
    return StoreError(f"no study named {name!r} in {p}; {held} (see 'mapframe store list "
                      f"{shlex.quote(str(p))}')")


def _study_id(conn: sqlite3.Connection, p: Path | str, name: str) -> int:
    row = conn.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise _unknown(p, name, _study_names(conn))
    return int(row[0])


def _live_claims(conn: sqlite3.Connection, study_id: int,
                 claim_ttl: float) -> tuple[int, list[str]]:
    """``(claims, owners)`` of the live drivers holding claims on a study: renewed within
    ``claim_ttl`` seconds by a driver that is not known to be gone."""
    now = time.time()
    n, owners = 0, []
    for owner, heartbeat in conn.execute(
            "SELECT owner, heartbeat FROM claims WHERE study_id = ?", (study_id,)):
        if heartbeat > now - claim_ttl and not driver_is_gone(owner, heartbeat):
            n += 1
            if owner not in owners:
                owners.append(owner)
    return n, owners


def _journal(p: Path) -> Path:
    return Path(str(p) + ".pending")


def _pending(p: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """The files of the store's journal (``<store>.pending/``, see :class:`SQLiteStore`)
    kept for study ``name`` (any fingerprint), with their records; unreadable files are
    left out (and left alone)."""
    folder = _journal(p)
    out = []
    if folder.is_dir():
        for f in sorted(folder.glob("*.json")):
            try:
                record = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and record.get("study") == name:
                out.append((f, record))
    return out


def _number(value: Any) -> Any:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def list_studies(path: str | os.PathLike[str], claim_ttl: float = 60.0) -> list[StudySummary]:
    """The studies of the SQLite store at ``path``, oldest first (:class:`StudySummary`):
    read without writing, in one snapshot, beside running studies. A driver counts as live
    while it renewed its claims within ``claim_ttl`` seconds (the stores' default) and is
    not known to be gone (its process ended, on this host). A one-line :class:`StoreError`
    when ``path`` is no mapframe store (or a results folder: it names the store inside)."""
    p = Path(path)
    with _reading(p) as conn:
        out = []
        for sid, name, fp, created in conn.execute(
                "SELECT id, name, fingerprint, created FROM studies ORDER BY id").fetchall():
            try:
                tasks = [str(t["name"]) for t in json.loads(fp).get("tasks", [])]
            except (ValueError, TypeError, KeyError, AttributeError):
                tasks = []
            s = StudySummary(name=str(name), task_names=tasks, created=float(created))
            for phase, status, n, first, last in conn.execute(
                    "SELECT phase, status, COUNT(*), MIN(created), MAX(created) FROM "
                    "evaluations WHERE study_id = ? GROUP BY phase, status "
                    "ORDER BY MIN(seq)", (sid,)):
                s.counts.setdefault(str(phase), {})[str(status)] = int(n)
                s.first_evaluation = min(x for x in (s.first_evaluation, first)
                                         if x is not None)
                s.last_evaluation = max(x for x in (s.last_evaluation, last) if x is not None)
            run = _stored_run(conn, sid, str(name))
            if run is not None:
                s.finished, s.finished_at = True, run.finished_at
                settings = run.summary.get("settings") or {}
                if isinstance(settings, dict):
                    s.budget = _number(settings.get("budget"))
                s.seed = _number(run.summary.get("seed", settings.get("seed")
                                                 if isinstance(settings, dict) else None))
                if run.front is not None:
                    s.front_size = len(run.front["points"])
            s.live_claims, s.drivers = _live_claims(conn, sid, claim_ttl)
            s.pending = len(_pending(p, s.name))
            out.append(s)
    return out


@dataclass
class StoredRun:
    """The last finished run of a study, as its store keeps it (study meta): ``summary``
    (``summary.json``'s content) and ``front`` (``front.json``'s content), ``None`` with
    ``no_front`` saying why when the store has no front of that run (``"predates"``: the
    run was finished by a mapframe that stored none; ``"stale"``: the front stored is an
    older run's, the summary since rewritten by such a mapframe; ``"unreadable"``).
    ``finished_at`` is when the summary was stored (``None``: not recorded)."""

    study: str
    summary: dict[str, Any]
    front: dict[str, Any] | None
    finished_at: float | None = None
    no_front: str | None = None


def _meta_row(conn: sqlite3.Connection, sid: int, key: str) -> tuple[str, float | None] | None:
    updated = "updated" if has_column(conn, "meta", "updated") else "NULL"
    row = conn.execute(f"SELECT value, {updated} FROM meta WHERE study_id = ? AND key = ?",
                       (sid, key)).fetchone()
    return None if row is None else (str(row[0]), _number(row[1]))


def _stored_run(conn: sqlite3.Connection, sid: int, name: str) -> StoredRun | None:
    """The finished run stored for study ``sid`` (``None``: no summary stored, the study
    never finished). Its front counts only when it was stored with that summary: after it
    (the study stores the summary, then the front) and of the size the summary records."""
    summary_row = _meta_row(conn, sid, "summary")
    if summary_row is None:
        return None
    try:
        summary = json.loads(summary_row[0])
    except ValueError:
        summary = None
    if not isinstance(summary, dict):
        summary = {}
    run = StoredRun(name, summary, None, summary_row[1])
    front_row = _meta_row(conn, sid, "front")
    if front_row is None:
        run.no_front = "predates"
        return run
    summary_at, front_at = summary_row[1], front_row[1]
    try:
        front = json.loads(front_row[0])
        points = front["points"]
        if not isinstance(points, list):
            raise TypeError("points is no list")
    except (ValueError, TypeError, KeyError):
        run.no_front = "unreadable"
        return run
    size = summary.get("front_size")
    if ((front_at is not None and (summary_at is None or summary_at > front_at))
            or (isinstance(size, int) and size != len(points))):
        run.no_front = "stale"
        return run
    run.front = front
    return run


def stored_run(path: str | os.PathLike[str], study: str) -> StoredRun | None:
    """The last finished run of ``study`` in the store at ``path`` (its front ``None`` when
    that run stored none, :attr:`StoredRun.no_front` saying why); ``None`` before the study
    has finished once. A one-line :class:`StoreError` when the store has no such study."""
    p = Path(path)
    with _reading(p) as conn:
        return _stored_run(conn, _study_id(conn, p, study), study)


def read_stored_run(path: str | os.PathLike[str], study: str | None = None) -> StoredRun:
    """The last finished run of ``study`` in the store at ``path`` (default: the store's
    only finished study), with its front: what :func:`mapframe.load_results` reads from a
    store. A one-line error naming the fix when the store holds several finished studies
    and ``study`` is not given, when the study has not finished (interrupted, or still
    running), or when its run stored no front (finished by a mapframe that stored only
    the summary)."""
    p = Path(path)
    with _reading(p) as conn:
        studies = [(int(sid), str(name)) for sid, name in
                   conn.execute("SELECT id, name FROM studies ORDER BY id")]
        runs = {name: _stored_run(conn, sid, name) for sid, name in studies}
        counts = {name: int(conn.execute("SELECT COUNT(*) FROM evaluations WHERE "
                                         "study_id = ?", (sid,)).fetchone()[0])
                  for sid, name in studies}
    where = shlex.quote(str(p))
    if study is None:
        finished = [name for name, run in runs.items() if run is not None]
        if len(finished) > 1:
            raise ConfigError(
                f"the store {p} holds {len(finished)} finished studies "
                f"({', '.join(map(repr, finished))}): pass study= (--study NAME) to pick one")
        if not finished:
            if not studies:
                raise ConfigError(f"the store {p} holds no study: run one with "
                                  f"storage={str(p)!r} to its end, then load it")
            unfinished = ", ".join(f"{name!r} ({counts[name]} evaluations)"
                                   for _, name in studies)
            raise ConfigError(
                f"the store {p} holds no finished run of a study (unfinished: {unfinished}): "
                "run the study to its end (it reuses every stored evaluation), then load it "
                "again")
        study = finished[0]
    if study not in runs:
        raise _unknown(p, study, [name for _, name in studies])
    run = runs[study]
    if run is None:
        raise ConfigError(
            f"study {study!r} in {p} has no finished run ({counts[study]} evaluations stored: "
            "it was interrupted, or is still running): run the study to its end (it reuses "
            f"every stored evaluation), then load it again (see 'mapframe store list {where}')")
    if run.front is None:
        why = {"predates": "its run predates stored fronts (it was finished by a mapframe "
                           "that stored only the summary)",
               "stale": "the front stored is an older run's (its last run was finished by a "
                        "mapframe that stored only the summary)",
               "unreadable": "the front stored cannot be read"}[run.no_front or "predates"]
        raise ConfigError(
            f"study {study!r} in {p} has no stored front: {why}; rerun the study (it reuses "
            "every stored evaluation, nothing is evaluated again) or load its results folder")
    return run


def _refuse_running(conn: sqlite3.Connection, p: Path, name: str, sid: int,
                    claim_ttl: float, doing: str) -> None:
    n, owners = _live_claims(conn, sid, claim_ttl)
    if n:
        raise StoreError(
            f"study {name!r} in {p} is running now (a live driver, {owners[0]}"
            f"{f' and {len(owners) - 1} more' if len(owners) > 1 else ''}, holds {n} claims "
            f"on it): nothing was {doing}; stop it (or let it finish) and run again")


def delete_study(path: str | os.PathLike[str], name: str, claim_ttl: float = 60.0) -> int:
    """Delete study ``name`` from the SQLite store at ``path``: its evaluations, its
    study-level values (the stored summary, seed...), its claims and the evaluations the
    store's journal keeps for it (``<store>.pending/``); returns how many stored
    evaluations went. One transaction: all or nothing. Refused (a one-line
    :class:`StoreError`) while a live driver holds claims on it (see :func:`list_studies`),
    and for a name the store does not hold (the error lists those it holds)."""
    p = store_path(path)

    def write(conn: sqlite3.Connection) -> int:
        sid = _study_id(conn, p, name)
        _refuse_running(conn, p, name, sid, claim_ttl, "deleted")
        n = int(conn.execute("SELECT COUNT(*) FROM evaluations WHERE study_id = ?",
                             (sid,)).fetchone()[0])
        for table in ("evaluations", "claims", "meta"):
            conn.execute(f"DELETE FROM {table} WHERE study_id = ?", (sid,))
        conn.execute("DELETE FROM studies WHERE id = ?", (sid,))
        # The journal's files go inside the transaction: a study made again under this name
        # must not store the deleted one's evaluations.
        for f, _ in _pending(p, name):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
        return n

    n = _write(p, write)
    with contextlib.suppress(OSError):
        _journal(p).rmdir()  # when empty
    return n


def rename_study(path: str | os.PathLike[str], old: str, new: str,
                 claim_ttl: float = 60.0) -> None:
    """Rename study ``old`` of the SQLite store at ``path`` to ``new`` (its evaluations,
    values and the journal's files for it follow); a study run under the new name resumes
    from them. Refused (a one-line :class:`StoreError`) when ``new`` exists, when ``old``
    does not, and while a live driver holds claims on ``old``."""
    p = store_path(path)
    if not isinstance(new, str) or not new.strip():
        raise StoreError(f"the new name must be a non-empty string, got {new!r}")

    def write(conn: sqlite3.Connection) -> None:
        sid = _study_id(conn, p, old)
        if conn.execute("SELECT 1 FROM studies WHERE name = ?", (new,)).fetchone():
            raise StoreError(f"{p} already holds a study named {new!r}: nothing was renamed; "
                             f"give another new name, or delete that study first "
                             f"('mapframe store delete {shlex.quote(str(p))} "
                             f"{shlex.quote(new)}')")
        _refuse_running(conn, p, old, sid, claim_ttl, "renamed")
        conn.execute("UPDATE studies SET name = ? WHERE id = ?", (new, sid))
        done: list[tuple[Path, str]] = []
        try:
            for f, record in _pending(p, old):
                before = f.read_text(encoding="utf-8")
                write_atomically(f, json.dumps({**record, "study": new}), durable=True)
                done.append((f, before))
        except OSError as exc:
            for f, before in done:  # the transaction is rolled back: so are the files
                with contextlib.suppress(OSError):
                    write_atomically(f, before, durable=True)
            raise StoreError(f"cannot rename the journal files of study {old!r} in "
                             f"{_journal(p)} ({exc}); nothing was renamed") from None

    _write(p, write)


def _copy_rows(conn: sqlite3.Connection, sid: int, name: str, p: Path | str,
               before: str = "", after: str = "") -> list[tuple[Any, ...]]:
    """The rows of study ``name``'s evaluations (id ``sid``) as stored (every column but
    ``seq`` and ``study_id``), in the order stored; a row whose values cannot be read is a
    one-line :class:`StoreError` pointing at ``mapframe store salvage`` (which copies the
    readable ones), with ``before`` and ``after`` around that advice."""
    reason = "reason" if has_column(conn, "evaluations", "reason") else "NULL"
    columns = ROW_COLUMNS.replace("reason", reason)
    rows = []
    for row in conn.execute(f"SELECT {columns}, created FROM evaluations WHERE study_id = ? "
                            "ORDER BY seq", (sid,)):
        try:
            row_evaluation(row[:-1])  # readable?
        except (ValueError, TypeError) as exc:
            raise StoreError(
                f"study {name!r} in {p} holds an evaluation that cannot be read ({exc}); "
                f"{before}'mapframe store salvage {p} NEW.sqlite' copies every readable "
                f"one{after}") from None
        rows.append(tuple(row))
    return rows


#: The columns :func:`copy_study` and ``salvage`` write, in the order of :func:`_copy_rows`.
_COPY_COLUMNS = [*ROW_COLUMNS.split(", "), "created"]


def insert_study(conn: sqlite3.Connection, name: str, fingerprint: str, created: float,
                 rows: Sequence[Sequence[Any]], meta: Sequence[Sequence[Any]]) -> None:
    """Write a new study into the store on ``conn`` (inside a write transaction) with its
    fingerprint text, creation time, evaluation rows (the columns of :func:`_copy_rows`,
    their times kept) and meta rows ``(key, value text, updated)``."""
    conn.execute("INSERT INTO studies (name, fingerprint, created) VALUES (?, ?, ?)",
                 (name, fingerprint, created))
    sid = conn.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()[0]
    conn.executemany(
        f"INSERT OR REPLACE INTO evaluations (study_id, {', '.join(_COPY_COLUMNS)}) "
        f"VALUES ({', '.join('?' * (1 + len(_COPY_COLUMNS)))})",
        [(sid, *row) for row in rows])
    conn.executemany("INSERT OR REPLACE INTO meta (study_id, key, value, updated) VALUES "
                     "(?, ?, ?, ?)", [(sid, *m) for m in meta])


def _journal_rows(p: Path, name: str, fingerprint: str,
                  rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """``rows`` with the evaluations the journal of the store ``p`` keeps for the study
    (same name and fingerprint) added as the study's next open would store them: a point
    stored other than as failed keeps its row."""
    kept = [r for _, r in _pending(p, name) if r.get("fingerprint") == fingerprint]
    if not kept:
        return rows
    names = ROW_COLUMNS.split(", ")
    phase_i, key_i, status_i = names.index("phase"), names.index("key"), names.index("status")
    out = list(rows)
    for record in kept:
        try:
            row = tuple(record[c] for c in _COPY_COLUMNS)
            row_evaluation(row[:-1])
        except (KeyError, ValueError, TypeError):
            continue
        at = next((i for i, r in enumerate(out) if (r[phase_i], r[key_i]) == (
            row[phase_i], row[key_i])), None)
        if at is None:
            out.append(row)
        elif out[at][status_i] == "failed":
            out[at] = row
    return out


def copy_study(src: str | os.PathLike[str], dst: str | os.PathLike[str],
               name: str | None = None, new_name: str | None = None) -> dict[str, int]:
    """Copy study ``name`` (every study when ``None``) of the SQLite store ``src`` into the
    store ``dst``, new or existing, as ``new_name`` (only with one study; default its own
    name): its fingerprint, creation time, every evaluation with its time, its values (the
    stored summary...) and the evaluations ``src``'s journal keeps for it, so that a study
    run on ``dst`` under that name resumes from them. Claims (drivers running on ``src``)
    are not copied. Reads one snapshot of ``src`` (a running study there is not disturbed)
    and writes ``dst`` in one transaction: nothing is copied when a name is taken in
    ``dst`` (a one-line :class:`StoreError` suggesting ``new_name``/``--as``), ``src`` holds
    no such study or a row of it cannot be read. Returns the evaluations copied per study,
    by their name in ``dst``."""
    s = store_path(src)
    if new_name is not None and name is None:
        raise StoreError("a new name (--as) needs the study it names (--study NAME)")
    d = Path(dst)
    with contextlib.suppress(OSError):
        if d.exists() and os.path.samefile(s, d):
            raise StoreError(f"{src} and {dst} are the same store; to give a study another "
                             f"name there, run 'mapframe store rename {src} OLD NEW'")
    studies: list[tuple[str, str, float, list[tuple[Any, ...]], list[tuple[Any, ...]]]] = []
    with _reading(s) as conn:
        names = _study_names(conn)
        if name is not None and name not in names:
            raise _unknown(s, name, names)
        updated = "updated" if has_column(conn, "meta", "updated") else "NULL"
        for sid, sname, fp, created in conn.execute(
                "SELECT id, name, fingerprint, created FROM studies ORDER BY id").fetchall():
            if name is not None and sname != name:
                continue
            rows = _copy_rows(conn, sid, sname, s, before="nothing was copied: ")
            meta = conn.execute(f"SELECT key, value, {updated} FROM meta WHERE study_id = ?",
                                (sid,)).fetchall()
            rows = _journal_rows(s, sname, fp, rows)
            studies.append((new_name if new_name is not None else sname, fp, float(created),
                            rows, [tuple(m) for m in meta]))
    if not studies:
        raise StoreError(f"{s} holds no study: nothing to copy")

    def write(conn: sqlite3.Connection) -> dict[str, int]:
        taken = [n for n, *_ in studies
                 if conn.execute("SELECT 1 FROM studies WHERE name = ?", (n,)).fetchone()]
        if taken:
            hint = (f"copy it under another name with --study {taken[0]} --as NEW"
                    if new_name is None else "give another name with --as")
            raise StoreError(f"{d} already holds a study named {taken[0]!r}"
                             f"{f' (and {len(taken) - 1} more)' if len(taken) > 1 else ''}: "
                             f"nothing was copied; {hint}, or copy into another store")
        for study in studies:
            insert_study(conn, *study)
        return {n: len(rows) for n, _, _, rows, _ in studies}

    return _write(d, write, create=True)


# -- export ---------------------------------------------------------------------------------
#: The columns of every row of :func:`export_study` before the coefficients and metrics
#: (``c_0``, ``c_1``... then one per task) and after them.
EXPORT_COLUMNS = ("key", "phase", "status", "reason", "round")
EXPORT_TAIL = ("duration_s", "created", "error")


def export_study(path: str | os.PathLike[str], name: str) -> list[dict[str, Any]]:
    """Every stored evaluation of study ``name`` in the SQLite store at ``path``, in the
    order stored, as one dict each: ``key``, ``phase``, ``status``, ``reason`` (``None``
    when ok), ``round``, the coefficients (``c_0``, ``c_1``...), one metric per task (named
    as the task; ``None`` where the evaluation failed), ``duration_s``, ``created`` (local
    ISO 8601 time) and ``error`` (the whole message; ``None`` when ok). Like Optuna's
    ``trials_dataframe``: ``pandas.DataFrame(rows)`` makes one."""
    p = Path(path)
    with _reading(p) as conn:
        row = conn.execute("SELECT id, fingerprint FROM studies WHERE name = ?",
                           (name,)).fetchone()
        if row is None:
            raise _unknown(p, name, _study_names(conn))
        sid, fp = row
        try:
            tasks = [str(t["name"]) for t in json.loads(fp).get("tasks", [])]
        except (ValueError, TypeError, KeyError, AttributeError):
            tasks = []
        rows = _copy_rows(conn, sid, name, p, after=", then export from the copy")
    taken = set(EXPORT_COLUMNS) | set(EXPORT_TAIL)
    columns = [t if t not in taken and not t.startswith("c_") else f"metric_{t}"
               for t in tasks]
    out = []
    for r in rows:
        ev = row_evaluation(r[:-1])
        item: dict[str, Any] = {
            "key": ev.key, "phase": ev.phase, "status": ev.status,
            "reason": None if ev.reason is None else ev.reason.value, "round": ev.round}
        item.update({f"c_{i}": float(v) for i, v in enumerate(ev.coefficients)})
        metrics = [] if ev.metrics is None else [float(v) for v in ev.metrics]
        for j, column in enumerate(columns or [f"metric_{j}" for j in range(len(metrics))]):
            item[column] = metrics[j] if j < len(metrics) else None
        item.update({"duration_s": ev.duration, "created": iso_time(float(r[-1])),
                     "error": ev.error})
        out.append(item)
    return out


def write_csv(rows: Sequence[dict[str, Any]], out: TextIO) -> None:
    """``rows`` (from :func:`export_study`) as CSV on ``out``, with the csv module: a
    header of every column, empty cells for ``None``. A text cell that a spreadsheet would
    run as a formula (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a line break: an
    error message can) is written with a leading ``'``."""
    from mapframe.results import FORMULA_STARTS

    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    w = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else
                        f"'{v}" if isinstance(v, str) and v.startswith(FORMULA_STARTS) else v)
                    for k, v in r.items()})


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """:func:`write_csv` into a string."""
    buffer = io.StringIO(newline="")
    write_csv(rows, buffer)
    return buffer.getvalue()
