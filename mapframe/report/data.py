"""Assembling a report's data from a results folder and/or a store: :func:`assemble` returns a
:class:`ReportData` (plain lists and dicts, ready for JSON), which the HTML rendering reads.
Nothing here imports plotly."""

from __future__ import annotations

import csv
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.metrics import FLAT_RANGE_TOLERANCE
from mapframe.problem import Task
from mapframe.report.analysis import search_progress, task_vector_findings, tradeoff_summary
from mapframe.report.sources import ReportSource, store_studies

if TYPE_CHECKING:
    from mapframe.results import Front

__all__ = ["ReportData", "assemble"]

#: The file ``mapframe export`` writes in the command the report shows.
EXPORT_TARGET = "merged.safetensors"


def _rows(a: np.ndarray | None) -> list[list[float | None]] | None:
    """A matrix as nested lists, NaN as ``None`` (JSON has no NaN)."""
    if a is None:
        return None
    arr = np.asarray(a, dtype=float)
    out: list[list[float | None]] = arr.tolist()  # at C speed: 10 000 rows in milliseconds
    for i, j in np.argwhere(~np.isfinite(arr)):
        out[i][j] = None
    return out


@dataclass
class ReportData:
    """Everything a report shows, as JSON-ready values.

    ``front`` (``None`` before a study has finished) holds ``coefficients``, ``predicted``,
    ``real`` (``None`` where not measured), ``std`` (``None`` when the surrogate has none),
    ``source`` and ``best_known`` (real where measured, else predicted), one row per point.
    ``selection`` is what the page's preference control needs to select as
    :meth:`SavedResults.select <mapframe.results_folder.SavedResults.select>` does:
    ``best_known``, ``directions``, ``bounds`` (``[lower, upper]`` or ``None``), ``among``
    (the measured-points mask, or ``None``), the study's ``preference`` and ``selected``.
    ``evaluations`` lists every stored evaluation (``coefficients``, ``metrics``, ``phase``,
    ``status``), ``hypervolume``, the measured points' hypervolume after each one, and
    ``hypervolume_method``, how it was computed (``"exact"``, or ``"monte-carlo"`` for many
    tasks or evaluations: see :func:`~mapframe.report.analysis.search_progress`).
    """

    study: str | None
    directory: str | None
    store: str | None
    task_names: list[str]
    directions: list[str]
    coefficient_names: list[str]
    front: dict[str, Any] | None
    selection: dict[str, Any] | None
    evaluations: dict[str, Any]
    diagnostics: list[dict[str, Any]]
    tradeoffs: dict[str, Any] | None
    task_vectors: dict[str, Any]
    export: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    version: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _tasks_from_store(source: ReportSource) -> tuple[list[Task], int]:
    assert source.store is not None
    fingerprints = dict(store_studies(source.store))
    fp = fingerprints.get(source.study or "", {})
    tasks = [Task(**t) for t in fp.get("tasks", [])]
    return tasks, int(fp.get("n_coefficients", len(tasks)))


def _diagnostics(summary: dict[str, Any], task_names: list[str],
                 front: Front | None) -> list[dict[str, Any]]:
    """Per task: the surrogate's fit (summary.json) and the mean and max |predicted − real|
    over the front's points marked verified (``n_verified_front`` of them; a verification
    that a measured point beat left the front and is not counted), ``None`` where none."""
    fits = summary.get("surrogates") or {}
    err = np.empty((0, len(task_names)))
    if front is not None:
        v = front.verified
        err = np.abs(front.predicted[v] - front.real[v]).reshape(-1, len(task_names))
    out = []
    for j, name in enumerate(task_names):
        d = fits.get(name) or {}
        e = err[np.isfinite(err[:, j]), j]
        out.append({"task": name, "model": d.get("model"), "r2": d.get("r2"),
                    "loo_r2": d.get("loo_r2"), "n_verified_front": int(e.size),
                    "verified_mean_abs_error": float(e.mean()) if e.size else None,
                    "verified_max_abs_error": float(e.max()) if e.size else None})
    return out


