"""Where a report's data comes from: a results folder, an evaluation store, or both (a
finished study's front from its results folder, else from its store, which keeps the front of
the study's last finished run).

:func:`locate` turns the path a user gives (a results folder, or an SQLite store) into a
:class:`ReportSource`; :meth:`ReportSource.evaluations` reads the evaluations (from the store
when there is one, so that a study still running shows what it has stored so far, else from
``evaluations.csv``), and :meth:`ReportSource.version` is a cheap signature that changes
when any of them is written (what the dashboard polls).
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import ConfigError, StoreError

if TYPE_CHECKING:
    from mapframe.storage.manage import StoredRun
from mapframe.storage.sqlite import sqlite_uri

__all__ = ["EvaluationTable", "ReportSource", "locate"]

#: The files of a results folder the report reads (their mtimes make up the version).
RESULT_FILES = ("front.json", "summary.json", "evaluations.csv", "config.yaml")
STORE_NAME = "evaluations.sqlite"


@dataclass
class EvaluationTable:
    """Every stored evaluation of a study, in the order they were stored.

    ``coefficients`` ``(M, N)``; ``metrics`` ``(M, T)`` (NaN where an evaluation failed);
    ``phase`` and ``status`` one string per row (``"search"``/``"verify"``...,
    ``"ok"``/``"failed"``/``"invalid"``).
    """

    coefficients: np.ndarray
    metrics: np.ndarray
    phase: list[str]
    status: list[str]

    def __len__(self) -> int:
        return len(self.phase)

    @property
    def ok(self) -> np.ndarray:
        """Mask of the successful evaluations (every metric finite)."""
        finite = np.all(np.isfinite(self.metrics), axis=1) if self.metrics.size else \
            np.zeros(len(self), dtype=bool)
        return np.array([s == "ok" for s in self.status], dtype=bool) & finite

    @staticmethod
    def empty(n_coefficients: int, n_tasks: int) -> EvaluationTable:
        return EvaluationTable(np.zeros((0, n_coefficients)), np.zeros((0, n_tasks)), [], [])


def _connect_read_only(path: Path) -> sqlite3.Connection:
    try:
        return sqlite3.connect(sqlite_uri(path), uri=True, isolation_level=None, timeout=5)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path} read-only ({exc})") from None


def store_studies(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The studies of the store at ``path``: ``(name, fingerprint)``, oldest first."""
    conn = _connect_read_only(path)
    try:
        rows = conn.execute("SELECT name, fingerprint FROM studies ORDER BY id").fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path} is not a readable mapframe store ({exc}); give a "
                         "results folder or the study's evaluations.sqlite") from None
    finally:
        conn.close()
    out = []
    for name, fp in rows:
        try:
            out.append((str(name), dict(json.loads(fp))))
        except (ValueError, TypeError):
            out.append((str(name), {}))
    return out


def read_store(path: Path, study: str, n_coefficients: int, n_tasks: int) -> EvaluationTable:
    """The evaluations of ``study`` in the store at ``path``, in the order stored."""
    conn = _connect_read_only(path)
    try:
        rows = conn.execute(
            "SELECT e.coefficients, e.metrics, e.phase, e.status FROM evaluations e "
            "JOIN studies s ON s.id = e.study_id WHERE s.name = ? ORDER BY e.seq",
            (study,)).fetchall()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the evaluations of study {study!r} in {path} "
                         f"({exc})") from None
    finally:
        conn.close()
    C = np.full((len(rows), n_coefficients), np.nan)
    F = np.full((len(rows), n_tasks), np.nan)
    for i, (coef, metrics, _, _) in enumerate(rows):
        c = np.asarray(json.loads(coef), dtype=float).reshape(-1)
        C[i, : min(c.size, n_coefficients)] = c[:n_coefficients]
        if metrics is not None:
            m = np.asarray(json.loads(metrics), dtype=float).reshape(-1)
            F[i, : min(m.size, n_tasks)] = m[:n_tasks]
    return EvaluationTable(C, F, [str(r[2]) for r in rows], [str(r[3]) for r in rows])


