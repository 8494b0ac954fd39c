"""Device, precision and the scoring loop shared by the vision evaluators."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mapframe.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from mapframe_vision.data import EvalSet

__all__ = ["METRICS", "PRECISIONS", "autocast", "resolve_device", "score_classifier"]

#: Metrics an evaluator reports per task: top-1 accuracy (max) or mean cross-entropy (min).
METRICS: tuple[str, ...] = ("accuracy", "loss")
#: ``auto``: fp32 on CPU, fp16 autocast on CUDA; ``amp``: fp16 autocast on CUDA (fp32 on
#: CPU); ``bf16``: bfloat16 autocast (CPU or CUDA); ``fp32``: no autocast.
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "amp", "bf16")


def resolve_device(device: str) -> str:
    """``auto`` → ``cuda`` when available, else ``cpu``; a CUDA device that is not there is
    an error naming the fix."""
    import torch

    d = str(device or "auto")
    if d == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if d.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {d!r} requested but CUDA is not available here; use "
                              "device: auto or cpu")
        idx = d.partition(":")[2]
        if idx and (not idx.isdigit() or int(idx) >= torch.cuda.device_count()):
            raise ConfigError(f"device {d!r}: this machine has {torch.cuda.device_count()} "
                              "CUDA device(s)")
        return d
    if d == "cpu" or d == "mps":
        return d
    raise ConfigError(f"unknown device {d!r}; use auto, cpu, cuda or cuda:<index>")


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ConfigError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    return precision


@contextlib.contextmanager
def autocast(device: str, precision: str) -> Iterator[None]:
    """Mixed precision where it applies (CUDA, or bf16 on CPU); a no-op otherwise."""
    import torch

    kind = device.split(":")[0]
    if precision == "bf16":
        with torch.autocast(kind, dtype=torch.bfloat16):
            yield
        return
    if kind == "cuda" and precision in ("auto", "amp"):
        with torch.autocast("cuda", dtype=torch.float16):
            yield
        return
    yield


def score_classifier(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    evalset: EvalSet,
    device: str,
    precision: str,
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of ``logits_fn`` over ``evalset``.

    A model whose logits are not finite (a diverged merge) scores NaN for both, which the
    study records as an invalid evaluation instead of fitting it.
    """
    import torch

    correct = 0
    loss_sum = 0.0
    n = 0
    finite = True
    with torch.inference_mode(), autocast(device, precision):
        for x, y in evalset.batches(torch.float32):
            logits = logits_fn(x).float()
            if not bool(torch.isfinite(logits).all()):
                finite = False
                break
            correct += int((logits.argmax(dim=-1) == y).sum())
            loss_sum += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
            n += int(y.numel())
    if not finite or n == 0:
        return math.nan, math.nan
    return correct / n, loss_sum / n