def _n_run_evaluations(folder: Path, summary: dict[str, Any]) -> int:
    """How many evaluations the finished run in ``folder`` made: every search and every
    verification evaluation, failed ones too (the rows of its ``evaluations.csv``; without
    one, the search evaluations and the successful verifications summary.json counts)."""
    try:
        with (folder / "evaluations.csv").open(newline="", encoding="utf-8") as fh:
            return sum(1 for _ in csv.DictReader(fh))
    except (OSError, UnicodeDecodeError, csv.Error):
        return int(summary.get("n_search_evaluations", 0)) + int(
            (summary.get("verification") or {}).get("n_verified", 0))


def _export(saved: Any, summary: dict[str, Any], directory: str | None) -> dict[str, Any]:
    """How the page tells to export a front point: ``command`` (``{N}`` is the point; ``None``
    where ``mapframe export`` cannot work), ``has_model`` (the study merged checkpoints) and
    ``note`` (shown under the selected point; ``{N}`` is the point)."""
    command: str | None = (f"mapframe export {shlex.quote(directory or 'RESULTS_DIR')} "
                           "--point {N} -o " + EXPORT_TARGET)
    with_config = bool(saved is not None and saved.config and saved.config.get("checkpoints"))
    merged = with_config or bool((summary.get("settings") or {}).get("merge"))
    note = None
    if not merged:  # mapframe export refuses such a folder: no command to copy
        command = None
        note = ("This study used a black-box objective: there is no merged model to export; "
                "the selected point's coefficients are above.")
    elif saved is not None and saved.store is not None:  # read from the store: no config
        command = None
        note = ("This front was read from the study's store, which keeps no config to "
                "rebuild the merge: export this point with mapframe export on the study's "
                "results folder (--point {N}), or in Python with result.export(path, "
                "index={N}) on the StudyResult of MergeStudy(...).run() with the same config "
                "and storage (its evaluations are reused from the store).")
    elif not with_config:  # saved with StudyResult.save: no config.yaml to rebuild the merge
        command = None
        note = ("This study merged checkpoints, but its results folder has no config.yaml, "
                "which mapframe export needs: export this point in Python with "
                "result.export(path, index={N}) on the study's StudyResult, or run the study "
                "through mapframe run (its evaluations are reused from the store) for the "
                "command.")
    return {"command": command, "has_model": merged, "note": note}


def _other_study_folder(source: ReportSource) -> tuple[Path, str] | None:
    """A folder where this study's results would be that holds another study's results
    (saved into it since: a folder keeps the last save), with that study's name."""
    from mapframe.report.sources import _study_in_summary

    folders = [source.directory, source.candidate,
               None if source.store is None else source.store.parent]
    for d in folders:
        other = None if d is None else _study_in_summary(d)
        if d is not None and other is not None and other != source.study:
            return d, other
    return None


def _no_front_note(source: ReportSource, n_stored: int) -> str:
    """The note of a study without a front here: not finished yet, or its results folder
    holds another study's results (saved into it since: a folder keeps the last save)."""
    found = _other_study_folder(source)
    if found is not None:
        d, other = found
        return (f"no front for study {source.study!r} here: {d} holds the results of "
                f"study {other!r} (a folder keeps only the last study saved into it); "
                f"{n_stored} evaluations of {source.study!r} are stored. If it finished "
                "and was saved there, its front was replaced: run it again with its own "
                "output folder to write it (its evaluations are reused from the store); "
                "if it is still running, its front appears when it finishes")
    return (f"no front yet: {n_stored} evaluations stored so far; the front appears when the "
            "study finishes")


def _stored_since(source: ReportSource, finished_at: float | None) -> int:
    """How many of the study's evaluations its store stored after ``finished_at`` (when its
    last finished run stored its front); 0 when that time is not known."""
    from mapframe.storage.manage import _reading

    if finished_at is None or source.store is None:
        return 0
    with _reading(source.store) as conn:
        row = conn.execute("SELECT COUNT(*) FROM evaluations e JOIN studies s ON "
                           "s.id = e.study_id WHERE s.name = ? AND e.created > ?",
                           (source.study, finished_at)).fetchone()
    return int(row[0])


