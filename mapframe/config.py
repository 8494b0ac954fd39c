"""YAML study configuration: read a file into a validated :class:`~mapframe.spec.StudySpec`.

The file's layout (top-level component keys, a ``study:`` section, ``checkpoints:`` and
``nested:``) is mapped onto the spec's fields, which are validated in one place
(:mod:`mapframe.spec`). Relative paths inside a config file are resolved against the file's
own folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError
from mapframe.spec import CHECKPOINT_KEYS, NESTED_KEYS, STUDY_KEYS, TOP_LEVEL_KEYS, StudySpec

__all__ = ["CHECKPOINT_KEYS", "NESTED_KEYS", "STUDY_KEYS", "TOP_LEVEL_KEYS", "build_study",
           "load_config", "load_spec", "validate_config"]


def load_spec(path: str | os.PathLike[str], **study_overrides: Any) -> StudySpec:
    """Read a YAML study config into a :class:`~mapframe.spec.StudySpec`."""
    import yaml

    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{p} is a folder: give the path of the study's YAML file")
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.load(p.read_text(), Loader=_loader())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {p}{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text (UTF-8) YAML file") from None
    from mapframe.mergekit_config import expand_mergekit

    data = expand_mergekit(data, p.parent, str(p))  # a mergekit YAML, or a mergekit: section
    return StudySpec.from_config(data, base_dir=p.parent, source=str(p), **study_overrides)


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a YAML study config; returns it as a mapping with paths made
    absolute (:meth:`StudySpec.to_config`)."""
    return load_spec(path).to_config()


def validate_config(
    data: Any, base_dir: str | os.PathLike[str] = ".", source: str = "config"
) -> dict[str, Any]:
    """Check a config mapping's structure and types; resolve relative paths. Returns the
    validated config as a mapping."""
    from mapframe.mergekit_config import expand_mergekit

    data = expand_mergekit(data, base_dir, source)
    return StudySpec.from_config(data, base_dir=base_dir, source=source).to_config()


def build_study(cfg: Mapping[str, Any] | StudySpec, **overrides: Any
                ) -> tuple[Any, dict[str, Any]]:
    """Build the study a config describes: a :class:`~mapframe.study.MergeStudy`, or a
    :class:`~mapframe.nested.NestedMergeStudy` when it has a ``nested`` section.

    Returns the study and the run options that are not study settings (``output``,
    ``export``). ``overrides`` replace ``study`` fields (the CLI's --budget, --seed, ...).
    """
    if not isinstance(cfg, StudySpec):
        from mapframe.mergekit_config import expand_mergekit

        cfg = StudySpec.from_config(expand_mergekit(cfg))
    spec = cfg
    if any(v is not None for v in overrides.values()):
        if spec.nested is not None and overrides.get("budget") is not None:
            raise ConfigError("--budget does not apply to nested merging: set "
                              "nested.pair_budget")
        spec = StudySpec.from_config(spec.to_config(), **overrides)
    output = spec.results_folder()
    if spec.storage is None:
        spec = StudySpec.build(**{**_fields(spec),
                                  "storage": os.path.join(output, "evaluations.sqlite")})
    options = {"output": output, "export": spec.export}
    if spec.nested is not None:
        from mapframe.nested import NestedMergeStudy

        return NestedMergeStudy.from_spec(spec), options
    from mapframe.study import MergeStudy

    return MergeStudy.from_spec(spec), options


def _fields(spec: StudySpec) -> dict[str, Any]:
    """The fields a spec was given (to rebuild it with one changed)."""
    return {name: getattr(spec, name) for name in spec.model_fields_set}


def _loader() -> Any:
    """A safe YAML loader that refuses a key given twice in one mapping.

    Merge keys (``<<: *anchor``, ``<<: {...}``) work as in PyYAML: a key written in the
    mapping itself overrides a merged one; only a key written twice in one mapping is refused.
    """
    import yaml

    class _UniqueKeyLoader(yaml.SafeLoader):
        pass

    merge_tag = "tag:yaml.org,2002:merge"

    def construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == merge_tag:
                continue  # '<<' has no constructor: flatten_mapping resolves it below
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise ConfigError(
                    f"duplicate key {key!r} at line {key_node.start_mark.line + 1}: each "
                    "field may appear once in a mapping (the later value would silently win)")
            seen.add(key)
        loader.flatten_mapping(node)  # merged keys first, the mapping's own keys override
        return loader.construct_mapping(node, deep=deep)

    _UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                                     construct_mapping)
    return _UniqueKeyLoader
