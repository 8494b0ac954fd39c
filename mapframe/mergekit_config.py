"""Read a mergekit configuration as the merge a MAP study searches.

Two layouts reach :func:`expand_mergekit`:

* a mergekit YAML with mapframe's fields added beside mergekit's (``evaluator:``,
  ``study:``, ...; mergekit ignores fields it does not know, so ``mergekit-yaml`` still
  reads the file);
* a mapframe config with a ``mergekit:`` section: the path of a mergekit YAML (relative to
  the config's folder), the mergekit configuration inline, or ``{config: <path or inline>,
  names: [task name per model]}``.

Either becomes a plain mapframe config: ``base_model`` → ``checkpoints.pretrained``,
``models`` → ``checkpoints.finetuned`` (one coefficient per model, named by ``names``, else
by the evaluator's ``tasks`` when there is one per model, else by the model folders' names),
``merge_method`` and its fixed ``parameters`` (density, normalize, lambda...) →
``merge_strategy``. The models' ``weight``\\ s are what MAP searches, so they are not
fixed. Tasks, evaluator and study settings come from the mapframe part. What has no
mapframe counterpart (slices, per-tensor parameter lists or filters, unsupported methods)
is a one-line :class:`~mapframe.errors.ConfigError` naming what is supported.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError
from mapframe.settings import bool_setting, number_setting

__all__ = ["MERGE_METHODS", "expand_mergekit", "is_mergekit_config", "strategy_for"]

#: mergekit ``merge_method`` -> the mapframe strategy MAP runs for it (and why it fits).
MERGE_METHODS: dict[str, str] = {
    "task_arithmetic": "task_arithmetic (normalize: true -> task_arithmetic_preference)",
    "linear": "soup",
    "ties": "ties with trim_rule: mergekit, zero_sum: positive (density -> trim)",
    "dare_linear": "dare_task_arithmetic (1 - density -> drop_rate; normalize: false)",
    "dare_ties": "dare_ties with zero_sum: positive (1 - density -> drop_rate)",
    "nuslerp": "slerp (with base_model: the task vectors are interpolated)",
    "multislerp": "multislerp (with base_model; normalize_weights: true)",
    "model_stock": "model_stock (filter_wise: false)",
}
#: mergekit's top-level fields that change nothing MAP searches (output dtype, tokenizer).
_IGNORED = frozenset({"dtype", "out_dtype", "tokenizer_source", "tokenizer", "chat_template"})
_MERGEKIT_FIELDS = frozenset({"merge_method", "base_model", "models", "parameters", "slices",
                              "modules", *_IGNORED})


def is_mergekit_config(data: Any) -> bool:
    """Whether a config mapping is (or embeds, beside mapframe's fields) a mergekit one."""
    return isinstance(data, Mapping) and "merge_method" in data


def _scalar(where: str, value: Any) -> Any:
    if isinstance(value, (list, tuple, Mapping)):
        raise ConfigError(
            f"{where} is a per-tensor setting ({value!r}: a gradient or a filter list); "
            "mapframe merges with one value per parameter: give a single number")
    return value


def _parameters(where: str, params: Any) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"{where} must be a mapping of parameter names to values")
    return {str(k): _scalar(f"{where}.{k}", v) for k, v in params.items()}


def _model_path(ref: Any, where: str, base: Path, base_model: str | None) -> str:
    if isinstance(ref, Mapping):  # mergekit's {model: {path: ...}, lora: ...} spelling
        model = ref.get("model")
        path = model.get("path") if isinstance(model, Mapping) else model
        lora = ref.get("lora")
        lora_path = lora.get("path") if isinstance(lora, Mapping) else lora
        ref = f"{path}+{lora_path}" if lora_path else path
    if not isinstance(ref, str) or not ref:
        raise ConfigError(f"{where} must be a model path, got {ref!r}")
    if "+" in ref:
        model, lora = ref.split("+", 1)
        if base_model is None or _resolve(model, base) != base_model:
            raise ConfigError(
                f"{where}: {ref!r} applies a LoRA adapter to {model!r}, not to base_model; "
                "mapframe reads an adapter as a task vector of the base model: give the "
                "adapter folder alone")
        ref = lora
    return _resolve(ref, base)


