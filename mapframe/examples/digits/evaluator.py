"""The digits example's evaluator: :class:`DigitsEvaluator` (config name ``"digits"``), a
:class:`~mapframe.evaluators.base.ModelEvaluator` that merges and scores a whole batch at
once.

Importing this module is cheap: torch and scikit-learn are imported on first use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mapframe.errors import CheckpointError, ConfigError
from mapframe.evaluators.base import ModelEvaluator
from mapframe.examples.digits.data import (
    _N_CLASSES,
    _VARIANTS,
    DEFAULT_TASKS,
    _check_split_and_metric,
    _check_tasks,
    _variant_data,
)
from mapframe.examples.digits.model import _digits_net_class
from mapframe.problem import Task

if TYPE_CHECKING:
    import torch

    from mapframe.examples.digits.model import DigitsNet

__all__ = ["DigitsEvaluator"]

# Floats of hidden activations one vectorised forward pass may hold (8 MiB): on CPU, larger
# passes spill out of cache and get slower per model (measured: 16 models per pass of 450
# samples at hidden=256 beat 256 models per pass by ~1.7x).
_ACTIVATION_BUDGET = 1 << 21


class DigitsEvaluator(ModelEvaluator):
    """Scores merges of :class:`DigitsNet` checkpoints on digits task variants, batch-wise.

    Args:
        tasks: the task variants to score (columns of :meth:`evaluate`), names from
            :data:`TASKS`. They usually are the fine-tuned checkpoints' tasks in the same
            order, but need not be: the number of coefficients is set by the merger's
            checkpoints, the objectives by ``tasks``.
        split: ``"validation"`` (for the study) or ``"test"`` (for a final, held-out report).
        metric: ``"accuracy"`` (maximise, in [0, 1]) or ``"loss"`` (mean cross-entropy,
            minimise, in [0, inf)).
        device: torch device for the merged weights and the forward pass.
        max_batch_size: most merges held in memory at once; larger batches are evaluated in
            chunks of this size (``None``: no cap).

    It follows the :class:`~mapframe.evaluators.base.ModelEvaluator` template:
    :meth:`build_model` builds the resident :class:`DigitsNet` (its width read from the
    checkpoints) on :meth:`device`, and :meth:`prepare` caches each task's transformed
    inputs and labels as tensors. It overrides :meth:`merge_and_score` to work batch-wise:
    all B merged models are written into reusable ``(B, *shape)`` buffers with one
    :meth:`~mapframe.merging.merger.Merger.merge_batch` call and run together with
    ``torch.vmap`` over ``torch.func.functional_call``. Only the requested tasks' images
    are run, and tasks sharing an input transform (``shift_labels``, ``reverse_labels``)
    share one forward pass. A model whose logits are not finite gets NaN accuracy.
    :meth:`score_task` scores the resident model on one task, so the template's row-by-row
    path (:meth:`merge` then :meth:`score_tasks`) works too.
    """

    name: ClassVar[str] = "digits"

    def __init__(
        self,
        tasks: Sequence[str] = DEFAULT_TASKS,
        split: str = "validation",
        metric: str = "accuracy",
        device: str = "cpu",
        max_batch_size: int | None = 256,
    ) -> None:
        self._task_names = _check_tasks(tasks)
        _check_split_and_metric(split, metric)
        if max_batch_size is not None and (
            isinstance(max_batch_size, bool)
            or not isinstance(max_batch_size, int)
            or max_batch_size < 1
        ):
            raise ConfigError(
                f"max_batch_size must be a positive integer or null, got {max_batch_size!r}"
            )
        self.split = split
        self.metric = metric
        self.device = str(device)
        self.max_batch_size = max_batch_size
        if metric == "accuracy":
            self._tasks = [Task(t, "max", 0.0, 1.0) for t in self._task_names]
        else:
            self._tasks = [Task(t, "min", 0.0, math.inf) for t in self._task_names]

    @property
    def tasks(self) -> list[Task]:
        """One :class:`~mapframe.problem.Task` per task variant, named as in :data:`TASKS`."""
        return list(self._tasks)

    def describe(self) -> dict[str, Any]:
        """Name and settings, ``tasks`` included (as the config spells them)."""
        desc = super().describe()
        return {"name": desc.pop("name"), "tasks": list(self._task_names), **desc}

    # -- the ModelEvaluator template -----------------------------------------------------
    def model_device(self) -> torch.device:
        """The torch device named by ``device`` (a one-line ConfigError if it is invalid or
        is CUDA without a CUDA device)."""
        import torch

        try:
            device = torch.device(self.device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid torch device {self.device!r} ({exc})") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                f"device {self.device!r} asked for, but torch sees no CUDA device; use "
                "device: cpu"
            )
        return device

    def build_model(self) -> DigitsNet:
        """A :class:`DigitsNet` as wide as the checkpoints, on :meth:`device`."""
        device = self.model_device()
        tv = self.merger.task_vectors
        if "fc1.weight" not in set(tv.keys()):
            raise CheckpointError(
                "the digits evaluator needs DigitsNet checkpoints (tensors fc1.*, fc2.*, "
                "head.*); create them with mapframe.examples.digits.prepare_checkpoints"
            )
        hidden = int(tv.base("fc1.weight").shape[0])
        return _digits_net_class()(hidden).to(device).eval()

    def prepare(self) -> None:
        """Set up the vectorised forward pass and cache the data of every task as tensors."""
        import torch
        from torch.func import functional_call, vmap

        model = self.resident_model
        device = self.model_device()
        merged_keys = set(self.merger.task_vectors.keys())
        state = model.state_dict()  # unmerged tensors already copied in by bind_parameters
        self._shapes = {
            k: (tuple(v.shape), v.dtype) for k, v in state.items() if k in merged_keys
        }
        fixed = {k: v for k, v in state.items() if k not in merged_keys}

        def forward(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
            return functional_call(model, (params, fixed), (x,))

        self._forward: Callable[[dict[str, torch.Tensor], torch.Tensor], torch.Tensor] = vmap(
            forward, in_dims=(0, None))

        # One input tensor per distinct transform; per task: its transform and labels.
        self._inputs: dict[str, torch.Tensor] = {}
        self._labels: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for col, task in enumerate(self._task_names):
            transform, label_map = _VARIANTS[task]
            x, y = _variant_data(transform, label_map, self.split)
            if transform not in self._inputs:
                self._inputs[transform] = torch.from_numpy(x).to(device)
                self._labels[transform] = []
            self._labels[transform].append((col, torch.from_numpy(y).to(device)))
        hidden = int(model.get_parameter("fc1.weight").shape[0])
        n_max = max(len(x) for x in self._inputs.values())
        self._models_per_pass = max(1, _ACTIVATION_BUDGET // (n_max * max(hidden, _N_CLASSES)))
        self._buffers: dict[str, torch.Tensor] = {}
        self._capacity = 0

    def merge_and_score(self, C: np.ndarray, tasks: list[int]) -> np.ndarray:
        """Metrics ``(B, len(tasks))``, ``max_batch_size`` merges at a time, each chunk merged
        with one :meth:`~mapframe.merging.merger.Merger.merge_batch` call and scored in
        vectorised forward passes."""
        out = np.empty((C.shape[0], len(tasks)), dtype=float)
        step = self.max_batch_size or max(1, C.shape[0])
        for start in range(0, C.shape[0], step):
            chunk = C[start : start + step]
            out[start : start + len(chunk)] = self._merge_and_score_chunk(chunk, tasks)
        return out

    def score_task(self, model: torch.nn.Module, task: int) -> float:
        """The metric of task ``task`` for ``model`` (the resident model, after :meth:`merge`)."""
        import torch

        transform = _VARIANTS[self._task_names[task]][0]
        y = dict(self._labels[transform])[task]
        with torch.no_grad():
            logits = model(self._inputs[transform])
        return float(self._metric(logits[None], y)[0])

    def close(self) -> None:
        """Drop the cached data, buffers and model."""
        for attr in ("_inputs", "_labels", "_buffers", "_forward", "_shapes"):
            self.__dict__.pop(attr, None)
        self._capacity = 0
        super().close()

    # -- batch-wise merging and scoring ----------------------------------------------------
    def _merge_buffers(self, b: int) -> dict[str, torch.Tensor]:
        """Views of ``b`` merged models into buffers reused across calls (grown on demand)."""
        import torch

        if b > self._capacity:
            self._buffers = {}  # free the old buffers before allocating bigger ones
            device = self.resident_model.get_parameter("fc1.weight").device
            self._buffers = {
                k: torch.empty((b, *shape), dtype=dtype, device=device)
                for k, (shape, dtype) in self._shapes.items()
            }
            self._capacity = b
        return {k: v[:b] for k, v in self._buffers.items()}

    def _merge_and_score_chunk(self, C: np.ndarray, tasks: Sequence[int]) -> np.ndarray:
        """Metrics ``(b, len(tasks))`` of one chunk of ``b`` merges."""
        import torch

        b = C.shape[0]
        params = self._merge_buffers(b)
        self.merger.merge_batch(C, params)
        out = torch.full((b, len(tasks)), math.nan, dtype=torch.float64)
        positions: dict[int, list[int]] = {}  # task -> its columns in the output
        for j, col in enumerate(tasks):
            positions.setdefault(col, []).append(j)
        step = self._models_per_pass
        for transform, x in self._inputs.items():
            labels = [(col, y) for col, y in self._labels[transform] if col in positions]
            if not labels:
                continue  # no requested task uses these images
            for s in range(0, b, step):
                e = min(b, s + step)
                logits = self._forward({k: v[s:e] for k, v in params.items()}, x)
                for col, y in labels:
                    metric = self._metric(logits, y)
                    for j in positions[col]:
                        out[s:e, j] = metric
        return out.numpy()

    def _metric(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per-model metric for logits ``(m, n, 10)`` and labels ``(n,)``: CPU float64 ``(m,)``."""
        import torch

        m, n = logits.shape[0], logits.shape[1]
        if self.metric == "accuracy":
            correct = (logits.argmax(dim=-1) == y).sum(dim=1).cpu()
            acc = correct.to(torch.float64) / n
            finite = torch.isfinite(logits).flatten(1).all(dim=1).cpu()
            return torch.where(finite, acc, torch.full_like(acc, math.nan))
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(m * n, -1), y.repeat(m), reduction="none"
        )
        return loss.reshape(m, n).cpu().to(torch.float64).mean(dim=1)