def assemble(source: ReportSource) -> ReportData:
    """The report's data for ``source``: the finished study's front and summary where the
    folder has them, and every evaluation stored so far."""
    from mapframe.results_folder import load_results, saved_from_run

    version = source.version()  # first: a write while reading shows at the next poll
    folder = source.results_folder  # this study's finished results, wherever they are
    saved = load_results(folder) if folder is not None else None
    notes: list[str] = []
    run = None if saved is not None else source.stored_run()
    if run is not None and run.front is not None and source.store is not None:
        saved = saved_from_run(source.store, run)  # no results folder: the stored front
    summary: dict[str, Any] = {}
    if saved is not None:
        tasks, cnames, summary = saved.tasks, list(saved.coefficient_names), saved.summary
    else:
        tasks, n_coef = _tasks_from_store(source)
        names = [t.name for t in tasks]
        cnames = names if n_coef == len(names) else [f"c{i}" for i in range(n_coef)]
    task_names = [t.name for t in tasks]
    directions: list[str] = [str(t.direction) for t in tasks]
    table = source.evaluations(cnames, task_names)
    ok = table.ok
    hv, method = search_progress(np.where(ok[:, None], table.metrics, np.nan), directions)
    evaluations = {"coefficients": _rows(table.coefficients), "metrics": _rows(table.metrics),
                   "phase": table.phase, "status": table.status,
                   "hypervolume": [float(v) for v in hv], "hypervolume_method": method}
    front_data = selection = tradeoffs = None
    notes += [f"warning: {w}" for w in summary.get("warnings") or []]
    if saved is not None:
        front = saved.front
        best = front.best_known
        front_data = {"coefficients": _rows(front.coefficients),
                      "predicted": _rows(front.predicted), "real": _rows(front.real),
                      "std": _rows(front.predicted_std), "source": list(front.source or []),
                      "best_known": _rows(best)}
        verified = bool((summary.get("settings") or {}).get("verify"))
        among = front.measured if verified and front.measured.any() else None
        selection = {"best_known": _rows(best), "directions": directions,
                     "bounds": summary.get("preference_bounds"),
                     "among": None if among is None else [bool(v) for v in among],
                     "preference": summary.get("preference"), "selected": saved.selected,
                     "flat_tolerance": FLAT_RANGE_TOLERANCE}
        tradeoffs = tradeoff_summary(best, front.coefficients, task_names, cnames, directions)
        if folder is not None:
            n_front_run = _n_run_evaluations(folder, summary)
            if len(table) > n_front_run and source.store is not None:
                notes.append(f"the store holds {len(table)} evaluations; the front below is "
                             f"from the last finished run ({n_front_run}): a study is "
                             "running or was interrupted")
        else:
            found = _other_study_folder(source)
            why = ("no results folder of it was found" if found is None else
                   f"{found[0]} holds the results of study {found[1]!r}: a folder keeps only "
                   "the last study saved into it")
            notes.append(f"the front below is the one study {source.study!r} stored in its "
                         f"store when its last run finished ({why})")
            later = _stored_since(source, None if run is None else run.finished_at)
            if later:
                notes.append(f"{later} evaluations were stored after the front's run "
                             "finished: a study is running or was interrupted")
    elif run is not None and run.no_front is not None and _other_study_folder(source) is None:
        notes.append(f"no front: the study's last finished run stored only its summary "
                     f"({len(table)} evaluations stored; it predates stored fronts, or its "
                     "front is an older run's): rerun the study (it reuses every stored "
                     "evaluation) to store its front, or give its results folder")
    else:
        notes.append(_no_front_note(source, len(table)))
    where = folder if folder is not None else source.directory
    directory = None if where is None else str(Path(where).absolute())
    export = _export(saved, summary, directory)
    return ReportData(
        study=source.study, directory=directory,
        store=None if source.store is None else str(source.store),
        task_names=task_names, directions=directions, coefficient_names=cnames,
        front=front_data, selection=selection, evaluations=evaluations,
        diagnostics=_diagnostics(summary, task_names, None if saved is None else saved.front),
        tradeoffs=tradeoffs,
        task_vectors=task_vector_findings(summary, task_names) if summary else
        {"zero": [], "duplicates": [], "note": "known once the study has finished"},
        export=export, notes=notes, version=version)