def _resolve(path: str, base: Path) -> str:
    p = Path(os.path.expanduser(path))
    return str(p if p.is_absolute() else base / p)


def _name(path: str) -> str:
    stem = Path(path.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def _task_names(evaluator: Any, n: int) -> list[str] | None:
    tasks = evaluator.get("tasks") if isinstance(evaluator, Mapping) else None
    if not isinstance(tasks, Sequence) or isinstance(tasks, str) or len(tasks) != n:
        return None
    names = [_task_name(t) for t in tasks]
    return [str(x) for x in names] if all(isinstance(x, str) and x for x in names) else None


def _task_name(task: Any) -> Any:
    """The objective name of one ``tasks`` entry: its ``name``, else its ``task``; a task
    YAML's path (``my_tasks/qa.yaml``) without a ``name`` is named by its stem (``qa``).
    The same rule as the lm_eval evaluator's (``mapframe_llm.harness._parse_task``), kept
    here because mapframe does not depend on its plugins."""
    entry = {"task": task} if isinstance(task, str) else task
    if not isinstance(entry, Mapping):
        return None
    value = entry.get("task")
    if entry.get("name"):
        return entry["name"]
    if isinstance(value, str) and value.endswith((".yaml", ".yml")):
        return Path(value).stem
    return value


def strategy_for(method: str, shared: Mapping[str, Any],
                 per_model: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mapframe ``merge_strategy`` of mergekit's ``method`` with its global (``shared``)
    and per-model parameters (the models' weights excluded: MAP searches them)."""
    if method not in MERGE_METHODS:
        raise ConfigError(
            f"mergekit merge_method {method!r} is not supported by mapframe; supported: "
            + "; ".join(f"{k} -> {v}" for k, v in MERGE_METHODS.items()))

    def one(name: str, default: Any = None) -> Any:
        values = {repr(m[name]) for m in per_model if name in m}
        if name in shared:
            values.add(repr(shared[name]))
        if len(values) > 1:
            raise ConfigError(
                f"mergekit parameter {name!r} differs between models "
                f"({', '.join(sorted(values))}); mapframe's {method} takes one {name} for "
                "all models: give it once under parameters")
        for m in [*per_model, shared]:
            if name in m:
                return m[name]
        return default

    def flag(name: str, default: bool) -> bool:
        return bool_setting(one(name, default), name, who=f"mergekit {method} parameter")

    def number(name: str, default: float, low: float = -math.inf) -> float:
        return number_setting(one(name, default), name, low,
                              who=f"mergekit {method} parameter")

    known = {"weight", "density", "normalize", "lambda", "rescale", "int8_mask",
             "nuslerp_flatten", "nuslerp_row_wise", "normalize_weights", "eps", "filter_wise"}
    for m in [shared, *per_model]:
        unknown = sorted(set(m) - known)
        if unknown:
            raise ConfigError(f"mergekit parameter {unknown[0]!r} of {method} is not "
                              f"supported (supported: {', '.join(sorted(known))})")
    if method == "ties" and flag("rescale", False):
        # mergekit then scales each trimmed tensor back to its L1 norm: a factor per tensor
        # that no coefficients reproduce (DARE's rescale is documented as agreeing in
        # expectation with mapframe's 1/(1 - drop_rate); TIES has no such counterpart)
        raise ConfigError(
            "mergekit ties with rescale: true (each trimmed task vector scaled back to its "
            "L1 norm per tensor) has no mapframe strategy; drop rescale (mergekit's default "
            "is false)")
    if method == "task_arithmetic":
        if flag("normalize", False):
            return {"name": "task_arithmetic_preference", "scale": number("lambda", 1.0)}
        return {"name": "task_arithmetic"}
    if method == "linear":
        if not flag("normalize", True):
            raise ConfigError("mergekit linear with normalize: false (an unnormalised sum of "
                              "models) has no mapframe strategy; use normalize: true (soup) "
                              "or task_arithmetic with a base_model")
        return {"name": "soup"}
    # mergekit's normalize: divide each entry by the weights of its agreeing models (on by
    # default for ties, off for dare_ties); mapframe's disjoint mean divides by their count,
    # the same for the equal weights a study exports.
    if method == "ties":
        strategy = {"name": "ties", "trim": number("density", 1.0, 0.0),
                    "trim_rule": "mergekit", "zero_sum": "positive"}
        return strategy if flag("normalize", True) else {**strategy, "disjoint": False}
    if method in ("dare_linear", "dare_ties"):
        density = number("density", 1.0, 0.0)
        if not 0.0 < density <= 1.0:
            raise ConfigError(f"mergekit density must be in (0, 1] for {method}, got {density}")
        name = "dare_task_arithmetic" if method == "dare_linear" else "dare_ties"
        strategy = {"name": name, "drop_rate": 1.0 - density}
        if method == "dare_linear":
            if flag("normalize", False):  # mergekit's default for dare_linear: false
                raise ConfigError(
                    "mergekit dare_linear with normalize: true (the dropped task vectors "
                    "divided by the summed weights) has no mapframe strategy; set normalize: "
                    "false (MAP searches the weights' scale too), or use task_arithmetic "
                    "with normalize: true (no drop)")
            return strategy
        strategy = {**strategy, "zero_sum": "positive"}
        return strategy if flag("normalize", False) else {**strategy, "disjoint": False}
    if method == "multislerp":
        if not flag("normalize_weights", True):
            raise ConfigError(
                "mergekit multislerp with normalize_weights: false (unnormalised weights "
                "lengthen the step along the sphere) has no mapframe strategy (its "
                "multislerp moves by c/Σc and scales by Σc); set normalize_weights: true")
        return {"name": "multislerp", "eps": number("eps", 1e-8, 0.0)}
    if method == "model_stock":
        if flag("filter_wise", False):
            raise ConfigError("mapframe's model_stock takes one angle per tensor: drop "
                              "filter_wise: true")
        return {"name": "model_stock"}
    if not flag("nuslerp_flatten", True) or flag("nuslerp_row_wise", False):
        raise ConfigError("mapframe's slerp interpolates whole (flattened) tensors: drop "
                          "nuslerp_row_wise / nuslerp_flatten: false")
    return {"name": "slerp"}


def _load_yaml(path: Path) -> Any:
    import yaml

    if not path.is_file():
        raise ConfigError(f"mergekit config not found: {path}")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in the mergekit config {path}: "
                          f"{str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"the mergekit config {path} is not UTF-8 text (a binary file?); "
                          "give the merge's YAML file") from None


def expand_mergekit(data: Any, base_dir: str | os.PathLike[str] = ".",
                    source: str = "config") -> Any:
    """``data`` with its mergekit part translated into ``checkpoints`` and
    ``merge_strategy`` (unchanged when it has none). Paths are resolved against
    ``base_dir`` (the mergekit file's folder for a referenced file)."""
    if not isinstance(data, Mapping):
        return data
    base = Path(base_dir)
    names: list[str] | None = None
    if "mergekit" in data:
        section = data["mergekit"]
        rest = {k: v for k, v in data.items() if k != "mergekit"}
        if isinstance(section, Mapping) and "config" in section:
            extra = set(section) - {"config", "names"}
            if extra:
                raise ConfigError(f"unknown field {sorted(extra)[0]!r} in mergekit (allowed: "
                                  "config, names)")
            names = section.get("names")
            section = section["config"]
        if isinstance(section, (str, os.PathLike)):
            file = Path(_resolve(os.fspath(section), base))
            section, base = _load_yaml(file), file.parent
        if not is_mergekit_config(section):
            raise ConfigError(
                f"{source}: mergekit must be the path of a mergekit YAML or a mergekit "
                "configuration (a mapping with merge_method, base_model and models)")
        mk, mapframe_part = dict(section), rest
    elif is_mergekit_config(data):
        mk = {k: v for k, v in data.items() if k in _MERGEKIT_FIELDS}
        mapframe_part = {k: v for k, v in data.items() if k not in _MERGEKIT_FIELDS}
        if not mapframe_part:
            raise ConfigError(
                f"{source} is a mergekit config without a mapframe part: add evaluator: "
                "{...} (the tasks to score) and optionally study: {...} to it, or write a "
                "mapframe config with mergekit: <this file>")
    else:
        return data
    for key in ("checkpoints", "merge_strategy"):
        if key in mapframe_part:
            raise ConfigError(f"{source}: {key} comes from the mergekit config "
                              "(base_model, models, merge_method); drop the mapframe one")
    for key in ("slices", "modules"):
        if mk.get(key):
            raise ConfigError(f"mergekit {key} are not supported: mapframe merges whole "
                              "models; list them under models:")
    unknown = sorted(set(mk) - _MERGEKIT_FIELDS)
    if unknown:
        raise ConfigError(f"unknown mergekit field {unknown[0]!r} (read: "
                          f"{', '.join(sorted(_MERGEKIT_FIELDS))})")
    method = mk.get("merge_method")
    if not isinstance(method, str):
        raise ConfigError("mergekit merge_method must be a method name")
    base_model = mk.get("base_model")
    models = mk.get("models")
    if not isinstance(models, list) or not models:
        raise ConfigError("mergekit models must be a list of {model: <path>, parameters: "
                          "{...}}")
    # linear (a weighted average of whole models, mapframe's soup) needs no base: its merge
    # does not depend on the point task vectors are measured from, so the first model is
    # taken as that point (its task vector is zero), and every listed model, a listed
    # base_model included, is one of the averaged models, as in mergekit.
    linear = method == "linear"
    if isinstance(base_model, Mapping):
        base_model = _model_path(base_model, "base_model", base, None)
    elif isinstance(base_model, str) and base_model:
        base_model = _resolve(base_model, base)
    elif linear:
        first = models[0]
        first = first if isinstance(first, Mapping) and "model" in first else {"model": first}
        base_model = _model_path(first["model"], "models[0].model", base, None)
    else:
        raise ConfigError(
            "mapframe needs the mergekit base_model (the pretrained model every task vector "
            "is measured from); add base_model: <folder>")
    paths, per_model = [], []
    for i, entry in enumerate(models):
        entry = entry if isinstance(entry, Mapping) and "model" in entry else {"model": entry}
        model = _model_path(entry["model"], f"models[{i}].model", base, base_model)
        if model == base_model and not linear:
            continue  # mergekit lets the base be listed among the models
        paths.append(model)
        per_model.append(_parameters(f"models[{i}].parameters", entry.get("parameters")))
    if not paths:
        raise ConfigError("mergekit models list no fine-tuned model besides base_model")
    if names is None:
        names = _task_names(mapframe_part.get("evaluator"), len(paths))
    if names is None:
        names = [_name(p) for p in paths]
    if (not isinstance(names, list) or len(names) != len(paths)
            or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names)):
        raise ConfigError(f"mergekit.names must be {len(paths)} distinct task names, one per "
                          f"model, got {names!r}")
    strategy = strategy_for(method, _parameters("parameters", mk.get("parameters")), per_model)
    return {**mapframe_part, "merge_strategy": strategy,
            "checkpoints": {"pretrained": base_model, "finetuned": dict(zip(names, paths))}}
