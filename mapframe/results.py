"""What a study returns: the Pareto front (predicted and measured points) and everything
needed to use it."""

from __future__ import annotations

import contextlib
import csv
import html
import importlib
import io
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe._files import write_atomically
from mapframe.errors import ConfigError, MapframeError
from mapframe.history import History
from mapframe.problem import SearchSpace, Task

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

    from mapframe.executors.base import MergeSpec
    from mapframe.surrogates.base import Surrogate

__all__ = ["SOURCES", "Front", "StudyResult"]


#: The columns of ``evaluations.csv`` beside one per task (named as the task) and one per
#: coefficient (``c_<name>``): a task may not take one of these names.
EVALUATION_COLUMNS = ("phase", "status", "round", "duration_s", "error")


def check_front_index(index: object, size: int, where: str = "the front") -> int:
    """``index`` as an ``int`` when it names a point of a front of ``size`` points; else a
    one-line :class:`ConfigError` saying what an index must be (a float, a string or a bool
    reached numpy and raised its own error)."""
    if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
        raise ConfigError(f"a front index must be an integer (a row of front.csv, 0 to "
                          f"{size - 1}), got {index!r} ({type(index).__name__})")
    if not 0 <= index < size:
        raise ConfigError(f"front index {index} out of range: {where} has {size} points "
                          f"(0 to {size - 1})")
    return int(index)


#: What a spreadsheet reads as the start of a formula (``=``, ``+``, ``-``, ``@``) or
#: strips before one (tab, carriage return, line feed): a cell starting so is run, not shown.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n")


def check_task_columns(task_names: Sequence[str], coefficient_names: Sequence[str]) -> None:
    """A one-line :class:`ConfigError` when a task's name is also a column of
    ``evaluations.csv`` (its metric column would overwrite that one), or starts like a
    spreadsheet formula (:data:`FORMULA_STARTS`: the name heads a column of
    ``evaluations.csv`` as written, and a spreadsheet opening the file would run it)."""
    formulas = [n for n in task_names if n.startswith(FORMULA_STARTS)]
    if formulas:
        fixed = formulas[0].lstrip("".join(FORMULA_STARTS) + " ") or "task"
        raise ConfigError(
            f"task name(s) {', '.join(map(repr, formulas))} start like a spreadsheet formula "
            f"(=, +, -, @, a tab or a line break), which a spreadsheet opening the results' "
            f"evaluations.csv would run; rename the task so that it starts otherwise (e.g. "
            f"{fixed!r})")
    taken = set(EVALUATION_COLUMNS) | {f"c_{n}" for n in coefficient_names}
    clash = [n for n in task_names if n in taken]
    if clash:
        raise ConfigError(
            f"task name(s) {', '.join(map(repr, clash))} are also columns of the results' "
            f"evaluations.csv ({', '.join(EVALUATION_COLUMNS)}, c_<coefficient>); rename the "
            f"task (e.g. {clash[0] + '_metric'!r})")


#: Where a front point comes from (``Front.source``).
SOURCES = ("predicted", "verified", "measured")


def _equal_to_earlier(best: np.ndarray, n_old: int) -> np.ndarray:
    """For each row from ``n_old`` on: whether a row before it (any of the first ``n_old``,
    or an earlier one of the rest) has the same values (as ``==`` compares: ``-0.0`` equals
    ``0.0``, a row with NaN equals none). Linear in the rows, not quadratic."""
    normal = best + 0.0  # -0.0 -> 0.0, so that equal values have equal bytes
    has_nan = np.asarray(np.isnan(normal).any(axis=1))
    seen: set[bytes] = set()
    out = np.zeros(len(best) - n_old, dtype=bool)
    for r in range(len(best)):
        if has_nan[r]:
            continue
        key = normal[r].tobytes()
        if r >= n_old and key in seen:
            out[r - n_old] = True
        seen.add(key)
    return out


