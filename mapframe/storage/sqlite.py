"""A persistent SQLite evaluation store (stdlib ``sqlite3``)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from mapframe._files import write_atomically
from mapframe.errors import ConfigError, StoreError
from mapframe.history import Evaluation, FailureReason
from mapframe.storage.base import EvaluationStore, driver_is_gone

__all__ = ["SQLiteStore"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS evaluations (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    study_id INTEGER NOT NULL REFERENCES studies(id),
    phase TEXT NOT NULL,
    key TEXT NOT NULL,
    coefficients TEXT NOT NULL,
    metrics TEXT,
    status TEXT NOT NULL,
    error TEXT,
    round INTEGER NOT NULL,
    duration REAL NOT NULL,
    created REAL NOT NULL,
    reason TEXT,
    UNIQUE (study_id, phase, key)
);
CREATE TABLE IF NOT EXISTS claims (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    phase TEXT NOT NULL,
    key TEXT NOT NULL,
    owner TEXT NOT NULL,
    heartbeat REAL NOT NULL,
    PRIMARY KEY (study_id, phase, key)
);
CREATE TABLE IF NOT EXISTS meta (
    study_id INTEGER NOT NULL REFERENCES studies(id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    updated REAL,
    PRIMARY KEY (study_id, key)
);
"""


def _legacy_reason(status: str, error: str | None) -> FailureReason | None:
    """The failure reason of a row written before stores kept one (no ``reason`` column).

    The only place that reads an error's text: the old code marked out-of-range metrics by
    starting the message with ``"out of range"``; every other invalid row had a NaN/inf metric.
    """
    if status == "failed":
        return FailureReason.RAISED
    if status == "invalid":
        if (error or "").startswith("out of range"):
            return FailureReason.OUT_OF_RANGE
        return FailureReason.NON_FINITE
    return None


