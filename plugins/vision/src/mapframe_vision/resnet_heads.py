"""The per-task classification heads of :class:`~mapframe_vision.resnet.ResNetEvaluator`:
reading each task's fine-tuned head from its checkpoint, and re-fitting a head on features
of the merged backbone (``refit``).

Importing this module is cheap: torch is imported on first use.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe_vision.resnet_arch import strip_wrapper_prefix

if TYPE_CHECKING:
    import torch

    from mapframe.merging.checkpoints import TaskVectors
    from mapframe_vision.resnet_data import ResNetTaskSpec

__all__ = ["REFIT_DEFAULTS", "load_head", "parse_refit", "refit_head"]

#: Settings of the head refit (``refit: true`` uses these; a mapping overrides some).
REFIT_DEFAULTS: dict[str, Any] = {
    "steps": 100,
    "lr": 0.01,
    "batch_size": 64,
    "weight_decay": 0.0,
    "max_samples": None,
    "optimizer": "adam",
    "seed": 0,
}
_OPTIMIZERS: tuple[str, ...] = ("adam", "sgd")


def parse_refit(refit: Any) -> dict[str, Any] | None:
    """``refit`` (``false``/``null``, ``true`` or a mapping of :data:`REFIT_DEFAULTS` fields)
    as the full settings with defaults filled in, or ``None`` for no refit."""
    if refit is None or refit is False:
        return None
    if refit is True:
        return dict(REFIT_DEFAULTS)
    if not isinstance(refit, Mapping):
        raise ConfigError(
            "refit must be false/null (no refit), true (defaults) or a mapping {steps: 100, "
            f"lr: 0.01, batch_size: 64, weight_decay: 0.0, max_samples: null}}, got {refit!r}"
        )
    unknown = sorted(set(map(str, refit)) - set(REFIT_DEFAULTS))
    if unknown:
        raise ConfigError(f"refit: unknown field(s) {unknown} (allowed: "
                          f"{', '.join(REFIT_DEFAULTS)})")
    out = {**REFIT_DEFAULTS, **refit}

    def is_int(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, np.integer))

    def is_num(v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float, np.integer, np.floating))

    if not is_int(out["steps"]) or out["steps"] < 1:
        raise ConfigError(f"refit.steps must be a positive integer, got {out['steps']!r}")
    if not is_num(out["lr"]) or not math.isfinite(out["lr"]) or out["lr"] <= 0:
        raise ConfigError(f"refit.lr must be a positive number, got {out['lr']!r}")
    if not is_int(out["batch_size"]) or out["batch_size"] < 1:
        raise ConfigError(f"refit.batch_size must be a positive integer, got "
                          f"{out['batch_size']!r}")
    wd = out["weight_decay"]
    if not is_num(wd) or not math.isfinite(wd) or wd < 0:
        raise ConfigError(f"refit.weight_decay must be a non-negative number, got {wd!r}")
    ms = out["max_samples"]
    if ms is not None and (not is_int(ms) or ms < 1):
        raise ConfigError(f"refit.max_samples must be a positive integer or null, got {ms!r}")
    if out["optimizer"] not in _OPTIMIZERS:
        raise ConfigError(f"refit.optimizer must be one of {', '.join(_OPTIMIZERS)}, got "
                          f"{out['optimizer']!r}")
    if not is_int(out["seed"]):
        raise ConfigError(f"refit.seed must be an integer, got {out['seed']!r}")
    return {"steps": int(out["steps"]), "lr": float(out["lr"]),
            "batch_size": int(out["batch_size"]), "weight_decay": float(wd),
            "max_samples": None if ms is None else int(ms), "optimizer": out["optimizer"],
            "seed": int(out["seed"])}


def load_head(
    spec: ResNetTaskSpec,
    task_vectors: TaskVectors,
    *,
    head_prefix: str,
    feature_dim: int,
    arch_label: str,
    allow_pickle: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(weight (classes, features), bias (classes,))`` of a task's head, float32, CPU.

    The head comes from ``spec.head`` (a checkpoint path or a state dict), else from the
    fine-tuned checkpoint of ``task_vectors`` named like the task; its tensors are
    ``<head_prefix>weight`` and ``<head_prefix>bias`` (or a bare ``Linear``'s ``weight`` and
    ``bias``), and ``weight`` must read ``feature_dim`` features (the backbone of
    ``arch_label``). A missing bias is zero.
    """
    import torch

    from mapframe.merging.checkpoints import load_state_dict

    if spec.head is None:
        tv = task_vectors
        if spec.name not in tv.task_names:
            raise ConfigError(
                f"task {spec.name!r}: no fine-tuned checkpoint is named {spec.name!r} "
                f"(checkpoints: {', '.join(tv.task_names)}), so its head cannot be found: "
                "name the task like its checkpoint or give head: <checkpoint path>"
            )
        source = tv.sources[tv.task_names.index(spec.name)]
        if not os.path.isfile(source):
            raise ConfigError(
                f"task {spec.name!r}: the task vectors were given in memory, so the "
                "fine-tuned head cannot be read from a file; give head: <checkpoint path>"
                " (or a state dict)"
            )
        state: Mapping[str, Any] = load_state_dict(source, allow_pickle=allow_pickle)
    elif isinstance(spec.head, (str, os.PathLike)):
        source = os.fspath(spec.head)
        state = load_state_dict(source, allow_pickle=allow_pickle)
    else:
        source = f"the head state dict of task {spec.name!r}"
        state = spec.head
    state = strip_wrapper_prefix(state)
    wkey, bkey = f"{head_prefix}weight", f"{head_prefix}bias"
    weight = state.get(wkey)
    if weight is None and "weight" in state and len(state) <= 2:
        wkey, bkey = "weight", "bias"  # a bare Linear state dict
        weight = state["weight"]
    if not isinstance(weight, torch.Tensor):
        found = sorted(k for k in state if k.endswith(("weight", "bias")))[-4:]
        raise CheckpointError(
            f"task {spec.name!r}: {source} holds no head tensor {wkey!r} (head_prefix "
            f"{head_prefix!r}; last weight/bias keys: {found}); set head_prefix or "
            "give head: <checkpoint path>"
        )
    bias = state.get(bkey)
    feat = feature_dim
    if weight.ndim != 2 or weight.shape[1] != feat or weight.shape[0] < 1:
        raise CheckpointError(
            f"task {spec.name!r}: head {wkey!r} in {source} has shape "
            f"{tuple(weight.shape)}, but the backbone of arch {arch_label} gives "
            f"{feat} features: expected (classes, {feat}); the head comes from another "
            "architecture"
        )
    if bias is None:
        bias = torch.zeros(weight.shape[0])
    if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (weight.shape[0],):
        raise CheckpointError(
            f"task {spec.name!r}: head bias {bkey!r} in {source} has shape "
            f"{tuple(getattr(bias, 'shape', ()))}, expected ({weight.shape[0]},)"
        )
    return weight.detach().float().cpu(), bias.detach().float().cpu()


