"""A finished study's results folder, read back: its front, selection and merged models.

``mapframe run`` (and ``mapframe example``) write ``front.json``, ``summary.json`` and
``config.yaml`` (the study's config with absolute paths) into the results folder.
:func:`load_results` reads them back, so a front point can be selected for a new preference
and exported as a merged model without running the study again::

    saved = mapframe.load_results("results/digits")
    i = saved.select([0.7, 0.3])
    saved.export("merged.safetensors", index=i)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mapframe.errors import ConfigError
from mapframe.problem import Task
from mapframe.results import Front, check_front_index

__all__ = ["SavedResults", "load_results"]


@dataclass
class SavedResults:
    """What a results folder holds: the front (with which points are measured), the tasks,
    the summary, and the config that can rebuild the merge."""

    directory: Path
    tasks: list[Task]
    coefficient_names: list[str]
    front: Front
    summary: dict[str, Any]
    config: dict[str, Any] | None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    @property
    def selected(self) -> int | None:
        """The front index the study selected for its own preference, if any."""
        sel = self.summary.get("selected")
        return None if not sel else int(sel["index"])

    def select(self, preference: list[float] | np.ndarray) -> int:
        """The front index a new ``preference`` selects, as the study would: best-known
        metrics scaled over the front (or the study's ``preference_bounds``),
        preference-weighted, among the measured points when the study verified."""
        pref = np.asarray(preference, dtype=float).reshape(-1)
        if pref.size != len(self.tasks) or not np.all(np.isfinite(pref)) or np.any(pref < 0):
            raise ConfigError(
                f"a preference needs {len(self.tasks)} non-negative weights (tasks "
                f"{', '.join(self.task_names)}), got {np.asarray(preference).tolist()}")
        verified = bool(self.summary.get("settings", {}).get("verify"))
        return self.front.select(pref, self.summary.get("preference_bounds"), verified)

    def export(self, path: str | os.PathLike[str], index: int | None = None,
               preference: list[float] | None = None, format: str = "safetensors",
               max_shard_size: str | int | None = None) -> Path:
        """Save the merged model of front point ``index`` (default: the one ``preference``
        selects, else the study's own selection) to ``path``, as
        :meth:`StudyResult.export <mapframe.results.StudyResult.export>` does.

        ``format`` is one of :data:`mapframe.export.EXPORT_FORMATS`: ``safetensors`` (one
        file, or the checkpoints' own format for a path without a suffix), ``hf`` (a
        Hugging Face model folder with a model card and the front plot, shards of at most
        ``max_shard_size``, e.g. ``"5GB"``) or ``mergekit`` (a mergekit YAML).
        """
        if index is None:
            index = self.select(preference) if preference is not None else self.selected
        chosen = preference
        if chosen is None and index is not None and index == self.selected:
            chosen = self.summary.get("preference")
        if index is None:
            raise ConfigError("this study selected no point (it had no preference): give "
                              "--point INDEX (a row of front.csv) or --preference")
        index = check_front_index(index, len(self.front), f"the front in {self.directory}")
        spec = self._merge_spec()
        if format != "safetensors":
            from mapframe.export import ExportPoint, export_point
            from mapframe.export.hf_folder import parse_size

            png = self.directory / "front.png"
            point = ExportPoint.from_front(
                self.front, index, spec, str(self.summary.get("study", "")),
                self.coefficient_names, chosen, png if png.is_file() else None)
            return export_point(point, spec, path, format, None if max_shard_size is None
                                else parse_size(max_shard_size))
        from mapframe.export.point import prepare_safetensors_path

        prepare_safetensors_path(path)
        meta = self.front.export_metadata(index, str(self.summary.get("study", "")))
        return spec.build().export(path, self.front.coefficients[index], meta)

    def _merge_spec(self) -> Any:
        if self.config is None:
            raise ConfigError(
                f"{self.directory} has no config.yaml (results written by an older mapframe, "
                "or by StudyResult.save): export from the study's own result instead "
                "(StudyResult.export), or rerun it with the same config (it resumes from the "
                "store, nothing is evaluated again)")
        no_model = ConfigError(
            "this study has no checkpoints to merge (it used a black-box objective), so "
            "there is no model to export")
        if not any(key in self.config for key in ("checkpoints", "mergekit")):
            # said before building the study: that imports the objective, and a black-box
            # study's module missing from PYTHONPATH gave advice that led only here
            raise no_model
        from mapframe.config import build_study

        study, _ = build_study(self.config)
        if getattr(study, "merge_spec", None) is None:
            raise no_model
        return study.merge_spec


def _front_of(front_json: Any) -> tuple[list[Task], list[str], Front]:
    """The tasks, coefficient names and front a ``front.json`` holds. Rows written before
    the front recorded each point's source (``"source"``) get it inferred, as for a front
    built without one (a point with real metrics was verified)."""
    tasks = [Task(**t) for t in front_json["tasks"]]
    names = [t.name for t in tasks]
    cnames = list(front_json["coefficient_names"])
    rows = front_json["points"]

    def column(prefix: str, keys: list[str]) -> np.ndarray:
        return np.array([[np.nan if r.get(f"{prefix}{k}") is None else r[f"{prefix}{k}"]
                          for k in keys] for r in rows], dtype=float).reshape(len(rows),
                                                                            len(keys))

    std = column("std_", names) if rows and f"std_{names[0]}" in rows[0] else None
    sources = [r.get("source") for r in rows]
    front = Front(column("c_", cnames), column("predicted_", names), column("real_", names),
                  names, [t.direction for t in tasks], predicted_std=std,
                  source=None if None in sources else sources)
    return tasks, cnames, front


#: What :meth:`StudyResult.save <mapframe.results.StudyResult.save>` writes before
#: ``summary.json`` (which it writes last).
_SAVED_FIRST = ("front.csv", "front.json", "evaluations.csv", "surrogates.json")


def load_results(directory: str | os.PathLike[str]) -> SavedResults:
    """Read a results folder written by ``mapframe run`` / ``mapframe example`` (or by
    :meth:`StudyResult.save <mapframe.results.StudyResult.save>` plus a ``config.yaml``)."""
    import yaml

    d = Path(directory)
    if not d.is_dir():
        raise ConfigError(f"results folder not found: {d} (give the study's output folder)")
    front_path, summary_path = d / "front.json", d / "summary.json"
    if (d / "nested.json").is_file() and not front_path.is_file():
        raise ConfigError(
            f"{d} holds a Nested MAP tournament (nested.json): one merged model, not a front "
            f"to choose from; its model is {d / 'merged.safetensors'} (written with nested "
            "export: true), or call NestedResult.export(path) in Python")
    missing = [p.name for p in (front_path, summary_path) if not p.is_file()]
    written = [name for name in _SAVED_FIRST if (d / name).is_file()]
    if not summary_path.is_file() and written:
        raise ConfigError(
            f"the results in {d} are unfinished: the run that wrote them stopped before "
            f"writing summary.json (it has {', '.join(written)}); run the study again to "
            "write them (its evaluations are reused from the store)")
    if missing:
        raise ConfigError(f"{d} is not a mapframe results folder (no {', '.join(missing)}); "
                          "give the folder a finished study wrote its results to")
    try:
        front_json = json.loads(front_path.read_text(encoding="utf-8"))
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the results in {d} ({exc})") from None
    try:
        tasks, cnames, front = _front_of(front_json)
    except (KeyError, TypeError, ValueError) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"cannot read {front_path} ({type(exc).__name__}: {what}); it was "
                          "not written by mapframe's StudyResult.save, or was edited: rerun "
                          "the study (its evaluations are reused from the store) to write it "
                          "again") from None
    config = None
    cfg_path = d / "config.yaml"
    if cfg_path.is_file():
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    return SavedResults(d, tasks, cnames, front, summary, config)