@dataclass
class Front:
    """The handed-over Pareto front: K coefficient vectors with predicted (and real) metrics.

    ``predicted`` holds the surrogates' prediction at every point (for a measured point too,
    so that predicted and real stay comparable); ``real`` the metrics measured, NaN where a
    point was not evaluated. ``source`` says where each point comes from: ``"predicted"``
    (a point of the solved front, not evaluated), ``"verified"`` (a point of the solved front
    evaluated by the verification phase) or ``"measured"`` (an evaluated point, from the
    search or the verification, that entered the front). ``best_known`` is ``real`` where
    measured, else ``predicted``; selection ranks on it. Rows are sorted by the first
    task's best-known metric (best first).
    """

    coefficients: np.ndarray
    predicted: np.ndarray
    real: np.ndarray
    task_names: list[str]
    directions: list[str]
    #: ``(K, T)`` predictive standard deviations of ``predicted`` (surrogates that report
    #: their uncertainty, such as ``gp``), else ``None``.
    predicted_std: np.ndarray | None = None
    #: One of :data:`SOURCES` per point; by default ``"verified"`` where ``real`` is known,
    #: else ``"predicted"``.
    source: list[str] | None = None

    def __post_init__(self) -> None:
        if self.source is None:
            known = np.all(np.isfinite(self.real), axis=1)
            self.source = ["verified" if k else "predicted" for k in known]
        else:
            self.source = list(self.source)
        bad = sorted(set(self.source) - set(SOURCES))
        if len(self.source) != len(self) or bad:
            raise ConfigError(f"Front.source needs one of {SOURCES} per point "
                              f"({len(self)}), got {len(self.source)} (unknown: {bad})")

    def __len__(self) -> int:
        return int(self.coefficients.shape[0])

    @property
    def sources(self) -> np.ndarray:
        """``source`` as an array (for masks such as ``front.sources == "measured"``)."""
        return np.array(self.source, dtype=object)

    @property
    def verified(self) -> np.ndarray:
        """Boolean mask of the solved front's points that the verification evaluated."""
        return self.sources == "verified"

    @property
    def measured(self) -> np.ndarray:
        """Boolean mask of the points with real metrics (``"verified"`` or ``"measured"``)."""
        return np.all(np.isfinite(self.real), axis=1)

    @property
    def best_known(self) -> np.ndarray:
        """``(K, T)``: the real metrics where measured, else the predicted ones."""
        return np.where(self.measured[:, None], self.real, self.predicted)

    def counts(self) -> dict[str, int]:
        """Number of points per source, e.g. ``{"predicted": 95, "verified": 4, ...}``."""
        src = self.source or []
        return {s: src.count(s) for s in SOURCES}

    def with_measured(self, coefficients: np.ndarray, predicted: np.ndarray,
                      real: np.ndarray, predicted_std: np.ndarray | None = None,
                      force: Sequence[int] = (),
                      margin: np.ndarray | Sequence[float] | None = None) -> Front:
        """This front combined with measured points (never worse than the measurements).

        ``coefficients`` ``(M, N)`` are evaluated points, ``real`` ``(M, T)`` their metrics
        and ``predicted`` (``predicted_std``) the surrogates' prediction there. A front point
        at the coefficients of a measured one takes its real metrics. Then, on best-known
        metrics (real where measured, else predicted):

        * a point of this front is dropped when a measured point dominates it (a measurement
          replaces a prediction it beats, or a verified point it beats);
        * a measured point enters (source ``"measured"``) when no point dominates it and no
          point has the same metrics; the rows ``force`` enter unless a measured point
          dominates them. With ``margin`` (one value per task, e.g. the surrogates'
          leave-one-out RMSE), a *prediction* hides a measured point only when it still
          dominates it after giving up ``margin`` on every task: a prediction has to beat a
          measurement by more than the surrogates' known error (measured points always
          compete on their real metrics).

        The result is sorted by the first task's best-known metric, best first.
        """
        from mapframe.history import coefficient_key
        from mapframe.metrics import dominated_by_any

        C = np.asarray(coefficients, dtype=float).reshape(-1, self.coefficients.shape[1])
        P = np.asarray(predicted, dtype=float).reshape(len(C), -1)
        R = np.asarray(real, dtype=float).reshape(P.shape)
        real_f, source_f = self.real.copy(), list(self.source or [])
        first: dict[str, int] = {}
        for i, c in enumerate(C):
            first.setdefault(coefficient_key(c), i)
        front_keys = [coefficient_key(c) for c in self.coefficients]
        for k, key in enumerate(front_keys):
            hit = first.get(key)
            if hit is not None and not np.all(np.isfinite(real_f[k])):
                real_f[k], source_f[k] = R[hit], "measured"
        taken = set(front_keys)
        new = [i for key, i in first.items() if key not in taken]
        forced = {first.get(coefficient_key(C[i])) for i in force}
        n_old = len(self)
        all_C = np.concatenate([self.coefficients, C[new]])
        all_P = np.concatenate([self.predicted, P[new]])
        all_R = np.concatenate([real_f, R[new]])
        known = np.all(np.isfinite(all_R), axis=1)  # rows with real metrics
        best = np.where(known[:, None], all_R, all_P)
        meas = np.flatnonzero(known)
        # Dropped: whatever a measurement dominates (a row never dominates itself).
        keep = ~dominated_by_any(all_R[meas], best, self.directions)
        # Measured points enter where nothing is at least as good (first of equals kept);
        # a prediction must win by more than ``margin`` to hide a measurement.
        handicap = best.copy()
        if margin is not None:
            gap = np.nan_to_num(np.asarray(margin, dtype=float).reshape(-1), nan=0.0)
            worse = np.where(np.asarray(self.directions) == "max", -1.0, 1.0)
            handicap[~known] += worse * np.maximum(gap, 0.0)
        hidden = (dominated_by_any(handicap, best[n_old:], self.directions)
                  | _equal_to_earlier(best, n_old))
        for j, i in enumerate(new):
            if i not in forced:
                keep[n_old + j] &= not hidden[j]
        src = np.array(source_f + ["measured"] * len(new), dtype=object)
        std = None
        if self.predicted_std is not None and predicted_std is not None:
            S = np.asarray(predicted_std, dtype=float).reshape(P.shape)
            std = np.concatenate([self.predicted_std, S[new]])
        idx = np.flatnonzero(keep)
        sign = 1.0 if self.directions[0] == "max" else -1.0
        idx = idx[np.argsort(-sign * best[idx, 0], kind="stable")]
        return Front(all_C[idx], all_P[idx], all_R[idx], list(self.task_names),
                     list(self.directions), None if std is None else std[idx],
                     [str(s) for s in src[idx]])

    def select(self, preference: np.ndarray | Sequence[float],
               bounds: tuple[Sequence[float], Sequence[float]] | None = None,
               measured_only: bool = False) -> int:
        """Index of the point with the best preference-weighted score of its best-known
        metrics, each scaled to [0, 1] over the front (or over ``bounds``, ``(lower,
        upper)``); with ``measured_only``, among the measured points (all when none is)."""
        from mapframe.metrics import select_by_preference
        from mapframe.spec import check_preference_bounds

        checked = check_preference_bounds(bounds, len(self.task_names))
        lo, hi = checked or (None, None)
        among = self.measured if measured_only and self.measured.any() else None
        return int(select_by_preference(self.best_known, preference, self.directions, lo, hi,
                                        among=among))

    def export_metadata(self, index: int, study_name: str) -> dict[str, Any]:
        """What an exported model of point ``index`` records about itself: the study, the
        point's source, its predicted metrics and, where measured, its real ones."""
        meta: dict[str, Any] = {
            "mapframe.study": study_name,
            "mapframe.source": (self.source or [])[index],
            "mapframe.predicted": dict(zip(self.task_names, self.predicted[index].tolist()))}
        if self.measured[index]:
            meta["mapframe.real"] = dict(zip(self.task_names, self.real[index].tolist()))
        return meta

    def rows(self, coefficient_names: list[str] | None = None) -> list[dict[str, Any]]:
        """The front as a list of flat dicts (one per point), as written to CSV."""
        cnames = coefficient_names or [f"c{i}" for i in range(self.coefficients.shape[1])]
        src = self.source or []
        out = []
        for k in range(len(self)):
            row: dict[str, Any] = {"index": k, "source": src[k]}
            row.update({f"c_{n}": float(v) for n, v in zip(cnames, self.coefficients[k])})
            row.update({f"predicted_{n}": float(v) for n, v in zip(self.task_names,
                                                                   self.predicted[k])})
            if self.predicted_std is not None:
                row.update({f"std_{n}": float(v) for n, v in zip(self.task_names,
                                                                 self.predicted_std[k])})
            row.update({f"real_{n}": (float(v) if np.isfinite(v) else None)
                        for n, v in zip(self.task_names, self.real[k])})
            out.append(row)
        return out

    def to_pandas(self, coefficient_names: list[str] | None = None) -> pandas.DataFrame:
        """:meth:`rows` as a :class:`pandas.DataFrame` indexed by the front's ``index``
        (columns ``source``, ``c_<coefficient>``, ``predicted_<task>``, ``std_<task>`` when
        the surrogates report it, ``real_<task>``: NaN where not measured). Coefficients are
        named ``c0, c1, ...`` unless ``coefficient_names`` are given:
        :meth:`StudyResult.front_table` and ``load_results(...).front_table()`` give the
        study's. Needs pandas, which mapframe does not install (``pip install pandas``)."""
        pd = _pandas("Front.to_pandas")
        cnames = coefficient_names or [f"c{i}" for i in range(self.coefficients.shape[1])]
        columns = ["index", "source", *(f"c_{n}" for n in cnames),
                   *(f"predicted_{n}" for n in self.task_names),
                   *(f"std_{n}" for n in self.task_names if self.predicted_std is not None),
                   *(f"real_{n}" for n in self.task_names)]
        frame = pd.DataFrame(self.rows(coefficient_names), columns=columns)
        real = [f"real_{n}" for n in self.task_names]
        frame[real] = frame[real].astype(float)  # None (not measured) -> NaN
        return frame.set_index("index")

    def __repr__(self) -> str:
        n = self.coefficients.shape[1] if self.coefficients.ndim == 2 else 0
        made = ", ".join(f"{k} {s}" for s, k in self.counts().items() if k)
        return (f"<Front: {len(self)} points × {n} coefficients"
                f"{f' ({made})' if made else ''}; tasks "
                f"{describe_tasks(self.task_names, self.directions)}>")

    def _repr_html_(self) -> str:
        """A notebook's view: this repr and the first rows of the front as a table."""
        return html_block(repr(self)[1:-1], self._html_table())

    def _html_table(self, coefficient_names: list[str] | None = None,
                   max_rows: int = 10) -> str:
        """The first ``max_rows`` points as an HTML table (index, source, coefficients,
        predicted and real metrics to 4 significant digits; a last row says how many more
        there are), every name escaped: what a notebook shows for a front."""
        cnames = coefficient_names or [f"c{i}" for i in range(self.coefficients.shape[1])]
        head = (["", "source"] + [f"c_{n}" for n in cnames]
                + [f"predicted {n} ({d})" for n, d in zip(self.task_names, self.directions)]
                + [f"real {n}" for n in self.task_names])
        src = self.source or []
        body = []
        for k in range(min(len(self), max(max_rows, 0))):
            cells = [str(k), src[k], *map(_number, self.coefficients[k]),
                     *map(_number, self.predicted[k]), *map(_number, self.real[k])]
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells)
                        + "</tr>")
        more = len(self) - len(body)
        if more > 0:
            body.append(f'<tr><td colspan="{len(head)}">… {more} more '
                        f'row{"s" if more != 1 else ""}</td></tr>')
        return ('<table class="mapframe-front"><thead><tr>'
                + "".join(f"<th>{html.escape(h)}</th>" for h in head)
                + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


@dataclass
class StudyResult:
    """The outcome of :meth:`MergeStudy.run`.

    ``front`` is the amortised Pareto front; ``history`` every evaluation of the study;
    ``diagnostics`` the surrogates' fit quality per task (R², leave-one-out R², ...);
    ``verification`` the predicted-vs-real error on verified front points (if any);
    ``selected`` the index of the front point chosen for ``preference`` (if given): ranked
    on best-known metrics, and, when the study verified, among the measured points only.
    """

    study_name: str
    tasks: list[Task]
    space: SearchSpace
    coefficient_names: list[str]
    front: Front
    history: History
    surrogates: list[Surrogate]
    diagnostics: dict[str, dict[str, Any]]
    verification: dict[str, Any] | None
    preference: list[float] | None
    selected: int | None
    n_evaluated: int
    n_reused: int
    seed: int
    timings: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)
    merge_spec: MergeSpec | None = None
    #: Fixed ``(lower, upper)`` per task for the preference score (``None``: the front's range).
    preference_bounds: tuple[list[float], list[float]] | None = None
    #: One record per sampling round: points proposed, new and reused evaluations, the
    #: sampler's own time (``propose_s``) and the evaluation time.
    rounds: list[dict[str, Any]] = field(default_factory=list)
    #: Why an adaptive study stopped before its budget (``None`` if it did not).
    stopped_early: str | None = None
    #: What the stopping rule measured after each round (empty without a rule).
    stopping_trace: list[dict[str, Any]] = field(default_factory=list)
    #: What the front solver reported (``SolverResult.diagnostics``: for the built-ins, the
    #: share of its points the polish found dominated and replaced, and its tolerance).
    solver_diagnostics: dict[str, Any] = field(default_factory=dict)
    #: What the study warned about (:mod:`mapframe.study_checks`), one line each.
    warnings: list[str] = field(default_factory=list)

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __repr__(self) -> str:
        return f"<StudyResult {result_facts(self)}>"

    def _repr_html_(self) -> str:
        """A notebook's view: the study's key facts and the front's first rows."""
        return html_block(f"StudyResult {result_facts(self)}",
                           self.front._html_table(self.coefficient_names))

    def front_table(self) -> pandas.DataFrame:
        """The front as a :class:`pandas.DataFrame` with the study's coefficient names
        (:meth:`Front.to_pandas`). Needs pandas (``pip install pandas``)."""
        return self.front.to_pandas(self.coefficient_names)

    def plot(self) -> Figure:
        """The front plot (what ``front.png`` shows: :func:`mapframe.plotting.front_figure`)
        as a matplotlib ``Figure``, which a notebook shows inline. Needs matplotlib."""
        from mapframe.plotting import front_figure

        return front_figure(self)

    def predict(self, coefficients: np.ndarray | Sequence[Sequence[float]] | Sequence[float]
                ) -> np.ndarray:
        """Surrogate predictions ``(M, T)`` for coefficient vectors ``(M, N)`` (an array or
        nested lists; one vector may be given flat); anything else is a one-line
        :class:`ConfigError`."""
        n = len(self.coefficient_names)
        try:
            C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        except (TypeError, ValueError):
            C = None
        if C is None or C.ndim != 2 or C.shape[1] != n:
            raise ConfigError(
                f"predict needs numbers in an array of shape (M, {n}) or ({n},) (one value "
                f"per coefficient: {', '.join(self.coefficient_names)}), got "
                f"{_describe(coefficients)}")
        return np.column_stack([s.predict(C) for s in self.surrogates])

    def select(self, preference: np.ndarray | Sequence[float],
               measured_only: bool | None = None) -> int:
        """Index of the front point with the best preference-weighted normalised score.

        Each task's best-known metric (``front.best_known``: real where measured, else
        predicted) is scaled to [0, 1] over the front (1 = best, whatever the direction), or
        over ``preference_bounds`` when the study fixed them, then weighted by
        ``preference`` (normalised to sum 1). With ``measured_only`` only points with real
        metrics can be chosen (all points when none has them). The default, ``None``,
        selects as the study does for its own preference: among the measured points when
        it verified (``verify > 0``), among all otherwise; so do ``export(preference=...)``,
        ``load_results(...).select``, ``mapframe export --preference`` and the report.
        """
        if measured_only is None:
            measured_only = bool(self.settings.get("verify"))
        return self.front.select(preference, self.preference_bounds, measured_only)

    def export(self, path: str | os.PathLike[str], index: int | None = None,
               preference: np.ndarray | Sequence[float] | None = None,
               format: str = "safetensors",
               max_shard_size: str | int | None = None) -> Path:
        """Save the merged model of front point ``index`` (or the one ``preference`` selects)
        and return its path: a safetensors file (``.safetensors`` appended to a path without
        a suffix), or the format the checkpoints' loader writes (the LLM plugin writes a
        Hugging Face model folder for a path without ``.safetensors``). Needs a study built
        from checkpoints.

        ``format="hf"`` writes a Hugging Face model folder with a model card (shards of at
        most ``max_shard_size``, e.g. ``"5GB"``), ``format="mergekit"`` the equivalent
        mergekit YAML (:mod:`mapframe.export`)."""
        if self.merge_spec is None:
            raise ConfigError(
                "this study has no checkpoints to merge (it used a black-box objective); "
                "export needs MergeStudy(..., checkpoints=...)"
            )
        if index is None:
            if preference is not None:
                index = self.select(preference)
            elif self.selected is not None:
                index = self.selected
            else:
                raise ConfigError("export needs a front index or a preference vector")
        index = check_front_index(index, len(self.front))
        if format != "safetensors":
            from mapframe.export import ExportPoint, export_point
            from mapframe.export.hf_folder import parse_size

            chosen = preference if preference is not None else (
                self.preference if index == self.selected else None)
            point = ExportPoint.from_front(
                self.front, index, self.merge_spec, self.study_name, self.coefficient_names,
                None if chosen is None else [float(x) for x in chosen])
            return export_point(point, self.merge_spec, path, format, None
                                if max_shard_size is None else parse_size(max_shard_size))
        from mapframe.export.point import prepare_safetensors_path

        prepare_safetensors_path(path)
        merger = self.merge_spec.build()
        return merger.export(path, self.front.coefficients[index],
                             self.front.export_metadata(index, self.study_name))

    def summary(self) -> dict[str, Any]:
        """A JSON-compatible summary: settings, counts, diagnostics, verification, selection."""
        sel = None
        if self.selected is not None:
            sel = {"index": self.selected, **self.front.rows(self.coefficient_names)[
                self.selected]}
        return {
            "study": self.study_name,
            "seed": self.seed,
            "tasks": [t.to_dict() for t in self.tasks],
            "search_space": self.space.to_dict(),
            "n_evaluated_this_run": self.n_evaluated,
            "n_reused_from_store": self.n_reused,
            "n_search_evaluations": len(self.history),
            "n_failed_or_invalid": len(self.history.failures),
            "front_size": len(self.front),
            "front_sources": self.front.counts(),
            "surrogates": self.diagnostics,
            "verification": self.verification,
            "preference": self.preference,
            "preference_bounds": self.preference_bounds,
            "selected": sel,
            "timings_s": self.timings,
            "rounds": self.rounds,
            "stopped_early": self.stopped_early,
            "stopping_trace": self.stopping_trace,
            "front_solver": self.solver_diagnostics,
            "warnings": self.warnings,
            "settings": self.settings,
        }

    def front_json(self) -> dict[str, Any]:
        """What ``front.json`` holds, which the study also stores in its store (study meta
        ``front``, beside ``summary``) when it finishes: the tasks, the coefficient names and
        the front's rows (:meth:`Front.rows`). :func:`mapframe.load_results` reads it back
        from either."""
        return {"tasks": [t.to_dict() for t in self.tasks],
                "coefficient_names": list(self.coefficient_names),
                "points": self.front.rows(self.coefficient_names)}

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> dict[str, Path]:
        """Write front.csv/json, evaluations.csv, surrogates.json, summary.json, front.png.

        ``summary.json`` is removed first and written after the files it describes, so a
        folder holding one holds the whole results of one save.

        A ``front.png`` or ``report.html`` an earlier save left in ``directory`` (another
        study's, or this one's before new evaluations) is removed unless this save writes it
        again (``front.png`` with ``plot``; ``mapframe run`` writes ``report.html`` after
        saving unless ``--no-report``): a folder never shows one study's plot beside
        another's results, nor ships it in an exported model card.

        Those names are common ones: a folder that is not a mapframe results folder (no
        ``.mapframe`` marker, which every save writes first, nor a ``summary.json`` with
        mapframe's fields, ...) holding one of them (the user's own ``report.html``, say)
        is refused with a one-line :class:`~mapframe.errors.ConfigError` before anything is
        written or removed."""
        from mapframe._foreign_files import mark_results_folder, refuse_foreign_files

        d = Path(directory).expanduser()
        refuse_foreign_files(d, SAVED_FILES, "give save() another folder")
        d.mkdir(parents=True, exist_ok=True)
        mark_results_folder(d)
        # summary.json goes first and comes back last: a save cut short (a kill) leaves a
        # folder without one, which load_results refuses as unfinished, never new front and
        # evaluations beside an older run's summary.
        for stale in ("summary.json", "front.png", "report.html"):
            with contextlib.suppress(FileNotFoundError):
                (d / stale).unlink()
        paths: dict[str, Path] = {}
        front_json = self.front_json()
        paths["front_csv"] = _write_csv(d / "front.csv", front_json["points"])
        paths["front_json"] = write_json(d / "front.json", front_json)
        ev_rows = []
        for ev in self.history:
            row: dict[str, Any] = {"phase": ev.phase, "status": ev.status, "round": ev.round}
            row.update({f"c_{n}": float(v) for n, v in zip(self.coefficient_names,
                                                           ev.coefficients)})
            for j, n in enumerate(self.task_names):
                v = None if ev.metrics is None else float(ev.metrics[j])
                row[n] = v
            row["duration_s"] = round(ev.duration, 6)
            row["error"] = (ev.error or "").splitlines()[0] if ev.error else ""
            ev_rows.append(row)
        paths["evaluations_csv"] = _write_csv(d / "evaluations.csv", ev_rows)
        paths["surrogates_json"] = write_json(d / "surrogates.json", self.diagnostics)
        paths["summary_json"] = write_json(d / "summary.json", self.summary())
        if plot:
            from mapframe.plotting import plot_front

            p = plot_front(self, d / "front.png")
            if p is not None:
                paths["front_png"] = p
        return paths


