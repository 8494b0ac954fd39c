"""YAML study configuration: loading, validation with clear messages, and building a study.

Relative paths inside a config file are resolved against the file's own folder.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError

__all__ = ["NESTED_KEYS", "STUDY_KEYS", "TOP_LEVEL_KEYS", "build_study", "load_config",
           "validate_config"]

TOP_LEVEL_KEYS = {
    "study": "study settings (name, budget, seed, output, storage, ...)",
    "evaluator": "the evaluator component (required)",
    "checkpoints": "pretrained and fine-tuned checkpoint paths",
    "merge_strategy": "the merge strategy component (default task_arithmetic)",
    "sampler": "the sampler component (default sobol)",
    "surrogate": "the surrogate component (default auto)",
    "front_solver": "the front solver component (default auto)",
    "executor": "the executor component (default inprocess)",
    "stopping": "a stopping rule for adaptive samplers (default none: spend the budget)",
    "nested": "Nested MAP: merge in pairs for study.preference (pair_budget, pairing)",
}
NESTED_KEYS = {"pair_budget": "evaluations per pair (default 20)",
               "pairing": "pairing strategy component (default cosine)"}
STUDY_KEYS: dict[str, Any] = {
    "name": str,
    "budget": int,
    "seed": (int, type(None)),
    "output": str,
    "storage": (str, dict),
    "search_bounds": list,
    "n_coefficients": int,
    "verify": int,
    "preference": (list, type(None)),
    "on_error": str,
    "export": bool,
}
CHECKPOINT_KEYS = {"pretrained", "finetuned", "allow_pickle"}


def _unknown(key: str, allowed: Mapping[str, Any] | set[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(key, list(allowed), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(
        f"unknown field {key!r} in {where}{hint} (allowed: {', '.join(sorted(allowed))})"
    )


def load_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a YAML study config; returns a dict with paths made absolute."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML in {p}{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a text (UTF-8) YAML file") from None
    return validate_config(data, base_dir=p.parent, source=str(p))


def _component(value: Any, where: str) -> Any:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, Mapping):
        if not isinstance(value.get("name"), str):
            raise ConfigError(f"{where}: a component mapping needs 'name: <component name>'")
        return dict(value)
    raise ConfigError(
        f"{where}: expected a component name or a mapping with 'name', got {value!r}"
    )


def _is_component_name(kind: str, name: str) -> bool:
    from mapframe.plugin import get_registry

    return name in get_registry().names(kind)


def _path(value: Any, base_dir: Path, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where} must be a path string, got {value!r}")
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else base_dir / p)


def validate_config(
    data: Any, base_dir: str | os.PathLike[str] = ".", source: str = "config"
) -> dict[str, Any]:
    """Check a config mapping's structure and types; resolve relative paths."""
    base = Path(base_dir)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: the config must be a mapping of fields, got "
                          f"{type(data).__name__}")
    for key in data:
        if key not in TOP_LEVEL_KEYS:
            raise _unknown(str(key), TOP_LEVEL_KEYS, source)
    if "evaluator" not in data:
        raise ConfigError(f"{source}: missing required field 'evaluator' (e.g. evaluator: "
                          "{name: digits, tasks: [rot90, flip]})")
    cfg: dict[str, Any] = {"evaluator": _component(data["evaluator"], "evaluator")}
    for key in ("merge_strategy", "sampler", "surrogate", "front_solver", "executor",
                "stopping"):
        if key in data:
            cfg[key] = _component(data[key], key)
    study = data.get("study") or {}
    if not isinstance(study, Mapping):
        raise ConfigError(f"{source}: 'study' must be a mapping")
    checked: dict[str, Any] = {}
    for key, value in study.items():
        if key not in STUDY_KEYS:
            raise _unknown(str(key), STUDY_KEYS, "study")
        typ = STUDY_KEYS[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if key in ("budget", "verify", "n_coefficients") and isinstance(value, bool):
            ok = False
        if not ok:
            names = typ.__name__ if isinstance(typ, type) else " or ".join(
                "null" if t is type(None) else t.__name__ for t in typ)
            raise ConfigError(f"study.{key} must be {names}, got {value!r}")
        checked[key] = value
    if "output" in checked:
        checked["output"] = _path(checked["output"], base, "study.output")
    storage = checked.get("storage")
    if isinstance(storage, str) and not _is_component_name("storage", storage):
        checked["storage"] = _path(storage, base, "study.storage")
    elif isinstance(storage, Mapping) and isinstance(storage.get("path"), str):
        checked["storage"] = {**storage, "path": _path(storage["path"], base,
                                                      "study.storage.path")}
    cfg["study"] = checked
    if "nested" in data:
        nested = data["nested"] if data["nested"] is not None else {}
        if not isinstance(nested, Mapping):
            raise ConfigError("nested must be a mapping, e.g. nested: {pair_budget: 20, "
                              "pairing: cosine}")
        for key in nested:
            if key not in NESTED_KEYS:
                raise _unknown(str(key), NESTED_KEYS, "nested")
        pb = nested.get("pair_budget", 20)
        if isinstance(pb, bool) or not isinstance(pb, int):
            raise ConfigError(f"nested.pair_budget must be int, got {pb!r}")
        out: dict[str, Any] = {"pair_budget": pb}
        if "pairing" in nested:
            out["pairing"] = _component(nested["pairing"], "nested.pairing")
        for key, why in (("budget", "set nested.pair_budget (evaluations per pair) instead"),
                         ("n_coefficients", "nested merging has one model per task")):
            if key in checked:
                raise ConfigError(f"study.{key} does not apply to nested merging: {why}")
        if "stopping" in cfg:
            raise ConfigError("stopping does not apply to nested merging (each pair spends "
                              "nested.pair_budget)")
        if checked.get("preference") is None:
            raise ConfigError("nested merging needs study.preference: one weight per task "
                              "(it builds one merged model for that preference)")
        cfg["nested"] = out
    if "checkpoints" in data:
        ck = data["checkpoints"]
        if not isinstance(ck, Mapping):
            raise ConfigError("checkpoints must be a mapping with 'pretrained' and 'finetuned'")
        for key in ck:
            if key not in CHECKPOINT_KEYS:
                raise _unknown(str(key), CHECKPOINT_KEYS, "checkpoints")
        if "pretrained" not in ck or "finetuned" not in ck:
            raise ConfigError("checkpoints needs both 'pretrained: <path>' and 'finetuned: "
                              "{task: <path>, ...}'")
        ft = ck["finetuned"]
        if not isinstance(ft, Mapping) or not ft:
            raise ConfigError("checkpoints.finetuned must map task names to checkpoint paths")
        allow = ck.get("allow_pickle", False)
        if not isinstance(allow, bool):
            raise ConfigError(f"checkpoints.allow_pickle must be true or false, got {allow!r}")
        cfg["checkpoints"] = {
            "pretrained": _path(ck["pretrained"], base, "checkpoints.pretrained"),
            "finetuned": {str(k): _path(v, base, f"checkpoints.finetuned.{k}")
                          for k, v in ft.items()},
            "allow_pickle": allow,
        }
    return cfg


def build_study(cfg: Mapping[str, Any], **overrides: Any) -> tuple[Any, dict[str, Any]]:
    """Build a :class:`~mapframe.study.MergeStudy` from a validated config.

    Returns the study and the run options that are not study arguments (``output``,
    ``export``). ``overrides`` replace ``study`` fields (the CLI's --budget, --seed, ...).
    """
    from mapframe.study import MergeStudy

    study = {**cfg.get("study", {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "nested" in cfg:
        return _build_nested(cfg, study)
    name = study.get("name", "study")
    output = study.get("output") or os.path.join("results", name)
    storage = study.get("storage") or os.path.join(output, "evaluations.sqlite")
    kwargs: dict[str, Any] = {
        "evaluator": cfg["evaluator"],
        "study_name": name,
        "storage": storage,
    }
    for key in ("budget", "seed", "verify", "preference", "on_error", "n_coefficients"):
        if key in study:
            kwargs[key] = study[key]
    if "search_bounds" in study:
        kwargs["search_bounds"] = study["search_bounds"]
    for key in ("merge_strategy", "sampler", "surrogate", "front_solver", "executor",
                "stopping"):
        if key in cfg:
            kwargs[key] = cfg[key]
    if "checkpoints" in cfg:
        ck = cfg["checkpoints"]
        kwargs["checkpoints"] = {"pretrained": ck["pretrained"], "finetuned": ck["finetuned"]}
        kwargs["allow_pickle"] = ck.get("allow_pickle", False)
    options = {"output": output, "export": bool(study.get("export", False))}
    return MergeStudy(**kwargs), options


def _build_nested(cfg: Mapping[str, Any], study: Mapping[str, Any]) -> tuple[Any, dict[str, Any]]:
    from mapframe.nested import NestedMergeStudy

    if "budget" in study:
        raise ConfigError("--budget does not apply to nested merging: set nested.pair_budget")
    name = study.get("name", "nested")
    output = study.get("output") or os.path.join("results", name)
    kwargs: dict[str, Any] = {
        "evaluator": cfg["evaluator"], "study_name": name,
        "storage": study.get("storage") or os.path.join(output, "evaluations.sqlite"),
        "preference": study["preference"], **cfg["nested"],
    }
    for key in ("seed", "verify", "on_error", "search_bounds"):
        if key in study:
            kwargs[key] = study[key]
    for key in ("merge_strategy", "sampler", "surrogate", "front_solver", "executor"):
        if key in cfg:
            kwargs[key] = cfg[key]
    if "checkpoints" not in cfg:
        raise ConfigError("nested merging needs checkpoints: pretrained and one fine-tuned "
                          "model per task")
    ck = cfg["checkpoints"]
    kwargs["checkpoints"] = {"pretrained": ck["pretrained"], "finetuned": ck["finetuned"]}
    kwargs["allow_pickle"] = ck.get("allow_pickle", False)
    return NestedMergeStudy(**kwargs), {"output": output,
                                        "export": bool(study.get("export", False))}
