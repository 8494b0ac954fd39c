"""One front point to export: what it merges and what is known about it.

:class:`ExportPoint` gathers, from a study's result or a results folder, everything the
export formats need (the checkpoints, the strategy, the coefficients, predicted and
measured metrics, the preference); :func:`export_point` writes it in one of
:data:`EXPORT_FORMATS`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    from mapframe.executors.base import MergeSpec
    from mapframe.results import Front

__all__ = ["EXPORT_FORMATS", "ExportPoint", "export_point", "hub_api", "push_to_hub"]

#: ``safetensors``: one file (or the checkpoints' own format for a path without a suffix);
#: ``hf``: a Hugging Face model folder with a model card; ``mergekit``: a mergekit YAML.
EXPORT_FORMATS = ("safetensors", "hf", "mergekit")


@dataclass
class ExportPoint:
    """A front point and its context, as the export formats and the model card read it."""

    #: ``strategy.describe()``: ``{"name": ..., **settings}``.
    strategy: dict[str, Any]
    #: One coefficient per fine-tuned checkpoint (``finetuned``'s order).
    coefficients: list[float]
    #: Paths of the pretrained checkpoint and of each fine-tune (``None``: loaded task
    #: vectors without paths).
    pretrained: str | None
    finetuned: dict[str, str]
    task_names: list[str]
    directions: list[str]
    #: Surrogate predictions at the point, and measured metrics where it was evaluated.
    predicted: list[float]
    real: list[float] | None = None
    study: str = ""
    #: Row of front.csv, and where the point comes from (``predicted``, ``verified``,
    #: ``measured``).
    index: int | None = None
    source: str | None = None
    preference: list[float] | None = None
    #: The results folder's front plot, copied into an HF folder when given.
    front_png: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_front(cls, front: Front, index: int, merge_spec: MergeSpec, study: str,
                   coefficient_names: list[str], preference: list[float] | None = None,
                   front_png: Path | None = None) -> ExportPoint:
        """Point ``index`` of ``front``, merged as ``merge_spec`` says."""
        c = [float(x) for x in front.coefficients[index]]
        finetuned = {str(k): str(v) for k, v in merge_spec.finetuned.items()}
        if not finetuned:
            finetuned = {n: "" for n in coefficient_names}
        real = [float(x) for x in front.real[index]] if front.measured[index] else None
        return cls(strategy=merge_spec.strategy.describe(), coefficients=c,
                   pretrained=merge_spec.pretrained, finetuned=finetuned,
                   task_names=list(front.task_names), directions=list(front.directions),
                   predicted=[float(x) for x in front.predicted[index]], real=real,
                   study=study, index=index,
                   source=front.source[index] if front.source else None,
                   preference=None if preference is None else [float(p) for p in preference],
                   front_png=front_png)

    def metadata(self) -> dict[str, Any]:
        """What an exported model records about itself (``mapframe_merge.json``)."""
        meta: dict[str, Any] = {
            "pretrained": self.pretrained, "finetuned": self.finetuned,
            "mapframe.study": self.study, "mapframe.source": self.source,
            "mapframe.index": self.index,
            "mapframe.merge_strategy": self.strategy,
            "mapframe.coefficients": dict(zip(self.finetuned, self.coefficients)),
            "mapframe.predicted": dict(zip(self.task_names, self.predicted))}
        if self.real is not None:
            meta["mapframe.real"] = dict(zip(self.task_names, self.real))
        if self.preference is not None:
            meta["mapframe.preference"] = self.preference
        return meta

    def mergekit(self) -> tuple[dict[str, Any] | None, str | None]:
        """The point's mergekit configuration, or ``(None, why not)``."""
        from mapframe.export.mergekit_yaml import mergekit_config

        if self.pretrained is None or not all(self.finetuned.values()):
            return None, ("the study merged task vectors given in memory, without checkpoint "
                          "paths mergekit could read")
        try:
            return mergekit_config(self.strategy, self.coefficients, self.pretrained,
                                   self.finetuned), None
        except ConfigError as exc:
            return None, str(exc)

    def mergekit_header(self) -> list[str]:
        """Comment lines for a mergekit YAML of this point."""
        what = f"front point {self.index}" if self.index is not None else "a merge"
        lines = [f"mergekit configuration of {what} of mapframe study {self.study!r}"
                 f" ({self.source or 'point'}), strategy {self.strategy.get('name')}",
                 "coefficients: " + ", ".join(
                     f"{n}={c:.6g}" for n, c in zip(self.finetuned, self.coefficients)),
                 "run: mergekit-yaml THIS_FILE OUTPUT_FOLDER"]
        from mapframe.export.mergekit_yaml import mergekit_notes

        return lines + [f"note: {n}" for n in mergekit_notes(self.strategy)]


def refuse_to_overwrite(out: Path) -> None:
    """A one-line :class:`ConfigError` when writing ``out`` would replace something that is
    not an earlier mapframe export of the same kind (a folder, a user's file): the default
    export used to overwrite any file silently."""
    if out.is_dir():
        raise ConfigError(f"cannot export to {out}: it is a folder; give -o a file path")
    if out.exists() and not _is_mapframe_export(out):
        raise ConfigError(f"cannot export to {out}: it exists and is not an earlier mapframe "
                          "export; choose another path or remove it")


