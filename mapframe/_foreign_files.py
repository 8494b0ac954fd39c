"""Which folders are mapframe's results folders, so that saving never replaces a user's files.

A results folder's file names (``config.yaml``, ``summary.json``, ``front.csv``,
``report.html``, ...) are common ones: saving into a folder of the user's own that holds
such a file used to replace it (or delete it) without a word. Before anything is written
or removed there, :func:`refuse_foreign_files` checks the names about to be written or
removed: none may exist unless the folder is a mapframe results folder
(:func:`is_results_folder`) or that file is recognisably mapframe's (:func:`is_own_file`).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError

#: The marker every save writes first into its folder (a folder holding it is mapframe's).
MARKER_NAME = ".mapframe"
_MARKER_TEXT = "mapframe results folder (format 1): mapframe may replace its result files\n"

#: The keys every ``summary.json`` (:meth:`StudyResult.summary`) has had, every version.
_SUMMARY_KEYS = ("study", "tasks", "front_size", "settings")
_FRONT_KEYS = ("tasks", "coefficient_names", "points")
_NESTED_KEYS = ("study", "mode", "tree")
_EVALUATIONS_HEADER = "phase,status,round"


def _json_has(path: Path, keys: Iterable[str]) -> bool:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and all(k in data for k in keys)


def _starts_with(path: Path, text: str, size: int = 4096) -> bool:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return text in fh.read(size)
    except OSError:
        return False


def _first_line(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", errors="replace") as fh:
            return fh.readline(65536)
    except OSError:
        return ""


def _config_names_folder(path: Path, folder: Path) -> bool:
    """Whether ``path`` is a config whose ``study.output`` is ``folder`` (the config
    ``mapframe run`` writes there holds its results folder as ``.``, relative to the
    config's folder; older versions wrote it as an absolute path)."""
    import yaml

    try:
        cfg: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        output = cfg["study"]["output"]
        return (isinstance(output, str) and bool(output)
                and (path.parent / output).resolve() == folder.resolve())
    except Exception:  # unreadable, not YAML, not a mapping, no study.output: not ours
        return False


def is_own_file(path: Path) -> bool:
    """Whether the file ``path`` is recognisably one mapframe wrote into its folder."""
    name, folder = path.name, path.parent
    if name == MARKER_NAME:
        return _starts_with(path, "mapframe results folder")
    if name == "summary.json":
        return _json_has(path, _SUMMARY_KEYS)
    if name == "front.json":
        return _json_has(path, _FRONT_KEYS)
    if name == "nested.json":
        return _json_has(path, _NESTED_KEYS)
    if name == "evaluations.csv":
        return _starts_with(path, _EVALUATIONS_HEADER, len(_EVALUATIONS_HEADER))
    if name == "front.csv":
        header = _first_line(path)
        return header.startswith("index,") and ",c_" in header and ",predicted_" in header
    if name == "config.yaml":
        return _config_names_folder(path, folder)
    if name == "report.html":
        return _starts_with(path, "<title>mapframe report")
    return False


#: The files whose presence (each recognisably mapframe's) makes a folder a results folder.
_TELLING = (MARKER_NAME, "summary.json", "front.json", "nested.json", "front.csv",
            "evaluations.csv", "config.yaml")


def is_results_folder(folder: Path) -> bool:
    """Whether ``folder`` is a mapframe results folder: it holds the marker every save
    writes first (``.mapframe``), or a ``summary.json`` / ``front.json`` / ``nested.json`` /
    ``front.csv`` / ``evaluations.csv`` with mapframe's fields, or a ``config.yaml`` whose
    ``study.output`` is this folder (what older versions, and their saves cut short, leave)."""
    return any(is_own_file(folder / name) for name in _TELLING)


def refuse_foreign_files(folder: Path, names: Iterable[str], fix: str) -> None:
    """A one-line :class:`ConfigError` when one of ``names`` exists in ``folder`` and would
    be replaced or removed, ``folder`` not being a mapframe results folder and that file not
    being recognisably mapframe's. ``fix`` says what to do instead (another folder)."""
    if not folder.is_dir():
        return
    present = [n for n in dict.fromkeys(names) if (folder / n).exists() or
               (folder / n).is_symlink()]
    if not present or is_results_folder(folder):
        return
    foreign = [n for n in present if not is_own_file(folder / n)]
    if not foreign:
        return
    if len(foreign) == 1:
        what, it = f"{folder / foreign[0]} is not mapframe's and", "it"
    else:
        what, it = f"{folder} holds files that are not mapframe's ({', '.join(foreign)}),", "them"
    raise ConfigError(
        f"{what} writing mapframe's results there would replace or remove {it} ({folder} is "
        f"not a mapframe results folder): {fix}, or move {it} out of that folder")


def mark_results_folder(folder: Path) -> None:
    """Write the marker (first, before any result file) that makes ``folder`` mapframe's."""
    from mapframe.results import write_atomically

    marker = folder / MARKER_NAME
    if not is_own_file(marker):
        with contextlib.suppress(IsADirectoryError):
            write_atomically(marker, _MARKER_TEXT)