def read_evaluations_csv(path: Path, coefficient_names: list[str],
                         task_names: list[str]) -> EvaluationTable:
    """The evaluations a results folder's ``evaluations.csv`` lists."""

    def num(v: str | None) -> float:
        try:
            return float(v) if v not in (None, "") else np.nan
        except ValueError:
            return np.nan

    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    C = np.array([[num(r.get(f"c_{n}")) for n in coefficient_names] for r in rows],
                 dtype=float).reshape(len(rows), len(coefficient_names))
    F = np.array([[num(r.get(n)) for n in task_names] for r in rows],
                 dtype=float).reshape(len(rows), len(task_names))
    return EvaluationTable(C, F, [r.get("phase", "search") or "search" for r in rows],
                           [r.get("status", "ok") or "ok" for r in rows])


def _is_store(path: Path) -> bool:
    try:
        with path.open("rb") as fh:
            return fh.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


@dataclass
class ReportSource:
    """A results folder (``directory``, may be ``None``) and/or a store (``store``), and the
    study in it (``study``). ``candidate`` is a folder the study may still write its results
    to (a running study's store's folder): it is looked at again on every read."""

    directory: Path | None
    store: Path | None
    study: str | None
    candidate: Path | None = None

    @property
    def results_folder(self) -> Path | None:
        """The folder holding *this* study's finished results (front.json and summary.json
        naming ``study``), ``directory`` or ``candidate``; ``None`` while there is none. A
        folder another study saved into since is not this study's: its front is not shown
        beside this study's evaluations."""
        for d in (self.directory, self.candidate):
            if (d is not None and (d / "front.json").is_file()
                    and (d / "summary.json").is_file()
                    and (self.study is None or _study_in_summary(d) == self.study)):
                return d
        return None

    @property
    def has_results(self) -> bool:
        """Whether a finished study wrote its front here (front.json and summary.json)."""
        return self.results_folder is not None

    def stored_run(self) -> StoredRun | None:
        """The study's last finished run as the store keeps it (its summary and, when that
        run stored one, its front: ``front`` is ``None`` otherwise); ``None`` without a
        store or before the study has finished once."""
        from mapframe.storage.manage import stored_run

        if self.store is None or self.study is None:
            return None
        return stored_run(self.store, self.study)

    def version(self) -> str:
        """A signature of every file the report reads (size and mtime); it changes when a
        study stores an evaluation (the store's write-ahead log) or writes its results."""
        files: list[Path] = []
        for d in (self.directory, self.candidate):
            if d is not None:
                files += [d / n for n in RESULT_FILES]
        if self.store is not None:
            files += [self.store, Path(f"{self.store}-wal")]
        parts = []
        for f in files:
            try:
                st = f.stat()
                parts.append(f"{st.st_mtime_ns}:{st.st_size}")
            except OSError:
                parts.append("-")
        return "/".join(parts)

    def evaluations(self, coefficient_names: list[str], task_names: list[str]
                    ) -> EvaluationTable:
        """The study's evaluations: from the store when it holds the study, else from the
        folder's ``evaluations.csv``, else none."""
        if self.store is not None and self.study is not None:
            with_study = {name for name, _ in store_studies(self.store)}
            if self.study in with_study:
                return read_store(self.store, self.study, len(coefficient_names),
                                  len(task_names))
        folder = self.results_folder
        if folder is not None and (folder / "evaluations.csv").is_file():
            return read_evaluations_csv(folder / "evaluations.csv",
                                        coefficient_names, task_names)
        return EvaluationTable.empty(len(coefficient_names), len(task_names))


