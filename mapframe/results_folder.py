"""A finished study's results, read back from its results folder or its store: its front,
selection and merged models.

``mapframe run`` (and ``mapframe example``) write ``front.json``, ``summary.json`` and
``config.yaml`` (the study's config with absolute paths) into the results folder; every
finished study also stores its summary and front (``front.json``'s content) in its store.
:func:`load_results` reads either back, so a front point can be selected for a new
preference and exported as a merged model without running the study again::

    saved = mapframe.load_results("results/digits")
    i = saved.select([0.7, 0.3])
    saved.export("merged.safetensors", index=i)

    saved = mapframe.load_results("evaluations.sqlite", study="digits")  # no folder needed
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import CheckpointError, ConfigError, MapframeError
from mapframe.merging.checkpoints import PickleRefusedError
from mapframe.problem import Task
from mapframe.results import Front, check_front_index, html_block, result_facts

if TYPE_CHECKING:
    import pandas
    from matplotlib.figure import Figure

    from mapframe.storage.manage import StoredRun

__all__ = ["SavedResults", "load_results"]


@dataclass
class SavedResults:
    """What a results folder holds: the front (with which points are measured), the tasks,
    the summary, and the config that can rebuild the merge.

    Read from a store (``store`` is its file), ``directory`` is the store's folder and
    ``config`` is ``None``: a store keeps no config, so :meth:`export` needs the results
    folder (its ``config.yaml``) or the study itself."""

    directory: Path
    tasks: list[Task]
    coefficient_names: list[str]
    front: Front
    summary: dict[str, Any]
    config: dict[str, Any] | None
    store: Path | None = None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def __repr__(self) -> str:
        return f"<SavedResults {result_facts(self)}; from {self._origin()}>"

    def _repr_html_(self) -> str:
        """A notebook's view: the study's key facts, where they were read, and the front's
        first rows."""
        return html_block(f"SavedResults {result_facts(self)}; from {self._origin()}",
                           self.front._html_table(self.coefficient_names))

    def _origin(self) -> str:
        return f"store {self.store}" if self.store is not None else f"folder {self.directory}"

    def front_table(self) -> pandas.DataFrame:
        """The front as a :class:`pandas.DataFrame` with the study's coefficient names
        (:meth:`Front.to_pandas <mapframe.results.Front.to_pandas>`). Needs pandas (``pip
        install pandas``)."""
        return self.front.to_pandas(self.coefficient_names)

    def plot(self) -> Figure:
        """The front plot as a matplotlib ``Figure`` (:func:`mapframe.plotting.front_figure`),
        which a notebook shows inline. Needs matplotlib.

        The search evaluations drawn in grey come from the folder's ``evaluations.csv``, or
        from the store for results read from one (every evaluation of the study stored
        there); where neither can be read, only the front and the selection are drawn."""
        from mapframe.plotting import front_figure

        return front_figure(self)

    def _search_metrics(self) -> np.ndarray | None:
        """``(M, T)``: the metrics of the study's successful search evaluations, read from
        the folder's ``evaluations.csv`` (or from the store), or ``None`` when they cannot
        be read (what :meth:`plot` draws in grey)."""
        names = self.task_names
        try:
            if self.store is not None:
                from mapframe.storage.manage import export_study

                rows = export_study(self.store, str(self.summary.get("study", "")))
                keys = [n if rows and n in rows[0] else f"metric_{n}" for n in names]
            else:
                import csv

                with open(self.directory / "evaluations.csv", encoding="utf-8",
                          newline="") as fh:
                    rows = list(csv.DictReader(fh))
                keys = names
            found = [[float(r[k]) for k in keys] for r in rows
                     if r.get("phase") == "search" and r.get("status") == "ok"]
        except (OSError, ValueError, TypeError, KeyError, MapframeError):
            return None
        return np.array(found, dtype=float).reshape(len(found), len(names))

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
               max_shard_size: str | int | None = None, allow_pickle: bool = False) -> Path:
        """Save the merged model of front point ``index`` (default: the one ``preference``
        selects, else the study's own selection) to ``path``, as
        :meth:`StudyResult.export <mapframe.results.StudyResult.export>` does.

        ``format`` is one of :data:`mapframe.export.EXPORT_FORMATS`: ``safetensors`` (one
        file, or the checkpoints' own format for a path without a suffix), ``hf`` (a
        Hugging Face model folder with a model card and the front plot, shards of at most
        ``max_shard_size``, e.g. ``"5GB"``) or ``mergekit`` (a mergekit YAML).

        Only the merge is rebuilt from ``config.yaml`` (checkpoints and merge strategy;
        relative paths are the folder's): the evaluator is not built, unless its registered
        class adapts or reads the checkpoints itself (the vision and LLM plugins'). A config
        that would merge another model than the front's (other checkpoints or another order
        of them, another merge strategy, checkpoint files changed since the run, as
        ``summary.json`` recorded them) is a one-line :class:`ConfigError`. The
        config's ``allow_pickle`` is not honoured: torch checkpoints that need full
        unpickling are refused unless ``allow_pickle=True`` (unpickling runs code from the
        file: only for a folder you trust).
        """
        if index is None:
            index = self.select(preference) if preference is not None else self.selected
        chosen = preference
        if chosen is None and index is not None and index == self.selected:
            chosen = self.summary.get("preference")
        if index is None:
            raise ConfigError("this study selected no point (it had no preference): give "
                              "--point INDEX (a row of front.csv; index= in Python) or "
                              "--preference (preference=)")
        index = check_front_index(index, len(self.front), f"the front in {self.directory}")
        spec = self._merge_spec(allow_pickle)
        try:
            return self._export(spec, path, index, chosen, format, max_shard_size)
        except PickleRefusedError as exc:
            raise CheckpointError(
                f"{exc.path}: refused to unpickle this checkpoint (unpickling runs code "
                "from the file, and a results folder's config.yaml cannot allow it): pass "
                "--allow-pickle (allow_pickle=True in Python) only for a folder you trust, "
                "or convert the checkpoint to safetensors") from None

    def _export(self, spec: Any, path: str | os.PathLike[str], index: int,
                chosen: list[float] | None, format: str,
                max_shard_size: str | int | None) -> Path:
        if format != "safetensors":
            from mapframe.export import ExportPoint, export_point
            from mapframe.export.hf_folder import parse_size

            # a store's folder may hold another study's plot: only a results folder's is ours
            png = None if self.store is not None else self.directory / "front.png"
            point = ExportPoint.from_front(
                self.front, index, spec, str(self.summary.get("study", "")),
                self.coefficient_names, chosen, png if png is not None and png.is_file()
                else None)
            return export_point(point, spec, path, format, None if max_shard_size is None
                                else parse_size(max_shard_size))
        from mapframe.export.point import prepare_safetensors_path

        prepare_safetensors_path(path)
        meta = self.front.export_metadata(index, str(self.summary.get("study", "")))
        return spec.build().export(path, self.front.coefficients[index], meta)

    def _merge_spec(self, allow_pickle: bool = False) -> Any:
        no_model = ConfigError(
            "this study has no checkpoints to merge (it used a black-box objective), so "
            "there is no model to export")
        if self.config is None and self.store is not None:
            if not (self.summary.get("settings") or {}).get("merge"):
                raise no_model
            raise ConfigError(
                f"these results were read from the store {self.store}, which keeps no config "
                "to rebuild the merge from: export from the study's results folder (mapframe "
                "export RESULTS_DIR, or load_results(RESULTS_DIR), which reads its "
                "config.yaml), or in Python from MergeStudy(...).run() with the same config "
                "and storage (it reuses every stored evaluation) and StudyResult.export")
        if self.config is None:
            raise ConfigError(
                f"{self.directory} has no config.yaml (results written by an older mapframe, "
                "or by StudyResult.save): export from the study's own result instead "
                "(StudyResult.export), or rerun it with the same config (it resumes from the "
                "store, nothing is evaluated again)")
        if not any(key in self.config for key in ("checkpoints", "mergekit")):
            # said before reading the rest of the config: a black-box study's folder has
            # nothing to export, whatever its evaluator names
            raise no_model
        from mapframe.assembly import saved_merge_spec
        from mapframe.mergekit_config import expand_mergekit
        from mapframe.spec import StudySpec

        # Only the merge is built, not the study: a folder someone sent must not make export
        # import what its evaluator names (a callable's module); relative paths are the
        # folder's, not the current directory's.
        source = str(self.directory / "config.yaml")
        spec = StudySpec.from_config(expand_mergekit(self.config, self.directory, source),
                                     base_dir=self.directory, source=source)
        merge = saved_merge_spec(spec, allow_pickle=allow_pickle)
        if merge is None:
            raise no_model
        self._check_merge_is_the_fronts(merge)
        return merge

    def _check_merge_is_the_fronts(self, merge: Any) -> None:
        """A one-line :class:`ConfigError` when the merge ``config.yaml`` rebuilds is not the
        one whose front ``front.json`` holds: other fine-tuned checkpoints (names or their
        order: the coefficients are applied by position), another merge strategy or other
        settings of it, or checkpoint files that changed since the study ran (their size and
        modification time, or their SHA-256 with ``checkpoints.fingerprint: hash``, as the
        run's ``summary.json`` recorded them). Paths are not compared: a folder moved with
        its checkpoints (relative paths in its config) still exports."""
        fix = ("restore the study's config.yaml (and checkpoints), or rerun the study to "
               "write its results again")
        where = self.directory / "config.yaml"
        names = list(merge.finetuned)  # a config's merge is of checkpoint files
        if names != list(self.coefficient_names):
            raise ConfigError(
                f"{where} does not match the front in {self.directory / 'front.json'}: it "
                f"merges the checkpoints {', '.join(names) or '(none)'}, the front's "
                f"coefficients are {', '.join(self.coefficient_names)} (config.yaml was "
                f"edited or overwritten after the study wrote its results): {fix}")
        recorded = (self.summary.get("settings") or {}).get("merge")
        if not isinstance(recorded, dict):
            return  # results of an older mapframe: only the names can be checked
        current = merge.describe()
        old_strategy, new_strategy = recorded.get("strategy"), current.get("strategy")
        if isinstance(old_strategy, dict) and isinstance(new_strategy, dict):
            changed = sorted(k for k in set(old_strategy) & set(new_strategy)
                             if _json(old_strategy[k]) != _json(new_strategy[k]))
            if changed:
                raise ConfigError(
                    f"{where} does not match the front in {self.directory / 'front.json'}: "
                    f"its merge strategy is {_json(new_strategy)}, the study ran "
                    f"{_json(old_strategy)} (config.yaml was edited or overwritten after "
                    f"the study wrote its results): {fix}")
        files = [("pretrained", recorded.get("pretrained"), current.get("pretrained"))]
        old_ft, new_ft = recorded.get("finetuned"), current.get("finetuned")
        if isinstance(old_ft, dict) and isinstance(new_ft, dict):
            files += [(f"fine-tuned {name!r}", old_ft.get(name), new_ft.get(name))
                      for name in names]
        for what, old, new in files:
            field = _changed_checkpoint(old, new)
            if field is not None and isinstance(old, dict) and isinstance(new, dict):
                raise ConfigError(
                    f"the {what} checkpoint {new.get('path')} that {where} names is not "
                    f"the file the study merged ({old.get('path')}; its {field} differs "
                    "from the one summary.json recorded), so the exported model would not "
                    f"be the front's: {fix} (a copy of the same weights passes when copied "
                    "with its modification time, e.g. cp -p)")


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


#: What identifies a checkpoint file in a study's fingerprint (``MergeSpec.describe``): its
#: SHA-256 (``fingerprint: hash``), size and modification time, or a folder's digest of its
#: files' sizes and times. Not its path, which a moved folder changes.
_CHECKPOINT_IDENTITY = ("sha256", "size", "mtime_ns", "files", "digest")


def _changed_checkpoint(old: Any, new: Any) -> str | None:
    """The first field of :data:`_CHECKPOINT_IDENTITY` that both descriptions of a
    checkpoint have and that differs (``None`` when none does, or one is missing)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    for field in _CHECKPOINT_IDENTITY:
        if (old.get(field) is not None and new.get(field) is not None
                and _json(old[field]) != _json(new[field])):
            return {"sha256": "SHA-256", "mtime_ns": "modification time",
                    "files": "number of files", "digest": "files' sizes and times"
                    }.get(field, field)
    return None


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


def load_results(path: str | os.PathLike[str], study: str | None = None) -> SavedResults:
    """Read a finished study's results: a results folder written by ``mapframe run`` /
    ``mapframe example`` (or by :meth:`StudyResult.save
    <mapframe.results.StudyResult.save>` plus a ``config.yaml``), or an SQLite store, which
    keeps the front and summary of every study's last finished run.

    ``study`` picks the study of a store (default: its only finished study; a store with
    several needs it); for a results folder it must be the folder's study, or ``None``.
    Read from a store, the results have no ``config`` (:class:`SavedResults`). A one-line
    :class:`~mapframe.errors.ConfigError` naming the fix when the study has not finished,
    or finished under a mapframe that stored no front."""
    import yaml

    d = Path(path).expanduser()
    if d.is_file():
        return _load_from_store(d, study)
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
    if study is not None and summary.get("study") != study:
        raise ConfigError(
            f"{d} holds the results of study {summary.get('study')!r}, not {study!r}: give "
            f"that study's results folder, or its store with study={study!r}, or leave "
            "study out")
    config = None
    cfg_path = d / "config.yaml"
    if cfg_path.is_file():
        config = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
    return SavedResults(d, tasks, cnames, front, summary, config)


def _load_from_store(store: Path, study: str | None) -> SavedResults:
    """:func:`load_results` of the SQLite store ``store``: the front and summary its study
    stored when it finished (:func:`~mapframe.storage.manage.read_stored_run`)."""
    from mapframe.storage.manage import read_stored_run

    return saved_from_run(store, read_stored_run(store, study))


def saved_from_run(store: Path, run: StoredRun) -> SavedResults:
    """The :class:`SavedResults` of a finished run read from the store ``store`` (its front
    must be stored: :func:`~mapframe.storage.manage.read_stored_run` checks)."""
    if run.front is None:
        raise ConfigError(f"study {run.study!r} in {store} has no stored front; rerun the "
                          "study (it reuses every stored evaluation) or load its results "
                          "folder")
    try:
        tasks, cnames, front = _front_of(run.front)
    except (KeyError, TypeError, ValueError) as exc:
        what = f"no field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise ConfigError(f"cannot read the front stored for study {run.study!r} in {store} "
                          f"({type(exc).__name__}: {what}); rerun the study (it reuses every "
                          "stored evaluation) to store it again") from None
    return SavedResults(store.parent, tasks, cnames, front, run.summary, None, store)
