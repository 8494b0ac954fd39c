"""A :class:`Merger` binds a merge strategy to loaded task vectors and a resident model."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mapframe.errors import CheckpointError
from mapframe.merging.base import MergeStrategy
from mapframe.merging.checkpoints import TaskVectors

if TYPE_CHECKING:
    import torch

__all__ = ["Merger"]


class Merger:
    """A prepared merge: ``strategy`` over ``task_vectors``, ready to write weights.

    Evaluators receive one in :meth:`~mapframe.evaluators.Evaluator.setup`; they call
    :meth:`resident_params` once for their model and then :meth:`merge_into` per evaluation.
    """

    def __init__(self, strategy: MergeStrategy, task_vectors: TaskVectors) -> None:
        self.strategy = strategy
        self.task_vectors = task_vectors
        strategy.prepare(task_vectors)

    @property
    def n_tasks(self) -> int:
        return self.task_vectors.n_tasks

    def resident_params(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The model's merged tensors (sharing storage with the model), checked against the
        checkpoints; non-merged tensors from the checkpoint are copied in once."""
        import torch

        state = model.state_dict(keep_vars=False)
        merged_keys = set(self.task_vectors.keys())
        other = self.task_vectors.unmerged()
        missing = [k for k in state if k not in merged_keys and k not in other]
        if missing:
            raise CheckpointError(
                f"the model has tensors the checkpoints lack: {missing[:5]}; the checkpoints "
                "must be state dicts of this model's architecture"
            )
        params: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for k, t in state.items():
                ref = self.task_vectors.base(k) if k in merged_keys else other[k]
                if tuple(ref.shape) != tuple(t.shape):
                    raise CheckpointError(
                        f"tensor {k!r}: the checkpoints have shape {tuple(ref.shape)}, the "
                        f"model has {tuple(t.shape)}; the checkpoints come from another "
                        "architecture"
                    )
                if k in merged_keys:
                    params[k] = t
                else:
                    t.copy_(ref)
        return params

    def merge_into(
        self, params: MutableMapping[str, torch.Tensor], coefficients: np.ndarray
    ) -> None:
        """Write ``θ(c)`` into ``params`` in place."""
        c = self.strategy.check_coefficients(coefficients)
        self.strategy.merge_into(params, c)

    def merge_batch(
        self, coefficients: np.ndarray, out: MutableMapping[str, torch.Tensor]
    ) -> None:
        """Write B merges into ``out[k]`` of shape ``(B, *shape)``."""
        C = np.atleast_2d(np.asarray(coefficients, dtype=float))
        for c in C:
            self.strategy.check_coefficients(c)
        self.strategy.merge_batch(C, out)

    def merged_state_dict(self, coefficients: np.ndarray) -> dict[str, torch.Tensor]:
        """A fresh full state dict of the merged model (for export)."""
        tensors = {k: self.task_vectors.base(k).clone() for k in self.task_vectors.keys()}
        self.merge_into(tensors, coefficients)
        tensors.update(self.task_vectors.unmerged())
        return tensors

    def export(
        self,
        path: str | os.PathLike[str],
        coefficients: np.ndarray,
        metadata: Mapping[str, object] | None = None,
    ) -> Path:
        """Save the merged model for ``coefficients`` (a ``.safetensors`` file by default;
        see :meth:`TaskVectors.export_merged`) and return its path."""
        c = self.strategy.check_coefficients(coefficients)
        meta = {
            "mapframe.merge_strategy": json.dumps(self.strategy.describe()),
            "mapframe.coefficients": json.dumps(dict(zip(self.task_vectors.task_names,
                                                         c.tolist()))),
        }
        for k, v in (metadata or {}).items():
            meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
        return self.task_vectors.export_merged(
            lambda params: self.strategy.merge_into(params, c), path, meta)
