"""Task arithmetic: ``θ(c) = θ0 + Σ_i c_i τ_i`` (Ilharco et al., 2023)."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from mapframe.merging.base import MergeStrategy

if TYPE_CHECKING:
    import torch

__all__ = ["TaskArithmetic"]


class TaskArithmetic(MergeStrategy):
    """``θ(c) = θ0 + Σ_i c_i τ_i``: coefficient ``c_i`` scales task vector ``i``.

    Works one tensor at a time, accumulating in float32 (float64 for float64 checkpoints)
    and writing back in the tensor's own dtype; the only extra memory is one tensor's worth.
    The arithmetic itself is
    :meth:`TaskVectors.combine_into <mapframe.merging.TaskVectors.combine_into>`, so task
    vectors that live elsewhere (streamed from disk, low-rank adapters) merge through the
    same strategy without being materialised.
    """

    name: ClassVar[str] = "task_arithmetic"
    linear: ClassVar[bool] = True

    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        import torch

        tv = self.task_vectors
        c = torch.as_tensor(np.asarray(coefficients, dtype=np.float32))
        for key, target in params.items():
            tv.combine_into(key, c, target)

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        import torch

        tv = self.task_vectors
        C = torch.as_tensor(np.atleast_2d(np.asarray(coefficients, dtype=np.float32)))
        for key, target in out.items():
            tv.combine_batch_into(key, C, target)
