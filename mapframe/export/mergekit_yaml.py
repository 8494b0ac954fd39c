"""A front point as a mergekit configuration: the YAML ``mergekit-yaml`` turns into the same
weights mapframe's own merge writes.

:func:`mergekit_config` maps a merge strategy's description (``strategy.describe()``), the
point's coefficients and the checkpoint paths to a mergekit ``MergeConfiguration`` mapping;
:func:`mergekit_yaml` renders it. Which strategies translate, with which parameters, and
why each translation is exact (or not) is one table, :data:`MERGEKIT_METHODS`, read by the
code and by docs/merge-strategies.md. A point with no mergekit equivalent raises a one-line
:class:`~mapframe.errors.ConfigError` saying why and what to do instead.

Nothing here imports torch or mergekit: it is text from descriptions.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mapframe.errors import ConfigError

__all__ = [
    "MERGEKIT_METHODS",
    "MergekitTranslation",
    "checkpoint_dtype",
    "mergekit_config",
    "mergekit_notes",
    "mergekit_yaml",
    "model_reference",
]

#: How close "equal" coefficients (TIES) and ``c1 + c2 = 1`` (SLERP) must be: relative to
#: the coefficients' size, a few float64 roundings.
_REL_TOL = 1e-9

#: safetensors dtype names -> mergekit ``dtype`` names.
_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64"}


@dataclass(frozen=True)
class MergekitTranslation:
    """One row of :data:`MERGEKIT_METHODS`: a mapframe strategy's mergekit equivalent."""

    #: The mergekit ``merge_method``.
    method: str
    #: What the YAML holds, in words (for docs and error messages).
    parameters: str
    #: Whether mergekit's output equals mapframe's up to float rounding.
    exact: str
    #: ``(strategy description, coefficients) -> (global parameters, per-model
    #: parameters, uses base_model)``; raises :class:`ConfigError` for a point without
    #: an equivalent.
    build: Callable[[Mapping[str, Any], list[float]],
                    tuple[dict[str, Any], list[dict[str, Any]], bool]]


def _uniform(name: str, c: list[float], why: str) -> float:
    scale = max(1.0, max(abs(x) for x in c))
    if max(c) - min(c) > _REL_TOL * scale:
        raise ConfigError(
            f"{name} front point with coefficients {_fmt(c)} has no mergekit equivalent: "
            f"{why}; export a point with equal coefficients, or export --format hf")
    return float(sum(c) / len(c))


def _fmt(c: Sequence[float]) -> str:
    return "(" + ", ".join(f"{x:.4g}" for x in c) + ")"