def _study_in_summary(directory: Path) -> str | None:
    try:
        summary = json.loads((directory / "summary.json").read_text(encoding="utf-8"))
        return str(summary["study"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_of_folder(directory: Path) -> Path | None:
    """The folder's store: ``evaluations.sqlite`` in it, else the one summary.json names."""
    from mapframe.storage.manage import summary_store

    own = directory / STORE_NAME
    if own.is_file():
        return own
    named = summary_store(directory)
    return named if named is not None and named.is_file() else None


def _named_study_of_folder(folder: Path, store: Path | None, study: str) -> ReportSource:
    """The source of study ``study`` asked for through a results folder: its evaluations
    from the folder's store, the folder's front and summary only when they are that study's
    (a folder shared by several studies holds the last one's)."""
    own = _study_in_summary(folder) == study
    if store is not None:
        in_store = store_studies(store)
        studies = [name for name, _ in in_store]
        if study not in studies:
            raise ConfigError(f"the store {store} of {folder} has no study {study!r} (it has: "
                              f"{', '.join(studies) or 'none yet'})")
        refuse_nested_model_study(store, study, in_store)
    elif not own:
        raise ConfigError(f"{folder} holds the results of study "
                          f"{_study_in_summary(folder)!r}, not {study!r}, and no store; give "
                          "that study's results folder or its store")
    return ReportSource(folder if own else None, store, study)


#: The evaluator of a Nested MAP tournament's pair studies (``mapframe.nested``).
_PAIR_EVALUATOR = "nested_pair"
#: A Nested MAP tournament's studies that evaluate one model on all tasks, no MAP:
#: ``<tournament>/<purpose>/<model>[@<digest>]``.
_MODEL_PURPOSES = {"final": "the evaluation of the final merged model",
                   "profile": "a model's profile evaluation (metric_profile pairing)"}
#: How many pair studies a refusal lists before pointing at ``mapframe store list``.
_LISTED_PAIRS = 8


def _undigested(name: str) -> str:
    """A study name without the ``@<12 hex digits>`` Nested MAP adds for another setup."""
    head, at, tail = name.rpartition("@")
    if at and len(tail) == 12 and all(ch in "0123456789abcdef" for ch in tail):
        return head
    return name


def _pair_tournament(name: str) -> str | None:
    """The tournament of the pair study ``name`` (``<tournament>/(<a>+<b>)[@<digest>]``):
    ``name`` up to the ``/`` before the balanced merge label it ends with."""
    label = _undigested(name)
    if not label.endswith(")"):
        return None
    depth = 0
    for i in range(len(label) - 1, -1, -1):
        depth += {")": 1, "(": -1}.get(label[i], 0)
        if depth == 0:
            return label[:i - 1] if i > 0 and label[i - 1] == "/" else None
    return None


def nested_model_study(studies: list[tuple[str, dict[str, Any]]], study: str
                       ) -> tuple[str, str, list[str]] | None:
    """When ``study`` is one of a Nested MAP tournament's single-model evaluations (its
    final model, or a profile): ``(tournament, what it is, the tournament's pair studies in
    the order stored)``; ``None`` for any other study. ``studies`` are the store's
    (:func:`store_studies`). A pair study is an ordinary MAP study with a front: its report
    is the report of that merge."""
    pairs = [(name, _pair_tournament(name)) for name, fp in studies
             if isinstance(fp.get("evaluator"), dict)
             and fp["evaluator"].get("name") == _PAIR_EVALUATOR]
    base = _undigested(study)
    for purpose, what in _MODEL_PURPOSES.items():
        marker = f"/{purpose}/"
        at = base.find(marker)
        while at > 0:
            tournament = base[:at]
            of_it = [name for name, t in pairs if t == tournament]
            if of_it:
                return tournament, what, of_it
            at = base.find(marker, at + 1)
    return None


def refuse_nested_model_study(store: Path, study: str,
                              studies: list[tuple[str, dict[str, Any]]] | None = None
                              ) -> None:
    """A one-line :class:`ConfigError` when ``study`` of ``store`` is a Nested MAP
    tournament's single-model evaluation (:func:`nested_model_study`), which has no front
    to report: it lists the tournament's pair studies to give ``--study`` instead."""
    import shlex

    found = nested_model_study(store_studies(store) if studies is None else studies, study)
    if found is None:
        return
    tournament, what, pairs = found
    listed = ", ".join(shlex.quote(name) for name in pairs[:_LISTED_PAIRS])
    more = (f" and {len(pairs) - _LISTED_PAIRS} more (mapframe store list "
            f"{shlex.quote(str(store))})" if len(pairs) > _LISTED_PAIRS else "")
    raise ConfigError(
        f"study {study!r} in {store} is {what} of the Nested MAP tournament "
        f"{tournament!r}: one model, no front to report; a report shows one merge of the "
        f"tournament: give --study one of its pair studies, {listed}{more} (the whole "
        "tournament is nested.json, tree.png and fronts.png in its results folder)")


def locate(path: str | os.PathLike[str], study: str | None = None) -> ReportSource:
    """The report source of ``path``: a results folder (its store found beside it or through
    summary.json) or an SQLite store (its results folder: the store's own folder when a
    study wrote its results there). ``study`` picks a study in a store holding several
    (default: the folder's study, else the store's latest). A Nested MAP tournament's
    folder, or a study of its store that evaluates one model (its final model, a profile:
    the latest of a finished tournament's store), is a one-line :class:`ConfigError` saying
    which pair studies (or folders under ``pairs/``) to give instead."""
    p = Path(path)
    if p.is_dir():
        if study is None and (p / "nested.json").is_file() and not (p / "summary.json").is_file():
            pairs = sorted(q for q in (p / "pairs").glob("*") if (q / "summary.json").is_file())
            shown = ", ".join(str(q) for q in pairs[:4]) + (
                f" and {len(pairs) - 4} more" if len(pairs) > 4 else "")
            raise ConfigError(
                f"{p} holds a Nested MAP tournament (nested.json): its tree and fronts are "
                "tree.png and fronts.png there; for one merge's report give its folder under "
                f"pairs/ ({shown or 'none written yet'}), or the store with "
                "--study '<study>/(<a>+<b>)'")
        store = _store_of_folder(p)
        if study is not None:  # a study named: the folder's results only if they are its
            return _named_study_of_folder(p, store, study)
        study = _study_in_summary(p)
        if study is None and store is not None:  # a study still running: the store's latest
            in_store = store_studies(store)
            study = in_store[-1][0] if in_store else None
            if study is not None:
                refuse_nested_model_study(store, study, in_store)
        src = ReportSource(p, store, study)
        if not src.has_results and (store is None or study is None):
            raise ConfigError(
                f"{p} is not a mapframe results folder (no front.json and summary.json, no "
                f"{STORE_NAME}); give the folder a study writes its results to, or its store")
        return src
    if p.is_file():
        if not _is_store(p):
            raise ConfigError(f"{p} is neither a results folder nor an SQLite evaluation "
                              "store; give the study's results folder or its .sqlite store")
        in_store = store_studies(p)
        studies = [name for name, _ in in_store]
        folder = p.parent if (p.parent / "summary.json").is_file() else None
        if study is None:
            study = (_study_in_summary(folder) if folder is not None else None)
            if study not in studies:
                study = studies[-1] if studies else None
        elif study not in studies:
            raise ConfigError(f"the store {p} has no study {study!r} (it has: "
                              f"{', '.join(studies) or 'none yet'})")
        if folder is not None and _study_in_summary(folder) != study:
            folder = None
        if study is None:
            raise ConfigError(f"the store {p} holds no study yet; start the study, then "
                              "give its store again")
        # a Nested MAP store's latest study is its final model's single evaluation
        refuse_nested_model_study(p, study, in_store)
        return ReportSource(folder, p, study, candidate=p.parent)
    raise ConfigError(f"{p} does not exist; give a results folder or an evaluation store")
