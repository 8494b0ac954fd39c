"""PEFT LoRA adapters as task vectors: ``τ = scale · B A`` per adapted tensor, never all at once.

An adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``, what
``PeftModel.save_pretrained`` writes) is read as PEFT merges it (``merge_and_unload``):

- ``lora_A``/``lora_B`` of a linear layer: ``ΔW = scale · B @ A`` (transposed for layers
  stored ``fan_in_fan_out``, such as GPT-2's ``Conv1D``), with ``scale = α / r``
  (``α / √r`` under rsLoRA); ``r`` is read from the factors' shapes and ``α`` from
  ``alpha_pattern`` when a pattern matches the module, so ``rank_pattern`` is honoured too.
- ``lora_embedding_A``/``lora_embedding_B`` of an embedding: ``ΔE = scale · (B @ A)ᵀ``.
- ``lora_B.bias`` (``lora_bias: true``): ``Δb = scale · b``.
- Full tensors saved with the adapter (``modules_to_save``, embedding layers saved with
  ``save_embedding_layers``): ``Δ = saved − pretrained``.

Only the factors are held in memory (a few MB for a rank-16 adapter of an 8B model); a
merge computes one row block of ``B @ A`` at a time. DoRA and non-LoRA PEFT methods are
rejected with an error: they are not linear in the coefficient.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mapframe.errors import CheckpointError
from mapframe_llm.folders import ModelFolder

if TYPE_CHECKING:
    import torch

__all__ = ["LoraAdapter", "LowRankDelta", "is_adapter_folder"]

ADAPTER_CONFIG = "adapter_config.json"
_PREFIX = "base_model.model."


def is_adapter_folder(path: str | Path) -> bool:
    """Whether ``path`` is a PEFT adapter folder (it has ``adapter_config.json``)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


@dataclass
class LowRankDelta:
    """``Δ = scale · left @ right`` for one tensor (``left``: rows × r, ``right``: r × cols),
    or, for a bias, ``Δ = scale · left`` (``right`` is ``None``)."""

    left: torch.Tensor
    right: torch.Tensor | None
    scale: float

    def rows(self, start: int, stop: int) -> torch.Tensor:
        """Rows ``[start, stop)`` of ``Δ`` (float32), flattened."""
        if self.right is None:
            return (self.left[start:stop] * self.scale).reshape(-1)
        return (self.left[start:stop] @ self.right).mul_(self.scale).reshape(-1)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.left, self.right)
                   if t is not None)