def refit_head(
    head: torch.nn.Linear,
    start: tuple[torch.Tensor, torch.Tensor],
    features: torch.Tensor,
    labels: torch.Tensor,
    settings: Mapping[str, Any],
) -> dict[str, float]:
    """Re-train ``head`` in place on ``features`` (float32, on the head's device) and
    ``labels``, starting from ``start = (weight, bias)``, with ``settings`` as
    :func:`parse_refit` returns them; the same inputs always give the same head.

    Returns ``samples``, ``steps`` (fewer than asked when the loss stopped being finite) and
    the cross-entropy before and after training (``loss_before``, ``loss_after``; NaN when the
    features are not finite: the head is then left at ``start`` and its logits score NaN).
    """
    import torch
    import torch.nn.functional as F

    cfg = settings
    w0, b0 = start
    with torch.no_grad():
        head.weight.copy_(w0)
        head.bias.copy_(b0)
    info: dict[str, float] = {"samples": float(len(labels)), "steps": 0.0,
                              "loss_before": math.nan, "loss_after": math.nan}
    if not bool(torch.isfinite(features).all()):
        return info
    with torch.no_grad():
        info["loss_before"] = float(F.cross_entropy(head(features), labels))
    head.train()
    params = [head.weight, head.bias]
    for p in params:
        p.requires_grad_(True)
    if cfg["optimizer"] == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    else:
        opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=0.9,
                              weight_decay=cfg["weight_decay"])
    gen = torch.Generator().manual_seed(cfg["seed"])
    n = len(labels)
    bs = min(cfg["batch_size"], n)
    order = torch.randperm(n, generator=gen)
    pos = 0
    with torch.enable_grad():
        for _ in range(cfg["steps"]):
            if pos + bs > n:
                order, pos = torch.randperm(n, generator=gen), 0
            batch = order[pos:pos + bs].to(features.device)
            pos += bs
            loss = F.cross_entropy(head(features[batch]), labels[batch])
            if not bool(torch.isfinite(loss)):
                break  # a diverged refit: the head's logits will score NaN
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            info["steps"] += 1
    for p in params:
        p.requires_grad_(False)
        p.grad = None
    head.eval()
    with torch.no_grad():
        info["loss_after"] = float(F.cross_entropy(head(features), labels))
    return info