#: Every name :meth:`StudyResult.save` writes or removes in its folder (the marker first).
SAVED_FILES = (".mapframe", "summary.json", "front.png", "report.html", "front.csv",
               "front.json", "evaluations.csv", "surrogates.json")


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    buffer = io.StringIO(newline="")
    w = csv.DictWriter(buffer, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    return write_atomically(path, buffer.getvalue())


def write_json(path: Path, data: Any) -> Path:
    return write_atomically(
        path, json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")


def _describe(value: Any) -> str:
    """A short description of a value given where numbers were expected."""
    shape: tuple[int, ...] | None
    try:
        shape = np.shape(value)
    except ValueError:
        shape = None  # ragged nested lists
    text = " ".join(repr(value).split())  # one line (an array's repr has several)
    text = text if len(text) <= 60 else text[:57] + "..."
    return text if shape is None else f"{text} (shape {shape})"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _pandas(purpose: str) -> Any:
    """The ``pandas`` module, or a one-line :class:`MapframeError` saying how to install it
    (pandas is no dependency of mapframe)."""
    try:
        return importlib.import_module("pandas")
    except ImportError as exc:
        raise MapframeError(f"{purpose} needs the package 'pandas', which is not importable "
                            f"({exc}); install it with: pip install pandas") from exc


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def describe_tasks(names: Sequence[str], directions: Sequence[str], most: int = 6) -> str:
    """``a (max), b (min)``, long names cut, at most ``most`` tasks then how many more."""
    shown = [f"{_short(n)} ({d})" for n, d in zip(names[:most], directions[:most])]
    if len(names) > most:
        shown.append(f"… {len(names) - most} more")
    return ", ".join(shown) if shown else "none"


def _number(v: Any) -> str:
    """A metric or coefficient to 4 significant digits; empty when not known (NaN)."""
    v = float(v)
    return f"{v:.4g}" if np.isfinite(v) else ""


def result_facts(result: Any) -> str:
    """One line of a :class:`StudyResult`'s (or a saved one's) key facts."""
    front: Front = result.front
    counts = front.counts()
    name = (result.study_name if isinstance(result, StudyResult)
            else str(result.summary.get("study", "")))
    line = (f"{_short(name, 40)!r}: tasks "
            f"{describe_tasks(result.task_names, front.directions)}; front {len(front)} points "
            f"({counts['verified']} verified, {counts['measured']} measured)")
    if isinstance(result, StudyResult):
        line += f"; {result.n_evaluated} new evaluations, {result.n_reused} reused"
        warned = len(result.warnings)
    else:
        summary = result.summary
        line += (f"; {summary.get('n_evaluated_this_run', '?')} new evaluations, "
                 f"{summary.get('n_reused_from_store', '?')} reused")
        warned = len(summary.get("warnings") or [])
    if result.selected is not None:
        line += f"; selected {result.selected}"
    if warned:
        line += f"; {warned} warning{'s' if warned != 1 else ''}"
    return line


def html_block(header: str, table: str) -> str:
    """A notebook's view of a result: its one-line ``header`` (escaped) above ``table``."""
    return (f'<div class="mapframe"><p><code>{html.escape(header)}</code></p>'
            f"{table}</div>")