def _pattern_value(patterns: Mapping[str, Any], module: str) -> Any:
    """PEFT's lookup of ``rank_pattern`` / ``alpha_pattern``: a pattern matches a module
    whose dotted name ends with it (as a regular expression)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", module):
            return value
    return None


class LoraAdapter:
    """One PEFT LoRA adapter folder, read as the task vector it merges into the base model.

    ``role`` names the adapter in errors. ``key_map`` (module tensor name in the adapter,
    e.g. ``model.layers.0.self_attn.q_proj.weight`` -> the pretrained checkpoint's key) and
    ``base`` are given by :meth:`bind`, which checks every adapted tensor against the
    pretrained checkpoint: a module it lacks or a shape that differs means the adapter was
    trained on another base model.
    """

    def __init__(self, path: str | Path, role: str = "adapter") -> None:
        self.path = Path(path).expanduser()
        self.role = role
        cfg_path = self.path / ADAPTER_CONFIG
        try:
            self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{role}: {cfg_path} is not readable JSON ({exc})") from None
        peft_type = str(self.config.get("peft_type", "LORA")).upper()
        if peft_type != "LORA":
            raise CheckpointError(
                f"{role} {self.path} is a {peft_type} adapter; mapframe-llm reads LoRA adapters "
                "(their task vector is the low-rank product B·A). Merge it into the model with "
                "PEFT (merge_and_unload + save_pretrained) and give that folder instead")
        if self.config.get("use_dora"):
            raise CheckpointError(
                f"{role} {self.path} is a DoRA adapter: its weight update is not linear in a "
                "merge coefficient. Merge it with PEFT (merge_and_unload + save_pretrained) "
                "and give the merged model folder instead")
        weights = self.path / "adapter_model.safetensors"
        if not weights.is_file():
            hint = (" It holds adapter_model.bin: re-save it as safetensors "
                    "(PeftModel.save_pretrained(folder, safe_serialization=True))."
                    if (self.path / "adapter_model.bin").is_file() else "")
            raise CheckpointError(f"{role} {self.path} has no adapter_model.safetensors.{hint}")
        self.folder = ModelFolder(weights, role)
        self.base_model = self.config.get("base_model_name_or_path")
        self.fan_in_fan_out = bool(self.config.get("fan_in_fan_out", False))
        self.rslora = bool(self.config.get("use_rslora", False))
        self.alpha = float(self.config.get("lora_alpha", 8))
        self.alpha_pattern: dict[str, Any] = dict(self.config.get("alpha_pattern") or {})
        self._parse_keys()

    def _parse_keys(self) -> None:
        factors: dict[str, dict[str, str]] = {}
        self.full: dict[str, str] = {}  # target tensor name -> adapter key (full tensors)
        for key in self.folder.keys():
            name = key[len(_PREFIX):] if key.startswith(_PREFIX) else key
            if "lora_magnitude_vector" in name:
                raise CheckpointError(f"{self.role}: {key!r} is a DoRA magnitude; DoRA adapters "
                                      "are not linear merges (merge them with PEFT first)")
            m = re.match(r"(.+)\.(lora_A|lora_B)\.(?:[^.]+\.)?(weight|bias)$", name)
            e = re.match(r"(.+)\.(lora_embedding_A|lora_embedding_B)(?:\.[^.]+)?$", name)
            if m:
                module, part, what = m.groups()
                if part == "lora_A" and what == "bias":
                    raise CheckpointError(f"{self.role}: unexpected tensor {key!r}")
                factors.setdefault(module, {})[f"{part}.{what}"] = key
            elif e:
                module, part = e.groups()
                factors.setdefault(module, {})[part] = key
            elif "lora_" in name:
                raise CheckpointError(
                    f"{self.role}: tensor {key!r} is a LoRA variant mapframe-llm does not read "
                    "(plain lora_A/lora_B and lora_embedding_A/B are supported)")
            else:
                self.full[name.replace(".base_layer.", ".").replace(
                    ".modules_to_save.default.", ".")] = key
        self.factors = factors
        for module, parts in factors.items():
            if not ({"lora_A.weight", "lora_B.weight"} <= set(parts)
                    or {"lora_embedding_A", "lora_embedding_B"} <= set(parts)):
                raise CheckpointError(
                    f"{self.role}: module {module!r} has only {sorted(parts)}; a LoRA layer "
                    "needs both its A and B factors: the adapter file is incomplete")
        if not factors and not self.full:
            raise CheckpointError(f"{self.role} {self.path} holds no LoRA weights")

    def targets(self) -> list[str]:
        """Names (as the adapter spells them) of every tensor the adapter changes."""
        out = list(self.full)
        for module, parts in self.factors.items():
            out.append(f"{module}.weight")
            if "lora_B.bias" in parts:
                out.append(f"{module}.bias")
        return out

    def scale(self, module: str, rank: int) -> float:
        alpha = _pattern_value(self.alpha_pattern, module)
        a = float(alpha) if alpha is not None else self.alpha
        return a / math.sqrt(rank) if self.rslora else a / rank

    def bind(self, base: ModelFolder, key_map: Mapping[str, str]
             ) -> dict[str, LowRankDelta | str]:
        """Check the adapter against the pretrained checkpoint ``base`` and return, per
        pretrained key it changes, a :class:`LowRankDelta` (factors in float32, in memory)
        or the adapter key of a full replacement tensor (read when merging)."""
        out: dict[str, LowRankDelta | str] = {}

        def present(name: str) -> bool:
            key = key_map.get(name)
            return key is not None and key in base

        def target(name: str, saved_whole: bool = False) -> str:
            key = key_map.get(name)
            if key is None or key not in base:
                if saved_whole and all(present(f"{m}.weight") for m in self.factors):
                    # The LoRA layers fit this base: the whole module is the adapter's own.
                    raise CheckpointError(
                        f"{self.role} saves its own {name!r} (PEFT modules_to_save, such as "
                        "the classifier head of a SEQ_CLS adapter), which the pretrained "
                        f"checkpoint {base.path} does not have: a new module is not a LoRA "
                        "delta; merge the adapter into its model (PeftModel.merge_and_unload() "
                        "+ save_pretrained) and give that folder (text_classification keeps "
                        "such a folder's head per task)")
                raise CheckpointError(
                    f"{self.role} changes {name!r}, which the pretrained checkpoint "
                    f"{base.path} does not have: the adapter was trained on another base model "
                    f"(its config names {self.base_model!r}); use the adapter's own base model")
            return key

        for name, akey in self.full.items():
            key = target(name, saved_whole=True)
            a, b = self.folder.info(akey), base.info(key)
            if a.shape != b.shape:
                raise CheckpointError(
                    f"{self.role} saves {name!r} with shape {list(a.shape)}, the pretrained "
                    f"checkpoint has {list(b.shape)}: the adapter was trained on another base "
                    "model (or a resized vocabulary); use the adapter's own base model")
            out[key] = akey
        for module, parts in self.factors.items():
            key = target(f"{module}.weight")
            shape = base.info(key).shape
            if "lora_A.weight" in parts:
                A = self.folder.read(parts["lora_A.weight"]).float()
                B = self.folder.read(parts["lora_B.weight"]).float()
                rank = A.shape[0]
                left, right = (A.T.contiguous(), B.T.contiguous()) if self.fan_in_fan_out \
                    else (B, A)
            else:
                A = self.folder.read(parts["lora_embedding_A"]).float()  # (r, num_embeddings)
                B = self.folder.read(parts["lora_embedding_B"]).float()  # (dim, r)
                rank = A.shape[0]
                left, right = A.T.contiguous(), B.T.contiguous()
            got = (left.shape[0], right.shape[1])
            if len(shape) != 2 or tuple(shape) != got or left.shape[1] != right.shape[0]:
                raise CheckpointError(
                    f"{self.role}: the LoRA factors of {module!r} make a {list(got)} update, but "
                    f"the pretrained tensor {key!r} has shape {list(shape)}: the adapter was "
                    f"trained on another base model (its config names {self.base_model!r})")
            scale = self.scale(module, rank)
            out[key] = LowRankDelta(left, right, scale)
            if "lora_B.bias" in parts:
                bkey = target(f"{module}.bias")
                bias = self.folder.read(parts["lora_B.bias"]).float()
                if tuple(bias.shape) != tuple(base.info(bkey).shape):
                    raise CheckpointError(
                        f"{self.role}: the LoRA bias of {module!r} has shape "
                        f"{list(bias.shape)}, the pretrained {bkey!r} has "
                        f"{list(base.info(bkey).shape)}: another base model")
                out[bkey] = LowRankDelta(bias.reshape(-1, 1), None, scale)
        return out
