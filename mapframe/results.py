"""What a study returns: the amortised Pareto front and everything needed to use it."""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import ConfigError
from mapframe.history import History
from mapframe.problem import SearchSpace, Task

if TYPE_CHECKING:
    from mapframe.executors.base import MergeSpec
    from mapframe.surrogates.base import Surrogate

__all__ = ["Front", "StudyResult"]


@dataclass
class Front:
    """The amortised Pareto front: K coefficient vectors with predicted (and real) metrics.

    ``real`` holds the metrics measured for points that were verified and NaN elsewhere.
    Rows are sorted by the first task's predicted metric.
    """

    coefficients: np.ndarray
    predicted: np.ndarray
    real: np.ndarray
    task_names: list[str]
    directions: list[str]
    #: ``(K, T)`` predictive standard deviations of ``predicted`` (surrogates that report
    #: their uncertainty, such as ``gp``), else ``None``.
    predicted_std: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.coefficients.shape[0])

    @property
    def verified(self) -> np.ndarray:
        """Boolean mask of the rows evaluated for real."""
        return np.all(np.isfinite(self.real), axis=1)

    def rows(self, coefficient_names: list[str] | None = None) -> list[dict[str, Any]]:
        """The front as a list of flat dicts (one per point), as written to CSV."""
        cnames = coefficient_names or [f"c{i}" for i in range(self.coefficients.shape[1])]
        out = []
        for k in range(len(self)):
            row: dict[str, Any] = {"index": k}
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


@dataclass
class StudyResult:
    """The outcome of :meth:`MergeStudy.run`.

    ``front`` is the amortised Pareto front; ``history`` every evaluation of the study;
    ``diagnostics`` the surrogates' fit quality per task (R², leave-one-out R², ...);
    ``verification`` the predicted-vs-real error on verified front points (if any);
    ``selected`` the index of the front point chosen for ``preference`` (if given).
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

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def predict(self, coefficients: np.ndarray) -> np.ndarray:
        """Surrogate predictions ``(M, T)`` for coefficient vectors ``(M, N)``."""
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        return np.column_stack([s.predict(C) for s in self.surrogates])

    def select(self, preference: np.ndarray | list[float]) -> int:
        """Index of the front point with the best preference-weighted normalised score.

        Each task's predicted metric is scaled to [0, 1] over the front (1 = best, whatever
        the direction), or over ``preference_bounds`` when the study fixed them, then
        weighted by ``preference`` (normalised to sum 1).
        """
        from mapframe.metrics import select_by_preference

        lo, hi = self.preference_bounds or (None, None)
        return int(select_by_preference(self.front.predicted, preference,
                                        [t.direction for t in self.tasks], lo, hi))

    def export(self, path: str | os.PathLike[str], index: int | None = None,
               preference: list[float] | None = None) -> Path:
        """Save the merged model of front point ``index`` (or the one ``preference`` selects)
        and return its path: a safetensors file (``.safetensors`` appended to a path without
        a suffix), or the format the checkpoints' loader writes (the LLM plugin writes a
        Hugging Face model folder for a path without ``.safetensors``). Needs a study built
        from checkpoints."""
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
        if not 0 <= index < len(self.front):
            raise ConfigError(f"front index {index} out of range: the front has "
                              f"{len(self.front)} points")
        merger = self.merge_spec.build()
        c = self.front.coefficients[index]
        meta = {"mapframe.study": self.study_name,
                "mapframe.predicted": dict(zip(self.task_names,
                                               self.front.predicted[index].tolist()))}
        return merger.export(path, c, meta)

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
            "surrogates": self.diagnostics,
            "verification": self.verification,
            "preference": self.preference,
            "selected": sel,
            "timings_s": self.timings,
            "rounds": self.rounds,
            "stopped_early": self.stopped_early,
            "stopping_trace": self.stopping_trace,
            "settings": self.settings,
        }

    def save(self, directory: str | os.PathLike[str], plot: bool = True) -> dict[str, Path]:
        """Write front.csv/json, evaluations.csv, surrogates.json, summary.json, front.png."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Path] = {}
        rows = self.front.rows(self.coefficient_names)
        paths["front_csv"] = _write_csv(d / "front.csv", rows)
        front_json = {"tasks": [t.to_dict() for t in self.tasks],
                      "coefficient_names": self.coefficient_names, "points": rows}
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


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    fields: list[str] = []
    for r in rows:
        fields.extend(k for k in r if k not in fields)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})
    os.replace(tmp, path)
    return path


def write_json(path: Path, data: Any) -> Path:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_json_default, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)
