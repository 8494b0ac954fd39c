"""Small task-vector fixtures shared by the merge-strategy tests."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from mapframe.merging import Merger, MergeStrategy, TaskVectors


def one_tensor_task_vectors(
    base: list[float], vectors: list[list[float]], dtype: Any = None
) -> TaskVectors:
    """TaskVectors of one tensor ``w`` with ``θ0 = base`` and ``τ_i = vectors[i]``."""
    dt = dtype or torch.float32
    b = torch.tensor(base, dtype=dt)
    fts = [{"w": b + torch.tensor(v, dtype=dt)} for v in vectors]
    return TaskVectors({"w": b}, fts)


def merge(strategy: MergeStrategy, tv: TaskVectors, c: Any) -> dict[str, Any]:
    """The full merged state dict of ``strategy`` over ``tv`` for coefficients ``c``."""
    return Merger(strategy, tv).merged_state_dict(np.asarray(c, dtype=float))