@contextlib.contextmanager
def _write_transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction on an autocommit connection: ``BEGIN IMMEDIATE`` (one writer at
    a time, taken before the first read), ``COMMIT`` at the end, ``ROLLBACK`` on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")  # a COMMIT that fails (busy) is rolled back too: retryable
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the committed pages of the ``-wal`` file into the main file (a PASSIVE
    checkpoint: it waits for no reader or writer, and copies what none of them still needs).

    Done after every write that stores something (not after a claim's): otherwise the rows
    lived only in the ``-wal`` file until 1 000 pages had gathered or the store was closed,
    and the main file of a study killed meanwhile held nothing, not even the tables; copied
    or moved alone (to read a store elsewhere), it was taken for a new store and everything
    was evaluated again. A checkpoint that fails (a full disk) leaves the rows in the WAL,
    where SQLite still reads them.
    """
    try:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    except sqlite3.Error as exc:
        log.debug("could not checkpoint the store's WAL (%s); its rows stay in the -wal file",
                  exc)


def has_column(conn: sqlite3.Connection, table: str, column: str) -> bool:
    """Whether ``table`` of the database on ``conn`` has ``column`` (older stores lack some)."""
    return any(row[1] == column for row in conn.execute(f"PRAGMA table_info({table})"))


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a file written by an older mapframe up to the current schema, once.

    Adds the ``reason`` column and fills it for the existing rows from their status and error
    text (:func:`_legacy_reason`); from then on the column is what :meth:`SQLiteStore.load`
    reads. Adds the ``updated`` column of ``meta`` (when a value was written: ``mapframe store
    list`` shows when a study's summary was stored; ``NULL`` for values written before).
    Runs in one write transaction, so two processes opening the same old file migrate it
    once and a crash leaves it unmigrated, never half migrated.
    """

    def has_reason() -> bool:
        return has_column(conn, "evaluations", "reason")

    if not has_column(conn, "meta", "updated"):
        with _write_transaction(conn):
            if not has_column(conn, "meta", "updated"):
                conn.execute("ALTER TABLE meta ADD COLUMN updated REAL")
    if has_reason():
        return
    with _write_transaction(conn):
        if not has_reason():  # another process may have migrated it meanwhile
            conn.execute("ALTER TABLE evaluations ADD COLUMN reason TEXT")
            rows = conn.execute(
                "SELECT seq, status, error FROM evaluations WHERE status != 'ok'"
            ).fetchall()
            updates = []
            for seq, status, error in rows:
                reason = _legacy_reason(status, error)
                if reason is not None:
                    updates.append((reason.value, seq))
            conn.executemany("UPDATE evaluations SET reason = ? WHERE seq = ?", updates)


#: The tables (and their columns) of a mapframe store; any other layout is another
#: program's database, which is left untouched.
_OWN_TABLES = {"studies", "evaluations", "meta", "claims", "sqlite_sequence"}


def _refuse_foreign(conn: sqlite3.Connection, p: Path) -> None:
    tables = {row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table'")}
    if not tables:
        return  # a new, empty file
    foreign = sorted(tables - _OWN_TABLES)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(evaluations)")}
    if foreign or "studies" not in tables or (
            "evaluations" in tables and not {"study_id", "phase", "key"} <= columns):
        shown = ", ".join(sorted(tables)[:6])
        raise StoreError(
            f"{p} is an SQLite database of another program (tables: {shown}), not a mapframe "
            "store; it was left untouched: give the store another path")


def sqlite_uri(path: Path | str, query: str = "mode=ro") -> str:
    """The ``file:`` URI of ``path`` with ``query`` (``mode=ro``, ``immutable=1``) for
    ``sqlite3.connect(..., uri=True)``: the path percent-encoded, so that a ``?``, ``#`` or
    ``%`` in a folder's name is part of the path (``f"file:{path}?..."`` cut the path at the
    first ``?`` or ``#`` and opened another file)."""
    return f"{Path(path).absolute().as_uri()}?{query}"


def damaged_store_error(p: Path | str, what: str) -> StoreError:
    """The one-line error for a damaged store, with the commands that recover from it."""
    return StoreError(
        f"the store {p} is damaged ({what}); run 'mapframe store check {p}' to see what is "
        f"readable and 'mapframe store salvage {p} NEW.sqlite' to copy every readable "
        "evaluation into a new store, then point the study at it")


def _refuse_damaged(conn: sqlite3.Connection, p: Path) -> None:
    rows = [r[0] for r in conn.execute("PRAGMA quick_check")]
    if rows != ["ok"]:
        raise damaged_store_error(p, f"SQLite reports: {rows[0]}")


#: The columns an evaluation's row is written with (after ``study_id``), in this order.
_WRITE_COLUMNS = ("phase", "key", "coefficients", "metrics", "status", "error", "round",
                  "duration", "created", "reason")
_INSERT = (f"INSERT OR REPLACE INTO evaluations (study_id, {', '.join(_WRITE_COLUMNS)}) "
           f"VALUES ({', '.join('?' * (1 + len(_WRITE_COLUMNS)))})")


def _row(evaluation: Evaluation) -> tuple[Any, ...]:
    """The values of :data:`_WRITE_COLUMNS` for ``evaluation``, written now."""
    return (evaluation.phase, evaluation.key, _floats(evaluation.coefficients),
            _floats(evaluation.metrics), evaluation.status, evaluation.error,
            int(evaluation.round), float(evaluation.duration), time.time(),
            None if evaluation.reason is None else evaluation.reason.value)


#: The columns of an evaluation row, in the order :func:`row_evaluation` reads them.
ROW_COLUMNS = "coefficients, metrics, status, error, phase, round, duration, key, reason"


class UnknownReasonError(ValueError):
    """A stored failure reason this version of mapframe does not know."""

    def __init__(self, reason: object) -> None:
        super().__init__(f"unknown failure reason {reason!r}")
        self.reason = reason


def row_evaluation(row: Sequence[Any]) -> Evaluation:
    """The :class:`Evaluation` of one row of :data:`ROW_COLUMNS`; ``ValueError`` or
    ``TypeError`` for values that cannot be read (:class:`UnknownReasonError` for a reason
    from a newer mapframe).

    A failed or invalid row without a reason was written by a mapframe that predates the
    column into a store a newer one had already migrated (a downgrade, or an older driver
    beside a newer one): its reason is derived from its status and error text as the
    migration does (:func:`_legacy_reason`), so an out-of-range row still stops a resumed
    study."""
    coef, metrics, status, error, phase, rnd, duration, key, reason = row
    try:
        why = (_legacy_reason(status, error) if reason is None
               else FailureReason(reason))
    except ValueError:
        raise UnknownReasonError(reason) from None
    return Evaluation(
        coefficients=np.array(json.loads(coef), dtype=float),
        metrics=None if metrics is None else np.array(json.loads(metrics), float),
        status=status, error=error, phase=phase, round=int(rnd), duration=float(duration),
        key=key, reason=why)


def _is_read_only_error(exc: sqlite3.Error) -> bool:
    text = str(exc).lower()
    return "readonly" in text or "read-only" in text


def _cannot_write(p: Path, exc: sqlite3.OperationalError) -> bool:
    """Whether opening the existing store ``p`` failed because it cannot be written: on a
    read-only file system SQLite says "unable to open database file" (a WAL store needs its
    ``-shm`` file), or the file or its folder is not writable."""
    if "unable to open" in str(exc).lower():
        return True
    return not (os.access(p, os.W_OK) and os.access(p.parent, os.W_OK))


def _is_lock_error(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


#: The first bytes of every SQLite database file.
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _refuse_other_file(p: Path) -> None:
    """A one-line :class:`StoreError` when ``p`` is an existing file that is no SQLite
    database (a CSV, a model, notes): SQLite called it damaged, and the advice to salvage
    it was wrong; a file of a byte or two it silently replaced with a new store."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(len(_SQLITE_MAGIC))
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        return  # created, or reported, by SQLite itself
    if head and head != _SQLITE_MAGIC[:len(head)]:
        raise StoreError(
            f"{p} is not an evaluation store (an existing file that is no SQLite database); "
            "give storage another path (mapframe never overwrites it)")


def _open_error(p: Path, exc: BaseException) -> StoreError:
    text = str(exc).lower()
    if "malformed" in text or "not a database" in text:
        return damaged_store_error(p, str(exc))
    return StoreError(f"cannot open the evaluation store {p} ({exc}); check the path is a "
                      "writable SQLite file")


def _floats(values: np.ndarray | None) -> str | None:
    if values is None:
        return None
    # float repr round-trips exactly; NaN/inf use Python's JSON extensions.
    return json.dumps([float(v) for v in np.asarray(values).reshape(-1)])


class SQLiteStore(EvaluationStore):
    """Evaluations in one SQLite file; each is committed as soon as it is added.

    The file is opened in WAL mode, so a process killed at any moment (even ``kill -9``)
    loses at most the evaluation that was running, and readers (another process plotting the
    study, say) never block the study. Every write that stores something is checkpointed into
    the main file at once, so the main file alone (copied without its ``-wal`` file after a
    crash) holds the study too. One file can hold many studies, told apart by name.

    Several drivers (processes, hosts sharing the file system) can run the same study on
    one file: each claims the points it evaluates (a row in the ``claims`` table with its
    owner and a heartbeat renewed every ``claim_ttl / 4`` seconds), the others skip them and
    read their results when they land, and the claims of a driver that stopped renewing them
    for ``claim_ttl`` seconds (killed on another host) are taken over; on the same host a
    driver whose process is gone loses its claims at once, so a study restarted after a
    crash does not wait, and so does a driver of this process whose study ended without
    releasing them (a locked store). The results are those of one driver.

    A finished evaluation that cannot be written (another program holds the lock for
    :attr:`lock_timeout` seconds, a full disk) is kept in a journal next to the file
    (``<path>.pending/``, one JSON file each, with its study's name and fingerprint) and the
    study stops with a one-line error saying so; the next :meth:`open` of that study stores
    the kept evaluations before anything is evaluated and deletes their files.
    """

    name: ClassVar[str] = "sqlite"
    shared: ClassVar[bool] = True

    def __init__(self, path: str | os.PathLike[str] = "mapframe.sqlite",
                 claim_ttl: float = 60.0) -> None:
        if not isinstance(claim_ttl, (int, float)) or isinstance(claim_ttl, bool) or not (
                claim_ttl > 0):
            raise ConfigError(f"claim_ttl must be a positive number of seconds, got "
                             f"{claim_ttl!r}")
        # Absolute from the start: the heartbeat thread and the run's end reopen the file,
        # and an objective that changes the working directory must not send them elsewhere.
        self.path = os.path.abspath(os.fspath(path))
        self.claim_ttl = float(claim_ttl)
        self._conn: sqlite3.Connection | None = None
        #: The thread ident ``_conn`` was made in (one instance is used by one thread at a
        #: time: see ``EvaluationStore._opening``; sequential threads each reconnect).
        self._conn_thread: int | None = None
        self._study_id: int | None = None
        self._study_name = ""
        #: The open study's fingerprint as its row holds it: with the name, the identity of
        #: the evaluations kept in the journal (see :meth:`_keep`).
        self._fingerprint = ""
        #: The write error after which :meth:`add` tries the store once without waiting
        #: for its lock, then keeps the evaluation in the journal (waiting ``lock_timeout``
        #: again for every result of the batch would only delay the stop).
        self._write_failed: sqlite3.DatabaseError | None = None
        #: True when the file could only be opened for reading (its evaluations are reused;
        #: a study that needs new ones stops before evaluating with a one-line error).
        self.read_only = False

    #: Seconds to keep retrying while another process holds the file's lock.
    lock_timeout: ClassVar[float] = 30.0

    def _connect(self) -> sqlite3.Connection:
        self._check_thread()
        if self._conn is not None and self._conn_thread != threading.get_ident():
            # Made in a thread that no longer holds the store (it closed it, or ended without
            # closing it): this thread gets a connection of its own.
            old, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):
                old.close()
        if self._conn is None:
            self._conn_thread = threading.get_ident()
            p = Path(self.path)
            deadline = time.monotonic() + self.lock_timeout
            delay = 0.01
            while True:
                try:
                    self._conn = self._set_up(p, self.lock_timeout)
                    break
                except sqlite3.OperationalError as exc:
                    if p.is_file() and (_is_read_only_error(exc) or _cannot_write(p, exc)):
                        # A store that can only be read still gives results when every
                        # evaluation the study needs is in it.
                        self._conn = self._set_up_read_only(p)
                        self.read_only = True
                        break
                    # Creating the file, switching it to WAL or migrating it takes a write
                    # lock that SQLite's busy timeout does not always wait for: another
                    # process creating the same store holds it for a moment. Retry.
                    if not _is_lock_error(exc):
                        raise _open_error(p, exc) from None
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"the evaluation store {p} is locked by another process (still "
                            f"after {self.lock_timeout:g} s: {exc}); wait for the other "
                            "study to finish, or use another store"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.5)
                except (sqlite3.Error, OSError) as exc:
                    raise _open_error(p, exc) from None
        return self._conn

    @staticmethod
    def _set_up_read_only(p: Path) -> sqlite3.Connection:
        _refuse_other_file(p)
        last: BaseException | None = None
        # mode=ro needs the WAL index files (or a writable folder to make them); immutable=1
        # reads the file as it is, which is right for a file nobody can write.
        for query in ("mode=ro", "immutable=1"):
            try:
                conn = sqlite3.connect(sqlite_uri(p, query), uri=True,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.Error as exc:
                last = exc
                continue
            try:
                _refuse_foreign(conn, p)
                _refuse_damaged(conn, p)
                conn.execute("SELECT COUNT(*) FROM studies").fetchone()
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                last = exc
            except BaseException:
                conn.close()
                raise
        raise _open_error(p, last or RuntimeError("cannot read it"))

    @staticmethod
    def _set_up(p: Path, timeout: float = 30.0) -> sqlite3.Connection:
        p.parent.mkdir(parents=True, exist_ok=True)
        _refuse_other_file(p)
        # check_same_thread=False: the thread that holds the store uses it alone (see
        # _connect), but a connection left by a thread that ended must be closable.
        # ``timeout``: how long a statement waits for another process's write lock.
        conn = sqlite3.connect(str(p), timeout=timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            _refuse_foreign(conn, p)  # before anything writes to the file
            _refuse_damaged(conn, p)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.executescript(_SCHEMA)
            _migrate(conn)
            _checkpoint(conn)  # the tables in the main file too
        except BaseException:
            conn.close()
            raise
        return conn

    def open(self, study_name: str, fingerprint: dict[str, Any]) -> None:
        with self._opening(study_name):
            was_open = self._study_id is not None
            try:
                self._open_study(study_name, fingerprint)
            except BaseException:
                # a refused open (another setup, a read-only store without the study, a
                # damaged file) keeps no connection: a caller that keeps the error (a
                # service's job table) would keep the file and its -wal/-shm open
                if not was_open and self._conn is not None:
                    with contextlib.suppress(sqlite3.Error):
                        self._conn.close()
                    self._conn = None
                raise

    def _open_study(self, study_name: str, fingerprint: dict[str, Any]) -> None:
        conn = self._connect()
        fp = json.dumps(fingerprint, sort_keys=True, default=str)
        if self.read_only:
            row = conn.execute(
                "SELECT id, fingerprint FROM studies WHERE name = ?", (study_name,)
            ).fetchone()
            if row is None:
                raise StoreError(
                    f"the store {self.path} is read-only and holds no study named "
                    f"{study_name!r}; make it writable, or give a store path you can write")
            self._check_fingerprint(
                study_name, json.loads(row[1]), json.loads(fp), f"the store {self.path}")
            self._study_id, self._study_name = int(row[0]), study_name
            self._fingerprint = row[1]
            return
        row = conn.execute(
            "SELECT id, fingerprint FROM studies WHERE name = ?", (study_name,)
        ).fetchone()
        if row is None:
            # Insert-if-absent, then read: two processes creating the same study at once
            # both end up with the one row (a plain INSERT would fail the UNIQUE name in one
            # of them). Only for a new study: reopening one writes nothing (a full disk).
            self._write(lambda c: c.execute(
                "INSERT OR IGNORE INTO studies (name, fingerprint, created) VALUES (?, ?, ?)",
                (study_name, fp, time.time())))
            row = conn.execute(
                "SELECT id, fingerprint FROM studies WHERE name = ?", (study_name,)
            ).fetchone()
        self._check_fingerprint(
            study_name, json.loads(row[1]), json.loads(fp), f"the store {self.path}"
        )
        self._study_id, self._study_name = int(row[0]), study_name
        self._fingerprint, self._write_failed = row[1], None
        self._store_kept()

    @property
    def location(self) -> str | None:
        """The path of the SQLite file, as given."""
        return self.path

    def _sid(self) -> int:
        if self._study_id is None:
            raise StoreError("the store is not open: call open(study_name, fingerprint) first")
        return self._study_id

    def load(self) -> list[Evaluation]:
        try:
            rows = self._connect().execute(
                f"SELECT {ROW_COLUMNS} FROM evaluations WHERE study_id = ? ORDER BY seq",
                (self._sid(),),
            ).fetchall()
        except sqlite3.DatabaseError as exc:
            raise damaged_store_error(self.path, str(exc)) from None
        out = []
        for row in rows:
            try:
                out.append(row_evaluation(row))
            except UnknownReasonError as exc:
                raise StoreError(
                    f"the store {self.path} holds an evaluation with the unknown failure "
                    f"reason {exc.reason!r} (written by a newer mapframe?); upgrade mapframe to "
                    "read it"
                ) from None
            except (ValueError, TypeError) as exc:
                raise damaged_store_error(
                    self.path, f"an evaluation of study holds unreadable values: {exc}"
                ) from None
        return out

    def add(self, evaluation: Evaluation) -> None:
        # One transaction: the result lands and its claim goes at once. In autocommit the
        # claim's DELETE committed first, and another driver claiming in between saw the
        # point neither claimed nor done and evaluated it again.
        def write(conn: sqlite3.Connection) -> None:
            with _write_transaction(conn):
                self._add(evaluation)

        if self._write_failed is None:
            self._write(write, keep=evaluation)
            return
        # The store could not be written moments ago: one try without waiting for the lock.
        conn = self._connect()
        conn.execute("PRAGMA busy_timeout = 0")
        try:
            with self._writing(evaluation):
                write(conn)
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.lock_timeout * 1000)}")
        self._write_failed = None
        _checkpoint(conn)

    def _add(self, evaluation: Evaluation) -> None:
        conn = self._connect()
        # The claim goes with the result (a claim left by a crash in between only expires).
        conn.execute("DELETE FROM claims WHERE study_id = ? AND phase = ? AND key = ?",
                     (self._sid(), evaluation.phase, evaluation.key))
        conn.execute(_INSERT, (self._sid(), *_row(evaluation)))

    def set_meta(self, key: str, value: Any) -> None:
        if self.read_only:
            return  # study-level copies only (the results are written to the output folder)
        sid, text = self._sid(), json.dumps(value, default=str)
        self._write(lambda conn: conn.execute(
            "INSERT OR REPLACE INTO meta (study_id, key, value, updated) VALUES (?, ?, ?, ?)",
            (sid, key, text, time.time())))

    def _write(self, write: Callable[[sqlite3.Connection], _T],
               keep: Evaluation | None = None, checkpoint: bool = True) -> _T:
        """``write(connection)``, retried while another process holds the file's lock (for
        up to :attr:`lock_timeout` seconds in all: each statement waits that long for it, and
        a lock SQLite reports at once is tried again), inside :meth:`_writing` (which keeps
        ``keep`` in the journal when the write fails); then, with ``checkpoint``, what it
        wrote is copied into the main file (:func:`_checkpoint`)."""
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.01
        with self._writing(keep):
            while True:
                try:
                    conn = self._connect()
                    result = write(conn)
                    break
                except sqlite3.OperationalError as exc:
                    if not _is_lock_error(exc) or time.monotonic() > deadline:
                        raise
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        if checkpoint:
            _checkpoint(conn)
        return result

    @contextlib.contextmanager
    def _writing(self, keep: Evaluation | None = None) -> Iterator[None]:
        """Turn a full disk, a read-only file or a lock another process keeps into a
        one-line error that says what is safe; a finished evaluation whose write failed so
        (``keep``) is kept in the journal, for the next run to store."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            text = str(exc).lower()
            if "malformed" in text:
                raise damaged_store_error(self.path, str(exc)) from None
            locked = isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc)
            if (not locked and "full" not in text and "readonly" not in text
                    and "read-only" not in text):
                raise
            if keep is not None:
                self._write_failed = exc
            raise self._write_error(exc, keep) from None

    def _write_error(self, exc: sqlite3.DatabaseError, keep: Evaluation | None) -> StoreError:
        """The one-line error for a write that failed on a lock, a full disk or a read-only
        file, after keeping ``keep`` (if any) in the journal."""
        try:
            n = self._connect().execute(
                "SELECT COUNT(*) FROM evaluations WHERE study_id = ?", (self._sid(),)
            ).fetchone()[0]
            safe = f"{n} evaluations of this study are safely stored"
        except (sqlite3.Error, StoreError):  # StoreError: no study open yet
            safe = "the evaluations stored before this one are safe"
        if keep is not None:
            try:
                self._keep(keep)
                n_kept = sum(1 for _ in self._journal().glob("*.json"))
                safe += (f", and {n_kept} finished evaluations that could not be written are "
                         f"kept in {self._journal()} (the next run with this store stores "
                         "them before evaluating anything)")
            except OSError as why:
                safe += f" (the one that finished now is lost: it could not be kept: {why})"
        text = str(exc).lower()
        if isinstance(exc, sqlite3.OperationalError) and _is_lock_error(exc):
            return StoreError(
                f"cannot write to {self.path}: another program holds its lock (still "
                f"after {self.lock_timeout:g} s: {exc}); {safe}: wait for it to finish "
                "or close it (a sqlite3 shell left in a transaction, a backup tool), or "
                "use another store, and run again to resume")
        what = ("the disk holding the store is full" if "full" in text
                else "the store is read-only")
        return StoreError(
            f"cannot write to {self.path}: {what} ({exc}); {safe}: free space or make "
            "it writable (or move the store) and run again to resume")

    # -- the journal: finished evaluations the store could not take ------------------------
    def _journal(self) -> Path:
        """The folder next to the store (``<store>.pending``) that keeps finished evaluations
        whose write failed, one JSON file each, until the next open of their study."""
        return Path(self.path + ".pending")

    def _keep(self, evaluation: Evaluation) -> None:
        """Write ``evaluation``'s row, with its study's name and fingerprint (so that it can
        never land in another study), to a new file of the journal, atomically: a file
        there is whole or absent."""
        folder = self._journal()
        folder.mkdir(exist_ok=True)
        record = {"study": self._study_name, "fingerprint": self._fingerprint,
                  **dict(zip(_WRITE_COLUMNS, _row(evaluation)))}
        write_atomically(folder / f"{time.time_ns()}-{uuid.uuid4().hex[:8]}.json",
                         json.dumps(record), durable=True)

    def _store_kept(self) -> None:
        """On open: store the evaluations the journal keeps for this study (same name and
        fingerprint; other studies' files are left for them), then delete their files. A
        point stored meanwhile (other than as failed) keeps its row."""
        folder = self._journal()
        if not folder.is_dir():
            return
        mine: list[tuple[Path, tuple[Any, ...]]] = []
        for path in sorted(folder.glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
                if (record.get("study"), record.get("fingerprint")) != (
                        self._study_name, self._fingerprint):
                    continue
                row = tuple(record[c] for c in _WRITE_COLUMNS)
                row_evaluation([record[c] for c in ROW_COLUMNS.split(", ")])  # readable?
            except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
                log.warning("left %s in the store's journal: it cannot be read (%s)", path, exc)
                continue
            mine.append((path, row))
        if mine:
            sid = self._sid()

            def write(conn: sqlite3.Connection) -> None:
                with _write_transaction(conn):
                    for _, row in mine:
                        phase, key = row[0], row[1]
                        if conn.execute(
                                "SELECT 1 FROM evaluations WHERE study_id = ? AND phase = ? "
                                "AND key = ? AND status != 'failed'",
                                (sid, phase, key)).fetchone() is None:
                            conn.execute("DELETE FROM claims WHERE study_id = ? AND phase = ? "
                                         "AND key = ?", (sid, phase, key))
                            conn.execute(_INSERT, (sid, *row))

            self._write(write)
            for path, _ in mine:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        with contextlib.suppress(OSError):
            folder.rmdir()  # when empty

    # -- several drivers -----------------------------------------------------------------
    def claim(self, phase: str, keys: Sequence[str], owner: str,
              limit: int | None = None) -> list[str]:
        self._connect()  # finds out whether the file is read-only
        sid = self._sid()
        if self.read_only and keys:
            raise StoreError(
                f"the store {self.path} is read-only and {len(keys)} evaluations of study "
                f"'{self._study_name}' still need running (phase {phase}); nothing was "
                "evaluated: make the store writable, or copy it somewhere writable and point "
                "the study at the copy")

        def write(conn: sqlite3.Connection) -> list[str]:
            now = time.time()
            got: list[str] = []
            # one claimer at a time: no key claimed twice
            with _write_transaction(conn):
                for key in keys:
                    if limit is not None and len(got) >= limit:
                        break
                    done = conn.execute(
                        "SELECT 1 FROM evaluations WHERE study_id = ? AND phase = ? AND "
                        "key = ? AND status != 'failed'", (sid, phase, key)).fetchone()
                    if done is not None:
                        continue
                    held = conn.execute(
                        "SELECT owner, heartbeat FROM claims WHERE study_id = ? AND "
                        "phase = ? AND key = ?", (sid, phase, key)).fetchone()
                    if (held is not None and held[0] != owner
                            and held[1] > now - self.claim_ttl
                            and not driver_is_gone(held[0], held[1])):
                        continue
                    conn.execute(
                        "INSERT OR REPLACE INTO claims (study_id, phase, key, owner, "
                        "heartbeat) VALUES (?, ?, ?, ?, ?)", (sid, phase, key, owner, now))
                    got.append(key)
            return got

        return self._write(write, checkpoint=False)  # claims matter to running drivers only

    def renew_claims(self, owner: str) -> None:
        if self.read_only:
            return
        # Called from the session's heartbeat thread: a connection of its own.
        conn = sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None)
        try:
            conn.execute("UPDATE claims SET heartbeat = ? WHERE owner = ?", (time.time(), owner))
        finally:
            conn.close()

    def release_claims(self, owner: str) -> None:
        self._check_thread()
        if self._conn is None or self._study_id is None or self.read_only:
            return
        sid = self._study_id
        self._write(lambda conn: conn.execute(
            "DELETE FROM claims WHERE study_id = ? AND owner = ?", (sid, owner)),
            checkpoint=False)

    def stored(self, phase: str, keys: Sequence[str]) -> dict[str, Evaluation]:
        conn = self._connect()
        out: dict[str, Evaluation] = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            part = keys[i:i + 500]
            try:
                rows = conn.execute(
                    f"SELECT {ROW_COLUMNS} FROM evaluations WHERE study_id = ? AND phase = ? "
                    f"AND status != 'failed' AND key IN ({', '.join('?' * len(part))})",
                    (self._sid(), phase, *part)).fetchall()
                for row in rows:
                    ev = row_evaluation(row)
                    out[ev.key] = ev
            except (sqlite3.DatabaseError, ValueError, TypeError) as exc:
                raise damaged_store_error(self.path, str(exc)) from None
        return out

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._connect().execute(
            "SELECT value FROM meta WHERE study_id = ? AND key = ?", (self._sid(), key)
        ).fetchone()
        return default if row is None else json.loads(row[0])

    def close(self) -> None:
        if not self._release():
            return  # another thread holds it open (a refused study's cleanup)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        self._study_id = None

    def __getstate__(self) -> dict[str, Any]:
        # Connections cannot cross processes; a copy reconnects lazily.
        return {"path": self.path, "claim_ttl": self.claim_ttl, "_conn": None,
                "_conn_thread": None, "_study_id": None, "_study_name": "", "_fingerprint": "",
                "_write_failed": None, "read_only": False}