def _task_arithmetic(desc: Mapping[str, Any], c: list[float]
                     ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    return {"normalize": False}, [{"weight": x} for x in c], True


def _task_arithmetic_scalar(desc: Mapping[str, Any], c: list[float]
                            ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    lam = float(sum(c) / len(c))
    return {"normalize": False}, [{"weight": lam} for _ in c], True


def _check_weights(name: str, c: list[float]) -> None:
    if any(x < 0 for x in c) or not any(x > 0 for x in c):
        raise ConfigError(f"{name} needs non-negative coefficients with a positive one, got "
                          f"{_fmt(c)}")


def _preference(desc: Mapping[str, Any], c: list[float]
                ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    _check_weights("task_arithmetic_preference", c)
    return ({"normalize": True, "lambda": float(desc.get("scale", 1.0))},
            [{"weight": x} for x in c], True)


def _soup(desc: Mapping[str, Any], c: list[float]
          ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    _check_weights("soup", c)
    return {"normalize": True}, [{"weight": x} for x in c], False


_TIES_WHY = ("mergekit's ties elects signs on the weighted task vectors and divides by the "
             "agreeing models' summed weights, mapframe's by their count, so only equal "
             "coefficients (mergekit's lambda) translate")


def _ties(desc: Mapping[str, Any], c: list[float]
          ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    if desc.get("trim_rule", "mapframe") != "mergekit" and float(desc.get("trim", 0.2)) < 1.0:
        raise ConfigError(
            "this ties study trims with mapframe's rule (ceil(trim·n) entries and every tie "
            "at the threshold), which mergekit's density does not reproduce; run it with "
            "merge_strategy: {name: ties, trim_rule: mergekit} to export to mergekit")
    lam = _uniform("ties", c, _TIES_WHY)
    density = float(desc.get("trim", 0.2))
    return ({"normalize": bool(desc.get("disjoint", True)), "lambda": lam},
            [{"weight": 1.0, "density": density} for _ in c], True)


def _keep(desc: Mapping[str, Any]) -> float:
    return 1.0 - float(desc.get("drop_rate", 0.5))


def _dare_task_arithmetic(desc: Mapping[str, Any], c: list[float]
                          ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    keep = _keep(desc)
    return ({"normalize": False, "rescale": False},
            [{"weight": x / keep, "density": keep} for x in c], True)


def _dare_ties(desc: Mapping[str, Any], c: list[float]
               ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    if float(desc.get("trim", 1.0)) < 1.0:
        raise ConfigError(
            f"this dare_ties study also trims by magnitude (trim {desc.get('trim')}), which "
            "mergekit's dare_ties cannot do after its random drop; export --format hf, or "
            "run dare_ties with trim: 1")
    lam = _uniform("dare_ties", c, _TIES_WHY)
    keep = _keep(desc)
    return ({"normalize": bool(desc.get("disjoint", True)), "rescale": False,
             "lambda": lam / keep},
            [{"weight": 1.0, "density": keep} for _ in c], True)


def _slerp(desc: Mapping[str, Any], c: list[float]
           ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    if len(c) != 2 or min(c) < 0:
        raise ConfigError(f"slerp needs two non-negative coefficients, got {_fmt(c)}")
    if abs(c[0] + c[1] - 1.0) > _REL_TOL * max(1.0, abs(c[0]) + abs(c[1])):
        raise ConfigError(
            f"slerp front point with coefficients {_fmt(c)} has no mergekit equivalent: its "
            f"magnitude c1 + c2 = {c[0] + c[1]:.4g} is not 1, and mergekit's nuslerp always "
            "interpolates at magnitude 1; export a point with c1 + c2 = 1 (search_bounds on "
            "the simplex), or export --format hf")
    return ({"nuslerp_flatten": True, "nuslerp_row_wise": False},
            [{"weight": x} for x in c], True)


def _sums_to_one(name: str, c: list[float], why: str) -> None:
    if min(c) < 0 or abs(sum(c) - 1.0) > _REL_TOL * max(1.0, sum(abs(x) for x in c)):
        raise ConfigError(
            f"{name} front point with coefficients {_fmt(c)} has no mergekit equivalent: "
            f"{why}; export a point with non-negative coefficients summing to 1, or export "
            "--format hf")


def _multislerp(desc: Mapping[str, Any], c: list[float]
                ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    _sums_to_one("multislerp", c, f"its magnitude Σc = {sum(c):.4g} is not 1, and mergekit's "
                 "multislerp normalises the weights")
    return ({"normalize_weights": True, "eps": float(desc.get("eps", 1e-8))},
            [{"weight": x} for x in c], True)


def _model_stock(desc: Mapping[str, Any], c: list[float]
                 ) -> tuple[dict[str, Any], list[dict[str, Any]], bool]:
    if any(abs(x - 1.0) > _REL_TOL for x in c):
        raise ConfigError(
            f"model_stock front point with coefficients {_fmt(c)} has no mergekit equivalent: "
            "mergekit's model_stock takes no weights (it is mapframe's at c = 1); export "
            "--format hf")
    return {"filter_wise": False}, [{} for _ in c], True


#: mapframe strategy name -> its mergekit translation (the table of
#: docs/merge-strategies.md#mergekit).
MERGEKIT_METHODS: dict[str, MergekitTranslation] = {
    "task_arithmetic": MergekitTranslation(
        "task_arithmetic", "weight c_i per model", "exact (float rounding)",
        _task_arithmetic),
    "task_arithmetic_scalar": MergekitTranslation(
        "task_arithmetic", "weight mean(c) per model", "exact (float rounding)",
        _task_arithmetic_scalar),
    "task_arithmetic_preference": MergekitTranslation(
        "task_arithmetic", "weight c_i, normalize: true, lambda: scale",
        "exact (float rounding)", _preference),
    "soup": MergekitTranslation(
        "linear", "weight c_i (normalize: true), no base_model", "exact (float rounding)",
        _soup),
    "ties": MergekitTranslation(
        "ties", "density: trim, weight 1, normalize: disjoint, lambda: c (equal c only); "
        "needs trim_rule: mergekit",
        "exact for equal c (with zero_sum: positive also where trimmed values sum to 0)",
        _ties),
    "dare_task_arithmetic": MergekitTranslation(
        "dare_linear", "density: 1 − drop_rate, weight c_i / (1 − drop_rate), rescale: false",
        "same formula; the random drop masks are each tool's own", _dare_task_arithmetic),
    "dare_ties": MergekitTranslation(
        "dare_ties", "density: 1 − drop_rate, normalize: disjoint, rescale: false, "
        "lambda: c / (1 − drop_rate) (equal c only, trim 1)",
        "same formula for equal c (zero_sum: positive); the random drop masks are each "
        "tool's own", _dare_ties),
    "slerp": MergekitTranslation(
        "nuslerp", "weight c_i with base_model (c1 + c2 = 1 only)",
        "exact where both task vectors of a tensor are non-zero and |cos Ω| ≤ dot_threshold",
        _slerp),
    "multislerp": MergekitTranslation(
        "multislerp", "weight c_i with base_model, eps (Σc = 1 only)",
        "exact where the weighted unit task vectors do not cancel", _multislerp),
    "model_stock": MergekitTranslation(
        "model_stock", "base_model, filter_wise: false (c = 1 only)", "exact (float rounding)",
        _model_stock),
}


def mergekit_notes(strategy: Mapping[str, Any]) -> list[str]:
    """What a user of the exported YAML must know: where mergekit's merge will not be the
    same weights (random DARE masks; TIES entries whose values sum to exactly 0)."""
    name = str(strategy.get("name", ""))
    notes = []
    if name in ("ties", "dare_ties") and strategy.get("zero_sum", "base") != "positive":
        notes.append("where the trimmed values of an entry sum to exactly 0, mapframe kept the "
                     "base weight and mergekit elects +: set zero_sum: positive in the study "
                     "to match")
    if name.startswith("dare"):
        notes.append("DARE drops entries at random; mergekit draws its own masks, so its "
                     "merge has the same drop rate and scale, not the same weights")
    return notes


# -- checkpoints -------------------------------------------------------------------------
def _is_adapter(path: Path) -> bool:
    return path.is_dir() and (path / "adapter_config.json").is_file()


def _model_folder(path: str) -> str:
    """The folder mergekit reads for a checkpoint path (ConfigError when it is none)."""
    p = Path(path)
    if p.is_dir():
        return str(p)
    if p.name in ("model.safetensors", "pytorch_model.bin") and (
            p.parent / "config.json").is_file():
        return str(p.parent)
    raise ConfigError(
        f"mergekit reads Hugging Face model folders (config.json + model.safetensors), and "
        f"checkpoint {path} is a single file; save each checkpoint as such a folder to "
        "export to mergekit")


def model_reference(path: str, pretrained: str) -> str:
    """The mergekit model reference of checkpoint ``path``: its model folder, or
    ``<base folder>+<adapter folder>`` for a PEFT LoRA adapter (mergekit merges it into the
    base with PEFT)."""
    if _is_adapter(Path(path)):
        return f"{_model_folder(pretrained)}+{path}"
    return _model_folder(path)


def _safetensors_dtypes(file: Path) -> list[str]:
    with open(file, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        header = json.loads(fh.read(n))
    return [v["dtype"] for k, v in header.items() if k != "__metadata__"]


def _torch_dtypes(file: Path) -> list[str]:
    """The dtypes of a torch checkpoint's floating-point tensors, memory-mapped (a zip
    archive: nothing is read but what the dtypes need); ``[]`` when it cannot be mapped
    (a legacy pickle, a pickled module)."""
    import torch

    from mapframe.merging.checkpoints import _unwrap

    try:
        obj = torch.load(str(file), map_location="cpu", weights_only=True, mmap=True)
        state = _unwrap(obj, file)
    except Exception:  # not mappable or not a plain state dict: config.json decides
        return []
    return [str(v.dtype).removeprefix("torch.") for v in state.values()
            if v.is_floating_point()]


def _config_dtype(folder: Path) -> str | None:
    """``torch_dtype`` (or ``dtype``) of a model folder's config.json."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    value = config.get("torch_dtype", config.get("dtype")) if isinstance(config, dict) else None
    value = str(value).removeprefix("torch.") if value else None
    return value if value in _DTYPES.values() else None


def _weight_files(p: Path) -> list[Path]:
    """The weight file(s) to read a dtype from: a file itself, or a folder's first shard
    (safetensors preferred, then torch .bin/.pt)."""
    if not p.is_dir():
        return [p]
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = p / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError):
                continue
            return [p / shards[0]] if shards else []
    for pattern in ("*.safetensors", "*.bin", "*.pt", "*.pth"):
        found = sorted(p.glob(pattern))
        if found:
            return found[:1]
    return []


def checkpoint_dtype(path: str) -> str | None:
    """The floating-point dtype a checkpoint stores (mergekit's name: ``float32``,
    ``bfloat16``, ...): the most common one in its safetensors header or torch state dict
    (memory-mapped), else its model folder's ``config.json`` ``torch_dtype``; ``None``
    when none of these tells."""
    p = Path(path)
    for f in _weight_files(p):
        try:
            if f.suffix.lower() == ".safetensors":
                found = [_DTYPES[d] for d in _safetensors_dtypes(f) if d in _DTYPES]
            else:
                found = [d for d in _torch_dtypes(f) if d in _DTYPES.values()]
        except (OSError, ValueError):
            found = []
        if found:
            return max(set(found), key=found.count)
    return _config_dtype(p if p.is_dir() else p.parent)


# -- the configuration -------------------------------------------------------------------
def mergekit_config(
    strategy: Mapping[str, Any],
    coefficients: Sequence[float],
    pretrained: str,
    finetuned: Mapping[str, str],
    dtype: str | None = None,
) -> dict[str, Any]:
    """The mergekit configuration of one merge, as a mapping.

    ``strategy`` is the strategy's ``describe()`` (``{"name": ..., **settings}``),
    ``coefficients`` one per fine-tuned checkpoint in ``finetuned``'s order, ``dtype`` the
    checkpoints' dtype (default: read from ``pretrained``). mergekit computes in float32
    (``dtype: float32``) and writes ``out_dtype`` = the checkpoints' dtype, as mapframe does.
    Raises :class:`ConfigError` for a strategy or point without an equivalent.
    """
    name = str(strategy.get("name"))
    row = MERGEKIT_METHODS.get(name)
    if row is None:
        raise ConfigError(
            f"merge strategy {name!r} has no mergekit equivalent (translated: "
            f"{', '.join(MERGEKIT_METHODS)}); export --format hf or safetensors instead")
    c = [float(x) for x in coefficients]
    if len(c) != len(finetuned):
        raise ConfigError(f"{len(c)} coefficients for {len(finetuned)} fine-tuned checkpoints")
    if not all(math.isfinite(x) for x in c):
        raise ConfigError(f"coefficients must be finite, got {c}")
    params, per_model, with_base = row.build(strategy, c)
    models = []
    for path, extra in zip(finetuned.values(), per_model):
        entry: dict[str, Any] = {"model": model_reference(path, pretrained)}
        if extra:
            entry["parameters"] = extra
        models.append(entry)
    out: dict[str, Any] = {"merge_method": row.method}
    if with_base:
        out["base_model"] = _model_folder(pretrained)
    out["models"] = models
    out["parameters"] = params
    out["dtype"] = "float32"
    stored = dtype or checkpoint_dtype(pretrained)
    if stored is None:  # leaving out_dtype out would have mergekit write float32
        raise ConfigError(
            f"cannot tell the dtype of the checkpoint {pretrained} (no safetensors header, "
            "readable torch state dict or torch_dtype in its config.json) for the mergekit "
            "out_dtype; add torch_dtype to its config.json")
    if stored != "float32":
        out["out_dtype"] = stored
    return out


def mergekit_yaml(config: Mapping[str, Any], header: Sequence[str] = ()) -> str:
    """``config`` as mergekit YAML (floats written in full, so the weights round-trip
    exactly), after ``header`` lines written as ``#`` comments."""
    import yaml

    # a line break inside a header line (a name holding one) must not end the comment:
    # the rest would be read as YAML (a key of its own)
    lines = [f"# {line}" for h in header for line in str(h).splitlines() or [""]]
    body = yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False,
                          allow_unicode=True)
    return "\n".join([*lines, body]) if lines else body