def _is_mapframe_export(path: Path) -> bool:
    """Whether ``path`` is a safetensors file or a mergekit YAML that mapframe wrote."""
    try:
        if path.suffix in (".yaml", ".yml"):
            with path.open(encoding="utf-8") as fh:
                return "mapframe study" in fh.readline()
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            return "mapframe.merge_strategy" in (fh.metadata() or {})
    except Exception:  # not readable as either: not ours
        return False


def prepare_safetensors_path(path: str | os.PathLike[str]) -> None:
    """Checks before a merged model is written at ``path`` in the default format: a file
    path (with a suffix) must not replace something that is not an earlier export, and its
    folder must be creatable (a suffixless path is the checkpoints' loader's to decide: it
    checks the path it resolves it to, e.g. ``TaskVectors.export_merged`` the one with
    ``.safetensors`` appended)."""
    out = Path(path).expanduser()
    if out.suffix:
        refuse_to_overwrite(out)
    _make_parent(out)


def _make_parent(out: Path) -> None:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot export to {out}: its folder cannot be made "
                          f"({exc.strerror or exc}); give -o a path in a writable folder"
                          ) from None


def export_point(point: ExportPoint, merge_spec: MergeSpec | None,
                 path: str | os.PathLike[str], format: str = "safetensors",
                 max_shard_bytes: int | None = None) -> Path:
    """Write ``point`` at ``path`` in ``format`` (:data:`EXPORT_FORMATS`) and return where.

    ``safetensors`` merges through the task vectors' own export (one ``.safetensors`` file;
    for a path without a suffix, the format the checkpoints' loader writes). ``hf`` writes a
    Hugging Face model folder with a model card (README.md), the front plot and, when one
    exists, the equivalent ``mergekit_config.yml``. ``mergekit`` writes the YAML only (no
    weights are loaded).
    """
    from mapframe.export.hf_folder import DEFAULT_MAX_SHARD_BYTES

    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; use one of "
                          f"{', '.join(EXPORT_FORMATS)}")
    out = Path(path).expanduser()
    if format == "hf" and out.suffix in (".safetensors", ".yaml", ".yml", ".json"):
        raise ConfigError(f"--format hf writes a model folder: give -o a folder path, not "
                          f"{out.name}")
    if format == "mergekit" and out.suffix not in ("", ".yaml", ".yml"):
        raise ConfigError(f"--format mergekit writes a YAML file: give -o a .yaml path, not "
                          f"{out.name}")
    if format == "mergekit":
        from mapframe.export.mergekit_yaml import mergekit_yaml

        config, why = point.mergekit()
        if config is None:
            raise ConfigError(why or "no mergekit equivalent")
        if not out.suffix:
            out = out.with_suffix(".yaml")
        refuse_to_overwrite(out)
        _make_parent(out)
        out.write_text(mergekit_yaml(config, point.mergekit_header()), encoding="utf-8")
        return out
    if merge_spec is None:
        raise ConfigError("this study has no checkpoints to merge (it used a black-box "
                          "objective), so there is no model to export")
    merger = merge_spec.build()
    c = merger.strategy.check_coefficients(np.asarray(point.coefficients, dtype=float))
    if format == "safetensors":
        meta = {k: v for k, v in point.metadata().items() if k in (
            "mapframe.study", "mapframe.source", "mapframe.predicted", "mapframe.real")}
        prepare_safetensors_path(out)
        return merger.export(out, c, meta)
    from mapframe.export.hf_folder import hf_source_folder, write_hf_folder
    from mapframe.export.mergekit_yaml import mergekit_yaml
    from mapframe.export.model_card import model_card

    source = hf_source_folder(point.pretrained)
    config, _ = point.mergekit()
    files: dict[str, str | bytes] = {}
    if point.front_png is not None and Path(point.front_png).is_file():
        files["front.png"] = Path(point.front_png).read_bytes()
    files["README.md"] = model_card(point, library=(
        "transformers" if source is not None else None), front_png="front.png"
        if "front.png" in files else None)
    if config is not None:
        files["mergekit_config.yml"] = mergekit_yaml(config, point.mergekit_header())
    return write_hf_folder(
        merger.task_vectors, lambda params: merger.strategy.merge_into(params, c), out,
        source_folder=source, max_shard_bytes=max_shard_bytes or DEFAULT_MAX_SHARD_BYTES,
        metadata=json.loads(json.dumps(point.metadata(), default=str)), files=files)


def hub_api() -> Any:
    """``huggingface_hub.HfApi()``, or a one-line :class:`ConfigError` saying how to install
    it."""
    try:
        from huggingface_hub import HfApi
    except ImportError:
        raise ConfigError("--push-to-hub needs huggingface_hub: pip install huggingface_hub "
                          "(then log in with hf auth login or set HF_TOKEN)") from None
    return HfApi()


def push_to_hub(folder: str | os.PathLike[str], repo_id: str, private: bool = False) -> str:
    """Upload an exported model folder to the Hugging Face Hub repository ``repo_id``
    (created if missing) and return its URL. Needs ``huggingface_hub`` and a login
    (``hf auth login`` or ``HF_TOKEN``)."""
    api = hub_api()
    api.create_repo(repo_id, private=private, exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo_id,
                      commit_message="Upload a merged model exported by mapframe")
    return f"https://huggingface.co/{repo_id}"
